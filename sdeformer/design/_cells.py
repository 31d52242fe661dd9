"""One limit-SDE evaluation at depth d, shared by the phase map and the tuner.

`PARAMETERS` are the ShapedConfig fields a map or a tuner may vary. `sde_endpoint` solves the
limit SDE to T = d / n with `sdeformer.solve_sde` and applies the forecast's stopping rule
(`_paths`): a path that crossed the bound holds the state that crossed it, one that left the PSD
cone or became non-finite holds its last valid saved state (`HELD_SAVES` times are saved); every
path enters every statistic.

Common random numbers: path i of `solve_sde` is a function of (key, i) only, so with one key and
one number of steps every configuration sees the same Brownian increments.

Cost: the varied parameters are passed to `solve_sde` as JAX values (`values=`), one per
path if wanted, so one compiled solver serves every parameter value (a whole row of a phase map
is one call), and the statistics are differentiable in them (`jax.jvp`, `endpoint_mean_rho`).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from .. import ShapedConfig, metrics, solve_sde, suggest_num_steps
from ..sde import psd_factor_batch, rule_steps, step_noise_scales
from ._features import sample_features

PARAMETERS = ("tau0", "gamma", "c_plus", "c_minus")
"""ShapedConfig fields a phase map or a tuner may vary."""

_FIXES = {
    "tau0": "tau0 must be > 0",
    "gamma": "gamma must lie strictly between 0 and 1",
    "c_plus": "c_plus must be a finite number",
    "c_minus": "c_minus must be a finite number",
}


HELD_SAVES = 11
"""Saved times in [0, T]: a path that leaves the PSD cone (or becomes non-finite) holds its last
valid saved state, within T / 10 of its exit (with T alone saved that state would be V_0)."""


def check_parameter(name: str, what: str = "parameter") -> str:
    """`name` if it is one of `PARAMETERS`, else a ValueError naming it and the choices."""
    if name not in PARAMETERS:
        raise ValueError(f"{what} {name!r} is unknown; pick one of {', '.join(PARAMETERS)}")
    return name


def configured(config: ShapedConfig, values: dict[str, float]) -> ShapedConfig:
    """`config` with the parameters `values`; a ValueError names a value out of its range."""
    for name, value in values.items():
        if not math.isfinite(float(value)):
            raise ValueError(f"{name}={value!r} is not finite; {_FIXES[name]}")
    try:
        return config.replace(**{k: float(v) for k, v in values.items()})
    except ValueError as err:
        bad = ", ".join(f"{k}={v:g}" for k, v in values.items())
        fixes = "; ".join(_FIXES[k] for k in values)
        raise ValueError(f"{bad} is not a valid configuration ({err}); {fixes}") from None


def demanding_corner(config: ShapedConfig, ranges: dict[str, tuple[float, float]]):
    """The configuration of the box `ranges` whose SDE noise is largest (`corner_values`).

    The noise coefficients kappa (a sum of gam^2 (2 - gam^2 ...)) and alpha = gam^4 / (tau0^2 H)
    grow with gamma in (0, 1) and fall with tau0; c_plus and c_minus enter the drift only. So
    the largest gamma and the smallest tau0 of the box ask for the most steps.
    """
    return configured(config, corner_values(ranges))


def corner_values(ranges: dict[str, tuple[float, float]]) -> dict[str, float]:
    """{gamma: the largest, tau0: the smallest} of the box `ranges` (`demanding_corner`)."""
    values = {}
    for name, (lo, hi) in ranges.items():
        if name == "gamma":
            values[name] = max(lo, hi)
        elif name == "tau0":
            values[name] = min(lo, hi)
    return values


def row_needs(config: ShapedConfig, v0, T: float, x_axis, y_axis) -> list[int]:
    """Each row's fewest steps inside the step rule, at its most demanding cell.

    Row j is the box (x from its first to its last value, y = y_j); `sdeformer.rule_steps` of
    s2 at that box's `corner_values` (`sdeformer.sde.step_noise_scales`: one compile for all
    rows). A row with neither gamma nor tau0 varying takes `config`'s own values.
    """
    (x_name, xs), (y_name, ys) = x_axis, y_axis
    corners = [corner_values({x_name: (xs[0], xs[-1]), y_name: (y, y)}) for y in ys]
    names = sorted(corners[0])
    if not names:
        return [int(suggest_num_steps(config, v0, T))] * len(ys)
    values = {k: np.array([c[k] for c in corners]) for k in names}
    return [rule_steps(s2, T) for s2 in step_noise_scales(config, v0, values)]


def grid_num_steps(config: ShapedConfig, v0, T: float, ranges) -> int:
    """`sdeformer.suggest_num_steps` at the box's most demanding corner (`demanding_corner`)."""
    return int(suggest_num_steps(demanding_corner(config, ranges), v0, T))


FINE_DRAW_COST = 0.16
"""Cost of drawing one fine Brownian increment over that of one Euler step (factor, drift,
noise and checks): 0.46 us against 2.9 us per path at m = 8 on the 2-core CPU (float32)."""


