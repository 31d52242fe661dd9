"""Token correlations and rank-collapse measures of covariance matrices (docs/theory.md section 6).

Every function takes V of shape (..., m, m) and maps over the leading axes. A NumPy array is
measured in NumPy (float64 stays float64: the comparison layer's features), a JAX array in JAX
(jit-able): one definition of each measure for both.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jaxtyping import Array, Float

from . import _lapack
from ._typing import AnyArray


def _xp(v):
    """The array module of `v`: NumPy for NumPy arrays, else jax.numpy."""
    return np if isinstance(v, np.ndarray) else jnp


def correlation(v: Float[AnyArray, "*batch m m"]) -> Float[AnyArray, "*batch m m"]:
    """rho_ab = V_ab / sqrt(V_aa V_bb) (non-finite where a variance is not positive)."""
    xp = _xp(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = xp.sqrt(xp.diagonal(v, axis1=-2, axis2=-1))
        return v / (d[..., :, None] * d[..., None, :])


def mean_correlation(v: Float[AnyArray, "*batch m m"]) -> Float[AnyArray, "*batch"]:
    """Mean of the off-diagonal correlations rho_ab, a != b (1 under full rank collapse)."""
    xp = _xp(v)
    m = v.shape[-1]
    rho = correlation(v)
    total = rho.sum(axis=(-2, -1)) - xp.trace(rho, axis1=-2, axis2=-1)
    return total / (m * (m - 1))


def stable_rank(v: Float[AnyArray, "*batch m m"]) -> Float[AnyArray, "*batch"]:
    """tr(V)^2 / tr(V^2): between 1 (rank one) and m (V proportional to the identity)."""
    xp = _xp(v)
    tr = xp.trace(v, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tr**2 / xp.sum(v * xp.swapaxes(v, -1, -2), axis=(-2, -1))


def min_correlation_eigenvalue(v: Float[AnyArray, "*batch m m"]) -> Float[AnyArray, "*batch"]:
    """Smallest eigenvalue of the correlation matrix (0 under rank collapse).

    NumPy input: NaN where the correlation matrix is not finite (`smallest_eigenvalues`).
    """
    rho = correlation(v)
    if isinstance(rho, np.ndarray):
        flat = rho.reshape(-1, *rho.shape[-2:])
        return smallest_eigenvalues(flat).reshape(rho.shape[:-2])
    return _lapack.eigvalsh(0.5 * (rho + jnp.swapaxes(rho, -1, -2)))[..., 0]


SMALLEST_EIGENVALUE_SUBSET_FROM = 32
"""From this m on, the smallest eigenvalue comes from LAPACK's `dsyevr` asked for that one
eigenvalue (1.5x faster than all eigenvalues at m = 64 and 256 on one core; equal to 1e-14);
below it, NumPy's batched `eigvalsh` (no per-matrix Python call) is faster."""


def smallest_eigenvalues(rho: np.ndarray) -> np.ndarray:
    """The smallest eigenvalue of each symmetric matrix of `rho` (samples, m, m), in float64.

    NaN for a matrix with a non-finite entry.
    """
    rho = np.asarray(rho, dtype=np.float64)
    finite = np.isfinite(np.einsum("sab->s", rho))
    out = np.full(rho.shape[0], np.nan)
    if not finite.any():
        return out
    good = rho if finite.all() else rho[finite]
    if rho.shape[-1] < SMALLEST_EIGENVALUE_SUBSET_FROM:
        # eigvalsh reads the lower triangle only: a symmetric input needs no symmetrising copy
        out[finite] = np.linalg.eigvalsh(good)[:, 0]
        return out
    values = np.empty(good.shape[0])
    for i, matrix in enumerate(good):
        # the transpose is the same symmetric matrix in Fortran order (no copy); one eigenvalue
        w, _, _, _, info = scipy.linalg.lapack.dsyevr(matrix.T, compute_v=0, range="I", il=1, iu=1)
        values[i] = w[0] if info == 0 else np.nan
    out[finite] = values
    return out


def offdiagonal_pairs(m: int) -> tuple[Array, Array]:
    """Index arrays (a, b) of the m (m - 1) / 2 pairs a < b."""
    a, b = jnp.triu_indices(m, k=1)
    return a, b
