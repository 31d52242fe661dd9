"""`sdeformer compare`: finite shaped Transformers against the SDE at one width.

`sdeformer sweep-width` lives in `sweep_width.py` (re-exported here).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ._sources import (
    DEFAULTS,
    MOMENT_TABLE_MAX_TOKENS,
    _add_input_arguments,
    _check_finite_source,
    _check_max_failed_fraction,
    _check_sde_source,
    _exits_line,
    _input_covariance,
    _save_every,
    _sde_options,
    _steps_note,
)
from .common import (
    DeprecatedAlias,
    add_config_arguments,
    add_devices_argument,
    add_run_arguments,
    check_devices,
    config_from_args,
    markdown_table,
    non_negative_int,
    positive_int,
    progress,
    setup_precision,
)
from .sweep_width import _add_sweep_width as _add_sweep_width
from .sweep_width import sweep_width_command as sweep_width_command

# ------------------------------------------------------------------------------------ compare


EXPLICIT_DEFAULT_MAX = 400
"""Explicit networks when --explicit-samples is not given: --samples, but no more than this."""


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
    add_config_arguments(parser, DEFAULTS)
    group = parser.add_argument_group("experiment")
    group.add_argument("--width", type=positive_int, default=64, help="width n (default: 64)")
    group.add_argument(
        "--n", action=DeprecatedAlias, type=positive_int, dest="width", replacement="--width"
    )
    _add_input_arguments(group)
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
    group.add_argument(
        "--paths",
        action=DeprecatedAlias,
        type=positive_int,
        dest="sde_samples",
        replacement="--sde-samples",
    )
    group.add_argument(
        "--law-samples",
        action=DeprecatedAlias,
        type=positive_int,
        default=None,
        replacement="--samples (law chain) with --sde-samples (SDE)",
    )
    add_devices_argument(
        group,
        "the finite sources (law chain and explicit networks; the SDE paths and the one-step "
        "moment table run on one device)",
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
    add_run_arguments(parser, "results/compare")
    parser.set_defaults(func=compare_command)


def _sde_unit(store, config, v0, times, num_samples: int, key, args: argparse.Namespace):
    """(SDE samples, exit summary): the store's `sde` unit, solved unless it is there."""
    from .. import compare

    n = args.width
    label = "SDE" if not args.finite_width_sde else f"SDE (width {n})"
    if store.has_arrays("sde") and store.has("sde_exits"):
        saved = store.load_arrays("sde")
        sde = compare.CovarianceSamples(
            label, saved["ts"], saved["vs"], saved["alive"], saved["failed"]
        )
        return sde, store.load("sde_exits")
    sde, solution = compare.sde_source(
        config, v0, times, num_samples, key=key, label=label, **_sde_options(args, n)
    )
    exits = compare.exit_summary(solution)
    store.save_arrays("sde", {"ts": sde.ts, "vs": sde.vs, "alive": sde.alive, "failed": sde.failed})
    store.save("sde_exits", exits)
    return sde, exits


