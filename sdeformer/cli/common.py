"""What the commands share: configuration options, run options, progress bars, tables."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import yaml

from .._progress import Progress
from ..config import BLOCK_NAMES, ShapedConfig
from ..results import markdown_table as markdown_table

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


MODEL_DEFAULTS = ShapedConfig()
"""The model defaults of every command: `ShapedConfig()`'s own (one default everywhere)."""


def add_config_arguments(
    parser: argparse.ArgumentParser,
    *,
    fields: tuple[str, ...] | None = None,
    group=None,
    help_prefix: str = "",
    unset_booleans: bool = False,
) -> None:
    """One option per ShapedConfig field (--tau0, --gamma, ..., --blocks attention,mlp).

    Every option defaults to `MODEL_DEFAULTS` (`ShapedConfig()`), in every command. `fields`:
    only these fields (default: all); `group`: the argument group to add them to (default: a
    new "model configuration (ShapedConfig)" group); `help_prefix` starts each help text;
    `unset_booleans`: the boolean options default to None (not given), which `config_from_args`
    reads as the config's default.
    """
    if group is None:
        group = parser.add_argument_group("model configuration (ShapedConfig)")
    names = [f.name for f in dataclasses.fields(ShapedConfig)] if fields is None else fields
    for name in names:
        flag = "--" + name.replace("_", "-")
        default = getattr(MODEL_DEFAULTS, name)
        help_text = f"{help_prefix}{CONFIG_HELP[name]} (default: {default})"
        if name in ("out_proj", "causal"):
            group.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=None if unset_booleans else default,
                help=help_text,
            )
        elif name == "blocks":
            group.add_argument(flag, default=",".join(default), help=help_text)
        elif name in ("heads", "key_width"):
            group.add_argument(flag, type=int, default=default, help=help_text)
        else:
            group.add_argument(flag, type=float, default=default, help=help_text)


def config_from_args(
    args: argparse.Namespace, fields: tuple[str, ...] | None = None
) -> ShapedConfig:
    """The validated ShapedConfig of the parsed options (ValueError names a bad value).

    `fields`: the fields that have options (default: all; the others keep their defaults). A
    boolean option left unset (None) keeps the config's default.
    """
    names = [f.name for f in dataclasses.fields(ShapedConfig)] if fields is None else fields
    values = {name: getattr(args, name) for name in names}
    if "blocks" in values:
        values["blocks"] = tuple(b.strip() for b in values["blocks"].split(",") if b.strip())
    for name in ("out_proj", "causal"):
        if name in values and values[name] is None:
            del values[name]
    return ShapedConfig(**values)


def add_depth_arguments(group, *, default: tuple[str, float]) -> None:
    """`--depth d` or `--T T` (at most one of them; T = d / n), and the command's default.

    `default` is ("depth", d) or ("T", T): what a command line without either uses.
    `resolve_depth` turns them into (depth, T).
    """
    kind, value = default
    either = group.add_mutually_exclusive_group()
    either.add_argument(
        "--depth",
        type=positive_int,
        default=None,
        help="depth d in layers; give --depth or --T, not both"
        + (f" (default: {value:g})" if kind == "depth" else ""),
    )
    either.add_argument(
        "--T",
        type=float,
        default=None,
        help="depth-to-width ratio T = d / n (depth round(T n)); give --depth or --T, not both"
        + (f" (default: {value:g})" if kind == "T" else ""),
    )
    group.set_defaults(depth_default=default)


def resolve_depth(args: argparse.Namespace, width: int) -> tuple[int, float]:
    """(depth d, T = d / width) from `--depth` or `--T` (ValueError if both are given).

    `--T` gives depth round(T n) (at least 1 layer), and the T returned is d / n exactly.
    """
    from ..compare import depth_for

    depth, T = getattr(args, "depth", None), getattr(args, "T", None)
    if depth is not None and T is not None:
        raise ValueError(
            f"--depth {depth} and --T {T:g} are both given (one may come from --config); give "
            "one of them: T = depth / width"
        )
    if depth is None and T is None:
        kind, value = args.depth_default
        depth, T = (int(value), None) if kind == "depth" else (None, float(value))
    if depth is None:
        depth = depth_for(T, width)
    return depth, depth / width


