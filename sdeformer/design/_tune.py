"""`tune`: shaping parameters that put a forecast statistic at depth d on a target, certified.

Search: the statistic is estimated on the limit SDE at T = d / n with one key and one number of
steps for every evaluation (common random numbers, `_cells`), so it is a deterministic,
piecewise-smooth function of the parameters. The parameters are JAX values of the solve
(`solve_sde(values=...)`: one compiled solver for the whole search) and the gradient is
pathwise: `jax.jvp` through the solve with the Brownian paths held fixed.
Each step is Gauss-Newton on (statistic - target) in parameters scaled to their ranges (for one
parameter, Newton's step kept inside a bracket of the root); with two parameters the step is
the smallest move that reaches the target to first order.

Certificate: fresh samples (another key) from the exact law chain at the user's width n,
`forecast(method="law")`, report the statistic with its 95 % interval.

Statistics (`STATISTICS`): "mean_rho:q50" (median of mean_rho at depth d), "mean_rho:mean" and
"p_collapse", tuned through the smooth surrogate mean(sigmoid((mean_rho - threshold) / s)) and
certified as the plain fraction with its Clopper-Pearson interval.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import ShapedConfig
from .._convention import follows_convention, resolve_depth
from ._cells import check_parameter, configured, endpoint_mean_rho, grid_num_steps
from ._forecast import _check_inputs, forecast
from ._intervals import Estimate
from ._paths import check_method

STATISTICS = ("mean_rho:q50", "mean_rho:mean", "p_collapse")
"""Statistics at depth d that `tune` can put on a target."""

DEFAULT_RANGES = {"tau0": (0.3, 5.0), "gamma": (0.05, 0.95), "c_plus": (-2.0, 2.0)}
DEFAULT_RANGES["c_minus"] = (-3.0, 1.0)
"""Search ranges used when `ranges` does not give one."""


@dataclasses.dataclass(frozen=True, eq=False)
class TuneResult:
    """The result of `tune`.

    `tuned` parameter values, the search `history` (one dict per SDE evaluation point), the
    SDE estimate at the tuned values and the law-chain `certificate`.
    """

    statistic: str
    target: float
    tuned: dict[str, float]
    config: ShapedConfig
    sde_value: float
    converged: bool
    history: list[dict]
    certificate: dict
    settings: dict
    seconds: float

    def to_dict(self) -> dict:
        """JSON-ready: {"tuned": ..., "certificate": ..., "search": ..., "settings": ...}."""
        return {
            "tuned": dict(self.tuned),
            "certificate": dict(self.certificate),
            "search": {
                "statistic": self.statistic,
                "target": self.target,
                "sde_value": self.sde_value,
                "converged": self.converged,
                "history": list(self.history),
                "gradient": self.settings.get("gradient"),
            },
            "settings": dict(self.settings),
            "seconds": self.seconds,
        }

    def __str__(self) -> str:
        cert = self.certificate
        tuned = ", ".join(f"{k}={v:.4g}" for k, v in self.tuned.items())
        state = "converged" if self.converged else "NOT converged"
        return (
            f"Tuned {tuned} for {self.statistic} = {self.target:g} at depth "
            f"{self.settings['depth']} (limit SDE: {self.sde_value:.4g}, "
            f"{len(self.history)} evaluations, {state})"
            f"\ncertified by the exact law chain at n={self.settings['width']}, "
            f"{cert['samples']} fresh samples: {cert['statistic']} = {cert['value']:.4g} "
            f"[{cert['lower']:.4g}, {cert['upper']:.4g}] (95 %); target "
            f"{'inside' if cert['target_in_interval'] else 'OUTSIDE'} the interval; "
            f"{self.seconds:.1f} s"
        )

    __repr__ = __str__


def _check_tune(config, params, statistic, target, ranges, threshold, scale):
    params = tuple(params)
    if not 1 <= len(params) <= 2 or len(set(params)) != len(params):
        raise ValueError(f"params={params!r}: tune one or two different parameters")
    for p in params:
        check_parameter(p, "tuned parameter")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r} is unknown; pick one of {STATISTICS}")
    if not math.isfinite(target):
        raise ValueError(f"target={target!r} is not finite; pass a number")
    if statistic == "p_collapse" and not 0 < target < 1:
        raise ValueError(f"target={target!r} for p_collapse: pass a probability in (0, 1)")
    if statistic.startswith("mean_rho") and not -1 < target < 1:
        raise ValueError(f"target={target!r} for {statistic}: pass a correlation in (-1, 1)")
    if not scale > 0:
        raise ValueError(f"surrogate_scale={scale!r}: pass a scale > 0 (e.g. 0.05)")
    box = {}
    for p in params:
        lo, hi = (ranges or {}).get(p, DEFAULT_RANGES[p])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"range of {p} {lo:g}..{hi:g} is empty; pass lower < upper")
        configured(config, {p: lo})
        configured(config, {p: hi})
        box[p] = (float(lo), float(hi))
    return params, box


@follows_convention
def tune(
    config: ShapedConfig,
    v0,
    *,
    params,
    statistic: str,
    target: float,
    width: int,
    depth: int | None = None,
    T: float | None = None,
    key,
    ranges: dict | None = None,
    num_samples: int = 256,
    certify_samples: int = 1000,
    max_iterations: int = 8,
    tolerance: float = 0.005,
    collapse_threshold: float = 0.9,
    surrogate_scale: float = 0.05,
    bound: float = 1e3,
    dtype=jnp.float32,
) -> TuneResult:
    """Tune `params` (one or two of `PARAMETERS`) so that `statistic` at depth d is `target`.

    The search runs on the limit SDE (T = d / n, `num_samples` paths, one key: common random
    numbers; pathwise gradients) inside `ranges` {name: (lo, hi)} (default `DEFAULT_RANGES`).
    A target outside the statistic's values at the range's ends (one parameter) or corners
    (two) is refused as unreachable (a heuristic for a non-monotone statistic). It stops when
    |statistic - target| <= `tolerance` or after `max_iterations` steps; `certify_samples` fresh
    law-chain samples at width n then certify it (`TuneResult.certificate`).
    """
    params, box = _check_tune(
        config, params, statistic, target, ranges, collapse_threshold, surrogate_scale
    )
    width, depth = resolve_depth(width, depth, T)
    v0, width, depth, num_samples, _ = _check_inputs(
        v0, width, depth, num_samples, collapse_threshold, bound, None, dtype
    )
    m = _check_samplers(config, v0, width, certify_samples)
    started = time.perf_counter()
    T = depth / width
    steps = grid_num_steps(config, v0, T, box)
    search_key, certify_key = jr.split(key)
    solve = dict(T=T, num_samples=num_samples, key=search_key, num_steps=steps, bound=bound)
    solve["dtype"] = dtype
    g = _statistic_function(
        config, v0, params, statistic, collapse_threshold, surrogate_scale, solve
    )
    history: list[dict] = []
    f, lo, span = _objective(g, params, box, target, history)
    corners = [np.array(c, dtype=float) for c in np.ndindex(*(2,) * len(params))]
    ends = [f(c) for c in corners]
    _check_reachable(statistic, target, params, box, corners, ends)
    u, converged, residual = _search(
        lambda u: f(u, gradient=True), corners, ends, len(params), max_iterations, tolerance
    )
    tuned = {p: float(v) for p, v in zip(params, lo + span * u, strict=True)}
    tuned_config = configured(config, tuned)
    certificate = _certify(
        tuned_config, v0, width, depth, certify_samples, certify_key, statistic, target,
        collapse_threshold, bound, dtype,
    )  # fmt: skip
    settings = {
        **_settings(params, box, width, depth, m, num_samples, steps, tolerance),
        "collapse_threshold": collapse_threshold,
        "surrogate": _surrogate(statistic, collapse_threshold, surrogate_scale),
        "bound": bound if math.isfinite(bound) else None,
        "config": config.to_dict(),
    }
    return TuneResult(
        statistic=statistic,
        target=float(target),
        tuned=tuned,
        config=tuned_config,
        sde_value=float(residual + target),
        converged=converged,
        history=history,
        certificate=certificate,
        settings=settings,
        seconds=time.perf_counter() - started,
    )


def _objective(g, params, box, target, history: list):
    """f(u, gradient): statistic - target (and its gradient in u) at theta = lo + span u.

    u lies in [0, 1]^k; each evaluation is appended to `history`. Returns (f, lo, span).
    """
    lo = np.array([box[p][0] for p in params])
    span = np.array([box[p][1] - box[p][0] for p in params])

    def f(u, gradient=False):
        theta = lo + span * u
        value, grad = g(theta, gradient)
        history.append(
            {**{p: float(v) for p, v in zip(params, theta, strict=True)}, "value": value}
        )
        return (value - target, grad * span) if gradient else value - target

    return f, lo, span


def _surrogate(statistic: str, threshold: float, scale: float) -> str | None:
    """The smooth stand-in the search uses for p_collapse (None for the other statistics)."""
    if statistic != "p_collapse":
        return None
    return f"mean(sigmoid((mean_rho - {threshold:g}) / {scale:g}))"


def _settings(params, box, width, depth, m, num_samples, steps, tolerance) -> dict:
    """The search's settings, as recorded in the result."""
    return {
        "params": list(params),
        "ranges": {p: list(box[p]) for p in params},
        "width": width,
        "depth": depth,
        "T": depth / width,
        "tokens": m,
        "search_samples": num_samples,
        "sde_num_steps": steps,
        "gradient": "pathwise: jax.jvp through the SDE solve, Brownian paths fixed",
        "tolerance": tolerance,
    }


