"""`sdeformer ntk`: NTK and gradient descent of shallow encoder Transformers."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from ..results import ResultStore, provenance, write_json
from .common import (
    add_run_arguments,
    csv_list,
    markdown_table,
    positive_int,
    progress,
    setup_precision,
)

# ------------------------------------------------------------------------------------------- ntk


def _add_ntk(sub) -> None:
    parser = sub.add_parser(
        "ntk",
        help="NTK and GD convergence of the shallow encoder (Wu, Liu, Chrysos, Cevher 2023)",
        description=(
            "For each width, logit scaling and initialisation: the empirical NTK at "
            "initialisation (smallest eigenvalue; distance to the uniform-attention kernel over "
            "several initialisations), then full-batch gradient descent on the squared loss "
            "(loss curve, fitted linear rate, weight and NTK movement). Prints a table, writes a "
            "JSON report and three PNG figures; resumes the (width, scaling, init) units already "
            "computed. Seeds: the data use fold_in(key(seed), 0) and every unit of width d_m "
            "fold_in(fold_in(key(seed), 1), d_m), so a unit's numbers do not depend on the "
            "other widths, scalings or inits in the lists, nor on their order."
        ),
    )
    group = parser.add_argument_group("experiment")
    group.add_argument("--widths", default="32,64,128,256,512", help="comma-separated widths d_m")
    group.add_argument(
        "--scalings",
        default="sqrt,linear",
        help="comma-separated logit scalings: sqrt (tau0 = d_m^-1/2), linear (tau0 = d_m^-1) "
        "or a number (tau0 itself) (default: sqrt,linear)",
    )
    group.add_argument(
        "--inits", default="lecun,he,ntk", help="comma-separated inits from lecun,he,ntk"
    )
    group.add_argument(
        "--data", default="digits", help="digits (scikit-learn, 8 tokens x 8) or synthetic"
    )
    group.add_argument("--samples", type=positive_int, default=48, help="inputs N (default: 48)")
    group.add_argument(
        "--seeds",
        type=positive_int,
        default=4,
        help="initialisations per unit for the kernel comparison (default: 4)",
    )
    group.add_argument("--steps", type=positive_int, default=200, help="GD steps (default: 200)")
    group.add_argument(
        "--lr-factor",
        type=float,
        default=1.0,
        help="step size lr = lr_factor * N / lambda_max(K_0), in (0, 2) (default: 1)",
    )
    group.add_argument(
        "--checkpoints",
        type=positive_int,
        default=4,
        help="times during training at which the NTK is recomputed (default: 4)",
    )
    group.add_argument(
        "--strategy",
        default="auto",
        help="empirical NTK strategy: auto, jacobian, blocked, implicit (default: auto)",
    )
    add_run_arguments(parser, "results/ntk")
    parser.set_defaults(func=ntk_command)


def ntk_command(args: argparse.Namespace) -> int:
    """Run `sdeformer ntk` with the parsed `args`; returns the exit status (0)."""
    dtype = setup_precision(args)
    settings = _checked_settings(args)
    out = Path(args.out)
    started = time.perf_counter()
    units, resumed = _units(args, settings, dtype, out)
    elapsed = time.perf_counter() - started
    fits = _fits(units, settings["scalings"], settings["inits"])
    figures = _figures(units, fits, out)
    headers, rows = _table(units)
    report = {
        "command": "ntk",
        "settings": settings,
        "provenance": provenance(),
        "seconds": elapsed,
        "kernel_error_fits": {name: fit.to_dict() for name, fit in fits.items()},
        "table": {"headers": headers, "rows": rows},
        "units": units,
        "figures": {k: str(v) for k, v in figures.items()},
    }
    report_path = write_json(out / "ntk.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    print(markdown_table(headers, rows))
    print("\nkernel error ||K - Kbar||_F/||Kbar||_F ~ d_m^slope (Kbar: uniform attention):")
    for name, fit in fits.items():
        print(f"  {name}: {fit.describe()}")
    print(f"\n{len(units)} units, N={args.samples} {args.data} inputs: {elapsed:.1f} s")
    print(f"results written to {report_path} and {out}/ntk_*.png")
    if resumed:
        print(resumed)
    return 0


def _widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in csv_list(text)]
    except ValueError as err:
        raise ValueError(f"--widths {text!r}: pass integers like 32,64,128") from err
    if not widths or min(widths) < 1:
        raise ValueError(f"--widths {text!r}: pass at least one integer >= 1")
    return widths


def _scalings(text: str) -> list[str | float]:
    from ..ntk import SCALINGS

    scalings: list[str | float] = []
    for item in csv_list(text):
        try:
            scalings.append(item if item in SCALINGS else float(item))
        except ValueError as err:
            raise ValueError(
                f"--scalings: {item!r} is neither {' nor '.join(SCALINGS)} nor a number"
            ) from err
        if not isinstance(scalings[-1], str) and not (
            math.isfinite(scalings[-1]) and scalings[-1] > 0
        ):
            raise ValueError(
                f"--scalings: {item!r} is not a temperature tau0; pass a finite number > 0, "
                f"or {' or '.join(SCALINGS)}"
            )
    return scalings


def _checked_settings(args: argparse.Namespace) -> dict:
    """The run's settings, every flag checked (ValueError naming the value and the fix)."""
    from ..ntk import INITS, STRATEGIES

    inits = csv_list(args.inits)
    for init in inits:
        if init not in INITS:
            raise ValueError(f"--inits: unknown init {init!r}; choose from {list(INITS)}")
    if args.strategy not in STRATEGIES:
        raise ValueError(f"--strategy {args.strategy!r}: choose from {list(STRATEGIES)}")
    if not 0 < args.lr_factor < 2:
        raise ValueError(f"--lr-factor {args.lr_factor}: must lie in (0, 2) for stable GD")
    if args.checkpoints > args.steps:
        raise ValueError(f"--checkpoints {args.checkpoints}: must not exceed --steps")
    return {
        "widths": _widths(args.widths),
        "scalings": _scalings(args.scalings),
        "inits": inits,
        "data": args.data,
        "samples": args.samples,
        "seeds": args.seeds,
        "steps": args.steps,
        "lr_factor": args.lr_factor,
        "checkpoints": args.checkpoints,
        "strategy": args.strategy,
        "seed": args.seed,
        "float64": args.float64,
    }


