"""`sdeformer design forecast | map | tune`: the token covariance at initialisation.

forecast: its law at (d, n, m), summarised; map: p_collapse, p_blowup and the median mean_rho
over a grid of two parameters; tune: parameters for a target statistic, certified by the law
chain (the map and tune bodies are in _design_tools).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._design_tools import map_command, print_report, tune_command, write_report
from .common import add_config_arguments, config_from_args, csv_list, positive_int, setup_precision

ACTIONS = ("forecast", "map", "tune")
"""What `sdeformer design` can do."""

METHOD_CHOICES = ("law", "explicit", "sde", "finite-width-sde", "auto")


def _add_design(sub) -> None:
    parser = sub.add_parser(
        "design",
        help="design at initialisation: forecast the token covariance of a network (d, n, m)",
        description=(
            "`sdeformer design forecast`: sample the token covariance V_d of freshly initialised "
            "networks of width --width and depth --depth (by the exact law chain, explicit "
            "networks, the limit SDE at T = d/n or the finite-width SDE) and report the "
            "quantiles q05, q50, q95 of mean_rho, min_eig_rho and log_mean_var with "
            "distribution-free 95%% intervals, and P(collapse) and P(blow-up) with "
            "Clopper-Pearson 95%% intervals (docs/design.md). Writes <out>/forecast.json."
        ),
    )
    parser.add_argument(
        "action",
        choices=ACTIONS,
        help="forecast; map (a phase map over --x and --y); tune (--tune to a --target)",
    )
    add_config_arguments(parser)
    _add_forecast_arguments(parser.add_argument_group("forecast"))
    _add_tool_arguments(parser.add_argument_group("map and tune"))
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    run.add_argument(
        "--out",
        default="results/design",
        help="output directory of forecast.json, map.json and map.png, tune.json "
        "(default: results/design)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="map: discard the finished rows in --out instead of resuming from them",
    )
    run.add_argument(
        "--accept-changed",
        action="store_true",
        help="map: resume rows in --out written by another sdeformer version (recorded in the "
        "manifest) instead of refusing them",
    )
    run.add_argument(
        "--json", action="store_true", help="print the JSON report to stdout instead of a table"
    )
    run.add_argument(
        "--float64", action="store_true", help="compute in float64 (enables jax_enable_x64)"
    )
    # a map keeps its finished rows in --out and resumes (design_command sets resumes); a
    # forecast or a tune (within a minute at CPU sizes) writes its result once and starts again
    parser.set_defaults(func=design_command, resumes=False)


def _add_forecast_arguments(group) -> None:
    """The sampler, the network's size, its input and the events of a forecast."""
    group.add_argument(
        "--method",
        choices=METHOD_CHOICES,
        default=None,
        help="sampler: law (exact at finite width), explicit (networks), sde (limit SDE), "
        "finite-width-sde, or auto (the fastest whose calibrated error is below the Monte Carlo "
        "error; it says which it chose) (default: law; map: sde or law, default sde)",
    )
    group.add_argument("--width", type=positive_int, default=64, help="width n (default: 64)")
    group.add_argument("--depth", type=positive_int, default=64, help="depth d (default: 64)")
    group.add_argument(
        "--tokens", type=positive_int, default=None, help="tokens m (default: 4; not with --v0)"
    )
    group.add_argument(
        "--rho0",
        type=float,
        default=None,
        help="input correlation of every token pair (default: 0.3; not with --v0)",
    )
    group.add_argument(
        "--v0", default=None, metavar="FILE.npy", help="input covariance (m x m) from a .npy file"
    )
    group.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        help="networks or paths (default: 1000; map: per cell, tune: per search step, 256)",
    )
    group.add_argument(
        "--collapse-threshold",
        type=float,
        default=0.9,
        help="near-collapse is mean_rho >= this (default: 0.9)",
    )
    group.add_argument(
        "--bound",
        type=float,
        default=1e3,
        help="blow-up: a path stops where some |V_ab| exceeds this (default: 1000)",
    )
    group.add_argument(
        "--at-depths",
        default="",
        help="comma-separated further depths 1..d to report (default: none, d only)",
    )


