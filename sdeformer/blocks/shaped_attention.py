"""Shaped attention: Softmax attention centred at the identity with temperature tau0 sqrt(n n_k)."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..config import ShapedConfig
from ._attention import AbstractAttention, row_softmax, uniform_attention


class ShapedAttention(AbstractAttention):
    """Shaped attention block (Noci et al. 2023, SPEC.md section 2).

        A_h = I + softmax_rows(G_h / (tau0 sqrt(n))) - (1/m) 1 1^T
        Z   = lam X + gam (1/sqrt(H)) sum_h A_h X Wv_h / sqrt(n)

    with `G_h = (X Wq_h / sqrt(n)) (X Wk_h / sqrt(n))^T / sqrt(n_k)`, so the raw logits
    `Y = X Wq Wk^T X^T / n` are divided by the paper's temperature `tau = tau0 sqrt(n n_k)`.
    Causal variant: Softmax over positions j <= i and centring by the causal uniform matrix
    (row i averages positions <= i). With `out_proj` the heads are concatenated and projected
    by `Wo / sqrt(n)`.

    Paper -> code: tau_0 -> `config.tau0`; gamma, lambda -> `config.gamma`, `config.lam`;
    W^Q, W^K, W^V, W^O -> `wq`, `wk`, `wv`, `wo` (iid N(0, 1), scales explicit).
    """

    name = "attention"

    @classmethod
    def attention_from_logits(
        cls, config: ShapedConfig, g: Float[Array, "*heads m m"], n: int
    ) -> Float[Array, "*heads m m"]:
        m = g.shape[-1]
        soft = row_softmax(g / (config.tau0 * math.sqrt(n)), config.causal)
        return jnp.eye(m, dtype=g.dtype) + soft - uniform_attention(m, config.causal, g.dtype)

    def __call__(self, x: Float[Array, "m n"]) -> Float[Array, "m n"]:
        return self.config.lam * x + self.config.gamma * self.branch(x)
