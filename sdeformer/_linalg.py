"""Small linear-algebra helpers on m x m covariance matrices (no n x n matrix anywhere)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jaxtyping import Array, Float


def symmetrize(v: Float[Array, "*batch m m"]) -> Float[Array, "*batch m m"]:
    """(V + V^T) / 2 over the last two axes."""
    return 0.5 * (v + jnp.swapaxes(v, -1, -2))


def psd_sqrt(v: Float[Array, "*batch m m"]) -> Float[Array, "*batch m m"]:
    """A factor L with L L^T = V for a symmetric PSD V, also when V is singular.

    Uses the eigendecomposition (negative round-off eigenvalues are clipped to 0), so it never
    returns NaN for a PSD input, unlike a Cholesky factor of a singular matrix. On CPU a batch
    of eigendecompositions runs one matrix at a time (jax issue 15803) and costs about 15
    Cholesky factorisations at m = 64: per-step code uses `cov_factor` instead.
    """
    w, u = jnp.linalg.eigh(symmetrize(v))
    return (u * jnp.sqrt(jnp.clip(w, 0.0))[..., None, :]) @ jnp.swapaxes(u, -1, -2)


def _all_finite(x, axes):
    return jnp.isfinite(x).all(axis=axes)


@custom_vmap
def _cholesky_or_sqrt(v):
    chol = jnp.linalg.cholesky(v)
    return jax.lax.cond(_all_finite(chol, (-2, -1)), lambda: chol, lambda: psd_sqrt(v))


@_cholesky_or_sqrt.def_vmap
def _cholesky_or_sqrt_batched(axis_size, in_batched, v):
    # The batched rule decides the fallback ONCE for the whole batch: under a plain vmap the
    # `lax.cond` above would become a select and run the eigendecomposition of every matrix.
    (batched,) = in_batched
    if not batched:
        return _cholesky_or_sqrt(v), False
    chol = jnp.linalg.cholesky(v)
    bad = ~_all_finite(chol, (-2, -1))
    fixed = jax.lax.cond(
        bad.any(),
        lambda: jnp.where(bad[:, None, None], psd_sqrt(v), chol),
        lambda: chol,
    )
    return fixed, True


def cov_factor(v: Float[Array, "*batch m m"]) -> Float[Array, "*batch m m"]:
    """A factor L with L L^T = V for a symmetric PSD V: Cholesky, or `psd_sqrt` where it fails.

    The lower Cholesky factor costs m^3 / 3 flops and is what every per-step computation uses
    (law steps, where any factor with L L^T = V gives the same law). A Cholesky factorisation of
    a singular or numerically indefinite PSD matrix (rank-deficient V, float32 round-off) returns
    NaN; for those matrices, and only those, the factor falls back to the eigendecomposition
    square root `psd_sqrt` (negative round-off eigenvalues clipped to 0), so the result is finite
    for every finite PSD input and never silently NaN. The fallback is exact (no jitter is added).

    Under `jax.vmap` (the samplers batch their samples) the choice is made once per batch: the
    eigendecompositions run only when some matrix of the batch needs them (`lax.cond` on the
    whole batch; a per-matrix `lax.cond` under vmap would run them always). Not reverse-mode
    differentiable (nothing differentiates through a sampler's factor).
    """
    v = symmetrize(v)
    if v.ndim == 2:
        return _cholesky_or_sqrt(v)
    batch = v.shape[:-2]
    flat = v.reshape(-1, *v.shape[-2:])
    return jax.vmap(_cholesky_or_sqrt)(flat).reshape(*batch, *v.shape[-2:])


def gram(x: Float[Array, "*batch m n"]) -> Float[Array, "*batch m m"]:
    """The token covariance V = X X^T / n of a hidden state X (m tokens, width n)."""
    return (x @ jnp.swapaxes(x, -1, -2)) / x.shape[-1]
