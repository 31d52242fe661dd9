"""The `sdeformer` command line: `sdeformer --help` lists the commands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from .config import BLOCK_NAMES, ShapedConfig
from .results import ResultsError

CONFIG_HELP = {
    "tau0": "attention temperature factor tau0 (logits divided by tau0 sqrt(n n_k))",
    "gamma": "residual branch weight gamma in (0, 1); the skip weight is sqrt(1 - gamma^2)",
    "c_plus": "shaped ReLU: slope 1 + c_plus/sqrt(n) for positive inputs",
    "c_minus": "shaped ReLU: slope 1 + c_minus/sqrt(n) for negative inputs",
    "heads": "number of attention heads",
    "key_width": "key/query width n_k (absolute; default n_k = n)",
    "key_ratio": "key/query width as a ratio n_k / n",
    "mlp_ratio": "MLP hidden width ratio r = n_h / n",
    "out_proj": "use an output projection Wo after concatenating the heads",
    "causal": "causal attention (token i sees tokens j <= i)",
    "blocks": f"comma-separated block pattern of one layer, from {','.join(BLOCK_NAMES)}",
}


def add_config_arguments(parser: argparse.ArgumentParser, defaults: ShapedConfig) -> None:
    """One option per ShapedConfig field (--tau0, --gamma, ..., --blocks attention,mlp)."""
    group = parser.add_argument_group("model configuration (ShapedConfig)")
    for field in dataclasses.fields(ShapedConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = f"{CONFIG_HELP[field.name]} (default: {default})"
        if field.name in ("out_proj", "causal"):
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        elif field.name == "blocks":
            group.add_argument(flag, default=",".join(default), help=help_text)
        elif field.name in ("heads", "key_width"):
            group.add_argument(flag, type=int, default=default, help=help_text)
        else:
            group.add_argument(flag, type=float, default=default, help=help_text)


def config_from_args(args: argparse.Namespace) -> ShapedConfig:
    """The validated ShapedConfig of the parsed options (ValueError names a bad value)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ShapedConfig)}
    values["blocks"] = tuple(b.strip() for b in values["blocks"].split(",") if b.strip())
    return ShapedConfig(**values)


