"""Token correlations and rank-collapse measures of covariance matrices (docs/theory.md section 6).

Every function takes V of shape (..., m, m) and maps over the leading axes.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from . import _lapack
from ._typing import AnyArray


def correlation(v: Float[AnyArray, "*batch m m"]) -> Float[AnyArray, "*batch m m"]:
    """rho_ab = V_ab / sqrt(V_aa V_bb)."""
    d = jnp.sqrt(jnp.diagonal(v, axis1=-2, axis2=-1))
    return v / (d[..., :, None] * d[..., None, :])


def mean_correlation(v: Float[AnyArray, "*batch m m"]) -> Float[AnyArray, "*batch"]:
    """Mean of the off-diagonal correlations rho_ab, a != b (1 under full rank collapse)."""
    m = v.shape[-1]
    rho = correlation(v)
    total = rho.sum(axis=(-2, -1)) - jnp.trace(rho, axis1=-2, axis2=-1)
    return total / (m * (m - 1))


def stable_rank(v: Float[AnyArray, "*batch m m"]) -> Float[AnyArray, "*batch"]:
    """tr(V)^2 / tr(V^2): between 1 (rank one) and m (V proportional to the identity)."""
    tr = jnp.trace(v, axis1=-2, axis2=-1)
    return tr**2 / jnp.sum(v * jnp.swapaxes(v, -1, -2), axis=(-2, -1))


def min_correlation_eigenvalue(v: Float[AnyArray, "*batch m m"]) -> Float[AnyArray, "*batch"]:
    """Smallest eigenvalue of the correlation matrix (0 under rank collapse)."""
    rho = correlation(v)
    return _lapack.eigvalsh(0.5 * (rho + jnp.swapaxes(rho, -1, -2)))[..., 0]


def offdiagonal_pairs(m: int) -> tuple[Array, Array]:
    """Index arrays (a, b) of the m (m - 1) / 2 pairs a < b."""
    a, b = jnp.triu_indices(m, k=1)
    return a, b
