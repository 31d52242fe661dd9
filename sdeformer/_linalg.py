"""Small linear-algebra helpers on m x m covariance matrices (no n x n matrix anywhere)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jaxtyping import Array, Float

from . import _lapack


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
    w, u = _lapack.eigh(symmetrize(v))
    return (u * jnp.sqrt(jnp.clip(w, 0.0))[..., None, :]) @ jnp.swapaxes(u, -1, -2)


def _all_finite(x, axes):
    return jnp.isfinite(x).all(axis=axes)


@custom_vmap
def _factor_stack(v: Float[Array, "b m m"]) -> Float[Array, "b m m"]:
    """Cholesky factors of a stack of matrices, with `psd_sqrt` for those where it fails.

    The fallback is decided once for the whole stack: the eigendecompositions run (inside the
    `lax.cond`) only when some matrix of the stack has a non-finite Cholesky factor.
    """
    chol = _lapack.cholesky(v)
    bad = ~_all_finite(chol, (-2, -1))
    return jax.lax.cond(
        bad.any(),
        lambda: jnp.where(bad[:, None, None], psd_sqrt(v), chol),
        lambda: chol,
    )


@_factor_stack.def_vmap
def _factor_stack_batched(axis_size, in_batched, v):
    """Merge a vmapped axis into the stack: one `_factor_stack` call, one `lax.cond`.

    Without this rule a vmap would batch the `lax.cond` predicate and turn the cond into a
    select that runs the eigendecomposition of every matrix. Because the rule calls
    `_factor_stack` again, nested vmaps (the sharded samplers vmap the samplers, which vmap
    their samples) also end in a single call on the flattened stack, so the program that
    factors a matrix is the same whether it is reached directly or under any number of vmaps.
    """
    (batched,) = in_batched
    if not batched:
        return _factor_stack(v), False
    flat = v.reshape(-1, *v.shape[-2:])  # the vmapped axis is the leading one
    return _factor_stack(flat).reshape(v.shape), True


def cov_factor(v: Float[Array, "*batch m m"]) -> Float[Array, "*batch m m"]:
    """A factor L with L L^T = V for a symmetric PSD V: Cholesky, or `psd_sqrt` where it fails.

    The lower Cholesky factor costs m^3 / 3 flops and is what every per-step computation uses
    (law steps, where any factor with L L^T = V gives the same law). A Cholesky factorisation of
    a singular or numerically indefinite PSD matrix (rank-deficient V, float32 round-off) returns
    NaN; for those matrices, and only those, the factor falls back to the eigendecomposition
    square root `psd_sqrt` (negative round-off eigenvalues clipped to 0), so the result is finite
    for every finite PSD input and never silently NaN. The fallback is exact (no jitter is added).

    Every call, batched or not, goes through one computation on a stack of matrices (a single
    matrix is a stack of one), and `jax.vmap` (also nested, as in the sharded samplers) merges
    its axis into that stack instead of batching the computation. So the choice of the fallback
    is made once per stack: the eigendecompositions run only when some matrix of the stack needs
    them (a per-matrix `lax.cond` under vmap would run them always). And a matrix gets the same
    factor, bit for bit, alone or inside a vmapped batch, which the sharded samplers rely on
    (tests/test_sharding.py). Not reverse-mode differentiable (nothing differentiates through a
    sampler's factor).
    """
    v = symmetrize(v)
    batch, shape = v.shape[:-2], v.shape[-2:]
    return _factor_stack(v.reshape(-1, *shape)).reshape(*batch, *shape)


def gram(x: Float[Array, "*batch m n"]) -> Float[Array, "*batch m m"]:
    """The token covariance V = X X^T / n of a hidden state X (m tokens, width n)."""
    return (x @ jnp.swapaxes(x, -1, -2)) / x.shape[-1]
