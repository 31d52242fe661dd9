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
from .._convention import follows_convention, resolve_depth
from ..sde import rule_steps
from ._cells import check_parameter, configured, nested_steps, row_needs, sde_endpoint
from ._forecast import _check_inputs, forecast
from ._paths import check_method
from ._rows import check_workers, run_rows

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
    `cell_seconds` per cell (its row's wall time over the row's cells; rows computed at once
    share the CPU, so these overlap).
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
    row_steps: tuple[int, ...] | None = None

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
            "sde_row_steps": None if self.row_steps is None else list(self.row_steps),
            "sde_num_steps_rule": None
            if self.num_steps is None
            else "row j takes the fewest steps that divide sde_num_steps and keep the step "
            "rule (sdeformer.suggest_num_steps) at the row's most demanding cell (largest "
            "gamma, smallest tau0); the Brownian paths are drawn on sde_num_steps steps and "
            "summed over each row's step, so every row sees the same Brownian paths",
            "common_random_numbers": "every cell uses the same key and Brownian grid (SDE: the "
            "same Brownian paths, at its row's step)",
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


def _check_grid(config: ShapedConfig, x, y, method: str):
    """The two checked axes of a map with `method`."""
    if method not in MAP_METHODS:
        raise ValueError(f"method={method!r} is not a phase-map method; pick one of {MAP_METHODS}")
    x_axis = _check_axis(config, x, "x")
    y_axis = _check_axis(config, y, "y")
    if x_axis[0] == y_axis[0]:
        raise ValueError(f"x and y are both {x_axis[0]!r}; map two different parameters")
    return x_axis, y_axis


@dataclasses.dataclass(frozen=True)
class _Grid:
    """The cells of a map and how to sample them."""

    config: ShapedConfig
    v0: object
    x_name: str
    xs: np.ndarray
    y_name: str
    ys: np.ndarray
    width: int
    depth: int
    num_samples: int
    key: object
    bound: float
    dtype: object

    def rows(self, method: str, threshold: float):
        """(row function j -> cells, the Brownian grid's steps, each row's steps).

        "sde": each row in the fewest steps inside the step rule at its most demanding cell
        that divide the map's Brownian grid (`_cells.nested_steps`; the floor is T / MAX_DT);
        "law": the exact law chain per cell (no steps: None, None).
        """
        if method != "sde":
            return (lambda j: self.law_row(j, threshold)), None, None
        T = self.depth / self.width
        needs = row_needs(self.config, self.v0, T, (self.x_name, self.xs), (self.y_name, self.ys))
        steps, counts = nested_steps(needs, rule_steps(0.0, T))
        return (lambda j: self.sde_row(j, counts[j], steps, threshold)), steps, counts

    def sde_row(self, j: int, steps: int, fine: int, threshold: float) -> dict:
        """Row j by the limit SDE in `steps` Euler steps, one `solve_sde` call.

        The row's parameters are JAX values, one per path (`solve_sde(values=...)`), so one
        compiled solver serves the whole map; path i of every cell draws Brownian path i
        (`brownian_ids`) on the map's grid of `fine` steps (`brownian_steps`), each of the
        row's steps summing `fine / steps` of its increments: common random numbers across
        rows of other step counts too. A cell's seconds are its row's over the row.
        """
        tick = time.perf_counter()
        paths, nx = self.num_samples, self.xs.size
        values = {
            self.x_name: np.repeat(self.xs, paths),
            self.y_name: np.full(nx * paths, float(self.ys[j])),
        }
        end = sde_endpoint(
            self.config, self.v0, T=self.depth / self.width, num_samples=nx * paths,
            key=self.key, num_steps=steps, bound=self.bound, dtype=self.dtype,
            values=values, brownian_ids=np.tile(np.arange(paths), nx), brownian_steps=fine,
            max_steps=2 ** max(4, math.ceil(math.log2(fine + 2))),  # one compile for all rows
        )  # fmt: skip
        rho = end.mean_rho.reshape(nx, paths)
        return {
            "p_collapse": np.mean(rho >= threshold, axis=1),
            "p_blowup": np.mean(end.stopped.reshape(nx, paths), axis=1),
            "median": np.median(rho, axis=1),
            "cone": np.mean(end.left_cone.reshape(nx, paths), axis=1),
            "sec": np.full(nx, (time.perf_counter() - tick) / nx),
        }

    def law_row(self, j: int, threshold: float) -> dict:
        """Row j by the exact law chain, `forecast(method="law")` in every cell."""
        out = {k: np.zeros(self.xs.size) for k in _ROW_KEYS}
        for i, xv in enumerate(self.xs):
            tick = time.perf_counter()
            cell = configured(self.config, {self.x_name: xv, self.y_name: self.ys[j]})
            fc = forecast(
                cell, self.v0, width=self.width, depth=self.depth,
                num_samples=self.num_samples, key=self.key, method="law",
                collapse_threshold=threshold, bound=self.bound, dtype=self.dtype,
            )  # fmt: skip
            rho = fc.samples["mean_rho"][:, -1]
            out["p_collapse"][i] = float(np.mean(rho >= threshold))
            out["p_blowup"][i] = fc.final.p_blowup.value
            out["median"][i] = float(np.median(rho))
            out["sec"][i] = time.perf_counter() - tick
        return out