def settings_title(config, *, m: int, rho0: float | None, n: int, depth: int, T: float) -> str:
    """'m = 4, rho0 = 0.3, tau0 = 1, gamma = 0.5, n = 64, depth = 64 (T = 1)': a figure's title.

    `rho0` None: the input covariance was given as a matrix (--v0).
    """
    given = f"rho0 = {rho0:g}" if rho0 is not None else "V0 from --v0"
    return (
        f"m = {m}, {given}, tau0 = {config.tau0:g}, gamma = {config.gamma:g}, "
        f"c- = {config.c_minus:g}, n = {n}, depth = {depth} (T = {T:.3g})"
    )


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
    group.add_argument(
        "--accept-changed",
        action="store_true",
        help="resume results in --out written by another sdeformer version (recorded in the "
        "manifest) instead of refusing them",
    )
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    group.add_argument(
        "--float64", action="store_true", help="compute in float64 (enables jax_enable_x64)"
    )


def add_devices_argument(group, what: str) -> None:
    """`--devices N`: shard `what` over the first N devices (seed semantics in the help)."""
    group.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        metavar="N",
        help=f"shard {what} over the first N devices of jax.devices() (on CPU, start with "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N to make N devices). Every sample "
        "draws from its own key, split from the seed on the host whatever N is (the keys are "
        "padded to a multiple of N and the padding is dropped), so a --seed gives the same "
        "numbers for every --devices; N above jax.device_count() is refused (docs/scaling.md) "
        "(default: 1)",
    )


def check_devices(devices: int) -> None:
    """Refuse `--devices N` above the visible device count, naming the fix."""
    available = jax.devices()
    if devices > len(available):
        platform = available[0].platform
        cpu_fix = (
            f"; on CPU, start with XLA_FLAGS=--xla_force_host_platform_device_count={devices}"
            if platform == "cpu"
            else ""
        )
        raise ValueError(
            f"--devices {devices}: only {len(available)} {platform} device(s) are visible "
            f"(jax.device_count()); pass --devices 1..{len(available)}{cpu_fix}"
        )


def positive_int(text: str, *, minimum: int = 1) -> int:
    """`text` as an integer >= `minimum`; else an argparse error naming the value."""
    kind = "positive" if minimum == 1 else f">= {minimum}"
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {kind} integer") from err
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is not a {kind} integer")
    return value


def non_negative_int(text: str) -> int:
    """`text` as an integer >= 0; else an argparse error naming the value."""
    return positive_int(text, minimum=0)


def progress(total: int, desc: str, disable: bool, unit: str = "units"):
    """Progress of `total` units on stderr (none when `disable`).

    A tqdm bar on a terminal, else one line every few seconds, with a heartbeat while one unit
    runs long (sdeformer._progress).
    """
    return Progress(desc, total, unit, enabled=not disable, rate=False, file=sys.stderr)


def setup_precision(args: argparse.Namespace):
    """The dtype of the run: float64 with `--float64` (enabling JAX's x64 mode), else float32."""
    if args.float64:
        jax.config.update("jax_enable_x64", True)
        return jnp.float64
    return jnp.float32


