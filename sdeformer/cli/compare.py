"""`sdeformer compare`: finite shaped Transformers against the SDE at one width.

`sdeformer sweep-width` lives in `sweep_width.py` (re-exported here); the work of `compare` is in
`_compare_run.py`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._compare_plan import check_plan_arguments, plan_report, print_plan
from ._compare_run import EXPLICIT_DEFAULT_MAX as EXPLICIT_DEFAULT_MAX
from ._compare_run import compare_grid, plan_compare, run_compare
from ._compare_sources import (
    MOMENT_TABLE_MAX_TOKENS,
    _add_input_arguments,
    _exits_line,
    _steps_note,
)
from .common import (
    add_config_arguments,
    add_depth_arguments,
    add_devices_argument,
    add_run_arguments,
    markdown_table,
    non_negative_int,
    positive_int,
    setup_precision,
)
from .sweep_width import _add_sweep_width as _add_sweep_width
from .sweep_width import sweep_width_command as sweep_width_command

# ------------------------------------------------------------------------------------ compare


def _add_compare(sub) -> None:
    parser = sub.add_parser(
        "compare",
        help="finite shaped Transformers vs the covariance SDE at one width (the main job)",
        description=(
            "Samples the covariance paths of finite shaped Transformers at width n and depth "
            "T n (explicit networks and/or the exact law chain) and the paths of the limiting "
            "SDE, then compares the laws of the token correlations rho_ab and log variances at "
            "t = T/2 and T: means and standard deviations with standard errors, KS and "
            "Wasserstein-1 distances with their noise levels, and the fraction of paths stopped "
            "at the bound. Also sets the one-step drift and noise of finite networks at V0 beside "
            "the SDE coefficients. Writes compare.json and PNG figures."
        ),
    )
    add_config_arguments(parser)
    group = parser.add_argument_group("experiment")
    group.add_argument("--width", type=positive_int, default=64, help="width n (default: 64)")
    add_depth_arguments(group, default=("T", 1.0))
    _add_input_arguments(group)
    _add_sample_arguments(group)
    _add_comparison_arguments(group)
    _add_plan_arguments(parser.add_argument_group("sample-size planning"))
    add_run_arguments(parser, "results/compare")
    parser.set_defaults(func=compare_command)


def _add_sample_arguments(group) -> None:
    """The finite sources, how many samples of each, and the devices of the finite ones."""
    group.add_argument(
        "--method",
        choices=("both", "law", "explicit"),
        default="both",
        help="finite sources: the exact law chain, explicit networks, or both (default: both)",
    )
    group.add_argument(
        "--samples",
        type=positive_int,
        default=8000,
        help="samples of the law chain, and of the SDE unless --sde-samples is given "
        "(default: 8000)",
    )
    group.add_argument(
        "--explicit-samples",
        type=positive_int,
        default=None,
        help=f"explicit networks (default: --samples, at most {EXPLICIT_DEFAULT_MAX}; each "
        "costs O(n^2) normal draws per layer)",
    )
    group.add_argument(
        "--sde-samples",
        type=positive_int,
        default=None,
        help="SDE paths (default: --samples)",
    )
    add_devices_argument(
        group,
        "the finite sources (law chain and explicit networks; the SDE paths and the one-step "
        "moment table run on one device)",
    )


def _add_plan_arguments(group) -> None:
    """`--plan` and its gap, power and pilot size."""
    group.add_argument(
        "--plan",
        action="store_true",
        help="print the samples per source needed to detect a gap of --plan-gap in each "
        "feature's mean at power --plan-power and the verdict's level (sd from a pilot of the "
        "law chain), then stop: nothing is sampled beyond the pilot or written",
    )
    group.add_argument(
        "--plan-gap",
        type=float,
        default=0.02,
        help="the gap in a feature's mean to detect, in the feature's units (default: 0.02)",
    )
    group.add_argument(
        "--plan-power",
        type=float,
        default=0.8,
        help="probability of detecting the gap (default: 0.8)",
    )
    group.add_argument(
        "--plan-pilot",
        type=positive_int,
        default=300,
        help="pilot samples of the law chain that set each feature's sd (default: 300)",
    )


def _add_comparison_arguments(group) -> None:
    """How the laws are compared, and the one-step moment table."""
    group.add_argument(
        "--features",
        default=None,
        help="comma-separated features to compare and plot, e.g. mean_rho,min_eig_rho,"
        "log_mean_var,rho_0_1 (names: rho_a_b, logvar_a, mean_rho, min_eig_rho, log_mean_var, "
        "stable_rank_rho, logvar_spread; the design forecast's features are the same); "
        "default: every pair up to --max-pairs, every logvar_a and, from m = 3 on, the "
        "summaries (the figures show mean_rho, min_eig_rho, log_mean_var and rho_0_1)",
    )
    group.add_argument(
        "--mode",
        choices=("survival", "stopped"),
        default="survival",
        help="compare laws conditional on survival to t, or of the stopped processes",
    )
    group.add_argument(
        "--max-pairs",
        type=positive_int,
        default=2048,
        help="compare every token pair up to this many, else a random subset of this size "
        "drawn with --pair-seed (recorded in compare.json) (default: 2048, every pair up to "
        "m = 64)",
    )
    group.add_argument(
        "--pair-seed", type=int, default=0, help="seed of the random pair subset (default: 0)"
    )
    group.add_argument(
        "--moment-samples",
        type=non_negative_int,
        default=1000,
        help="antithetic pairs for the one-step drift/noise table at V0 (0 skips it; skipped "
        f"above m = {MOMENT_TABLE_MAX_TOKENS}, where the dense noise tensor is too large)",
    )


def compare_command(args: argparse.Namespace) -> int:
    """Run `sdeformer compare` with the parsed `args`; returns the exit status (0)."""
    dtype = setup_precision(args)
    if args.plan:
        check_plan_arguments(args)
    plan = plan_compare(args, dtype)
    if args.plan:  # a plan writes nothing: not even --out
        times, compare_times = compare_grid(plan, args.width)
        report = plan_report(plan, times, compare_times, args)
        if args.json:
            print(json.dumps(report))
        else:
            print_plan(report)
        return 0
    report, comparisons, report_path = run_compare(plan, args)
    if args.json:
        print(json.dumps(report))
        return 0
    _print_report(report, comparisons, report_path, plan.units, args)
    return 0


def _print_report(report: dict, comparisons: dict, report_path, units, args) -> None:
    """The tables, the exits, the moment table, the times and files, and what was reused."""
    settings = report["settings"]
    n, depth, T = settings["width"], settings["depth"], settings["T"]
    sde_name = "the finite-width SDE" if args.finite_width_sde else "the SDE"
    print(
        f"Finite shaped Transformers (n = {n}, depth {depth}) vs {sde_name} (T = {T:.4g}, "
        f"{_steps_note(args)}):\n"
    )
    for comparison in comparisons.values():
        print(comparison.table(), "\n")
    print(_exits_line(report["sde_exits"]) + "\n")
    _print_moments(report["one_step_moments"], n, settings["moment_samples"], len(settings["v0"]))
    seconds, sampling = report["seconds"], report["seconds_sampling"]
    print(
        f"\n{seconds:.1f} s ({sampling:.1f} s sampling, "
        f"{report['seconds_comparison']:.1f} s comparing); results written to {report_path}"
    )
    for figure in report["figures"]:
        print(f"figure: {figure}")
    reused = report["reused_units"]
    if reused:
        computed = [u for u in units if u not in reused]
        print(
            f"resumed: reused {', '.join(reused)} from the earlier run in {Path(args.out)}"
            + (f"; computed {', '.join(computed)}" if computed else "; computed nothing new")
        )


def _z_text(z):
    return "undetermined" if z is None else z


def _print_moments(moments: list, n: int, moment_samples: int, m: int) -> None:
    """The one-step moment table at V0, or why it was skipped."""
    if moments:
        print(f"One-step moments at V0, width {n} ({moment_samples} antithetic pairs):")
        print(
            markdown_table(
                ["entry", "n E[dV]", "+-se", "SDE drift", "z", "n Var[dV]", "+-se", "SDE", "z"],
                [
                    [
                        r["entry"],
                        r["drift_finite"],
                        r["drift_finite_se"],
                        r["drift_sde"],
                        _z_text(r["drift_z"]),
                        r["noise_finite"],
                        r["noise_finite_se"],
                        r["noise_sde"],
                        _z_text(r["noise_z"]),
                    ]
                    for r in moments
                ],
            )
        )
    elif m > MOMENT_TABLE_MAX_TOKENS:
        print(f"(one-step moment table skipped above m = {MOMENT_TABLE_MAX_TOKENS} tokens)")