_ROW_KEYS = ("p_collapse", "p_blowup", "median", "cone", "sec")
"""The per-cell arrays of one row of a map (a resumable unit)."""


@follows_convention
def phase_map(
    config: ShapedConfig,
    v0,
    *,
    x,
    y,
    width: int,
    depth: int | None = None,
    T: float | None = None,
    num_samples: int,
    key,
    method: str = "sde",
    collapse_threshold: float = 0.9,
    bound: float = 1e3,
    dtype=jnp.float32,
    progress=None,
    store=None,
    workers: int | None = None,
) -> PhaseMap:
    """Map p_collapse, p_blowup and the median mean_rho at depth d over a grid of two parameters.

    Arguments: `x`, `y` = (name, increasing values) with name in `PARAMETERS` (`grid_axis`
    builds one); `v0` (m, m) the input covariance; `width` n and `depth` d; `num_samples` paths
    per cell; `key` one key for every cell (common random numbers); `method` "sde" (the limit
    SDE at T = d / n, each row in the fewest steps inside the step rule at its most demanding
    cell that divide the map's Brownian grid, `_cells.nested_steps`) or
    "law" (the exact finite-width law chain, `forecast(method="law")` per cell). `progress`: an
    optional callable (cells done, cells) after each row. `store`: None, or a
    `sdeformer.results.ResultStore` opened for this map's settings: each row of cells is a unit,
    saved as it finishes and skipped on a rerun, so an interrupted map resumes. `workers`: rows
    computed at once (None: the CPU cores available, 1 on other backends; `_rows.run_rows`);
    the map does not depend on it.

    Every input is checked before any sampling: a ValueError names a bad value and the fix.
    """
    (x_name, xs), (y_name, ys) = _check_grid(config, x, y, method)
    width, depth = resolve_depth(width, depth, T)
    v0, width, depth, num_samples, _ = _check_inputs(
        v0, width, depth, num_samples, collapse_threshold, bound, None, dtype
    )
    m = int(v0.shape[-1])
    check_method(config, method, width, m)
    workers = check_workers(workers)
    if method == "law" and width < m:
        raise ValueError(f"width={width} is below m={m} tokens; pass a width >= {m}")
    for yv in ys:  # every cell's configuration is valid before any sampling
        for xv in xs:
            configured(config, {x_name: xv, y_name: yv})
    started = time.perf_counter()
    grid = _Grid(config, v0, x_name, xs, y_name, ys, width, depth, num_samples, key, bound, dtype)
    row, steps, counts = grid.rows(method, collapse_threshold)
    done = run_rows(
        row, ys.size, store=store, progress=progress, cells_per_row=xs.size, workers=workers
    )
    out = {k: np.stack([np.asarray(r[k], dtype=np.float64) for r in done]) for k in _ROW_KEYS}
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
        row_steps=None if counts is None else tuple(counts),
    )
