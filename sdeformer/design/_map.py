"""`phase_map`: near-collapse, blow-up and the median correlation over a grid of two parameters.

For each cell (x_i, y_j) of a grid over two ShapedConfig parameters (`PARAMETERS`) at fixed
width n, depth d and m tokens, the map samples V_d and reports p_collapse (mean_rho >= the
threshold), p_blowup (crossed the bound, non-finite or left the PSD cone by depth d, as the
forecast counts it) and the median mean_rho. Every cell uses the same key, so with the limit
SDE the same Brownian paths (common random numbers, `_cells`) and with the law chain the same
key: neighbouring cells differ by the parameters, not by the noise. See docs/design.md.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax.numpy as jnp
import numpy as np

from .. import ShapedConfig
from ._cells import check_parameter, configured, grid_num_steps, sde_endpoint
from ._forecast import _check_inputs, forecast
from ._paths import check_method

MAP_METHODS = ("sde", "law")
"""Samplers of a phase map: the limit SDE at T = d / n (default) or the exact law chain."""


def grid_axis(name: str, lo: float, hi: float, count: int) -> tuple[str, np.ndarray]:
    """(name, `count` equally spaced values from lo to hi), checked like `phase_map`'s axes."""
    if not (isinstance(count, int | np.integer) and count >= 2):
        raise ValueError(f"{name}: count={count!r} gives no grid; pass a count >= 2")
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise ValueError(
            f"{name}: the range {lo:g}..{hi:g} is empty; pass a lower end below the upper end"
        )
    return name, np.linspace(float(lo), float(hi), int(count))


def _check_axis(config: ShapedConfig, axis, what: str) -> tuple[str, np.ndarray]:
    try:
        name, values = axis
    except (TypeError, ValueError):
        raise ValueError(f"{what}={axis!r} is invalid; pass (name, values)") from None
    check_parameter(name, what)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size < 2 or np.any(np.diff(values) <= 0):
        raise ValueError(
            f"{what} {name}: the values {values.tolist()} are not an increasing grid of at least "
            "2 values; pass e.g. grid_axis(name, lo, hi, count)"
        )
    try:  # the ends: a ValueError names a bad one
        configured(config, {name: values[0]})
        configured(config, {name: values[-1]})
    except ValueError as err:
        raise ValueError(f"{what} axis: {err}") from None
    return name, values


@dataclasses.dataclass(frozen=True, eq=False)
class PhaseMap:
    """The result of `phase_map`. Arrays are (len(y), len(x)): row j is y[j], column i is x[i].

    `p_collapse`, `p_blowup`, `median_mean_rho`, `p_left_psd_cone` (SDE only: the part of
    p_blowup that left the cone, an Euler discretisation failure); `seconds` in all and
    `cell_seconds` per cell (each new parameter value compiles the solver once).
    """

    method: str
    config: ShapedConfig
    x_name: str
    x: np.ndarray
    y_name: str
    y: np.ndarray
    width: int
    depth: int
    tokens: int
    num_samples: int
    collapse_threshold: float
    bound: float
    num_steps: int | None
    p_collapse: np.ndarray
    p_blowup: np.ndarray
    median_mean_rho: np.ndarray
    p_left_psd_cone: np.ndarray
    seconds: float
    cell_seconds: np.ndarray

    def settings(self) -> dict:
        """The settings of the map, JSON-ready."""
        return {
            "method": self.method,
            "config": self.config.to_dict(),
            "x": {"name": self.x_name, "values": self.x.tolist()},
            "y": {"name": self.y_name, "values": self.y.tolist()},
            "width": self.width,
            "depth": self.depth,
            "T": self.depth / self.width,
            "tokens": self.tokens,
            "samples_per_cell": self.num_samples,
            "collapse_threshold": self.collapse_threshold,
            "bound": self.bound if math.isfinite(self.bound) else None,
            "sde_num_steps": self.num_steps,
            "sde_num_steps_rule": None
            if self.num_steps is None
            else "sdeformer.suggest_num_steps at the grid's most demanding cell (largest gamma, "
            "smallest tau0), the same for every cell (common random numbers)",
            "common_random_numbers": "every cell uses the same key (SDE: the same Brownian paths)",
        }

    def to_dict(self) -> dict:
        """One JSON-ready dictionary; maps as nested lists indexed [y][x]."""
        return {
            "settings": self.settings(),
            "definitions": {
                "p_collapse": "fraction of paths with mean_rho >= collapse_threshold at depth d",
                "p_blowup": "fraction of paths that by depth d crossed the bound, became "
                "non-finite or (SDE) left the PSD cone",
                "median_mean_rho": "sample median of mean_rho at depth d (stopped paths with "
                "their held exit state)",
                "layout": "arrays are indexed [y][x]",
            },
            "p_collapse": self.p_collapse.tolist(),
            "p_blowup": self.p_blowup.tolist(),
            "median_mean_rho": self.median_mean_rho.tolist(),
            "p_left_psd_cone": self.p_left_psd_cone.tolist(),
            "seconds": self.seconds,
            "cell_seconds_median": float(np.median(self.cell_seconds)),
        }

    def __str__(self) -> str:
        lines = [
            f"Phase map ({self.method}) over {self.x_name} ({self.x.size} values "
            f"{self.x[0]:g}..{self.x[-1]:g}) x {self.y_name} ({self.y.size} values "
            f"{self.y[0]:g}..{self.y[-1]:g}): n={self.width}, d={self.depth}, m={self.tokens}, "
            f"{self.num_samples} paths per cell, {self.seconds:.1f} s",
        ]
        for label, arr in (
            ("P(collapse)", self.p_collapse),
            ("P(blow-up)", self.p_blowup),
            ("median mean_rho", self.median_mean_rho),
        ):
            lines.append(f"  {label}: min {arr.min():.3g}, max {arr.max():.3g}")
        return "\n".join(lines)

    __repr__ = __str__


