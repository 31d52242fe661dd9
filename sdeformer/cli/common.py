"""What the commands share: configuration options, run options, progress bars, tables."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..config import BLOCK_NAMES, ShapedConfig

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


def progress(total: int, desc: str, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=disable, file=sys.stderr, leave=False)


def setup_precision(args: argparse.Namespace):
    import jax
    import jax.numpy as jnp

    if args.float64:
        jax.config.update("jax_enable_x64", True)
        return jnp.float64
    return jnp.float32


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
