"""The stability criterion of the training study, fixed before the runs (docs/training.md).

A run (kind, depth, lr, seed) is **unstable** when any of these holds:

1. **diverged**: the rule of `TrainConfig` (a non-finite training loss or gradient norm, or a
   training or validation loss above `divergence_factor * ln(vocab)`, 3 ln 256 = 16.6 nats);
2. **spike**: the training loss, averaged over consecutive blocks of 10 steps, rises above
   `SPIKE_FACTOR` (1.5) times the lowest block mean before it;
3. **margin**: its final validation loss exceeds `(1 + MARGIN)` (1.05) times the best loss of
   its kind at that depth, where the best loss is the lowest, over learning rates, of the median
   over seeds of the final validation loss of the runs that pass 1 and 2.

Otherwise it is stable. The largest stable learning rate of a (kind, depth, seed) is the largest
lr of the grid whose run is stable; its spread over seeds is reported as min / median / max.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from ..results import markdown_table

SPIKE_FACTOR = 1.5
"""A block mean of the training loss above this times the lowest earlier block mean is a spike."""

MARGIN = 0.05
"""Relative margin over the best final validation loss of the kind at that depth."""

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Two-sided 95% Student-t quantiles by degrees of freedom (1.96 beyond 9)."""


def spike_ratio(loss_blocks: Sequence[float]) -> float:
    """The largest jump of the loss, max over t >= 1 of block[t] / min(block[:t]).

    1.0 with fewer than two blocks.
    """
    worst, low = 1.0, math.inf
    for value in loss_blocks:
        if low < math.inf and low > 0:
            worst = max(worst, value / low)
        low = min(low, value)
    return worst