def _add_tool_arguments(tools) -> None:
    """The grid of `design map` and the search of `design tune`."""
    tools.add_argument("--x", default=None, help="map: NAME:LO:HI:COUNT, e.g. tau0:0.5:3:32")
    tools.add_argument("--y", default=None, help="map: NAME:LO:HI:COUNT, e.g. gamma:0.2:0.9:32")
    tools.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="map: rows computed at once (default: the CPU cores on a CPU, else 1)",
    )
    tools.add_argument("--tune", default=None, help="tune: one or two parameters, e.g. tau0,gamma")
    tools.add_argument(
        "--target",
        default=None,
        help="tune: STATISTIC=VALUE, STATISTIC mean_rho:q50, mean_rho:mean or p_collapse",
    )
    tools.add_argument(
        "--range", default="", help="tune: search ranges NAME:LO:HI,... (default: built in)"
    )
    tools.add_argument(
        "--certify-samples",
        type=positive_int,
        default=1000,
        help="tune: fresh law-chain samples of the certificate (default: 1000)",
    )


def _input_covariance(args: argparse.Namespace, dtype):
    """The input covariance from --v0 FILE.npy, or equicorrelated from --tokens and --rho0."""
    import numpy as np

    from ..config import check_covariance
    from ..rank_collapse import equicorrelated

    if args.v0 is not None:
        if args.tokens is not None or args.rho0 is not None:
            raise ValueError(f"--v0 {args.v0} gives the input covariance; drop --tokens and --rho0")
        path = Path(args.v0)
        if path.suffix != ".npy" or not path.is_file():
            raise ValueError(
                f"--v0 {args.v0}: no such .npy file; pass an m x m array saved with numpy.save"
            )
        try:
            v0 = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"--v0 {args.v0}: cannot read it ({err})") from None
        try:
            return check_covariance(v0).astype(dtype)
        except ValueError as err:
            raise ValueError(f"--v0 {args.v0}: {err}") from None
    tokens = 4 if args.tokens is None else args.tokens
    if tokens < 2:
        raise ValueError(f"--tokens {tokens}: need at least 2 tokens")
    rho0 = 0.3 if args.rho0 is None else args.rho0
    try:
        return equicorrelated(tokens, rho0, dtype)
    except ValueError as err:
        raise ValueError(f"--rho0 {rho0}: {err}") from None


def _at_depths(text: str, depth: int) -> list[int]:
    out = []
    for item in csv_list(text):
        try:
            value = int(item)
        except ValueError:
            value = None
        if value is None or not 1 <= value <= depth:
            raise ValueError(f"--at-depths: {item!r} is not a depth in 1..{depth} (--depth)")
        out.append(value)
    return out


def design_command(args: argparse.Namespace) -> int:
    """Run `sdeformer design <action>` with the parsed `args`; returns the exit status (0)."""
    import jax.random as jr

    from ..design import forecast

    args.resumes = args.action == "map"  # main's message after an interruption
    dtype = setup_precision(args)
    config = config_from_args(args)
    v0 = _input_covariance(args, dtype)
    if args.action in ("map", "tune"):
        if args.samples is None:
            args.samples = 256
        if args.action == "map":
            args.map_method = "sde" if args.method is None else args.method
            return map_command(args, config, v0, dtype, _flag_names)
        if args.method not in (None, "sde"):
            raise ValueError(f"--method {args.method}: design tune searches on the SDE; drop it")
        return tune_command(args, config, v0, dtype, _flag_names)
    if args.method is None:
        args.method = "law"
    if args.samples is None:
        args.samples = 1000
    at_depths = _at_depths(args.at_depths, args.depth)
    try:  # every input is checked (and sampled) before anything is written
        result = forecast(
            config,
            v0,
            width=args.width,
            depth=args.depth,
            num_samples=args.samples,
            key=jr.key(args.seed),
            method=args.method,
            collapse_threshold=args.collapse_threshold,
            bound=args.bound,
            at_depths=at_depths,
            dtype=dtype,
        )
    except ValueError as err:
        raise ValueError(_flag_names(str(err))) from None
    report, path = write_report(args, "forecast", result)
    return print_report(args, report, result, str(path))


_FLAGS = {
    "method": "--method",
    "width": "--width",
    "depth": "--depth",
    "collapse_threshold": "--collapse-threshold",
    "bound": "--bound",
    "num_samples": "--samples",
    "certify_samples": "--certify-samples",
}


def _flag_names(message: str) -> str:
    """A library message with the command line's names: `width=3` reads `--width 3`."""
    import re

    names = "|".join(_FLAGS)
    return re.sub(
        rf"(?<![\w.-])({names})='?([\w.+-]+)'?",
        lambda m: f"{_FLAGS[m.group(1)]} {m.group(2)}",
        message,
    )
