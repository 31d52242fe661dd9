"""The work of `sdeformer sweep-width`: the checked plan, one result unit per width, the fits.

`plan_sweep` checks every input before the output folder exists; `run_sweep` computes (or
reuses) the row of each width, fits distance ~ n^slope and writes sweep_width.json and the
figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from ._compare_sources import (
    FINITE_KEYS,
    _check_finite_source,
    _check_run_inputs,
    _check_sde_source,
    _input_covariance,
    _solve_sde,
)
from .common import config_from_args, csv_list, progress


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """What one `sweep-width` run computes, checked before any file is written."""

    config: object
    v0: object
    feature: str
    widths: list[int]
    depths: dict[int, int]
    times: dict[int, float]
    sde_size: int
    design: str
    settings: dict


def _widths(text: str, m: int) -> list[int]:
    """The sorted distinct widths of `--widths`: at least two, each >= m."""
    try:
        widths = sorted({int(w) for w in csv_list(text)})
    except ValueError as err:
        raise ValueError(f"--widths {text!r}: pass integers separated by commas") from err
    if len(widths) < 2 or widths[0] < m:
        raise ValueError(
            f"--widths {text!r}: need at least two widths, each >= the number of tokens m = {m}"
        )
    return widths


def plan_sweep(args: argparse.Namespace, dtype) -> SweepPlan:
    """The checked plan of a sweep (`ValueError` naming the fix before the folder is created)."""
    from .. import compare

    config = config_from_args(args)
    v0 = _input_covariance(args, dtype)
    m = int(v0.shape[0])
    feature = compare.canonical_name(args.feature, m)
    widths = _widths(args.widths, m)
    depths = {n: compare.depth_for(args.T, n) for n in widths}
    times = {n: depths[n] / n for n in widths}
    # Every input is checked before the output directory is created.
    _check_run_inputs(args)
    # the steps follow the step rule at the longest time (one number for every width)
    _check_sde_source(config, v0, max(times.values()), args, widths[0])
    for n in widths:
        _check_finite_source(config, n, depths[n], v0, args.method)
        if args.finite_width_sde:
            _check_sde_source(config, v0, times[n], args, n)
    design = (
        "finite-width SDE per width"
        if args.finite_width_sde
        else ("shared" if args.shared_sde else "independent per width")
    )
    sde_size = args.sde_samples or args.samples
    settings = {
        "config": config.to_dict(),
        "widths": widths,
        "T": args.T,
        "v0": np.asarray(v0).tolist(),
        "method": args.method,
        "num_samples": args.samples,
        "sde_num_samples": sde_size,
        "finite_keys": FINITE_KEYS,
        "sde_design": design,
        "finite_width_sde": args.finite_width_sde,
        "steps": args.steps,
        "steps_chosen_by": args.steps_choice["chosen_by"],
        "bound": args.bound,
        "feature": feature,
        "seed": args.seed,
        "float64": args.float64,
    }
    return SweepPlan(config, v0, feature, widths, depths, times, sde_size, design, settings)


class _SweepSde:
    """The SDE samples of each width, solved on first use; `exits` by width (or "all")."""

    def __init__(self, plan: SweepPlan, key, args: argparse.Namespace):
        self.plan, self.key, self.args = plan, key, args
        self.all = None
        self.exits: dict = {}

    def for_width(self, i: int, n: int):
        """The SDE sample of width n (index i) and its block id (same id: same paths)."""
        import jax.random as jr

        plan, args = self.plan, self.args
        if args.finite_width_sde:
            key = jr.fold_in(self.key, 1000 + n)
            sde, self.exits[n] = _solve_sde(
                plan.config, plan.v0, [plan.times[n]], plan.sde_size, key, args, n
            )
            return sde, i
        if self.all is None:
            count = plan.sde_size if args.shared_sde else plan.sde_size * len(plan.widths)
            times = sorted(set(plan.times.values()))
            key = jr.fold_in(self.key, 0)
            self.all, self.exits["all"] = _solve_sde(
                plan.config, plan.v0, times, count, key, args, n
            )
        if args.shared_sde:
            return self.all, 0
        return self.all.subset(slice(i * plan.sde_size, (i + 1) * plan.sde_size)), i


def _width_row(plan: SweepPlan, i: int, n: int, sde_samples: _SweepSde, key, args) -> dict:
    """The row of width n: the SDE checked for failed paths, then the finite samples compared."""
    import jax.random as jr

    from .. import compare

    sde, block = sde_samples.for_width(i, n)
    failed = float(sde.failed_fraction[sde.index_of(plan.times[n])])
    if failed > args.max_failed_fraction:
        raise compare.DiscretisationError(
            f"width {n}: {failed:.2%} of the SDE paths left the PSD cone, above "
            f"--max-failed-fraction {args.max_failed_fraction}; increase --steps or use "
            "--solver exponential"
        )
    finite = compare.finite_source(
        plan.config,
        plan.v0,
        width=n,
        T=plan.times[n],
        num_samples=args.samples,
        key=jr.fold_in(key, n),
        method=args.method,
        bound=args.bound,
        every=plan.depths[n],
        devices=args.devices,
        progress=not args.no_progress,
    )
    row = compare.width_distances(
        finite, sde, time=plan.times[n], feature=plan.feature, seed=args.seed
    )
    return {
        "n": n,
        "depth": plan.depths[n],
        **compare.public_row(row),
        "sde_failed_fraction": failed,
        "_sde_block": block,
        "_sde_deviations": row["_sde_deviations"],
    }


def _width_rows(store, plan: SweepPlan, args: argparse.Namespace) -> tuple[dict, dict]:
    """(row by width, SDE exits): each width's unit, computed unless the store has it."""
    import jax.random as jr

    key = jr.key(args.seed)
    sde_samples = _SweepSde(plan, key, args)
    rows = {}
    with progress(len(plan.widths), "sweep-width", args.no_progress, "widths") as bar:
        for i, n in enumerate(plan.widths):
            unit = f"n={n}"
            if store.has(unit) and (not args.shared_sde or store.has_arrays(unit)):
                rows[n] = store.load(unit)
                if args.shared_sde:
                    rows[n]["_sde_deviations"] = store.load_arrays(unit)
                bar.update(1)
                continue
            rows[n] = _width_row(plan, i, n, sde_samples, key, args)
            deviations = rows[n].pop("_sde_deviations")
            store.save(unit, rows[n])
            if args.shared_sde:
                store.save_arrays(unit, deviations)
                rows[n]["_sde_deviations"] = deviations
            bar.update(1)
    return rows, sde_samples.exits


