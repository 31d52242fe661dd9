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