def phase_map(
    config: ShapedConfig,
    v0,
    *,
    x,
    y,
    width: int,
    depth: int,
    num_samples: int,
    key,
    method: str = "sde",
    collapse_threshold: float = 0.9,
    bound: float = 1e3,
    dtype=jnp.float32,
    progress=None,
) -> PhaseMap:
    """Map p_collapse, p_blowup and the median mean_rho at depth d over a grid of two parameters.

    Arguments: `x`, `y` = (name, increasing values) with name in `PARAMETERS` (`grid_axis`
    builds one); `v0` (m, m) the input covariance; `width` n and `depth` d; `num_samples` paths
    per cell; `key` one key for every cell (common random numbers); `method` "sde" (the limit
    SDE at T = d / n, `sdeformer.suggest_num_steps` steps at the grid's most demanding cell) or
    "law" (the exact finite-width law chain, `forecast(method="law")` per cell). `progress`: an
    optional callable (cells done, cells) after each cell.

    Every input is checked before any sampling: a ValueError names a bad value and the fix.
    """
    if method not in MAP_METHODS:
        raise ValueError(f"method={method!r} is not a phase-map method; pick one of {MAP_METHODS}")
    x_name, xs = _check_axis(config, x, "x")
    y_name, ys = _check_axis(config, y, "y")
    if x_name == y_name:
        raise ValueError(f"x and y are both {x_name!r}; map two different parameters")
    v0, width, depth, num_samples, _ = _check_inputs(
        v0, width, depth, num_samples, collapse_threshold, bound, None, dtype
    )
    m = int(v0.shape[-1])
    check_method(config, method, width, m)
    if method == "law" and width < m:
        raise ValueError(f"width={width} is below m={m} tokens; pass a width >= {m}")
    started = time.perf_counter()
    T = depth / width
    steps = None
    if method == "sde":
        box = {x_name: (xs[0], xs[-1]), y_name: (ys[0], ys[-1])}
        steps = grid_num_steps(config, v0, T, box)
    shape = (ys.size, xs.size)
    out = {k: np.zeros(shape) for k in ("p_collapse", "p_blowup", "median", "cone", "sec")}
    for j, yv in enumerate(ys):
        for i, xv in enumerate(xs):
            tick = time.perf_counter()
            cell = configured(config, {x_name: xv, y_name: yv})
            if method == "sde":
                end = sde_endpoint(
                    cell, v0, T=T, num_samples=num_samples, key=key, num_steps=steps,
                    bound=bound, dtype=dtype,
                )  # fmt: skip
                rho, stopped, cone = end.mean_rho, end.stopped, end.left_cone.mean()
            else:
                fc = forecast(
                    cell, v0, width=width, depth=depth, num_samples=num_samples, key=key,
                    method="law", collapse_threshold=collapse_threshold, bound=bound, dtype=dtype,
                )  # fmt: skip
                rho = fc.samples["mean_rho"][:, -1]
                stopped, cone = None, 0.0
                out["p_blowup"][j, i] = fc.final.p_blowup.value
            out["p_collapse"][j, i] = float(np.mean(rho >= collapse_threshold))
            if stopped is not None:
                out["p_blowup"][j, i] = float(np.mean(stopped))
            out["median"][j, i] = float(np.median(rho))
            out["cone"][j, i] = float(cone)
            out["sec"][j, i] = time.perf_counter() - tick
            if progress is not None:
                progress(j * xs.size + i + 1, xs.size * ys.size)
    return PhaseMap(
        method=method,
        config=config,
        x_name=x_name,
        x=xs,
        y_name=y_name,
        y=ys,
        width=width,
        depth=depth,
        tokens=m,
        num_samples=num_samples,
        collapse_threshold=float(collapse_threshold),
        bound=float(bound),
        num_steps=steps,
        p_collapse=out["p_collapse"],
        p_blowup=out["p_blowup"],
        median_mean_rho=out["median"],
        p_left_psd_cone=out["cone"],
        seconds=time.perf_counter() - started,
        cell_seconds=out["sec"],
    )