def add_run_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """Options every long-running command shares."""
    group = parser.add_argument_group("run")
    group.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    group.add_argument("--out", default=out, help=f"output directory (default: {out})")
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="discard results already in --out instead of resuming from them",
    )
    group.add_argument(
        "--json", action="store_true", help="print the JSON report to stdout instead of a table"
    )
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    group.add_argument(
        "--float64", action="store_true", help="compute in float64 (enables jax_enable_x64)"
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _progress(total: int, desc: str, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=disable, file=sys.stderr, leave=False)


def _setup_precision(args: argparse.Namespace):
    import jax
    import jax.numpy as jnp

    if args.float64:
        jax.config.update("jax_enable_x64", True)
        return jnp.float64
    return jnp.float32


def _markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- rank-collapse


def _add_rank_collapse(sub) -> None:
    parser = sub.add_parser(
        "rank-collapse",
        help="token correlations with depth: shaped vs unshaped attention vs Pre-LN at init",
        description=(
            "Monte Carlo over freshly initialised explicit networks of the mean token "
            "correlation, stable rank and smallest correlation eigenvalue per layer, for the "
            "shaped Transformer, the same network with unshaped Softmax attention, and a "
            "standard Pre-LN Transformer. "
            "Writes a JSON report and a PNG figure; resumes model kinds already computed."
        ),
    )
    add_config_arguments(parser, ShapedConfig())
    group = parser.add_argument_group("experiment")
    group.add_argument("--n", type=positive_int, default=128, help="width n (default: 128)")
    group.add_argument("--depth", type=positive_int, default=256, help="depth d (default: 256)")
    group.add_argument("--tokens", type=positive_int, default=8, help="tokens m (default: 8)")
    group.add_argument(
        "--rho0", type=float, default=0.3, help="input token correlation (default: 0.3)"
    )
    group.add_argument(
        "--samples", type=positive_int, default=32, help="networks per model kind (default: 32)"
    )
    group.add_argument(
        "--kinds",
        default="shaped,unshaped,preln",
        help="comma-separated model kinds from shaped,unshaped,preln (default: all three)",
    )
    add_run_arguments(parser, "results/rank_collapse")
    parser.set_defaults(func=rank_collapse_command)


def rank_collapse_command(args: argparse.Namespace) -> int:
    import jax.random as jr
    import numpy as np

    from . import plot
    from .model import explicit_covariance_paths
    from .rank_collapse import MODEL_KINDS, collapse_summary, equicorrelated, kind_config
    from .results import ResultStore, write_json

    dtype = _setup_precision(args)
    base = config_from_args(args)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for kind in kinds:
        if kind not in MODEL_KINDS:
            raise ValueError(
                f"--kinds: unknown model kind {kind!r}; choose from {list(MODEL_KINDS)}"
            )
    if args.tokens < 2:
        raise ValueError(f"--tokens {args.tokens}: need at least 2 tokens")
    v0 = equicorrelated(args.tokens, args.rho0, dtype)
    settings = {
        "config": base.to_dict(),
        "n": args.n,
        "depth": args.depth,
        "tokens": args.tokens,
        "rho0": args.rho0,
        "samples": args.samples,
        "seed": args.seed,
        "float64": args.float64,
    }
    out = Path(args.out)
    store = ResultStore(out, "rank-collapse", settings, overwrite=args.overwrite)
    chunk = min(args.samples, 8)
    chunks = -(-args.samples // chunk)
    started = time.perf_counter()
    curves = {}
    with _progress(len(kinds) * chunks, "rank-collapse", args.no_progress) as bar:
        for index, kind in enumerate(kinds):
            if store.has(kind):
                curves[kind] = store.load(kind)
                bar.update(chunks)
                continue
            cfg = kind_config(base, kind)
            kind_key = jr.fold_in(jr.key(args.seed), index)
            parts = []
            for c in range(chunks):
                size = min(chunk, args.samples - c * chunk)
                paths = explicit_covariance_paths(
                    cfg, args.n, args.depth, v0, size, key=jr.fold_in(kind_key, c)
                )
                parts.append(np.asarray(paths))
                bar.update(1)
            summary = collapse_summary(np.concatenate(parts))
            curves[kind] = {k: v.tolist() for k, v in summary.items()}
            store.save(kind, curves[kind])
    elapsed = time.perf_counter() - started
    figure = plot.save_figure(
        plot.rank_collapse_figure(curves, n=args.n), out / "rank_collapse.png"
    )
    marks = sorted({0, args.depth // 4, args.depth // 2, args.depth})
    report = {
        "command": "rank-collapse",
        "settings": settings,
        "seconds": elapsed,
        "layers_reported": marks,
        "curves": curves,
        "figure": str(figure),
    }
    report_path = write_json(out / "rank_collapse.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    rows = []
    for kind, curve in curves.items():
        for layer in marks:
            rows.append(
                [
                    kind,
                    layer,
                    layer / args.n,
                    curve["mean_correlation_mean"][layer],
                    curve["mean_correlation_se"][layer],
                    curve["stable_rank_mean"][layer],
                    curve["min_eigenvalue_mean"][layer],
                ]
            )
    print(
        _markdown_table(
            ["model", "layer", "t", "mean rho", "+-se", "stable rank", "min eig(rho)"], rows
        )
    )
    print(f"\n{args.samples} networks per model, n={args.n}, depth={args.depth}: {elapsed:.1f} s")
    print(f"results written to {report_path} and {figure}")
    return 0


# ------------------------------------------------------------------------------------------- ntk


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


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
            "computed."
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
    import jax.random as jr

    from . import plot
    from .ntk import INITS, SCALINGS, STRATEGIES, fit_loglog, load_data, run_unit
    from .results import ResultStore, write_json

    dtype = _setup_precision(args)
    try:
        widths = [int(w) for w in _csv(args.widths)]
    except ValueError as err:
        raise ValueError(f"--widths {args.widths!r}: pass integers like 32,64,128") from err
    if not widths or min(widths) < 1:
        raise ValueError(f"--widths {args.widths!r}: pass at least one integer >= 1")
    scalings: list[str | float] = []
    for text in _csv(args.scalings):
        try:
            scalings.append(text if text in SCALINGS else float(text))
        except ValueError as err:
            raise ValueError(
                f"--scalings: {text!r} is neither {' nor '.join(SCALINGS)} nor a number"
            ) from err
    inits = _csv(args.inits)
    for init in inits:
        if init not in INITS:
            raise ValueError(f"--inits: unknown init {init!r}; choose from {list(INITS)}")
    if args.strategy not in STRATEGIES:
        raise ValueError(f"--strategy {args.strategy!r}: choose from {list(STRATEGIES)}")
    if not 0 < args.lr_factor < 2:
        raise ValueError(f"--lr-factor {args.lr_factor}: must lie in (0, 2) for stable GD")
    if args.checkpoints > args.steps:
        raise ValueError(f"--checkpoints {args.checkpoints}: must not exceed --steps")
    settings = {
        "widths": widths,
        "scalings": scalings,
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
    root = jr.key(args.seed)
    xs, ys = load_data(args.data, args.samples, key=jr.fold_in(root, 0), dtype=dtype)
    out = Path(args.out)
    store = ResultStore(out, "ntk", settings, overwrite=args.overwrite)
    plan = [(w, s, i) for w in widths for s in scalings for i in inits]
    started = time.perf_counter()
    units = []
    with _progress(len(plan), "ntk", args.no_progress) as bar:
        for width, scaling, init in plan:
            name = f"w{width}_{scaling}_{init}"
            if not store.has(name):
                # One key per width: every scaling and init starts from the same normals.
                unit = run_unit(
                    xs,
                    ys,
                    width,
                    scaling=scaling,
                    init=init,
                    key=jr.fold_in(jr.fold_in(root, 1), width),
                    seeds=args.seeds,
                    steps=args.steps,
                    lr_factor=args.lr_factor,
                    checkpoints=args.checkpoints,
                    strategy=args.strategy,
                )
                store.save(name, unit)
            units.append(store.load(name))
            bar.update(1)
    elapsed = time.perf_counter() - started
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
    figures = {
        "eigenvalues": plot.save_figure(plot.ntk_eigenvalue_figure(units), out / "ntk_eig.png"),
        "losses": plot.save_figure(plot.ntk_loss_figure(units), out / "ntk_loss.png"),
        "kernel_error": plot.save_figure(
            plot.ntk_kernel_error_figure(units, fits), out / "ntk_kernel_error.png"
        ),
    }
    headers = [
        "scaling",
        "init",
        "d_m",
        "lam_min",
        "lam_min/scale",
        "K err",
        "lr",
        "rate",
        "+-",
        "pred. rate",
        "loss_T",
        "dW",
        "dK",
    ]
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
    report = {
        "command": "ntk",
        "settings": settings,
        "seconds": elapsed,
        "kernel_error_fits": fits,
        "table": {"headers": headers, "rows": rows},
        "units": units,
        "figures": {k: str(v) for k, v in figures.items()},
    }
    report_path = write_json(out / "ntk.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    print(_markdown_table(headers, rows))
    print("\nkernel error ||K - Kbar||_F/||Kbar||_F ~ d_m^slope (Kbar: uniform attention):")
    for name, fit in fits.items():
        if fit["slope"] is not None:
            print(f"  {name}: slope {fit['slope']:.3f} +- {fit['slope_se']:.3f}")
    print(f"\n{len(plan)} units, N={args.samples} {args.data} inputs: {elapsed:.1f} s")
    print(f"results written to {report_path} and {out}/ntk_*.png")
    return 0


# ------------------------------------------------------------------------------------- main


def _add_run(sub) -> None:
    parser = sub.add_parser(
        "run",
        help="the main job with its defaults (what `make run` does)",
        description="Run the main job (currently: rank-collapse) with its default settings.",
    )
    parser.add_argument("--out", default="results/rank_collapse", help="output directory")
    parser.set_defaults(func=_run_main_job)


def _run_main_job(args: argparse.Namespace) -> int:
    return main(["rank-collapse", "--out", args.out])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdeformer",
        description=(
            "Shaped Transformers, their covariance SDE limit and exact finite-width laws. "
            "Each command prints a table, writes JSON and figures, and resumes interrupted runs."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_rank_collapse(sub)
    _add_ntk(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, ResultsError) as err:
        print(f"sdeformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"sdeformer {args.command}: interrupted; finished units are saved, rerun to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
