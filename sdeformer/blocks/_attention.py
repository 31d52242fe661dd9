"""What every attention block shares: per-head projections, logits, masks and the value branch."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._linalg import cov_factor, symmetrize
from .._wishart import bartlett_from_normals, bartlett_size, complement_dof
from ..config import ShapedConfig, check_width
from ._base import Block, law_normals, normals


def causal_mask(m: int) -> Array:
    """Boolean (m, m): True where token i may attend to token j (j <= i)."""
    return jnp.tril(jnp.ones((m, m), dtype=bool))


def uniform_attention(m: int, causal: bool, dtype) -> Float[Array, "m m"]:
    """The uniform attention matrix: (1/m) 1 1^T, or row i averaging positions j <= i if causal."""
    if causal:
        rows = jnp.arange(1, m + 1, dtype=dtype)[:, None]
        return jnp.where(causal_mask(m), 1.0 / rows, jnp.zeros((), dtype))
    return jnp.full((m, m), 1.0 / m, dtype)


def row_softmax(logits: Float[Array, "*h m m"], causal: bool) -> Float[Array, "*h m m"]:
    """Softmax over each row, restricted to the allowed positions when causal."""
    if causal:
        m = logits.shape[-1]
        logits = jnp.where(causal_mask(m), logits, -jnp.inf)
    return jax.nn.softmax(logits, axis=-1)


class AbstractAttention(Block):
    """Multi-head attention weights and the value branch shared by all attention blocks.

    Per head h: `q_h = X Wq_h / sqrt(n)`, `k_h = X Wk_h / sqrt(n)`, `G_h = q_h k_h^T / sqrt(n_k)`;
    the subclass turns `G_h` into the attention matrix `A_h`. The value branch is
    `(1/sqrt(H)) sum_h A_h X Wv_h / sqrt(n)` (Wv_h: n x n), or with an output projection
    `concat_h(A_h X Wv_h / sqrt(n)) Wo / sqrt(n)` (Wv_h: n x n/H, Wo: n x n).
    """

    config: ShapedConfig = eqx.field(static=True)
    wq: Float[Array, "heads n nk"]
    wk: Float[Array, "heads n nk"]
    wv: Float[Array, "heads n p"]
    wo: Float[Array, "n n"] | None

    def __init__(self, config: ShapedConfig, n: int, *, key: PRNGKeyArray, dtype=jnp.float32):
        n = check_width(n, name="n")
        heads, nk = config.heads, config.n_k(n)
        if config.out_proj and n % heads:
            raise ValueError(
                f"width n={n} is not divisible by heads={heads}; with out_proj=True each head has "
                "n / heads value columns: pick n a multiple of heads or set out_proj=False"
            )
        p = n // heads if config.out_proj else n
        self.config = config
        shapes = [(heads, n, nk), (heads, n, nk), (heads, n, p)]
        weights = normals(key, shapes + [(n, n)] if config.out_proj else shapes, dtype)
        self.wq, self.wk, self.wv = weights[:3]
        self.wo = weights[3] if config.out_proj else None

    def logits(self, x: Float[Array, "m n"]) -> Float[Array, "heads m m"]:
        """G_h = q_h k_h^T / sqrt(n_k) for every head."""
        n, nk = x.shape[-1], self.wq.shape[-1]
        q = jnp.einsum("mn,hnk->hmk", x, self.wq) / math.sqrt(n)
        k = jnp.einsum("mn,hnk->hmk", x, self.wk) / math.sqrt(n)
        return jnp.einsum("hik,hjk->hij", q, k) / math.sqrt(nk)

    @classmethod
    def attention_from_logits(
        cls, config: ShapedConfig, g: Float[Array, "*heads m m"], n: int
    ) -> Float[Array, "*heads m m"]:
        """The attention matrix A built from the logits G at width n (shared by the law face)."""
        raise NotImplementedError

    def attention_matrix(self, x: Float[Array, "m n"]) -> Float[Array, "heads m m"]:
        """A_h for every head, from the sequence x."""
        return self.attention_from_logits(self.config, self.logits(x), x.shape[-1])

    def branch(self, x: Float[Array, "m n"]) -> Float[Array, "m n"]:
        """The attention branch: heads' A_h X Wv_h / sqrt(n), summed (or projected by Wo)."""
        m, n = x.shape
        a = self.attention_matrix(x)
        values = jnp.einsum("mn,hnp->hmp", x, self.wv) / math.sqrt(n)
        mixed = jnp.einsum("hij,hjp->hip", a, values)
        if self.wo is None:
            return mixed.sum(axis=0) / math.sqrt(self.config.heads)
        return jnp.transpose(mixed, (1, 0, 2)).reshape(m, n) @ self.wo / math.sqrt(n)

    @classmethod
    def _check_law_width(cls, config: ShapedConfig, n: int, m: int) -> int:
        n = check_width(n, name="n")
        complement_dof(n, m)  # raises for n < m
        if config.out_proj and n % config.heads:
            raise ValueError(
                f"width n={n} is not divisible by heads={config.heads}; with out_proj=True each "
                "head has n / heads value columns: pick n a multiple of heads or set out_proj=False"
            )
        return n

    @classmethod
    def law_step(
        cls, config: ShapedConfig, n: int, v: Float[Array, "m m"], *, key: PRNGKeyArray
    ) -> Float[Array, "m m"]:
        """Exact draw of V_Z = Z Z^T / n given V = X X^T / n at width n (no n x n matrix).

        `F F^T` for the factor `F = law_factor_step(config, n, cov_factor(v), key=key)`; see
        `law_factor_step` for the law. The law chain calls `law_factor_step` directly.
        """
        n = cls._check_law_width(config, n, v.shape[-1])
        f = cls.law_factor_step(config, n, cov_factor(v), key=key)
        return symmetrize(f @ f.T)

    @classmethod
    def law_factor_step(
        cls, config: ShapedConfig, n: int, l: Float[Array, "m m"], *, key: PRNGKeyArray
    ) -> Float[Array, "m k"]:
        """A factor F (m x k, k <= 2m) with F F^T distributed as V_Z given V = L L^T at width n.

        `l` is any factor of the current covariance V = X X^T / n (L L^T = V, for example
        `cov_factor(V)`): the law below is invariant under L -> L Q for orthogonal Q, because
        the logit draws, E and the Wishart are rotation invariant. Per head h the logits are
        `G_h = L E_h R_h^T L^T / sqrt(n_k)` with `E_h` (m x min(m, n_k)) iid N(0, 1) and
        `R_h R_h^T ~ Wish_m(n_k)` (Bartlett), and `A_h` comes from `attention_from_logits`.
        The value branch enters only through a factor M (m x k_v) of the m x m matrix

            Sigma = (1/H) sum_h A_h V A_h^T = M M^T,  M = [A_1 L, ..., A_H L] / sqrt(H)
            Sigma = (1/n) sum_h (A_h L T_h)(A_h L T_h)^T,  T_h T_h^T ~ Wish_m(n/H)   (with Wo)

        (any M with M M^T = Sigma gives the same law: M is used as it is when it has at most
        m columns, one head without Wo needs no factorisation at all; otherwise M is the
        Cholesky factor `cov_factor(Sigma)`). With `E` (k_v x m) iid N(0, 1) and
        `T T^T = W ~ Wish_k_v(n - m)` (Bartlett):

            V_Z = lam^2 V + (lam gam / sqrt(n)) (L E^T M^T + M E L^T)
                  + (gam^2 / n) M (E E^T + W) M^T
                = F F^T,   F = [lam L + (gam / sqrt(n)) M E,  (gam / sqrt(n)) M T]

        which is `Z / sqrt(n)` in an orthonormal basis of the width adapted to X. See
        docs/theory.md, section 5, for the derivation (extended to H heads and Wo).
        Cost: about 8 m^3 flops and 3 m^2 random numbers per head, whatever n and n_k; no
        eigendecomposition.
        """
        m = l.shape[-1]
        n = cls._check_law_width(config, n, m)
        dof = complement_dof(n, m)
        heads, nk = config.heads, config.n_k(n)
        dtype = l.dtype
        lam, gam = config.lam, config.gamma
        p = n // heads if config.out_proj else n
        # Columns of the value-branch factor M before any factorisation.
        k_v = heads * (min(m, p) if config.out_proj else m)
        k = min(k_v, m)
        # One PRNG call for the whole step (each jax.random call site costs compile time).
        e_q, z_k, z_o, e, z_w = law_normals(
            key,
            [
                (heads, m, min(m, nk)),
                (heads, bartlett_size(m, nk)),
                (heads, bartlett_size(m, p) if config.out_proj else 0),
                (k, m),
                (bartlett_size(k, dof),),
            ],
            dtype,
        )
        # Logits: q_h k_h^T = L N_q N_k^T L^T, and N_q N_k^T = E_q R^T in law (LQ of N_k).
        r_k = jax.vmap(lambda z: bartlett_from_normals(z, m, nk))(z_k)
        lq, lk = jnp.split(l @ jnp.concatenate([e_q, r_k], axis=-1), 2, axis=-1)
        g = lq @ jnp.swapaxes(lk, -1, -2) / math.sqrt(nk)
        al = cls.attention_from_logits(config, g, n) @ l  # (H, m, m): A_h L
        if config.out_proj:
            t_h = jax.vmap(lambda z: bartlett_from_normals(z, m, p))(z_o)
            # the heads' A_h L O Wv_h, up to a rotation of their columns
            wide = al @ t_h / math.sqrt(n)
        else:
            wide = al / math.sqrt(heads)
        wide = jnp.moveaxis(wide, 0, 1).reshape(m, k_v)  # M M^T = Sigma
        factor = wide if k_v <= m else cov_factor(wide @ wide.T)
        # F = [lam L + s M E, s M T] with one product M [E, T].
        noise = jnp.concatenate([e, bartlett_from_normals(z_w, k, dof)], axis=1)
        f = (gam / math.sqrt(n)) * (factor @ noise)
        return f.at[:, :m].add(lam * l)
