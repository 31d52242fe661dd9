"""Learning-rate sweeps: learning rates x model kinds x seeds, resumable run by run.

The runs of one (kind, seed) differ only in their learning rate: they are the lanes of one
`GroupTrainer` (`sdeformer.train.group`), trained by one compiled program.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax.random as jr
import numpy as np

from .data import Task
from .group import GroupTrainer
from .loop import lane_results
from .spec import ModelSpec as ModelSpec
from .spec import TrainConfig, kind_spec


def unit_name(kind: str, lr: float, seed: int) -> str:
    """The result-file name of one run, e.g. `shaped_lr=0.01_seed=0`."""
    return f"{kind}_lr={lr:.6g}_seed={seed}"


def run_group(
    spec: ModelSpec,
    kind: str,
    cfg: TrainConfig,
    lrs: Sequence[float],
    train_task: Task,
    val_task: Task,
    seed: int,
) -> list[dict]:
    """Train one model kind with one seed at every lr of `lrs` (one group); one summary per lr.

    The weights are initialised from `split(key(seed))[0]` and batch t is drawn with
    `fold_in(split(key(seed))[1], t)`, whatever the learning rates.
    """
    keys = tuple(jr.split(jr.key(seed)))
    trainer = GroupTrainer(spec, kind, cfg, lrs, seed, keys=keys)
    state, timing = trainer.run(None, train_task, val_task)
    results = lane_results(trainer, state, timing["total_s"])
    return [
        {"kind": kind, "lr": lr, "seed": seed, **result.summary()}
        for lr, result in zip(trainer.lrs, results, strict=True)
    ]


def run_one(
    spec: ModelSpec,
    kind: str,
    cfg: TrainConfig,
    train_task: Task,
    val_task: Task,
    seed: int,
) -> dict:
    """Train one model kind with one seed at `cfg.lr`; the JSON-ready summary of the run."""
    return run_group(spec, kind, cfg, [cfg.lr], train_task, val_task, seed)[0]


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

    The learning rates of one (kind, seed) are trained together (`run_group`). With a
    `ResultStore`, each finished run is saved at once and a group whose runs are all saved is
    loaded instead of trained (a group with some runs saved is trained again whole, so that its
    numbers do not depend on where it stopped; only the missing runs are saved), so an
    interrupted sweep resumes where it stopped. `on_run(name, result, cached)` is called after
    each run (for a progress bar; an exception it raises stops the sweep after that run has been
    saved). The result is ordered by kind, lr, seed.
    """
    for kind in kinds:
        kind_spec(kind)
    lrs = [float(lr) for lr in lrs]
    results = {}
    for kind in kinds:
        for seed in seeds:
            names = [unit_name(kind, lr, seed) for lr in lrs]
            cached = [store is not None and store.has(name) for name in names]
            trained = None
            if not all(cached):
                trained = run_group(spec, kind, cfg, lrs, train_task, val_task, seed)
            for i, name in enumerate(names):
                if cached[i]:
                    result = store.load(name)
                else:
                    result = trained[i]
                    if store is not None:
                        store.save(name, result)
                results[name] = result
                if on_run is not None:
                    on_run(name, result, cached[i])
    order = [unit_name(kind, lr, seed) for kind in kinds for lr in lrs for seed in seeds]
    return {name: results[name] for name in order}


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
