"""What every attention block shares: per-head projections, logits, masks and the value branch."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._linalg import psd_sqrt, symmetrize
from ..config import ShapedConfig, check_width
from ..wishart import bartlett_from_normals, bartlett_size, complement_dof
from ._base import Block, normals


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
    def law_step(
        cls, config: ShapedConfig, n: int, v: Float[Array, "m m"], *, key: PRNGKeyArray
    ) -> Float[Array, "m m"]:
        """Exact draw of V_Z = Z Z^T / n given V = X X^T / n at width n (no n x n matrix).

        With L L^T = V (any factor; `psd_sqrt`), per head h the logits are
        `G_h = L E_h R_h^T L^T / sqrt(n_k)` with `E_h` (m x min(m, n_k)) iid N(0, 1) and
        `R_h R_h^T ~ Wish_m(n_k)` (Bartlett), and `A_h` comes from `attention_from_logits`.
        The value branch enters only through the m x m matrix

            Sigma = (1/H) sum_h A_h V A_h^T                            (no output projection)
            Sigma = (1/n) sum_h (A_h L T_h)(A_h L T_h)^T,  T_h T_h^T ~ Wish_m(n/H)   (with Wo)

        and with `M M^T = Sigma`, `E` (m x m) iid N(0, 1), `W ~ Wish_m(n - m)`:

            V_Z = lam^2 V + (lam gam / sqrt(n)) (L E^T M^T + M E L^T)
                  + (gam^2 / n) M (E E^T + W) M^T

        See docs/theory.md, section 5, for the derivation (SPEC.md section 4, extended to H heads
        and Wo).
        Cost: O(H m^3) flops and O(H m^2) random numbers, whatever n and n_k.
        """
        m = v.shape[-1]
        n = check_width(n, name="n")
        dof = complement_dof(n, m)
        heads, nk = config.heads, config.n_k(n)
        if config.out_proj and n % heads:
            raise ValueError(
                f"width n={n} is not divisible by heads={heads}; with out_proj=True each head has "
                "n / heads value columns: pick n a multiple of heads or set out_proj=False"
            )
        dtype = v.dtype
        lam, gam = config.lam, config.gamma
        p = n // heads if config.out_proj else n
        # One PRNG call for the whole step (each jax.random call site costs compile time).
        e_q, z_k, z_o, e, z_w = normals(
            key,
            [
                (heads, m, min(m, nk)),
                (heads, bartlett_size(m, nk)),
                (heads, bartlett_size(m, p) if config.out_proj else 0),
                (m, m),
                (bartlett_size(m, dof),),
            ],
            dtype,
        )
        l = psd_sqrt(v)
        # Logits: q_h k_h^T = L N_q N_k^T L^T, and N_q N_k^T = E_q R^T in law (LQ of N_k).
        r_k = jax.vmap(lambda z: bartlett_from_normals(z, m, nk))(z_k)
        g = l @ e_q @ jnp.swapaxes(r_k, -1, -2) @ l.T / math.sqrt(nk)
        al = cls.attention_from_logits(config, g, n) @ l  # (H, m, m): A_h L
        if config.out_proj:
            t_h = jax.vmap(lambda z: bartlett_from_normals(z, m, p))(z_o)
            mixed = al @ t_h  # the heads' A_h L O Wv_h, up to a rotation of their columns
            sigma = jnp.einsum("hij,hkj->ik", mixed, mixed) / n
        else:
            sigma = jnp.einsum("hij,hkj->ik", al, al) / heads
        factor = psd_sqrt(sigma)
        p_mat = factor @ e  # M E
        t_w = factor @ bartlett_from_normals(z_w, m, dof)  # M W^(1/2)
        cross = l @ p_mat.T
        out = (
            lam**2 * v
            + (lam * gam / math.sqrt(n)) * (cross + cross.T)
            + (gam**2 / n) * (p_mat @ p_mat.T + t_w @ t_w.T)
        )
        return symmetrize(out)
