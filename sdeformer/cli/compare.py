"""`sdeformer compare` and `sdeformer sweep-width`: finite shaped Transformers against the SDE."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..config import ShapedConfig
from .common import (
    add_config_arguments,
    add_run_arguments,
    config_from_args,
    csv_list,
    markdown_table,
    positive_int,
    progress,
    setup_precision,
)

DEFAULTS = ShapedConfig(tau0=1.0, gamma=0.4, c_minus=-1.0)
"""The setting checked in docs/theory.md (m = 2, rho0 = 0.3, T = 1)."""

MOMENT_TABLE_MAX_TOKENS = 8
"""The one-step moment table needs the dense noise tensor (m^4 entries): small m only."""


def _add_input_arguments(group) -> None:
    group.add_argument("--tokens", type=positive_int, default=2, help="tokens m (default: 2)")
    group.add_argument(
        "--rho0", type=float, default=0.3, help="input correlation of every pair (default: 0.3)"
    )
    group.add_argument(
        "--v0",
        default=None,
        help="input covariance as rows separated by ';' (e.g. '1,0.3;0.3,1'); overrides "
        "--tokens and --rho0",
    )
    group.add_argument(
        "--T", type=float, default=1.0, help="depth-to-width ratio T = d / n (default: 1.0)"
    )
    group.add_argument(
        "--steps",
        type=positive_int,
        default=1000,
        help="SDE Euler steps over [0, T] (default: 1000)",
    )
    group.add_argument(
        "--bound",
        type=float,
        default=1e3,
        help="stop paths (SDE and finite) where some |V_ab| exceeds this, checked at the layer "
        "times of the finite network (default: 1000)",
    )
    group.add_argument(
        "--finite-width-sde",
        action="store_true",
        help="compare with the finite-width SDE at the network's width (exact finite-width "
        "drifts, docs/theory.md) instead of the limit SDE",
    )
    group.add_argument(
        "--max-failed-fraction",
        type=float,
        default=0.01,
        help="refuse a comparison where more than this fraction of SDE paths left the PSD cone "
        "(discretisation failures of the Euler scheme; more --steps fix them) (default: 0.01)",
    )


def _input_covariance(args: argparse.Namespace, dtype):
    import jax.numpy as jnp

    from ..model import check_covariance
    from ..rank_collapse import equicorrelated

    if not args.bound > 0:  # also refuses NaN
        raise ValueError(f"--bound {args.bound}: pass a bound > 0 (inf for none)")
    if args.v0 is not None:
        try:
            rows = [[float(x) for x in row.split(",")] for row in args.v0.split(";")]
            matrix = np.array(rows, dtype=np.float64)
        except ValueError as err:
            raise ValueError(
                f"--v0 {args.v0!r} is not a matrix; write rows separated by ';' and entries by ','"
            ) from err
        return jnp.asarray(check_covariance(matrix, name="--v0"), dtype)
    if args.tokens < 2:
        raise ValueError(f"--tokens {args.tokens}: need at least 2 tokens")
    return equicorrelated(args.tokens, args.rho0, dtype)


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
    add_config_arguments(parser, DEFAULTS)
    group = parser.add_argument_group("experiment")
    group.add_argument("--width", type=positive_int, default=64, help="width n (default: 64)")
    group.add_argument("--n", type=positive_int, dest="width", help=argparse.SUPPRESS)
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
        help="samples of the law chain and of the SDE (default: 8000)",
    )
    group.add_argument(
        "--explicit-samples",
        type=positive_int,
        default=400,
        help="explicit networks (default: 400; each costs O(n^2) normal draws per layer)",
    )
    group.add_argument("--law-samples", type=positive_int, default=None, help=argparse.SUPPRESS)
    group.add_argument("--paths", type=positive_int, default=None, help=argparse.SUPPRESS)
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
        type=int,
        default=1000,
        help="antithetic pairs for the one-step drift/noise table at V0 (0 skips it; skipped "
        f"above m = {MOMENT_TABLE_MAX_TOKENS}, where the dense noise tensor is too large)",
    )
    add_run_arguments(parser, "results/compare")
    parser.set_defaults(func=compare_command)


def _sde_options(args: argparse.Namespace, width: int) -> dict:
    """Keywords of `compare.sde_source` chosen by the flags shared by both commands."""
    return {
        "num_steps": args.steps,
        "bound": args.bound,
        "width": width if args.finite_width_sde else None,
        "progress": not args.no_progress,
    }


def _exits_line(exits: dict) -> str:
    return (
        f"SDE paths: {exits['paths']}, survived {exits['survived']}, crossed the bound "
        f"{exits['crossed_bound']}, non-finite {exits['non_finite']}; discretisation failures "
        f"(left the PSD cone {exits['left_psd_cone']}, solver failures "
        f"{exits['solver_failure']}): {exits['discretisation_failure_fraction']:.2%}, excluded"
    )


def compare_command(args: argparse.Namespace) -> int:
    import jax.random as jr

    from .. import compare, plot
    from ..results import ResultStore, write_json

    dtype = setup_precision(args)
    config = config_from_args(args)
    v0 = _input_covariance(args, dtype)
    m = int(v0.shape[0])
    n = args.width
    depth = compare.depth_for(args.T, n)
    every = max(1, depth // 16)
    methods = ["law", "explicit"] if args.method == "both" else [args.method]
    sizes = {
        "law": args.law_samples or args.samples,
        "explicit": args.explicit_samples,
        "sde": args.paths or args.samples,
    }
    moment_samples = args.moment_samples if m <= MOMENT_TABLE_MAX_TOKENS else 0
    key = jr.key(args.seed)
    out = Path(args.out)
    settings = {
        "config": config.to_dict(),
        "width": n,
        "T": args.T,
        "v0": np.asarray(v0).tolist(),
        "method": args.method,
        "num_samples": {k: sizes[k] for k in (*methods, "sde")},
        "steps": args.steps,
        "bound": args.bound,
        "finite_width_sde": args.finite_width_sde,
        "moment_samples": moment_samples,
        "seed": args.seed,
        "float64": args.float64,
    }
    # One unit per source (arrays, .npz) and one for the moments table: a killed run resumes.
    store = ResultStore(out, "compare", settings, overwrite=args.overwrite)
    started = time.perf_counter()
    steps = len(methods) + 1 + (moment_samples > 0)
    finite = {}
    with progress(steps, "compare", args.no_progress) as bar:
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
                )
                src = finite[method]
                store.save_arrays(method, {"ts": src.ts, "vs": src.vs, "alive": src.alive})
            bar.update(1)
        times = finite[methods[0]].ts
        label = "SDE" if not args.finite_width_sde else f"SDE (width {n})"
        if store.has_arrays("sde") and store.has("sde_exits"):
            saved = store.load_arrays("sde")
            sde = compare.CovarianceSamples(
                label, saved["ts"], saved["vs"], saved["alive"], saved["failed"]
            )
            exits = store.load("sde_exits")
        else:
            sde, solution = compare.sde_source(
                config,
                v0,
                times,
                sizes["sde"],
                key=jr.fold_in(key, 10),
                label=label,
                **_sde_options(args, n),
            )
            exits = compare.exit_summary(solution)
            store.save_arrays(
                "sde", {"ts": sde.ts, "vs": sde.vs, "alive": sde.alive, "failed": sde.failed}
            )
            store.save("sde_exits", exits)
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
    T = float(times[-1])
    compare_times = sorted({float(times[np.argmin(np.abs(times - T / 2))]), T})
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
    print(f"Finite shaped Transformers (n = {n}, depth {depth}) vs {sde_name} (T = {T:.4g}):\n")
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
    return 0


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
    add_config_arguments(parser, DEFAULTS)
    group = parser.add_argument_group("experiment")
    group.add_argument(
        "--widths",
        default="2,3,4,6,8,12,16,32",
        help="comma-separated widths (default: 2,3,4,6,8,12,16,32)",
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
        help="finite samples per width, and SDE samples per width (default: 20000)",
    )
    group.add_argument("--paths", type=positive_int, default=None, help=argparse.SUPPRESS)
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
    import jax.random as jr

    from .. import compare, plot
    from ..results import ResultStore, write_json

    dtype = setup_precision(args)
    config = config_from_args(args)
    v0 = _input_covariance(args, dtype)
    m = int(v0.shape[0])
    feature = compare.canonical_name(args.feature, m)
    try:
        widths = sorted({int(w) for w in csv_list(args.widths)})
    except ValueError as err:
        raise ValueError(f"--widths {args.widths!r}: pass integers separated by commas") from err
    if len(widths) < 2 or widths[0] < m:
        raise ValueError(
            f"--widths {args.widths!r}: need at least two widths, each >= the number of tokens "
            f"m = {m}"
        )
    depths = {n: compare.depth_for(args.T, n) for n in widths}
    times = {n: depths[n] / n for n in widths}
    sde_size = args.paths or args.samples
    design = (
        "finite-width SDE per width"
        if args.finite_width_sde
        else ("shared" if args.shared_sde else "independent per width")
    )
    settings = {
        "config": config.to_dict(),
        "widths": widths,
        "T": args.T,
        "v0": np.asarray(v0).tolist(),
        "method": args.method,
        "num_samples": args.samples,
        "sde_num_samples": sde_size,
        "sde_design": design,
        "finite_width_sde": args.finite_width_sde,
        "steps": args.steps,
        "bound": args.bound,
        "feature": feature,
        "seed": args.seed,
        "float64": args.float64,
    }
    out = Path(args.out)
    store = ResultStore(out, "sweep-width", settings, overwrite=args.overwrite)
    key = jr.key(args.seed)
    started = time.perf_counter()
    rows = {}
    sde_all = None
    exits = {}

    def sde_for(i: int, n: int):
        """The SDE sample of width n (index i) and its block id (same id: same paths)."""
        nonlocal sde_all
        if args.finite_width_sde:
            sde, solution = compare.sde_source(
                config,
                v0,
                [times[n]],
                sde_size,
                key=jr.fold_in(key, 1000 + n),
                **_sde_options(args, n),
            )
            exits[n] = compare.exit_summary(solution)
            return sde, i
        if sde_all is None:
            count = sde_size if args.shared_sde else sde_size * len(widths)
            sde_all, solution = compare.sde_source(
                config,
                v0,
                sorted(set(times.values())),
                count,
                key=jr.fold_in(key, 0),
                **_sde_options(args, n),
            )
            exits["all"] = compare.exit_summary(solution)
        if args.shared_sde:
            return sde_all, 0
        return sde_all.subset(slice(i * sde_size, (i + 1) * sde_size)), i

    with progress(len(widths), "sweep-width", args.no_progress) as bar:
        for i, n in enumerate(widths):
            unit = f"n={n}"
            if store.has(unit) and (not args.shared_sde or store.has_arrays(unit)):
                rows[n] = store.load(unit)
                if args.shared_sde:
                    rows[n]["_sde_deviations"] = store.load_arrays(unit)
                bar.update(1)
                continue
            sde, block = sde_for(i, n)
            failed = float(sde.failed_fraction[sde.index_of(times[n])])
            if failed > args.max_failed_fraction:
                raise compare.DiscretisationError(
                    f"width {n}: {failed:.2%} of the SDE paths left the PSD cone, above "
                    f"--max-failed-fraction {args.max_failed_fraction}; increase --steps"
                )
            finite = compare.finite_source(
                config,
                n,
                times[n],
                v0,
                args.samples,
                key=jr.fold_in(key, n),
                method=args.method,
                bound=args.bound,
                every=depths[n],
            )
            row = compare.width_distances(
                finite, sde, time=times[n], feature=feature, seed=args.seed
            )
            deviations = row["_sde_deviations"]
            rows[n] = {
                "n": n,
                "depth": depths[n],
                **compare.public_row(row),
                "sde_failed_fraction": failed,
                "_sde_block": block,
            }
            store.save(unit, rows[n])
            if args.shared_sde:
                store.save_arrays(unit, deviations)
                rows[n]["_sde_deviations"] = deviations
            bar.update(1)
    ordered = [rows[n] for n in widths]
    fits = compare.fit_width_sweep(widths, ordered)
    elapsed = time.perf_counter() - started
    figure = plot.save_figure(
        plot.distance_vs_width_figure(
            widths,
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
        "settings": settings,
        "seconds": elapsed,
        "sde_exits": {str(k): v for k, v in exits.items()},
        "rows": [compare.public_row(r) for r in ordered],
        "fits": {k: v.to_dict() for k, v in fits.items()},
        "expected_slopes": (
            "about -1/2 for MLP blocks with c_plus + c_minus != 0 against the limit SDE; about -1 "
            "otherwise and against the finite-width SDE (docs/theory.md)"
        ),
        "figure": str(figure),
    }
    report_path = write_json(out / "sweep_width.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"Distance between the law of {feature} at t = T and the SDE's ({design}), by width:\n")
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
    return 0
