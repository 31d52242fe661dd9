"""One calling convention for the public samplers and solvers, and its checks.

Every sampler of covariance paths and every SDE solver is called as

    f(config, v0, *, width, depth | T, num_samples, key, ...)

`config` and `v0` (the m x m input covariance) are the only positional arguments, as in
`diffrax.diffeqsolve(terms, solver, ...)`; the sizes follow by keyword. Depth and the
depth-to-width ratio are one quantity in two units, T = depth / width: a finite sampler takes
exactly one of `depth` (the number of layers d) and `T` (then d = round(T n), and the samples'
times l / n say which T was reached); an SDE solver takes `T` (its `width`, when given, selects
the finite-width SDE). docs/usage.md ("Code map") states the convention for users.

`follows_convention` wraps a public function so that the old positional orders
(`law_covariance_paths(config, n, depth, v0, num_samples)`, `solve_sde(config, v0, T,
num_samples)`) fail with a message that names the convention and the likely swap, instead of
"takes 2 positional arguments but 5 were given" or an invalid-matrix error about a width.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings

import jax
import numpy as np

from .config import ShapedConfig, check_covariance, check_width

T_WARN_ABOVE = 4.0
"""An integral T above this warns: it looks like a depth passed as T = depth / width."""


def _describe(value) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape):
        return f"an array of shape {tuple(shape)}"
    return repr(value)


def _usage(fn) -> str:
    names = [
        p.name + ("" if p.default is inspect.Parameter.empty else "=...")
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    return f"{fn.__name__}(config, v0, *, {', '.join(names)})"


def _check_positional(fn, args: tuple) -> None:
    name = fn.__name__  # the usage line is only built for a message (not on every call)
    if args and not isinstance(args[0], ShapedConfig):
        raise TypeError(
            f"{name}: the first argument is {_describe(args[0])}, not a ShapedConfig; "
            f"call {_usage(fn)}"
        )
    if len(args) > 2:
        extra = ", ".join(_describe(a) for a in args[2:])
        raise TypeError(
            f"{name} takes config and v0 positionally and everything else by keyword; it got "
            f"{len(args)} positional arguments (after v0: {extra}). Call {_usage(fn)}. The sizes "
            "(width, depth or T, num_samples) are keywords since sdeformer 0.2 (CHANGELOG)."
        )
    if len(args) == 2 and np.ndim(args[1]) == 0 and not isinstance(args[1], jax.core.Tracer):
        raise TypeError(
            f"{name}: v0={_describe(args[1])} is a number, not an m x m covariance; v0 comes "
            "right after config and the sizes are keywords (a width or a depth in v0's place?). "
            f"Call {_usage(fn)}"
        )


def follows_convention(fn):
    """Wrap a public sampler or solver: refuse the old positional orders with a clear message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _check_positional(fn, args)
        return fn(*args, **kwargs)

    return wrapper


def check_T(T, *, name: str = "T") -> None:
    """Refuse a T <= 0 or non-finite; warn when a concrete T looks like a depth (see module)."""
    if isinstance(T, jax.core.Tracer) or np.ndim(T):
        return
    value = float(T)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{name}={T!r} is invalid; pass a depth-to-width ratio T = depth/width > 0"
        )
    if value > T_WARN_ABOVE and value == round(value):
        warnings.warn(
            f"{name}={T!r} is large for a depth-to-width ratio T = depth / width; if you meant "
            f"{int(value)} layers, pass depth={int(value)} (with width=...) instead",
            UserWarning,
            stacklevel=3,
        )


def resolve_depth(width, depth=None, T=None) -> tuple[int, int]:
    """The checked (width, depth) of a finite sampler given exactly one of `depth` and `T`."""
    width = check_width(width, name="width")
    if (depth is None) == (T is None):
        raise TypeError(
            "pass exactly one of depth= (the number of layers) and T= (depth / width); got "
            + ("neither" if depth is None else f"both (depth={depth!r}, T={T!r})")
        )
    if depth is not None:
        return width, check_width(depth, name="depth")
    return width, depth_for(T, width)


def depth_for(T, width: int) -> int:
    """Depth d = round(T n) of a network of width n at depth-to-width ratio T (at least 1)."""
    check_T(T)
    depth = round(float(T) * width)
    if depth < 1:
        raise ValueError(
            f"T={T!r} at width {width} gives round(T n) = 0 layers; pass T >= {0.5 / width:.3g} "
            "or a larger width"
        )
    return depth


def check_sampler_sizes(width, depth, T, num_samples, v0):
    """The checked (width, depth, num_samples, v0) of a covariance-path sampler (one rule for all).

    Exactly one of `depth` and `T` is given (`resolve_depth`).
    """
    width, depth = resolve_depth(width, depth, T)
    return width, depth, check_width(num_samples, name="num_samples"), check_covariance(v0)