def _units(args: argparse.Namespace, settings: dict, dtype, out: Path):
    """(units, what was resumed): the (width, scaling, init) units, loaded or computed.

    Each is loaded from the result store or computed into it; the second item is the store's
    `resumed_text()`.
    """
    import jax.random as jr

    from ..ntk import load_data, run_unit

    root = jr.key(args.seed)
    xs, ys = load_data(args.data, args.samples, key=jr.fold_in(root, 0), dtype=dtype)
    store = ResultStore(out, "ntk", settings, overwrite=args.overwrite)
    plan = [
        (w, s, i)
        for w in settings["widths"]
        for s in settings["scalings"]
        for i in settings["inits"]
    ]
    units = []
    with progress(len(plan), "ntk", args.no_progress) as bar:
        for width, scaling, init in plan:
            name = f"w{width}_{scaling}_{init}"
            if not store.has(name):
                # One key per width: every scaling and init starts from the same normals.
                unit = run_unit(
                    xs, ys, width, scaling=scaling, init=init,
                    key=jr.fold_in(jr.fold_in(root, 1), width), seeds=args.seeds,
                    steps=args.steps, lr_factor=args.lr_factor, checkpoints=args.checkpoints,
                    strategy=args.strategy,
                )  # fmt: skip
                store.save(name, unit)
            units.append(store.load(name))
            bar.update(1)
    return units, store.resumed_text()


def _fits(units: list[dict], scalings, inits) -> dict:
    """The kernel error's log-log fit in the width, per (scaling, init)."""
    from ..ntk import fit_loglog

    fits = {}
    for scaling in scalings:
        for init in inits:
            group = sorted(
                (u for u in units if u["scaling"] == scaling and u["init"] == init),
                key=lambda u: u["width"],
            )
            fits[f"{scaling}/{init}"] = fit_loglog(
                [u["width"] for u in group], [u["kernel_errors"] for u in group]
            )
    return fits


def _figures(units: list[dict], fits: dict, out: Path) -> dict:
    from .. import plot

    return {
        "eigenvalues": plot.save_figure(plot.ntk_eigenvalue_figure(units), out / "ntk_eig.png"),
        "losses": plot.save_figure(plot.ntk_loss_figure(units), out / "ntk_loss.png"),
        "kernel_error": plot.save_figure(
            plot.ntk_kernel_error_figure(units, fits), out / "ntk_kernel_error.png"
        ),
    }


_HEADERS = ["scaling", "init", "d_m", "lam_min", "lam_min/scale", "K err", "lr", "rate", "+-"]
_HEADERS += ["pred. rate", "loss_T", "dW", "dK"]


def _table(units: list[dict]) -> tuple[list[str], list[list]]:
    """The table's headers and one row per unit."""
    rows = []
    for u in units:
        fit = u["rate_fit"]
        rows.append(
            [
                str(u["scaling"]),
                u["init"],
                u["width"],
                u["lambda_min"],
                u["lambda_min_normalised"],
                sum(u["kernel_errors"]) / len(u["kernel_errors"]),
                u["lr"],
                fit["rate"] if fit["rate"] is not None else "-",
                fit["slope_se"] if fit["slope_se"] is not None else "-",
                u["predicted_rate"],
                u["losses"][-1],
                u["weight_change"],
                u["ntk_change"][-1],
            ]
        )
    return list(_HEADERS), rows
