"""Covariances of one forecast at the requested depths, from one of four samplers.

Every method returns `DepthStates`: the m x m covariance of each sample at each requested depth
and the exit bookkeeping, with ONE stopping rule (that of `sdeformer.compare.CovarianceSamples`):

- a path stops at the first layer (finite networks, law chain) or step (SDE) where some |V_ab|
  exceeds `bound` or a value is non-finite; an SDE path also stops where V leaves the PSD cone;
- from then on it holds its state at the exit: the state that crossed the bound, or the last
  valid state when the exit state is non-finite or (SDE) outside the PSD cone, where it is not a
  covariance.

The law chain and the explicit networks do not stop by themselves: they return every layer, and
the rule is applied to those layers (`CovarianceSamples.from_paths`). The SDE solver stops its
paths and records the exit state (`SDESolution.v_exit`, `CovarianceSamples.from_solution`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..blocks import MissingFaceError
from ..compare import CovarianceSamples, finite_source, sde_source
from ..config import ShapedConfig
from ._cells import exit_is_covariance

METHODS = ("law", "explicit", "sde", "finite-width-sde")
"""Samplers of a forecast: the exact finite-width law chain, explicit networks, the limit SDE
at T = depth / width, the finite-width SDE at width n."""

SDE_STEP = 0.01
"""Largest m dt of the SDE solves: m dt <= 0.01 (Euler's PSD exits stay rare)."""


@dataclasses.dataclass(frozen=True)
class DepthStates:
    """Covariances at the requested depths.

    `vs` (samples, k, m, m): the state at each depth of `depths` (k,), the exit state after a
    path stopped; `stopped` (samples, k): True where the path stopped at or before that depth;
    `left_cone` (samples, k): the SDE paths among them that stopped by leaving the PSD cone;
    `num_steps`: SDE steps over [0, T] (None for the finite samplers).
    """

    depths: tuple[int, ...]
    vs: np.ndarray
    stopped: np.ndarray
    left_cone: np.ndarray
    num_steps: int | None = None


def check_method(config: ShapedConfig, method: str, width: int, m: int) -> None:
    """Raise ValueError when `method` is unknown or has no face for `config.blocks`."""
    from ..finite import check_law
    from ..sde import CovarianceSDE

    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; pick one of {METHODS}")
    if method == "law":
        try:
            check_law(config, width, m)
        except MissingFaceError as err:
            fix = "" if "explicit" in str(err) else "; use method='explicit'"
            raise ValueError(f"method='law': {err}{fix}") from None
    elif method in ("sde", "finite-width-sde"):
        try:
            CovarianceSDE(config, width=width if method == "finite-width-sde" else None)
        except ValueError as err:
            raise ValueError(
                f"method={method!r}: {err}; use method='explicit' (or 'law' where the blocks "
                "have a law chain)"
            ) from None


def sde_num_steps(m: int, width: int, depth: int) -> int:
    """SDE steps over [0, T = depth / width]: depth k steps with k = ceil(m / (0.01 width)).

    The step dt = T / (depth k) = 1 / (width k) puts every layer time l / width on the step
    grid and satisfies m dt <= SDE_STEP.
    """
    return depth * max(1, math.ceil(m / (SDE_STEP * width) - 1e-9))


def depth_states(
    config: ShapedConfig,
    v0,
    *,
    width: int,
    depths: tuple[int, ...],
    num_samples: int,
    key,
    method: str,
    bound: float,
) -> DepthStates:
    """Sample the covariance at `depths` (increasing, the last the network's depth).

    Finite methods draw whole paths V_0..V_d (`sdeformer.compare.finite_source`, chunked to a
    memory budget) and keep the requested layers; SDE methods save the layer times l / width.
    """
    depth = depths[-1]
    index = np.asarray(depths)
    if method in ("law", "explicit"):
        samples = finite_source(
            config,
            v0,
            width=width,
            T=depth / width,
            num_samples=num_samples,
            key=key,
            method=method,
            bound=bound,
        )
        vs, alive = samples.vs[:, index], samples.alive[:, index]
        return DepthStates(depths, vs, ~alive, np.zeros_like(alive))
    m = int(np.shape(v0)[-1])
    steps = sde_num_steps(m, width, depth)
    samples, solution = sde_source(
        config,
        v0,
        times=index / width,
        num_samples=num_samples,
        key=key,
        num_steps=steps,
        bound=bound,
        width=width if method == "finite-width-sde" else None,
    )
    return _sde_states(depths, samples, solution, steps)


def _sde_states(depths, samples: CovarianceSamples, solution, steps: int) -> DepthStates:
    """`DepthStates` of SDE paths: PSD-cone exits hold their last valid saved state."""
    reason = np.asarray(solution.exit_reason)
    alive = samples.alive
    left = (reason == 1)[:, None] & ~alive
    # from_solution holds the exit state v_exit; outside the cone (a cone exit, or a bound
    # crossing whose Euler step also left the cone) it is no covariance, so such paths keep
    # the solver's own held state (the last valid saved one)
    held = ~np.asarray(exit_is_covariance(solution.v_exit)) | (reason == 1)
    keep = held[:, None] & ~alive
    vs = np.where(keep[:, :, None, None], np.asarray(solution.vs), samples.vs)
    return DepthStates(tuple(depths), vs, ~alive, left, steps)
