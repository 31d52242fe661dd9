"""The step size of the covariance SDE's solver: a rule, and the number of steps it asks for.

docs/usage.md, "How many SDE steps".

**The rule.** An Euler step from V is V + b(V) dt + dN, and V + dN stays in the PSD cone exactly
when I + X does, with X = L^-1 dN L^-T the *whitened* noise (L L^T = V). For the shaped
attention's noise X = sqrt(kappa/2) (Z + Z^T) + (sqrt(alpha)/m) (E P + P E^T) with iid N(0, dt)
entries Z, E: most of it does not depend on V at all (the noise is multiplicative), and its
smallest eigenvalue is of order -2 sqrt(kappa m dt) for many tokens (the edge of a Gaussian
symmetric matrix). So one number measures how violent a step is:

    s2 = E[lambda_min(X_1)^2],   X_1 the whitened noise at V0 for dt = 1,

estimated from `NOISE_DRAWS` fixed draws, and a step dt is *stable* when the step's typical
downward eigenvalue excursion sqrt(s2 dt) is at most 1 / `STEP_RULE_Z`:

    z = 1 / sqrt(s2 dt) >= STEP_RULE_Z = 4,   that is   steps >= STEP_RULE_Z^2 s2 T.

Calibration (2-core CPU, 2000 paths, Euler; fraction of paths that left the cone for steps =
25, 50, ..., 1600): the fraction falls steeply until z is about 3 and is flat beyond it, for
the shaped default at m = 2, 4, 8 (T = 1, 2), m = 4 at (tau0, gamma, c+, c-) = (1.2, 0.6, 0.3,
-0.8) and m = 32 at (1, 0.4, 0, -1); z = 4 leaves a margin. s2 grows like 2 m to 3 m at these
settings, so the rule asks for about 30 m T to 50 m T steps (the old rule of thumb,
m T / steps below 0.1, was too coarse by 3x to 5x).

**What the rule does not remove.** Beyond z of about 3 the fraction that leaves the cone does
not fall with the step (about 2 % of the paths at m = 4 with (1.2, 0.6, 0.3, -0.8), in float32
and in float64 alike): those paths of the SDE reach a singular V before T, and Euler's overshoot
past the boundary shrinks with dt (smallest eigenvalue over the trace -1.5e-4 at 400 steps, -2e-5
at 1600). They are not a discretisation failure that finer steps would fix; the exponential
solver keeps them positive definite.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import ArrayLike

from .. import _lapack
from .._linalg import symmetrize
from ..config import ShapedConfig
from ._coefficients import CovarianceSDE

STEP_RULE_Z = 4.0
"""A step is stable when 1 / sqrt(s2 dt) is at least this (see the module docstring)."""

NOISE_DRAWS = 256
"""Draws of the whitened noise at V0 that estimate s2 (fixed keys: the same s2 every time)."""

MAX_DT = 0.01
"""The largest step `suggest_num_steps` takes inside the rule: Euler's weak error is about C dt
(weak order 1), and at the shaped defaults few tokens would otherwise get steps of 0.04."""


def rule_steps(s2: float, T: float) -> int:
    """The fewest steps over [0, T] inside the rule, and no step above `MAX_DT`."""
    return max(math.ceil(STEP_RULE_Z**2 * s2 * float(T)), math.ceil(float(T) / MAX_DT - 1e-9))


def rule_z(s2: float, T: float, num_steps: int) -> float:
    """Z = 1 / sqrt(s2 T / num_steps): the step is inside the rule when z >= `STEP_RULE_Z`."""
    return 1.0 / math.sqrt(max(s2, 1e-30) * float(T) / int(num_steps))


def _scale(sde, v0, draws):
    """s2 of `sde` at a positive definite v0 from `draws` fixed draws (traceable)."""
    factor = _lapack.cholesky(v0)
    shapes = sde.brownian_shape(v0.shape[-1], v0.dtype)

    def one(key):
        keys = jr.split(key, len(shapes))
        dw = {
            name: jr.normal(k, s.shape, s.dtype)
            for k, (name, s) in zip(keys, shapes.items(), strict=True)
        }
        x = sde.noise(v0, factor, dw)
        y = _lapack.solve_triangular(factor, x, lower=True)
        white = _lapack.solve_triangular(factor, y.T, lower=True)
        return _lapack.eigvalsh(symmetrize(white))[0]

    smallest = jax.vmap(one)(jr.split(jr.key(0), draws))
    return jnp.mean(smallest**2)


_noise_scale = jax.jit(_scale, static_argnums=(0, 2))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _noise_scales(config, v0, values, draws):
    return jax.vmap(lambda vals: _scale(CovarianceSDE(config, values=vals), v0, draws))(values)


def _whitenable(v0: ArrayLike) -> jax.Array:
    """V0 symmetrised plus 1e-6 tr(V0)/m I (a singular V0 gets a factor), float32."""
    v = np.asarray(v0, dtype=np.float64)
    m = v.shape[-1]
    v = 0.5 * (v + v.T) + 1e-6 * max(np.trace(v) / m, 1e-30) * np.eye(m)
    return jnp.asarray(v, jnp.float32)


def step_noise_scales(config: ShapedConfig, v0: ArrayLike, values: dict) -> np.ndarray:
    """`step_noise_scale` at each of k parameter points, `values` {field: (k,) values}.

    One compiled function serves every point (the parameters are JAX values); the draws are
    those of `step_noise_scale`, so each s2 is its number up to float32 rounding.
    """
    arrays = {
        k: jnp.asarray(np.asarray(v, np.float64).reshape(-1), jnp.float32)
        for k, v in values.items()
    }
    return np.asarray(_noise_scales(config, _whitenable(v0), arrays, NOISE_DRAWS), np.float64)


def step_noise_scale(config: ShapedConfig, v0: ArrayLike) -> float:
    """s2 = E[lambda_min(L^-1 dN L^-T)^2] at V0 for dt = 1 (see the module docstring).

    A singular V0 is whitened by the factor of V0 + 1e-6 tr(V0)/m I.
    """
    sde = CovarianceSDE(config)
    return float(_noise_scale(sde, _whitenable(v0), NOISE_DRAWS))


def suggest_num_steps(config: ShapedConfig, v0: ArrayLike, T: float, solver: str = "euler") -> int:
    """The number of steps over [0, T] that keeps the solver inside the step rule.

    `rule_steps`: `ceil(STEP_RULE_Z^2 s2 T)` with s2 from `step_noise_scale`, and at least
    T / `MAX_DT`; for every solver (the exponential solver cannot leave the cone, but the same
    step keeps its discretisation error as small as Euler's).
    """
    if not (math.isfinite(float(T)) and float(T) > 0):
        raise ValueError(f"suggest_num_steps: T={T!r} is invalid; pass a final time T > 0")
    del solver  # one rule for every solver (see above)
    return rule_steps(step_noise_scale(config, v0), T)
