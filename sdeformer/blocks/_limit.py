"""Tensors shared by the limit faces of the shaped blocks (SPEC.md section 3).

Everything here acts on one m x m covariance `V` and is pure (jit/vmap-able). A 4-index tensor
`S[a, b, c, d]` stands for `Sigma_{ab,cd} = Cov(dV_ab, dV_cd) / dt`.

Noise factors: a tensor `F` of shape (m, m, k) with `sum_j F[a, b, j] F[c, d, j] = Sigma_{ab,cd}`
and `F[a, b, j] = F[b, a, j]`, so that `dV = F . dB` with a k-dimensional Brownian motion `B`
has exactly the covariance `Sigma dt` and stays symmetric.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..config import ShapedConfig


def centring(m: int, dtype) -> Float[Array, "m m"]:
    """C = I - (1/m) 1 1^T."""
    return jnp.eye(m, dtype=dtype) - jnp.full((m, m), 1.0 / m, dtype)


def lin_tensor(v: Float[Array, "m m"]) -> Float[Array, "m m m m"]:
    """Lin_{ab,cd} = V_ac V_bd + V_ad V_bc (the noise of a linear / Wishart layer)."""
    return jnp.einsum("ac,bd->abcd", v, v) + jnp.einsum("ad,bc->abcd", v, v)


def mix_tensor(v: Float[Array, "m m"], k: Float[Array, "m m"]) -> Float[Array, "m m m m"]:
    """Att_{ab,cd} = V_ac K_bd + V_ad K_bc + V_bc K_ad + V_bd K_ac."""
    return (
        jnp.einsum("ac,bd->abcd", v, k)
        + jnp.einsum("ad,bc->abcd", v, k)
        + jnp.einsum("bc,ad->abcd", v, k)
        + jnp.einsum("bd,ac->abcd", v, k)
    )


def attention_k(v: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """K = V C V C V."""
    c = centring(v.shape[-1], v.dtype)
    return v @ c @ v @ c @ v


def attention_coefficients(config: ShapedConfig) -> tuple[float, float]:
    """(kappa_att, alpha_att): Sigma_att = kappa_att Lin + alpha_att Att.

    kappa_att = gam^2 (2 - gam^2) without, 2 gam^2 with the output projection;
    alpha_att = gam^4 / (tau0^2 H); the 1 / m^2 of SPEC.md is applied where m is known.
    """
    g2 = config.gamma**2
    kappa = 2.0 * g2 if config.out_proj else g2 * (2.0 - g2)
    return kappa, g2**2 / (config.tau0**2 * config.heads)


def mlp_coefficient(config: ShapedConfig) -> float:
    """kappa_mlp = gam^2 (2 - gam^2 + gam^2 / r): Sigma_mlp = kappa_mlp Lin."""
    g2 = config.gamma**2
    return g2 * (2.0 - g2 + g2 / config.mlp_ratio)


def attention_drift(config: ShapedConfig, v: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """b_att = (gam^2/tau0^2) [s V / m^2 + (diag(V) (u^T V) + (u^T V)^T diag(V)^T) / (2m)]."""
    m = v.shape[-1]
    c = centring(m, v.dtype)
    cvc = c @ v @ c
    s = jnp.trace(cvc @ v)  # tr(V C V C) = tr(C V C V)
    w = jnp.diagonal(cvc)
    u = w - jnp.mean(w)
    uv = u @ v
    d = jnp.diagonal(v)
    inner = s * v / m**2 + (jnp.outer(d, uv) + jnp.outer(uv, d)) / (2 * m)
    return (config.gamma**2 / config.tau0**2) * inner


def relu_nu(c_plus: float, c_minus: float, rho: Array) -> Array:
    """nu(rho) = ((c_+ - c_-)^2 / (2 pi)) (sqrt(1 - rho^2) - rho arccos(rho)), rho in [-1, 1]."""
    rho = jnp.clip(rho, -1.0, 1.0)
    shape = jnp.sqrt(jnp.clip(1.0 - rho**2, 0.0)) - rho * jnp.arccos(rho)
    return ((c_plus - c_minus) ** 2 / (2 * math.pi)) * shape


def mlp_drift(config: ShapedConfig, v: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """b_mlp_ab = gam^2 nu(rho_ab) sqrt(V_aa V_bb) (0 where a variance vanishes)."""
    d = jnp.clip(jnp.diagonal(v), 0.0)
    scale = jnp.sqrt(jnp.outer(d, d))
    positive = scale > 0
    rho = jnp.where(positive, v / jnp.where(positive, scale, 1.0), 1.0)
    return config.gamma**2 * jnp.where(
        positive, relu_nu(config.c_plus, config.c_minus, rho) * scale, 0.0
    )


def lin_factor(factor: Float[Array, "m m"]) -> Float[Array, "m m p"]:
    """A noise factor of Lin, given any L with L L^T = V: dV = L S L^T with S symmetric,
    S_ii ~ N(0, 2), S_ij ~ N(0, 1) (i < j), i.e. one column per pair i <= j."""
    m = factor.shape[-1]
    i, j = jnp.triu_indices(m)
    cols = jnp.einsum("ap,bp->abp", factor[:, i], factor[:, j])
    cols = cols + jnp.swapaxes(cols, 0, 1)  # L_ai L_bj + L_aj L_bi
    scale = jnp.where(i == j, 1.0 / math.sqrt(2.0), 1.0).astype(factor.dtype)
    return cols * scale  # i == j: 2 L_ai L_bi / sqrt 2 = sqrt(2) L_ai L_bi


def mix_factor(factor: Float[Array, "m m"], other: Float[Array, "m m"]) -> Float[Array, "m m q"]:
    """A noise factor of Att(V, K) given L L^T = V and M M^T = K: dV = L E M^T + M E^T L^T
    with E an m x m matrix of iid N(0, 1), one column per entry of E."""
    m = factor.shape[-1]
    cols = jnp.einsum("ai,bj->abij", factor, other) + jnp.einsum("aj,bi->abij", other, factor)
    return cols.reshape(m, m, m * m)
