"""`sdeformer sweep-width`: the distance between finite laws and the SDE as the width grows."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ._sources import (
    DEFAULTS,
    _add_input_arguments,
    _check_finite_source,
    _check_max_failed_fraction,
    _check_sde_source,
    _input_covariance,
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
    csv_list,
    markdown_table,
    positive_int,
    progress,
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
        help="finite samples per width, and SDE samples per width unless --sde-samples is given "
        "(default: 20000)",
    )
    group.add_argument(
        "--sde-samples",
        type=positive_int,
        default=None,
        help="SDE paths per width (with --shared-sde: in all) (default: --samples)",
    )
    group.add_argument(
        "--paths",
        action=DeprecatedAlias,
        type=positive_int,
        dest="sde_samples",
        replacement="--sde-samples",
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
    sde_size = args.sde_samples or args.samples
    # Every input is checked before the output directory is created.
    check_devices(args.devices)
    _check_max_failed_fraction(args.max_failed_fraction)
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
    settings = {
        "config": config.to_dict(),
        "widths": widths,
        "T": args.T,
        "v0": np.asarray(v0).tolist(),
        "method": args.method,
        "num_samples": args.samples,
        "sde_num_samples": sde_size,
        # One key per finite sample (sharding.sharded_covariance_paths), the same for every
        # --devices; recorded so results of the older per-call keys are not resumed.
        "finite_keys": "per-sample",
        "sde_design": design,
        "finite_width_sde": args.finite_width_sde,
        "steps": args.steps,
        "steps_chosen_by": args.steps_choice["chosen_by"],
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

    with progress(len(widths), "sweep-width", args.no_progress, "widths") as bar:
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
                    f"--max-failed-fraction {args.max_failed_fraction}; increase --steps or use "
                    "--solver exponential"
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
                devices=args.devices,
                progress=not args.no_progress,
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
        "sde_steps": args.steps_choice,
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
    return 0
