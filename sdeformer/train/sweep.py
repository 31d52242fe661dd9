"""Learning-rate sweeps: learning rates x model kinds x seeds, resumable run by run."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax.random as jr
import numpy as np

from ..config import ShapedConfig
from .data import Task
from .lm import LanguageModel
from .loop import TrainConfig, kind_spec, train
from .shaping import ShapingSchedule


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Sizes and options of the language model of a run (the kind is chosen per run)."""

    width: int = 64
    depth: int = 4
    vocab: int = 256
    seq_len: int = 64
    positions: str = "sinusoidal"
    config: ShapedConfig = dataclasses.field(default_factory=ShapedConfig)
    recover_start: float = 0.0
    recover_end: float = 0.5

    def to_dict(self) -> dict:
        """The spec as a JSON-ready dict (its config included)."""
        out = dataclasses.asdict(self)
        out["config"] = self.config.to_dict()
        return out

    def build(self, kind: str, *, key) -> tuple[LanguageModel, ShapingSchedule]:
        """The model of kind `kind` initialised from `key`, and its shaping schedule."""
        arch, mode = kind_spec(kind)
        model = LanguageModel(
            arch,
            vocab=self.vocab,
            max_len=self.seq_len,
            width=self.width,
            depth=self.depth,
            config=self.config,
            positions=self.positions,
            key=key,
        )
        return model, ShapingSchedule(mode, self.recover_start, self.recover_end)


def unit_name(kind: str, lr: float, seed: int) -> str:
    """The result-file name of one run, e.g. `shaped_lr=0.01_seed=0`."""
    return f"{kind}_lr={lr:.6g}_seed={seed}"


def run_one(
    spec: ModelSpec,
    kind: str,
    cfg: TrainConfig,
    train_task: Task,
    val_task: Task,
    seed: int,
) -> dict:
    """Train one model kind with one seed; the JSON-ready summary of the run."""
    init_key, data_key = jr.split(jr.key(seed))
    model, schedule = spec.build(kind, key=init_key)
    result = train(model, train_task, val_task, cfg, key=data_key, schedule=schedule)
    return {"kind": kind, "lr": cfg.lr, "seed": seed, **result.summary()}


def run_sweep(
    spec: ModelSpec,
    cfg: TrainConfig,
    train_task: Task,
    val_task: Task,
    *,
    kinds: Sequence[str],
    lrs: Sequence[float],
    seeds: Sequence[int],
    store=None,
    on_run: Callable[[str, dict, bool], None] | None = None,
) -> dict[str, dict]:
    """Train every (kind, lr, seed) with `cfg` (its `lr` replaced); {unit name: run summary}.

    With a `ResultStore`, each finished run is saved at once and runs already saved are loaded
    instead of trained, so an interrupted sweep resumes where it stopped. `on_run(name, result,
    cached)` is called after each run (for a progress bar; an exception it raises stops the
    sweep after that run has been saved).
    """
    for kind in kinds:
        kind_spec(kind)
    results = {}
    for kind in kinds:
        for lr in lrs:
            for seed in seeds:
                name = unit_name(kind, lr, seed)
                cached = store is not None and store.has(name)
                if cached:
                    result = store.load(name)
                else:
                    run_cfg = dataclasses.replace(cfg, lr=float(lr))
                    result = run_one(spec, kind, run_cfg, train_task, val_task, seed)
                    if store is not None:
                        store.save(name, result)
                results[name] = result
                if on_run is not None:
                    on_run(name, result, cached)
    return results


def summarise(results: dict[str, dict]) -> list[dict]:
    """One row per (kind, lr): final validation loss over the seeds and how many diverged.

    Mean/min/max final validation loss over the seeds that did not diverge, and how many
    diverged. Sorted by kind (in order of appearance), then lr.
    """
    groups: dict[tuple[str, float], list[dict]] = {}
    for run in results.values():
        groups.setdefault((run["kind"], run["lr"]), []).append(run)
    order = list(dict.fromkeys(run["kind"] for run in results.values()))
    rows = []
    for (kind, lr), runs in sorted(
        groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])
    ):
        losses = [r["final_val_loss"] for r in runs if not r["diverged"]]
        corr = [r["final_token_correlation"] for r in runs if not r["diverged"]]
        rows.append(
            {
                "kind": kind,
                "lr": lr,
                "seeds": len(runs),
                "diverged": sum(r["diverged"] for r in runs),
                "val_loss_mean": float(np.mean(losses)) if losses else None,
                "val_loss_min": min(losses) if losses else None,
                "val_loss_max": max(losses) if losses else None,
                "token_correlation": float(np.mean(corr)) if corr else None,
                "tokens_per_second": float(np.mean([r["tokens_per_second"] for r in runs])),
            }
        )
    return rows


def best_lr(rows: list[dict]) -> dict[str, tuple[float, float] | None]:
    """Per kind, the (lr, mean validation loss) with the lowest loss among non-diverged rows."""
    out: dict[str, tuple[float, float] | None] = {}
    for row in rows:
        out.setdefault(row["kind"], None)
        loss = row["val_loss_mean"]
        if loss is not None and math.isfinite(loss):
            best = out[row["kind"]]
            if best is None or loss < best[1]:
                out[row["kind"]] = (row["lr"], loss)
    return out