def nested_steps(needs, floor: int) -> tuple[int, list[int]]:
    """(fine, counts): a Brownian grid of `fine` steps and a step count per row dividing it.

    `needs[j]` is row j's fewest steps inside the step rule (at least `floor`, the T / MAX_DT
    of the rule); count j is the smallest divisor of `fine` at least `needs[j]`, so each row's
    Euler step sums `fine / count` fine increments of one Brownian path
    (`solve_sde(brownian_steps=fine)`). `fine` is the number from max(needs) to
    1.25 max(needs) with the least modelled cost for rows whose needs are spread evenly from
    `floor` to max(needs): each row draws all `fine` increments (`FINE_DRAW_COST` each) and
    takes its count of steps (1 each). It depends on max(needs) and `floor` only, so a map and
    a map of some of its rows (with the same most demanding row) give those rows the same
    steps.
    """
    needs = [int(n) for n in needs]
    top = max(needs)
    spread = np.linspace(min(int(floor), top), top, 64)
    best = None
    for fine in range(top, math.ceil(1.25 * top) + 1):
        divisors = np.array([d for d in range(1, fine + 1) if fine % d == 0])
        counts = [int(divisors[np.searchsorted(divisors, n)]) for n in spread]
        cost = FINE_DRAW_COST * fine * spread.size + sum(counts)
        if best is None or cost < best[0]:
            best = (cost, fine, divisors)
    _, fine, divisors = best
    return fine, [int(divisors[np.searchsorted(divisors, n)]) for n in needs]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Per-path results at depth d.

    `mean_rho` (float64), `stopped` (crossed the bound, left the PSD cone or became non-finite
    by T) and `left_cone` (stopped by leaving the cone).
    """

    mean_rho: np.ndarray
    stopped: np.ndarray
    left_cone: np.ndarray


def sde_endpoint(
    config: ShapedConfig,
    v0,
    *,
    T: float,
    num_samples: int,
    key,
    num_steps: int,
    bound,
    dtype,
    values: dict | None = None,
    brownian_ids=None,
    brownian_steps: int | None = None,
    max_steps: int | None = None,
) -> Endpoint:
    """Solve the limit SDE of `config` to T and return the paths' `Endpoint` at T.

    `values` and `brownian_ids` go to `solve_sde`: parameters as JAX values (one per path for a
    grid of cells) and the Brownian path of each path (common random numbers across cells);
    `brownian_steps` and `max_steps` too (one Brownian grid for rows of other step counts).
    """
    extra = dict(brownian_steps=brownian_steps, max_steps=max_steps)
    sol = _solve(
        config, v0, T, num_samples, key, num_steps, bound, dtype, values, brownian_ids, extra
    )
    reason = np.asarray(sol.exit_reason)
    stopped = ~np.asarray(sol.alive)[:, -1]
    mean_rho = sample_features(np.asarray(_held_states(sol)), np.asarray(v0))["mean_rho"]
    return Endpoint(mean_rho, stopped, stopped & (reason == 1))


def endpoint_mean_rho(
    config: ShapedConfig, v0, values: dict, *, T, num_samples, key, num_steps, bound, dtype
):
    """Per-path mean_rho at T as a JAX array: differentiable in `values` (`jax.jvp`)."""
    sol = _solve(config, v0, T, num_samples, key, num_steps, bound, dtype, values, None)
    return metrics.mean_correlation(_held_states(sol))


def _solve(config, v0, T, num_samples, key, num_steps, bound, dtype, values, ids, extra=None):
    return solve_sde(
        config,
        v0,
        T=T,
        num_samples=num_samples,
        key=key,
        save_times=np.linspace(0.0, T, HELD_SAVES),
        num_steps=num_steps,
        bound=bound,
        dtype=dtype,
        values=values,
        brownian_ids=ids,
        **(extra or {}),
    )


def _held_states(sol):
    """The state of each path at T by the forecast's stopping rule.

    Survivors and paths that crossed the bound: their exit state; paths that left the PSD cone
    or became non-finite: their last valid saved state (`exit_is_covariance`).
    """
    stopped = ~sol.alive[:, -1]
    use_exit = stopped & (sol.exit_reason != 1) & exit_is_covariance(sol.v_exit)
    return jnp.where(use_exit[:, None, None], sol.v_exit, sol.vs[:, -1])


def exit_is_covariance(v_exit):
    """Per path: the exit state is finite and PSD by the solver's own test (`psd_factor_batch`).

    A state that crossed the bound in one Euler step may also have left the cone (the solver
    names the bound, which it checks first); it is no covariance and is not held.
    """
    finite = jnp.all(jnp.isfinite(v_exit), axis=(-2, -1))
    eye = jnp.eye(v_exit.shape[-1], dtype=v_exit.dtype)
    _, psd = psd_factor_batch(jnp.where(finite[:, None, None], v_exit, eye))
    return finite & psd
