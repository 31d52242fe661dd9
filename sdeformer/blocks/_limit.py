"""Tensors and O(m^3) noise maps shared by the limit faces of the shaped blocks.

Mathematics: docs/theory.md section 4. Everything here acts on one m x m covariance `V` and is
pure (jit/vmap-able). A 4-index tensor `S[a, b, c, d]` stands for
`Sigma_{ab,cd} = Cov(dV_ab, dV_cd) / dt`; such tensors are O(m^4) and serve tests and small m.

The solver never forms them. With any factor `L L^T = V` it applies the noise to iid N(0, 1)
matrices in O(m^3) time and O(m^2) memory (`lin_noise`, `mix_noise`):

    Lin:        L S L^T,                S = (Z + Z^T) / sqrt(2)     Cov = Lin_{ab,cd}
    Att(V, K):  L E M^T + M E^T L^T,    M = V C L (M M^T = K)       Cov = Att_{ab,cd}

with Z, E m x m matrices of iid N(0, 1) (S_ii ~ N(0, 2), S_ij ~ N(0, 1)).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._typing import Scalar
from ..config import ShapedConfig


def centring(m: int, dtype) -> Float[Array, "m m"]:
    """C = I - (1/m) 1 1^T."""
    return jnp.eye(m, dtype=dtype) - jnp.full((m, m), 1.0 / m, dtype)


def centre_rows(x: Float[Array, "m k"]) -> Float[Array, "m k"]:
    """C X = X - 1 (1^T X) / m in O(m k) (no m x m centring matrix)."""
    return x - jnp.mean(x, axis=0, keepdims=True)


def double_centre(v: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """C V C in O(m^2)."""
    return centre_rows(centre_rows(v).T).T


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
    return v @ double_centre(v) @ v


def attention_coefficients(config: ShapedConfig) -> tuple[Scalar, Scalar]:
    """(kappa_att, alpha_att): Sigma_att = kappa_att Lin + alpha_att Att.

    kappa_att = gam^2 (2 - gam^2) without, 2 gam^2 with the output projection;
    alpha_att = gam^4 / (tau0^2 H); the 1 / m^2 of docs/theory.md section 4 is applied where
    m is known.
    """
    g2 = config.gamma**2
    kappa = 2.0 * g2 if config.out_proj else g2 * (2.0 - g2)
    return kappa, g2**2 / (config.tau0**2 * config.heads)


def mlp_coefficient(config: ShapedConfig) -> Scalar:
    """kappa_mlp = gam^2 (2 - gam^2 + gam^2 / r): Sigma_mlp = kappa_mlp Lin."""
    g2 = config.gamma**2
    return g2 * (2.0 - g2 + g2 / config.mlp_ratio)


def attention_drift(config: ShapedConfig, v: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """b_att = (gam^2/tau0^2) [s V / m^2 + (diag(V) (u^T V) + (u^T V)^T diag(V)^T) / (2m)]."""
    m = v.shape[-1]
    cvc = double_centre(v)
    s = jnp.sum(cvc * v)  # tr(C V C V) (both symmetric), O(m^2)
    w = jnp.diagonal(cvc)
    u = w - jnp.mean(w)
    uv = u @ v
    d = jnp.diagonal(v)
    inner = s * v / m**2 + (jnp.outer(d, uv) + jnp.outer(uv, d)) / (2 * m)
    return (config.gamma**2 / config.tau0**2) * inner


_ACOS_COEFFICIENTS = (
    1.5707963050,
    -0.2145988016,
    0.0889789874,
    -0.0501743046,
    0.0308918810,
    -0.0170881256,
    0.0066700901,
    -0.0012624911,
)
"""arccos(x) = sqrt(1 - x) P(x) on [0, 1], |error| <= 2e-8 (Abramowitz and Stegun 4.4.46)."""


def fast_arccos(x: Array) -> Array:
    """arccos(x) on [-1, 1]; for float32 a polynomial as accurate as `jnp.arccos`, 20x cheaper.

    In float32 it evaluates sqrt(1 - |x|) P(|x|) (Abramowitz and Stegun 4.4.46, absolute
    error <= 2e-8, below float32 rounding: measured max relative error 2.0e-7 against float64
    over [-1, 1], `jnp.arccos` in float32 1.7e-7) and pi minus that for x < 0. XLA's arccos
    costs about 10 ns per element on a CPU and was the largest part of an SDE step with an
    MLP block at m = 32. Other dtypes (float64) use `jnp.arccos`.
    """
    if jnp.result_type(x) != jnp.float32:
        return jnp.arccos(x)
    a = jnp.abs(x)
    p = jnp.full_like(a, _ACOS_COEFFICIENTS[-1])
    for c in _ACOS_COEFFICIENTS[-2::-1]:
        p = p * a + c
    r = jnp.sqrt(jnp.maximum(1.0 - a, 0.0)) * p
    return jnp.where(x < 0, jnp.float32(math.pi) - r, r)


@jax.custom_jvp
def _nu_shape(rho: Array) -> Array:
    """sqrt(1 - rho^2) - rho arccos(rho) on [-1, 1] (rho clipped there)."""
    rho = jnp.clip(rho, -1.0, 1.0)
    return jnp.sqrt(jnp.clip(1.0 - rho**2, 0.0)) - rho * fast_arccos(rho)


@_nu_shape.defjvp
def _nu_shape_jvp(primals, tangents):
    # d/drho = -arccos(rho): finite at rho = +-1 (the diagonal of every V has rho = 1), where
    # differentiating the two terms apart gives inf - inf
    (rho,), (drho,) = primals, tangents
    return _nu_shape(rho), -fast_arccos(jnp.clip(rho, -1.0, 1.0)) * drho


def relu_nu(c_plus: Scalar, c_minus: Scalar, rho: Array) -> Array:
    """nu(rho) = ((c_+ - c_-)^2 / (2 pi)) (sqrt(1 - rho^2) - rho arccos(rho)), rho in [-1, 1].

    Differentiable everywhere on [-1, 1], with nu'(rho) = -((c_+ - c_-)^2 / (2 pi)) arccos(rho).
    """
    return ((c_plus - c_minus) ** 2 / (2 * math.pi)) * _nu_shape(rho)


def mlp_drift(config: ShapedConfig, v: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """b_mlp_ab = gam^2 nu(rho_ab) sqrt(V_aa V_bb) (0 where a variance vanishes)."""
    d = jnp.clip(jnp.diagonal(v), 0.0)
    scale = jnp.sqrt(jnp.outer(d, d))
    positive = scale > 0
    rho = jnp.where(positive, v / jnp.where(positive, scale, 1.0), 1.0)
    return config.gamma**2 * jnp.where(
        positive, relu_nu(config.c_plus, config.c_minus, rho) * scale, 0.0
    )


class NoiseTerms(NamedTuple):
    """What a block adds to the noise of the covariance SDE: `lin Lin + mix <mix_kind>`.

    - `lin`: the coefficient kappa of `Lin` (independent Lin terms of several blocks add up);
    - `mix`: the coefficient alpha of the attention term (`Att(V, K) / m^2`, or the causal
      bracket of docs/theory.md section 4 when `mix_kind == "causal"`), 0 for none;
    - `mix_kind`: "attention", "causal" or None.
    """

    lin: Scalar
    mix: Scalar = 0.0
    mix_kind: str | None = None


def symmetric_normal(z: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """S = (Z + Z^T) / sqrt(2): S_ii ~ N(0, 2), S_ij ~ N(0, 1) for iid N(0, 1) entries of Z."""
    return (z + z.T) * (1.0 / math.sqrt(2.0))


def lin_noise(factor: Float[Array, "m m"], z: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """L S L^T with S = `symmetric_normal(z)`: covariance Lin(V) for L L^T = V, O(m^3)."""
    half = factor @ (z @ factor.T)
    return (half + half.T) * (1.0 / math.sqrt(2.0))


def attention_other(v: Float[Array, "m m"], factor: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """M = V C L, so that M M^T = V C V C V = K (one m x m product)."""
    return v @ centre_rows(factor)


def mix_noise(
    factor: Float[Array, "m m"], other: Float[Array, "m m"], e: Float[Array, "m m"]
) -> Float[Array, "m m"]:
    """L E M^T + M E^T L^T: covariance Att(V, K) for L L^T = V, M M^T = K, O(m^3)."""
    half = factor @ (e @ other.T)
    return half + half.T