def _check_samplers(config, v0, width: int, certify_samples) -> int:
    """m, after checking that the SDE and the law chain can sample `config` at `width`."""
    if int(certify_samples) < 1:
        raise ValueError(f"certify_samples={certify_samples!r}: pass a positive integer")
    m = int(v0.shape[-1])
    check_method(config, "sde", width, m)
    check_method(config, "law", width, m)
    if width < m:
        raise ValueError(f"width={width} is below m={m} tokens; pass a width >= {m}")
    return m


def _check_reachable(statistic, target, params, box, corners, ends) -> None:
    """Refuse a target outside the values of the statistic at the range's ends or corners."""
    if min(ends) <= 0 <= max(ends):
        return
    lo = [box[p][0] for p in params]
    span = [box[p][1] - box[p][0] for p in params]
    found = ", ".join(
        f"{value + target:.4g} at "
        + ", ".join(f"{p}={lo[k] + span[k] * c[k]:g}" for k, p in enumerate(params))
        for c, value in zip(corners, ends, strict=True)
    )
    raise ValueError(
        f"target {statistic}={target:g} is unreachable in the range "
        + ", ".join(f"{p} in {box[p][0]:g}..{box[p][1]:g}" for p in params)
        + f" (limit SDE: {found}); pass a target between those values or widen the range"
    )