def compare_command(args: argparse.Namespace) -> int:
    """Run `sdeformer compare` with the parsed `args`; returns the exit status (0)."""
    import jax.random as jr

    from .. import compare, plot
    from ..results import ResultStore, write_json

    dtype = setup_precision(args)
    config = config_from_args(args)
    v0 = _input_covariance(args, dtype)
    m = int(v0.shape[0])
    n = args.width
    depth = compare.depth_for(args.T, n)
    methods = ["law", "explicit"] if args.method == "both" else [args.method]
    sizes = {
        "law": args.law_samples or args.samples,
        "explicit": args.explicit_samples or min(args.samples, EXPLICIT_DEFAULT_MAX),
        "sde": args.sde_samples or args.samples,
    }
    every = _save_every(depth, m, sum(sizes[k] for k in (*methods, "sde")))
    moment_samples = args.moment_samples if m <= MOMENT_TABLE_MAX_TOKENS else 0
    # Every input is checked before the output directory is created.
    check_devices(args.devices)
    _check_max_failed_fraction(args.max_failed_fraction)
    for method in methods:
        _check_finite_source(config, n, depth, v0, method)
    _check_sde_source(config, v0, depth / n, args, n)
    if moment_samples == 1:
        raise ValueError(
            "--moment-samples 1: the standard errors need at least 2 antithetic pairs; pass 0 "
            "(skip the table) or >= 2"
        )
    key = jr.key(args.seed)
    out = Path(args.out)
    settings = {
        "config": config.to_dict(),
        "width": n,
        "T": args.T,
        "v0": np.asarray(v0).tolist(),
        "method": args.method,
        "num_samples": {k: sizes[k] for k in (*methods, "sde")},
        # Finite sources draw one key per sample (sharding.sharded_covariance_paths), the same
        # for every --devices; recorded so results of the older per-call keys are not resumed.
        "finite_keys": "per-sample",
        "steps": args.steps,
        "steps_chosen_by": args.steps_choice["chosen_by"],
        "bound": args.bound,
        "finite_width_sde": args.finite_width_sde,
        "moment_samples": moment_samples,
        "seed": args.seed,
        "float64": args.float64,
    }
    # every source is saved at these layer times (those of `CovarianceSamples.from_paths`)
    layers = np.arange(depth + 1)
    times = np.unique(np.concatenate([layers[::every], layers[-1:]])) / n
    T = float(times[-1])
    compare_times = sorted({float(times[np.argmin(np.abs(times - T / 2))]), T})
    created = not out.exists()
    # One unit per source (arrays, .npz) and one for the moments table: a killed run resumes.
    store = ResultStore(out, "compare", settings, overwrite=args.overwrite)
    started = time.perf_counter()
    reused = [u for u in ("sde", *methods) if store.has_arrays(u)]
    reused += ["moments"] if moment_samples > 0 and store.has("moments") else []
    steps = len(methods) + 1 + (moment_samples > 0)
    finite = {}
    with progress(steps, "compare", args.no_progress) as bar:
        # The SDE first: too many paths outside the cone refuse the run before any finite
        # sample is drawn, and a folder this run created is removed (a refused run leaves
        # nothing, and the fix it names can be rerun in the same folder).
        try:
            sde, exits = _sde_unit(
                store, config, v0, times, sizes["sde"], jr.fold_in(key, 10), args
            )
            compare.check_failed_fraction(sde, compare_times, args.max_failed_fraction)
        except compare.DiscretisationError:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
        bar.update(1)
        for i, method in enumerate(methods):
            label = f"{method} n={n}"
            if store.has_arrays(method):
                saved = store.load_arrays(method)
                finite[method] = compare.CovarianceSamples(
                    label, saved["ts"], saved["vs"], saved["alive"]
                )
            else:
                finite[method] = compare.finite_source(
                    config,
                    n,
                    depth / n,
                    v0,
                    sizes[method],
                    key=jr.fold_in(key, i),
                    method=method,
                    bound=args.bound,
                    every=every,
                    label=label,
                    devices=args.devices,
                    progress=not args.no_progress,
                )
                src = finite[method]
                store.save_arrays(method, {"ts": src.ts, "vs": src.vs, "alive": src.alive})
            bar.update(1)
        moments = []
        if moment_samples > 0:
            if store.has("moments"):
                moments = store.load("moments")
            else:
                moments = compare.coefficient_table(
                    config, n, v0, moment_samples, key=jr.fold_in(key, 20)
                )
                store.save("moments", moments)
            bar.update(1)
    sampled = time.perf_counter()
    comparisons = {
        method: compare.compare_sources(
            src,
            sde,
            times=compare_times,
            mode=args.mode,
            seed=args.seed,
            max_pairs=args.max_pairs,
            pair_seed=args.pair_seed,
            max_failed_fraction=args.max_failed_fraction,
        )
        for method, src in finite.items()
    }
    compared = time.perf_counter()
    sources = [*finite.values(), sde]
    figures = [
        plot.save_figure(plot.rho_density_figure(sources), out / "rho_density.png"),
        plot.save_figure(plot.feature_bands_figure(sources), out / "rho_bands.png"),
    ]
    report = {
        "command": "compare",
        "settings": {**settings, "depth": depth, "T": T, "mode": args.mode},
        "seconds": compared - started,
        "seconds_sampling": sampled - started,
        "seconds_comparison": compared - sampled,
        "sde_steps": args.steps_choice,
        "reused_units": reused,
        "sde_exits": exits,
        "comparisons": {k: c.to_dict() for k, c in comparisons.items()},
        "one_step_moments": moments,
        "figures": [str(f) for f in figures],
    }
    report_path = write_json(out / "compare.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    sde_name = "the finite-width SDE" if args.finite_width_sde else "the SDE"
    print(
        f"Finite shaped Transformers (n = {n}, depth {depth}) vs {sde_name} (T = {T:.4g}, "
        f"{_steps_note(args)}):\n"
    )
    for comparison in comparisons.values():
        print(comparison.table(), "\n")
    print(_exits_line(exits) + "\n")
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
                        "undetermined" if r["drift_z"] is None else r["drift_z"],
                        r["noise_finite"],
                        r["noise_finite_se"],
                        r["noise_sde"],
                        "undetermined" if r["noise_z"] is None else r["noise_z"],
                    ]
                    for r in moments
                ],
            )
        )
    elif m > MOMENT_TABLE_MAX_TOKENS:
        print(f"(one-step moment table skipped above m = {MOMENT_TABLE_MAX_TOKENS} tokens)")
    print(
        f"\n{compared - started:.1f} s ({sampled - started:.1f} s sampling, "
        f"{compared - sampled:.1f} s comparing); results written to {report_path}"
    )
    for figure in figures:
        print(f"figure: {figure}")
    if reused:
        computed = [u for u in ("sde", *methods) if u not in reused]
        print(
            f"resumed: reused {', '.join(reused)} from the earlier run in {out}"
            + (f"; computed {', '.join(computed)}" if computed else "; computed nothing new")
        )
    return 0
