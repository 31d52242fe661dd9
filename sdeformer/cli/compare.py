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
"""The setting checked in SPEC.md section 6 (m = 2, rho0 = 0.3, T = 1)."""


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
        help="stop paths (SDE and finite) where some |V_ab| exceeds this (default: 1000)",
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
    group.add_argument("--n", type=positive_int, default=64, help="width n (default: 64)")
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
        default=400,
        help="explicit networks (default: 400)",
    )
    group.add_argument(
        "--law-samples",
        type=positive_int,
        default=8000,
        help="law-chain samples (default: 8000)",
    )
    group.add_argument("--paths", type=positive_int, default=8000, help="SDE paths (default: 8000)")
    group.add_argument(
        "--mode",
        choices=("survival", "stopped"),
        default="survival",
        help="compare laws conditional on survival to t, or of the stopped processes",
    )
    group.add_argument(
        "--moment-samples",
        type=int,
        default=1000,
        help="antithetic pairs for the one-step drift/noise table at V0 (0 skips it)",
    )
    add_run_arguments(parser, "results/compare")
    parser.set_defaults(func=compare_command)


def compare_command(args: argparse.Namespace) -> int:
    import jax.numpy as jnp
    import jax.random as jr

    from .. import compare, plot
    from ..results import ResultStore, write_json
    from ..sde import SDESolution

    dtype = setup_precision(args)
    config = config_from_args(args)
    v0 = _input_covariance(args, dtype)
    n = args.n
    depth = compare.depth_for(args.T, n)
    every = max(1, depth // 16)
    methods = ["law", "explicit"] if args.method == "both" else [args.method]
    sizes = {"law": args.law_samples, "explicit": args.samples}
    key = jr.key(args.seed)
    out = Path(args.out)
    # One unit per source (arrays, .npz) and one for the moments table: a killed run resumes.
    store = ResultStore(
        out,
        "compare",
        {
            "config": config.to_dict(),
            "n": n,
            "T": args.T,
            "v0": np.asarray(v0).tolist(),
            "method": args.method,
            "samples": {m: sizes[m] for m in methods},
            "paths": args.paths,
            "steps": args.steps,
            "bound": args.bound,
            "moment_samples": args.moment_samples,
            "seed": args.seed,
            "float64": args.float64,
        },
        overwrite=args.overwrite,
    )
    started = time.perf_counter()
    steps = len(methods) + 1 + (args.moment_samples > 0)
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
        if store.has_arrays("sde"):
            saved = store.load_arrays("sde")
            solution = SDESolution(**{k: jnp.asarray(v) for k, v in saved.items()})
            sde = compare.CovarianceSamples("SDE", saved["ts"], saved["vs"], saved["alive"])
        else:
            sde, solution = compare.sde_source(
                config,
                v0,
                times,
                args.paths,
                key=jr.fold_in(key, 10),
                num_steps=args.steps,
                bound=args.bound,
            )
            store.save_arrays(
                "sde",
                {
                    name: getattr(solution, name)
                    for name in ("ts", "vs", "alive", "exit_time", "exit_reason")
                },
            )
        bar.update(1)
        moments = []
        if args.moment_samples > 0:
            if store.has("moments"):
                moments = store.load("moments")
            else:
                moments = compare.coefficient_table(
                    config, n, v0, args.moment_samples, key=jr.fold_in(key, 20)
                )
                store.save("moments", moments)
            bar.update(1)
    T = float(times[-1])
    compare_times = sorted({float(times[np.argmin(np.abs(times - T / 2))]), T})
    comparisons = {
        method: compare.compare_sources(
            src, sde, times=compare_times, mode=args.mode, seed=args.seed
        )
        for method, src in finite.items()
    }
    elapsed = time.perf_counter() - started
    sources = [*finite.values(), sde]
    figures = [
        plot.save_figure(plot.rho_density_figure(sources), out / "rho_density.png"),
        plot.save_figure(plot.feature_bands_figure(sources), out / "rho_bands.png"),
    ]
    report = {
        "command": "compare",
        "settings": {
            "config": config.to_dict(),
            "n": n,
            "depth": depth,
            "T": T,
            "v0": np.asarray(v0).tolist(),
            "samples": {m: sizes[m] for m in methods},
            "paths": args.paths,
            "steps": args.steps,
            "bound": args.bound,
            "mode": args.mode,
            "seed": args.seed,
        },
        "seconds": elapsed,
        "sde_exits": solution.summary(),
        "comparisons": {m: c.to_dict() for m, c in comparisons.items()},
        "one_step_moments": moments,
        "figures": [str(f) for f in figures],
    }
    report_path = write_json(out / "compare.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"Finite shaped Transformers (n = {n}, depth {depth}) vs the SDE (T = {T:.4g}):\n")
    for comparison in comparisons.values():
        print(comparison.table(), "\n")
    exits = solution.summary()
    print(
        f"SDE paths: {exits['paths']}, survived {exits['survived']}, crossed the bound "
        f"{exits['crossed_bound']}, left the PSD cone {exits['left_psd_cone']}, non-finite "
        f"{exits['non_finite']}\n"
    )
    if moments:
        print(f"One-step moments at V0, width {n} ({args.moment_samples} antithetic pairs):")
        print(
            markdown_table(
                ["entry", "n E[dV]", "+-se", "SDE drift", "z", "n Var[dV]", "+-se", "SDE", "z"],
                [
                    [
                        r["entry"],
                        r["drift_finite"],
                        r["drift_finite_se"],
                        r["drift_sde"],
                        r["drift_z"],
                        r["noise_finite"],
                        r["noise_finite_se"],
                        r["noise_sde"],
                        r["noise_z"],
                    ]
                    for r in moments
                ],
            )
        )
    print(f"\n{elapsed:.1f} s; results written to {report_path}")
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
        "--samples", type=positive_int, default=20000, help="finite samples per width"
    )
    group.add_argument("--paths", type=positive_int, default=20000, help="SDE paths")
    group.add_argument(
        "--feature", default="rho_01", help="feature compared (rho_ab or logvar_a; default rho_01)"
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
    try:
        widths = sorted({int(w) for w in csv_list(args.widths)})
    except ValueError as err:
        raise ValueError(f"--widths {args.widths!r}: pass integers separated by commas") from err
    if len(widths) < 2 or widths[0] < v0.shape[0]:
        raise ValueError(
            f"--widths {args.widths!r}: need at least two widths, each >= the number of tokens "
            f"m = {v0.shape[0]}"
        )
    depths = {n: compare.depth_for(args.T, n) for n in widths}
    settings = {
        "config": config.to_dict(),
        "widths": widths,
        "T": args.T,
        "v0": np.asarray(v0).tolist(),
        "method": args.method,
        "samples": args.samples,
        "paths": args.paths,
        "steps": args.steps,
        "bound": args.bound,
        "feature": args.feature,
        "seed": args.seed,
        "float64": args.float64,
    }
    out = Path(args.out)
    store = ResultStore(out, "sweep-width", settings, overwrite=args.overwrite)
    key = jr.key(args.seed)
    started = time.perf_counter()
    times = sorted({depths[n] / n for n in widths})
    rows = {}
    with progress(len(widths) + 1, "sweep-width", args.no_progress) as bar:
        sde = None
        for n in widths:
            unit = f"n={n}"
            if store.has(unit):
                rows[n] = store.load(unit)
                bar.update(1)
                continue
            if sde is None:
                sde, solution = compare.sde_source(
                    config,
                    v0,
                    times,
                    args.paths,
                    key=jr.fold_in(key, 0),
                    num_steps=args.steps,
                    bound=args.bound,
                )
                bar.update(1)
            finite = compare.finite_source(
                config,
                n,
                depths[n] / n,
                v0,
                args.samples,
                key=jr.fold_in(key, n),
                method=args.method,
                bound=args.bound,
                every=depths[n],
            )
            row = compare.width_distances(
                finite, sde, time=depths[n] / n, feature=args.feature, seed=args.seed
            )
            rows[n] = {"n": n, "depth": depths[n], **row}
            store.save(unit, rows[n])
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
            fits,
        ),
        out / "distance_vs_width.png",
    )
    report = {
        "command": "sweep-width",
        "settings": settings,
        "seconds": elapsed,
        "rows": ordered,
        "fits": {k: (v.to_dict() if v is not None else None) for k, v in fits.items()},
        "figure": str(figure),
    }
    report_path = write_json(out / "sweep_width.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"Distance between the law of {args.feature} at t = T and the SDE's, by width:\n")
    print(
        markdown_table(
            ["n", "depth", "KS", "+-se", "noise", "W1", "+-se", "noise", "|dmean|", "+-se"],
            [
                [
                    r["n"],
                    r["depth"],
                    r["ks"],
                    r["ks_se"],
                    r["ks_noise"],
                    r["w1"],
                    r["w1_se"],
                    r["w1_noise"],
                    r["mean"],
                    r["mean_se"],
                ]
                for r in ordered
            ],
        )
    )
    print()
    for name, fit in fits.items():
        if fit is None:
            print(f"{name}: fewer than three widths above noise, no rate fitted")
        else:
            used = [w for w, u in zip(fit.widths, fit.used, strict=True) if u]
            print(f"{name}: distance ~ n^({fit.slope:.3f} +- {fit.slope_se:.3f}) over n in {used}")
    print(f"\n{elapsed:.1f} s; results written to {report_path}\nfigure: {figure}")
    return 0
