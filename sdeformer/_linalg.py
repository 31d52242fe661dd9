"""Small linear-algebra helpers on m x m covariance matrices (no n x n matrix anywhere)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float


def symmetrize(v: Float[Array, "*batch m m"]) -> Float[Array, "*batch m m"]:
    """(V + V^T) / 2 over the last two axes."""
    return 0.5 * (v + jnp.swapaxes(v, -1, -2))


def psd_sqrt(v: Float[Array, "*batch m m"]) -> Float[Array, "*batch m m"]:
    """A factor L with L L^T = V for a symmetric PSD V, also when V is singular.

    Uses the eigendecomposition (negative round-off eigenvalues are clipped to 0), so it never
    returns NaN for a PSD input, unlike a Cholesky factor of a singular matrix.
    """
    w, u = jnp.linalg.eigh(symmetrize(v))
    return (u * jnp.sqrt(jnp.clip(w, 0.0))[..., None, :]) @ jnp.swapaxes(u, -1, -2)


def gram(x: Float[Array, "*batch m n"]) -> Float[Array, "*batch m m"]:
    """The token covariance V = X X^T / n of a hidden state X (m tokens, width n)."""
    return (x @ jnp.swapaxes(x, -1, -2)) / x.shape[-1]
