"""`sdeformer sweep-width`: the distance between finite laws and the SDE as the width grows."""

from __future__ import annotations

import argparse
import json

from ._compare_sources import _add_input_arguments, _steps_note
from ._sweep_run import plan_sweep, run_sweep
from .common import (
    add_config_arguments,
    add_devices_argument,
    add_run_arguments,
    markdown_table,
    positive_int,
    setup_precision,
)

# -------------------------------------------------------------------------------- sweep-width


def _add_sweep_width(sub) -> None:
    parser = sub.add_parser(
        "sweep-width",
        help="distance between finite laws and the SDE as the width grows, with a fitted rate",
        description=(
            "For each width n (depth round(T n)), samples the finite network's covariance at "
            "t = T (exact law chain by default) and compares the law of one feature with the "
            "SDE's: KS, Wasserstein-1 and |difference of means|, each with a bootstrap standard "
            "error and its noise level. Fits distance ~ n^slope on the widths whose distance is "
            "above noise. One result unit per width: an interrupted sweep resumes."
        ),
    )
    add_config_arguments(parser)
    group = parser.add_argument_group("experiment")
    group.add_argument(
        "--widths",
        default="2,3,4,6,8,12,16,32",
        help="comma-separated widths (default: 2,3,4,6,8,12,16,32)",
    )
    group.add_argument(
        "--T",
        type=float,
        default=1.0,
        help="depth-to-width ratio T = d / n, the same at every width (depth round(T n)) "
        "(default: 1.0)",
    )
    _add_input_arguments(group)
    group.add_argument(
        "--method",
        choices=("law", "explicit"),
        default="law",
        help="finite source (default: the exact law chain)",
    )
    group.add_argument(
        "--samples",
        type=positive_int,
        default=20000,
        help="finite samples per width, and SDE samples per width unless --sde-samples is given "
        "(default: 20000)",
    )
    group.add_argument(
        "--sde-samples",
        type=positive_int,
        default=None,
        help="SDE paths per width (with --shared-sde: in all) (default: --samples)",
    )
    add_devices_argument(
        group, "the finite samples of each width (the SDE paths run on one device)"
    )
    group.add_argument(
        "--shared-sde",
        action="store_true",
        help="one SDE sample for every width (cheaper; the fit then models the correlation, "
        "see docs) instead of independent SDE samples per width",
    )
    group.add_argument(
        "--feature",
        default="rho_0_1",
        help="feature compared: rho_a_b, logvar_a, mean_rho, min_eig_rho, stable_rank_rho or "
        "logvar_spread (default: rho_0_1)",
    )
    add_run_arguments(parser, "results/sweep_width")
    parser.set_defaults(func=sweep_width_command)


def sweep_width_command(args: argparse.Namespace) -> int:
    """Run `sdeformer sweep-width` with the parsed `args`; returns the exit status (0)."""
    dtype = setup_precision(args)
    plan = plan_sweep(args, dtype)
    report, ordered, fits, report_path = run_sweep(plan, args)
    if args.json:
        print(json.dumps(report))
        return 0
    _print_sweep(plan, ordered, fits, report, report_path, args)
    return 0


def _print_sweep(plan, ordered: list, fits: dict, report: dict, report_path, args) -> None:
    """The table of distances by width, the fitted rates, the time and the files."""
    feature, design = plan.feature, plan.design
    elapsed, figure = report["seconds"], report["figure"]
    print(
        f"Distance between the law of {feature} at t = T and the SDE's ({design}, "
        f"{_steps_note(args)}), by width:\n"
    )
    print(
        markdown_table(
            ["n", "depth", "energy", "+-se", "mean diff", "+-se", "KS", "KS noise", "W1", "noise"],
            [
                [
                    r["n"],
                    r["depth"],
                    r["energy"],
                    r["energy_se"],
                    r["mean_diff"],
                    r["mean_se"],
                    r["ks"],
                    r["ks_noise"],
                    r["w1"],
                    r["w1_noise"],
                ]
                for r in ordered
            ],
        )
    )
    print()
    for name, fit in fits.items():
        print(f"{name}: distance ~ {fit.describe()}")
    print(
        "expected: about n^-1/2 with MLP blocks and c_plus + c_minus != 0 against the limit SDE, "
        "about n^-1 otherwise (docs/theory.md)"
    )
    print(f"\n{elapsed:.1f} s; results written to {report_path}\nfigure: {figure}")
    if report["resumed"]:
        print(report["resumed"])