def run_sweep(plan: SweepPlan, args: argparse.Namespace) -> tuple[dict, list, dict, Path]:
    """Compute (or reuse) every width's row, fit the rates, write the figure and the JSON.

    Returns (report, rows in width order, fits by distance, path of sweep_width.json).
    """
    from .. import compare, plot
    from ..results import ResultStore, write_json

    out = Path(args.out)
    store = ResultStore(out, "sweep-width", plan.settings, overwrite=args.overwrite)
    started = time.perf_counter()
    rows, exits = _width_rows(store, plan, args)
    ordered = [rows[n] for n in plan.widths]
    fits = compare.fit_width_sweep(plan.widths, ordered)
    elapsed = time.perf_counter() - started
    figure = plot.save_figure(
        plot.distance_vs_width_figure(
            plan.widths,
            {
                name: (
                    [r[name] for r in ordered],
                    [r[f"{name}_se"] for r in ordered],
                    [r[f"{name}_noise"] for r in ordered],
                )
                for name in compare.DISTANCES
            },
            {k: (v if v.determined else None) for k, v in fits.items()},
        ),
        out / "distance_vs_width.png",
    )
    report = {
        "command": "sweep-width",
        "settings": plan.settings,
        "seconds": elapsed,
        "sde_steps": args.steps_choice,
        "sde_exits": {str(k): v for k, v in exits.items()},
        "resumed": store.resumed_text(),
        "rows": [compare.public_row(r) for r in ordered],
        "fits": {k: v.to_dict() for k, v in fits.items()},
        "expected_slopes": (
            "about -1/2 for MLP blocks with c_plus + c_minus != 0 against the limit SDE; about -1 "
            "otherwise and against the finite-width SDE (docs/theory.md)"
        ),
        "figure": str(figure),
    }
    return report, ordered, fits, write_json(out / "sweep_width.json", report)