def _statistic_function(config, v0, params, statistic, threshold, scale, solve):
    """g(theta, gradient) -> (statistic on the limit SDE, its pathwise gradient or None).

    The parameters enter `solve_sde` as JAX values (one compiled solver for every evaluation)
    with one key (common random numbers); the gradient is `jax.jvp` through the solve with the
    Brownian paths held fixed, one direction per parameter.
    """

    def stat(theta):
        values = dict(zip(params, theta, strict=True))
        rho = endpoint_mean_rho(config, v0, values, **solve)
        if statistic == "mean_rho:q50":
            return jnp.median(rho)
        if statistic == "mean_rho:mean":
            return jnp.mean(rho)
        return jnp.mean(jax.nn.sigmoid((rho - threshold) / scale))

    def g(theta, gradient: bool):
        theta = jnp.asarray(theta, solve["dtype"])
        if not gradient:
            return float(stat(theta)), None
        grads = []
        for k in range(theta.size):
            direction = jnp.zeros_like(theta).at[k].set(1.0)
            value, slope = jax.jvp(stat, (theta,), (direction,))
            grads.append(float(slope))
        return float(value), np.array(grads)

    return g


def _search(f, corners, ends, k, max_iterations, tolerance):
    """Gauss-Newton (bracketed Newton for one parameter) from the corners' interpolation."""
    if k == 1:
        a, b = (0.0, ends[0]), (1.0, ends[1])  # f(a) and f(b) have opposite signs (or 0)
        u = np.array([a[0] - a[1] * (b[0] - a[0]) / (b[1] - a[1] or 1.0)])
    else:
        best = int(np.argmin(np.abs(ends)))
        u = 0.5 * (corners[best] + 0.5)
        a = b = None
    r = np.inf
    for _ in range(max_iterations):
        r, g = f(u)
        if abs(r) <= tolerance:
            return u, True, r
        if k == 1:
            (a, b) = ((u[0], r), b) if np.sign(r) == np.sign(a[1]) else (a, (u[0], r))
            step = u[0] - r / g[0] if g[0] else np.nan
            lo_, hi_ = sorted((a[0], b[0]))
            u = np.array([step if lo_ < step < hi_ else 0.5 * (lo_ + hi_)])
        else:
            norm = float(g @ g)
            u = np.clip(u - (r / norm) * g if norm else u, 0.0, 1.0)
    r, _ = f(u)
    return u, abs(r) <= tolerance, r


def _certify(config, v0, width, depth, samples, key, statistic, target, threshold, bound, dtype):
    fc = forecast(
        config, v0, width=width, depth=depth, num_samples=samples, key=key, method="law",
        collapse_threshold=threshold, bound=bound, dtype=dtype,
    )  # fmt: skip
    rho = fc.samples["mean_rho"][:, -1]
    if statistic == "mean_rho:q50":
        est = fc.final.features["mean_rho"]["q50"]
        how = "order-statistic interval of the median (distribution-free)"
    elif statistic == "p_collapse":
        est = fc.final.p_collapse
        how = "Clopper-Pearson interval of the fraction with mean_rho >= threshold"
    else:
        half = 1.959963984540054 * float(np.std(rho, ddof=1)) / math.sqrt(rho.size)
        mean = float(np.mean(rho))
        est = Estimate(mean, mean - half, mean + half, 0.95, 0.95)
        how = "normal (CLT) interval of the mean"
    return {
        "method": "law",
        "statistic": statistic,
        "samples": samples,
        **est.to_dict(),
        "interval": how,
        "target_in_interval": bool(est.lower <= target <= est.upper),
        "p_blowup": fc.final.p_blowup.value,
        "seconds": fc.seconds,
    }
