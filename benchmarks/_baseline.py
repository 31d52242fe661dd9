"""The reference opponent of `solve_sde`: a plain O(m^3) batched Euler-Maruyama, no diffrax.

About 60 lines a user would write by hand (issue 12): `lax.scan` over steps, all paths in one
array of shape (paths, m, m), one Cholesky factor L of V per step and the noise of the
covariance SDE (docs/theory.md section 4) in factored form,

    dV = b(V) dt + sqrt(kappa) L S L^T + (sqrt(alpha) / m) (L E M^T + M E^T L^T),

with S = (Z + Z^T) / sqrt(2), Z and E of iid N(0, dt) entries, M = V C L (C the centring
matrix), kappa the sum of the blocks' Lin coefficients and alpha the sum over attention blocks
of gam^4 / (tau0^2 H). The drift b is the sum of the blocks' drifts from `sdeformer.blocks._limit`.
A path stops (is frozen) at the first step where V is non-finite (a failed Cholesky of a
non-positive-definite V gives NaN) or some |V_ab| exceeds `bound`.

Cost per path-step: 10 m^3 flops of matrix products (L S, (L S) L^T, (V C) L, L E, (L E) M^T;
V C is a row-centring, O(m^2)), a Cholesky (m^3 / 3) and the drift.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import jax.random as jr

from sdeformer.blocks._limit import (
    attention_coefficients,
    attention_drift,
    mlp_coefficient,
    mlp_drift,
)
from sdeformer.config import ShapedConfig


def coefficients(config: ShapedConfig) -> tuple[float, float]:
    """(kappa, alpha) of the merged noise of one layer's blocks (non-causal attention and MLP)."""
    if config.causal:
        raise ValueError(
            "the O(m^3) Euler baseline implements the non-causal noise only; pass a config with "
            "causal=False"
        )
    kappa = alpha = 0.0
    for name in config.blocks:
        if name == "attention":
            k, a = attention_coefficients(config)
            kappa, alpha = kappa + k, alpha + a
        elif name == "mlp":
            kappa += mlp_coefficient(config)
        else:
            raise ValueError(
                f"the O(m^3) Euler baseline knows the blocks 'attention' and 'mlp', not {name!r}"
            )
    return kappa, alpha


def drift(config: ShapedConfig, v: jax.Array) -> jax.Array:
    """b(V) for one (m, m) V: the sum of the blocks' drifts."""
    total = jnp.zeros_like(v)
    for name in config.blocks:
        total = total + (
            attention_drift(config, v) if name == "attention" else mlp_drift(config, v)
        )
    return total


def _mT(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, -1, -2)


@partial(jax.jit, static_argnames=("config", "num_paths", "num_steps", "kappa_scale"))
def euler_paths(
    config: ShapedConfig,
    v0: jax.Array,
    T,
    bound,
    *,
    key: jax.Array,
    num_paths: int,
    num_steps: int,
    kappa_scale: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Final V (num_paths, m, m) and alive mask (num_paths,) of `num_steps` Euler steps on [0, T].

    `T` and `bound` are traced. `kappa_scale` multiplies kappa (tests use it to check that a
    wrong noise is detected); leave it at 1.
    """
    m = v0.shape[-1]
    dtype = v0.dtype
    kappa, alpha = coefficients(config)
    root_kappa = math.sqrt(kappa * kappa_scale)
    root_alpha = math.sqrt(alpha) / m
    dt = jnp.asarray(T, dtype) / num_steps
    root_dt = jnp.sqrt(dt)
    batched_drift = jax.vmap(partial(drift, config))

    def step(carry, step_key):
        v, alive = carry
        kz, ke = jr.split(step_key)
        z = jr.normal(kz, (num_paths, m, m), dtype) * root_dt
        s = (z + _mT(z)) * (1.0 / math.sqrt(2.0))
        chol = jnp.linalg.cholesky(v)
        ls = chol @ s
        noise = root_kappa * (ls @ _mT(chol))
        if alpha > 0:
            e = jr.normal(ke, (num_paths, m, m), dtype) * root_dt
            vc = v - jnp.mean(v, axis=-1, keepdims=True)  # V C
            mm = vc @ chol  # M = V C L
            lem = (chol @ e) @ _mT(mm)  # L E M^T
            noise = noise + root_alpha * (lem + _mT(lem))
        new = v + batched_drift(v) * dt + noise
        ok = (
            alive
            & jnp.all(jnp.isfinite(new), axis=(-2, -1))
            & (jnp.max(jnp.abs(jnp.where(jnp.isfinite(new), new, 0.0)), axis=(-2, -1)) <= bound)
        )
        return (jnp.where(ok[:, None, None], new, v), ok), None

    start = (
        jnp.broadcast_to(v0, (num_paths, m, m)).astype(dtype),
        jnp.ones((num_paths,), bool),
    )
    (v, alive), _ = jax.lax.scan(step, start, jr.split(key, num_steps))
    return v, alive
