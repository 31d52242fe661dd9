"""Unshaped (standard) Softmax attention with the shaped block's residual form: a baseline."""

from __future__ import annotations

from jaxtyping import Array, Float

from ..config import ShapedConfig
from ._attention import AbstractAttention, row_softmax


class StandardAttention(AbstractAttention):
    """Standard Softmax attention with the residual weights lam, gam (docs/theory.md section 2).

        A_h = softmax_rows(G_h),   G_h = (X Wq_h / sqrt(n)) (X Wk_h / sqrt(n))^T / sqrt(n_k)
        Z   = lam X + gam (1/sqrt(H)) sum_h A_h X Wv_h / sqrt(n)

    No identity, no centring, temperature `sqrt(n_k)` on the raw logits `X Wq Wk^T X^T / n`.
    At initialisation the logits are O(1), so A mixes tokens at every layer and the token
    correlations go to 1 with depth (rank collapse, docs/theory.md section 6). It has no SDE limit.
    """

    name = "standard_attention"

    @classmethod
    def attention_from_logits(
        cls, config: ShapedConfig, g: Float[Array, "*heads m m"], n: int
    ) -> Float[Array, "*heads m m"]:
        """The attention matrix A = softmax_rows(G) (causal: over positions j <= i)."""
        return row_softmax(g, config.causal)

    def __call__(self, x: Float[Array, "m n"]) -> Float[Array, "m n"]:
        """The block's output Z = lam X + gam (attention branch)(X) (m, n)."""
        return self.config.lam * x + self.config.gamma * self.branch(x)
