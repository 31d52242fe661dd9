"""`sdeformer compare --plan`: the samples per source a comparison needs, before it runs.

A short pilot of the cheapest source (the exact law chain at the run's width and depth; the SDE
where the blocks have no law face) gives each feature's standard deviation at the compared
times; `compare.plan_from_pilot` turns it into the samples per source that detect a gap of
`--plan-gap` in the feature's mean with probability `--plan-power` at the verdict's level
(family-wise 0.05 over the F features of one time, alpha = 0.05 / (2 F) per test). Nothing is
written to --out.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from ._compare_sources import _solve_sde
from .common import markdown_table

PLAN_ROWS = 24
"""Most features a plan's table lists (the JSON keeps every one)."""


def check_plan_arguments(args: argparse.Namespace) -> None:
    """Refuse a bad --plan-gap, --plan-power or --plan-pilot before the pilot runs."""
    if not (math.isfinite(args.plan_gap) and args.plan_gap > 0):
        raise ValueError(f"--plan-gap {args.plan_gap}: pass the gap to detect, a number > 0")
    if not 0 < args.plan_power < 1:
        raise ValueError(f"--plan-power {args.plan_power}: pass a probability in (0, 1)")
    if args.plan_pilot < 2:
        raise ValueError(f"--plan-pilot {args.plan_pilot}: the pilot needs at least 2 samples")


def _pilot(plan, times: np.ndarray, args: argparse.Namespace):
    """(pilot samples, what they are): the law chain, or the SDE where there is no law face."""
    import jax.random as jr

    from .. import compare
    from ..blocks import MissingFaceError
    from ._compare_sources import _check_finite_source

    key = jr.fold_in(jr.key(args.seed), 30)
    n = args.width
    try:
        _check_finite_source(plan.config, n, plan.depth, plan.v0, "law")
    except MissingFaceError:
        sde, _ = _solve_sde(plan.config, plan.v0, times, args.plan_pilot, key, args, n, "SDE")
        return sde, f"{args.plan_pilot} SDE paths"
    src = compare.finite_source(
        plan.config,
        plan.v0,
        width=n,
        depth=plan.depth,
        num_samples=args.plan_pilot,
        key=key,
        method="law",
        bound=args.bound,
        every=plan.every,
        label="pilot",
    )
    return src, f"{args.plan_pilot} law-chain samples at n = {n}"


def plan_report(plan, times: np.ndarray, compare_times, args: argparse.Namespace) -> dict:
    """The plan of a run: one row per (time, feature), with the power at the asked sizes."""
    from .. import compare
    from ..compare.features import initial_trace

    pilot, what = _pilot(plan, times, args)
    trace0 = initial_trace(pilot.ts, pilot.vs)
    if plan.feature_names is not None:
        fs = compare.FeatureSet.from_names(plan.feature_names, plan.m, trace0=trace0)
    else:
        fs = compare.FeatureSet.default(
            plan.m, max_pairs=args.max_pairs, seed=args.pair_seed, trace0=trace0
        )
    sde_size = plan.sizes["sde"]
    rows = []
    for t in compare_times:
        i = pilot.index_of(t)
        x = fs.values(pilot.vs[pilot.usable(i, args.mode), i])
        for p in compare.plan_from_pilot(
            x, fs.names, args.plan_gap, power=args.plan_power, num_features=len(fs.names)
        ):
            power_now = {
                method: compare.detection_power(
                    p.gap, p.sd_a, p.sd_b, plan.sizes[method], sde_size, p.alpha
                )
                for method in plan.methods
            }
            rows.append({"time": float(t), **p.to_dict(), "power_at_asked_sizes": power_now})
    return {
        "command": "compare --plan",
        "pilot": what,
        "gap": args.plan_gap,
        "power": args.plan_power,
        "features_per_time": len(fs.names),
        "alpha": rows[0]["alpha"],
        "asked_sizes": {k: plan.sizes[k] for k in (*plan.methods, "sde")},
        "samples_needed": max(r["samples"] for r in rows),
        "rows": rows,
    }


def print_plan(report: dict) -> None:
    """The plan's table and what it assumes."""
    sizes = report["asked_sizes"]
    methods = [k for k in sizes if k != "sde"]
    headers = ["t", "feature", "gap", "sd", "N per source"]
    headers += [f"power now ({m} {sizes[m]} vs SDE {sizes['sde']})" for m in methods]
    shown = report["rows"][: 2 * PLAN_ROWS]
    body = [
        [r["time"], r["feature"], r["gap"], r["sd_a"], r["samples"]]
        + [r["power_at_asked_sizes"][m] for m in methods]
        for r in shown
    ]
    print(
        f"Samples per source to detect a gap of {report['gap']:g} in a feature's mean with "
        f"power {report['power']:g}, at the verdict's level (family-wise 0.05 over "
        f"{report['features_per_time']} features per time: alpha = {report['alpha']:.3g} per "
        f"test); sd from a pilot of {report['pilot']}:\n"
    )
    print(markdown_table(headers, body))
    if len(shown) < len(report["rows"]):
        print(f"(showing {len(shown)} of {len(report['rows'])} rows; --json lists every one)")
    print(
        f"\nN = ceil((z_(1 - alpha/2) + z_power)^2 2 sd^2 / gap^2) (two-sample normal "
        "approximation; the pilot sets sd, and so N, to within about sqrt(2 / pilot) relative "
        f"error). Largest N: {report['samples_needed']} per source (pass it as --samples; "
        "--explicit-samples and --sde-samples where they should differ). Nothing was written."
    )