def csv_list(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated list."""
    return [part.strip() for part in text.split(",") if part.strip()]


# ---------------------------------------------------------------------------------- config files
#
# argparse is kept (rather than jsonargparse or tyro): the commands declare every option with its
# type, default and help once, and the file layer below (read_config_file, option_actions,
# config_defaults, about 110 lines) sends the values of a file through the same `type=`
# converters as flags, with flags on the command line winning. jsonargparse would replace it
# but changes the parser class of every command, reads TOML only through a custom loader, and
# spells options by destination (`n` for `--width`), which the resolved config.json and its tests
# do not. TOML is read by the standard library's tomllib, YAML by PyYAML (a dependency).

_NOT_OPTIONS = {"help", "config", "func", "command"}


def add_config_file_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--config FILE` to a command (TOML, YAML or JSON; keys are the command's options)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="read options from a TOML (.toml), YAML (.yaml/.yml) or JSON (.json) file whose "
        'keys are this command\'s options (e.g. samples = 64 or kinds = ["shaped"]); options '
        "given on the command line win. Each run writes the resolved options to "
        "<out>/config.json, which --config reads back",
    )


def read_config_file(path: str) -> dict:
    """The mapping in a TOML, YAML or JSON file (ValueError names the file and the problem)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--config {path}: no such file")
    suffix = file.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ValueError(f"--config {path}: unknown suffix {suffix!r}; use .toml, .yaml, .json")
    try:
        if suffix == ".toml":
            data = tomllib.loads(file.read_text())
        elif suffix == ".json":
            data = json.loads(file.read_text())
        else:
            data = yaml.safe_load(file.read_text())
    except Exception as err:  # tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError
        raise ValueError(f"--config {path}: cannot parse it ({err})") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(
            f"--config {path}: expected a mapping of options, got {type(data).__name__}"
        )
    return data


def _key(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The options a config file may set, by name.

    Each flag without dashes, `-` as `_` (`samples`, `key_width`, `width` and its alias `n`), and
    each destination name.
    """
    actions = {}
    for action in parser._actions:  # argparse has no public accessor
        if action.option_strings and action.dest not in _NOT_OPTIONS:
            for flag in action.option_strings:
                if flag.startswith("--") and not flag.startswith("--no-"):
                    actions.setdefault(_key(flag), action)
            actions.setdefault(action.dest, action)
    return actions


def _primary(action: argparse.Action) -> str:
    """The name under which a resolved config records an option (its first long flag)."""
    return _key(next(f for f in action.option_strings if f.startswith("--")))


def config_defaults(parser: argparse.ArgumentParser, data: dict, path: str) -> dict:
    """Validate a config file's mapping against a command's options; return parser defaults.

    Keys may be spelled like the destination (`key_width`) or the flag (`key-width`). Lists
    become comma-separated strings (the form list options take), and every value other than a
    boolean passes through the option's `type=` converter, so a file is checked like flags are.
    """
    actions = option_actions(parser)
    names = sorted({_primary(a) for a in actions.values() if a.help != argparse.SUPPRESS})
    defaults = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in actions:
            valid = ", ".join(names)
            command = parser.prog.split()[-1]
            raise ValueError(
                f"--config {path}: unknown option {raw_key!r} for `sdeformer {command}`; "
                f"valid options: {valid}"
            )
        action = actions[key]
        flag = action.option_strings[0]
        key = action.dest
        if action.nargs == 0:  # store_true / BooleanOptionalAction
            if not isinstance(value, bool):
                raise ValueError(f"--config {path}: {raw_key} = {value!r} must be true or false")
            defaults[key] = value
            continue
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            raise ValueError(f"--config {path}: {raw_key} = {value!r} is not a value for {flag}")
        if value is None:
            defaults[key] = None
            continue
        text = str(value)
        try:
            defaults[key] = action.type(text) if action.type is not None else text
        except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
            raise ValueError(f"--config {path}: {raw_key} = {value!r}: {err}") from err
        if action.choices is not None and defaults[key] not in action.choices:
            raise ValueError(
                f"--config {path}: {raw_key} = {value!r}; choose from {list(action.choices)}"
            )
    return defaults


def resolved_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """Every option of the parsed command with its final value (what `--config` reads back)."""
    actions: dict[str, argparse.Action] = {}
    for action in option_actions(parser).values():
        hidden = action.help == argparse.SUPPRESS
        if action.dest not in actions or actions[action.dest].help == argparse.SUPPRESS:
            if not hidden or action.dest not in actions:
                actions[action.dest] = action
    return {
        _primary(action): getattr(args, dest)
        for dest, action in actions.items()
        if hasattr(args, dest)
        and dest not in ("overwrite", "accept_changed")
        and not (action.help == argparse.SUPPRESS and getattr(args, dest) is None)
    }