def mean_interval(values: Sequence[float | None]) -> dict | None:
    """Mean, min, max and the 95% Student-t half-width over seeds (None for no values)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return None
    half = None
    if arr.size > 1:
        t = T95.get(arr.size - 1, 1.96)
        half = float(t * arr.std(ddof=1) / math.sqrt(arr.size))
    return {
        "mean": float(arr.mean()),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "ci95": half,
        "n": int(arr.size),
    }


def classify(
    runs: Iterable[dict], *, spike_factor: float = SPIKE_FACTOR, margin: float = MARGIN
) -> list[dict]:
    """Each run dict with `spike_ratio`, `best_of_kind`, `unstable` and `unstable_reasons` added.

    Runs need: kind, depth, lr, seed, diverged, final_val_loss, loss_blocks. The best loss of a
    (kind, depth) is computed from the runs given (all seeds present).
    """
    runs = [dict(r) for r in runs]
    for run in runs:
        run["spike_ratio"] = spike_ratio(run["loss_blocks"])
        first = []
        if run["diverged"] or run["final_val_loss"] is None:
            first.append("diverged")
        if run["spike_ratio"] > spike_factor:
            first.append("spike")
        run["unstable_reasons"] = first
    medians: dict[tuple[str, int], dict[float, list[float]]] = {}
    for run in runs:
        if not run["unstable_reasons"]:
            cell = medians.setdefault((run["kind"], run["depth"]), {})
            cell.setdefault(run["lr"], []).append(run["final_val_loss"])
    best = {
        cell: min(float(np.median(v)) for v in by_lr.values()) for cell, by_lr in medians.items()
    }
    for run in runs:
        ref = best.get((run["kind"], run["depth"]))
        run["best_of_kind"] = ref
        loss = run["final_val_loss"]
        if not run["unstable_reasons"] and ref is not None and loss > (1.0 + margin) * ref:
            run["unstable_reasons"].append("margin")
        run["unstable"] = bool(run["unstable_reasons"])
    return runs


def _t_diff(a: dict[int, float], b: dict[int, float]) -> dict | None:
    seeds = sorted(set(a) & set(b))
    return mean_interval([a[s] - b[s] for s in seeds]) if seeds else None


def _lr_rows(kind: str, depth: int, mine: list[dict]) -> list[dict]:
    """The loss-vs-lr rows of one (kind, depth): counts of unstable seeds, loss intervals."""
    out = []
    for lr in sorted({r["lr"] for r in mine}):
        at = [r for r in mine if r["lr"] == lr]
        ok = [r for r in at if not r["unstable_reasons"] or r["unstable_reasons"] == ["margin"]]
        out.append(
            {
                "kind": kind,
                "depth": depth,
                "lr": lr,
                "seeds": len(at),
                "diverged": sum(r["diverged"] for r in at),
                "spiked": sum("spike" in r["unstable_reasons"] for r in at),
                "unstable": sum(r["unstable"] for r in at),
                "val_loss": mean_interval([r["final_val_loss"] for r in ok]),
                "final_token_correlation": mean_interval(
                    [r["final_token_correlation"] for r in ok]
                ),
            }
        )
    return out


def _cell_row(kind: str, depth: int, mine: list[dict], lr_rows: list[dict]) -> tuple[dict, dict]:
    """(summary row of one (kind, depth), its best-lr final loss per seed)."""
    seeds = sorted({r["seed"] for r in mine})
    largest = {}
    for seed in seeds:
        stable = [r["lr"] for r in mine if r["seed"] == seed and not r["unstable"]]
        largest[seed] = max(stable) if stable else None
    # the best lr among those where every seed has a usable loss
    candidates = [
        r for r in lr_rows if r["val_loss"] is not None and r["val_loss"]["n"] == len(seeds)
    ]
    best_row = min(candidates, key=lambda r: r["val_loss"]["mean"], default=None)
    best_lr = None if best_row is None else best_row["lr"]
    at_best = [r for r in mine if r["lr"] == best_lr]
    found = [v for v in largest.values() if v is not None]
    tps = [r["tokens_per_second"] for r in mine if r.get("tokens_per_second")]
    row = {
        "kind": kind,
        "depth": depth,
        "seeds": len(seeds),
        "runs": len(mine),
        "largest_stable_lr": {
            "per_seed": {str(s): v for s, v in largest.items()},
            "min": min(found) if len(found) == len(seeds) else None,
            "median": float(np.median(found)) if len(found) == len(seeds) else None,
            "max": max(found) if found else None,
        },
        "best_lr": best_lr,
        "best_val_loss": None if best_row is None else best_row["val_loss"],
        "init_token_correlation": mean_interval([r["init_token_correlation"] for r in at_best]),
        "final_token_correlation": mean_interval([r["final_token_correlation"] for r in at_best]),
        "tokens_per_second": float(np.median(tps)) if tps else None,
    }
    return row, {r["seed"]: r["final_val_loss"] for r in at_best}


def summarise_study(runs: Iterable[dict]) -> dict:
    """The training study's summary: per (kind, depth), per (kind, depth, lr), paired differences.

    Per (kind, depth): largest stable lr (per seed, min/median/max), best lr and its final
    validation loss with a seed interval, token correlation at init and at the end (at the best
    lr), tokens/s; per (kind, depth, lr): the rows of the loss-vs-lr figure; and the paired
    differences of the best losses against `shaped` (Open Question 3).
    """
    runs = classify(runs)
    cells: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        cells.setdefault((run["kind"], run["depth"]), []).append(run)
    rows, lr_rows = [], []
    best_by_seed: dict[tuple[str, int], dict[int, float]] = {}
    for (kind, depth), mine in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cell_lrs = _lr_rows(kind, depth, mine)
        row, best_by_seed[(kind, depth)] = _cell_row(kind, depth, mine, cell_lrs)
        lr_rows += cell_lrs
        rows.append(row)
    paired = [
        {
            "kind": kind,
            "depth": depth,
            "minus_shaped": _t_diff(losses, best_by_seed[("shaped", depth)]),
        }
        for (kind, depth), losses in best_by_seed.items()
        if kind != "shaped" and best_by_seed.get(("shaped", depth))
    ]
    return {"cells": rows, "lr_rows": lr_rows, "vs_shaped": paired, "runs": runs}


def _interval(value: dict | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    text = f"{value['mean']:.{digits}f}"
    if value.get("ci95") is not None:
        text += f" ± {value['ci95']:.{digits}f}"
    return text


def study_table(cells: list[dict]) -> str:
    """The markdown table of `summarise_study(runs)["cells"]`: one row per (depth, kind)."""
    rows = []
    for c in cells:
        lsl = c["largest_stable_lr"]
        per_seed = ", ".join("-" if v is None else f"{v:g}" for v in lsl["per_seed"].values())
        rows.append(
            [
                c["depth"],
                c["kind"],
                "-" if lsl["median"] is None else f"{lsl['median']:g}",
                per_seed,
                "-" if c["best_lr"] is None else f"{c['best_lr']:g}",
                _interval(c["best_val_loss"]),
                _interval(c["init_token_correlation"]),
                _interval(c["final_token_correlation"]),
                "-" if c["tokens_per_second"] is None else f"{c['tokens_per_second']:.0f}",
                c["seeds"],
            ]
        )
    return markdown_table(
        [
            "depth",
            "kind",
            "largest stable lr (median)",
            "per seed",
            "best lr",
            "best val loss (mean ± 95% t)",
            "token corr init",
            "token corr end",
            "tokens/s (all lanes)",
            "seeds",
        ],
        rows,
    )
