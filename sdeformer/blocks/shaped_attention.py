"""Shaped attention: Softmax attention centred at the identity with temperature tau0 sqrt(n n_k)."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..config import ShapedConfig
from . import _causal, _limit
from ._attention import AbstractAttention, row_softmax, uniform_attention


class ShapedAttention(AbstractAttention):
    """Shaped attention block (Noci et al. 2023, docs/theory.md section 2).

        A_h = I + softmax_rows(G_h / (tau0 sqrt(n))) - (1/m) 1 1^T
        Z   = lam X + gam (1/sqrt(H)) sum_h A_h X Wv_h / sqrt(n)

    with `G_h = (X Wq_h / sqrt(n)) (X Wk_h / sqrt(n))^T / sqrt(n_k)`, so the raw logits
    `Y = X Wq Wk^T X^T / n` are divided by the paper's temperature `tau = tau0 sqrt(n n_k)`.
    Causal variant: Softmax over positions j <= i and centring by the causal uniform matrix
    (row i averages positions <= i). With `out_proj` the heads are concatenated and projected
    by `Wo / sqrt(n)`.

    Paper -> code: tau_0 -> `config.tau0`; gamma, lambda -> `config.gamma`, `config.lam`;
    W^Q, W^K, W^V, W^O -> `wq`, `wk`, `wv`, `wo` (iid N(0, 1), scales explicit).

    Limit faces (docs/theory.md section 4), with C = I - 11^T/m,
    K = V C V C V, s = tr(V C V C), w = diag(C V C), u = w - mean(w):

        b_att     = (gam^2/tau0^2) [s V / m^2 + (diag(V) (u^T V) + (u^T V)^T diag(V)^T) / (2m)]
        Sigma_att = kappa_att Lin + gam^4 / (tau0^2 m^2 H) Att(V, K)
        kappa_att = gam^2 (2 - gam^2)   (2 gam^2 with the output projection)

    Solver noise (O(m^3), `mix_noise`): with L L^T = V and M = V C L, the attention part is
    sqrt(alpha_att) (L E M^T + M E^T L^T) / m for E iid N(0, 1), alpha_att = gam^4/(tau0^2 H).
    The causal variant (row a centred over its first a positions) uses
    `sdeformer.blocks._causal` (docs/theory.md section 4, "Causal attention").
    """

    name = "attention"

    @classmethod
    def attention_from_logits(
        cls, config: ShapedConfig, g: Float[Array, "*heads m m"], n: int
    ) -> Float[Array, "*heads m m"]:
        """The shaped attention matrix A = I + softmax_rows(G / (tau0 sqrt n)) - uniform."""
        m = g.shape[-1]
        soft = row_softmax(g / (config.tau0 * math.sqrt(n)), config.causal)
        return jnp.eye(m, dtype=g.dtype) + soft - uniform_attention(m, config.causal, g.dtype)

    def __call__(self, x: Float[Array, "m n"]) -> Float[Array, "m n"]:
        """The block's output Z = lam X + gam (attention branch)(X) (m, n)."""
        return self.config.lam * x + self.config.gamma * self.branch(x)

    @classmethod
    def drift(
        cls, config: ShapedConfig, v: Float[Array, "m m"], *, width: int | None = None
    ) -> Float[Array, "m m"]:
        """The attention drift b_att(V) (m, m); independent of the heads.

        No closed-form finite-width drift is known, so `width` is ignored (the corrections are
        O(1/n)).
        """
        if config.causal:
            return _causal.causal_attention_drift(config, v)
        return _limit.attention_drift(config, v)

    @classmethod
    def noise_terms(cls, config: ShapedConfig) -> _limit.NoiseTerms:
        """kappa_att Lin + alpha_att (Att / m^2, or its causal bracket).

        alpha_att = gam^4 / (tau0^2 H).
        """
        kappa, alpha = _limit.attention_coefficients(config)
        return _limit.NoiseTerms(kappa, alpha, "causal" if config.causal else "attention")

    @classmethod
    def noise_covariance(
        cls, config: ShapedConfig, v: Float[Array, "m m"]
    ) -> Float[Array, "m m m m"]:
        """Sigma_att_{ab,cd} = kappa_att Lin + gam^4 / (tau0^2 m^2 H) Att (or the causal bracket).

        Per unit time; dense O(m^4), for tests and small m.
        """
        kappa, alpha = _limit.attention_coefficients(config)
        if config.causal:
            mix = _causal.causal_mix_tensor(v)
        else:
            mix = _limit.mix_tensor(v, _limit.attention_k(v)) / v.shape[-1] ** 2
        return kappa * _limit.lin_tensor(v) + alpha * mix

    @classmethod
    def mix_noise(
        cls,
        config: ShapedConfig,
        v: Float[Array, "m m"],
        factor: Float[Array, "m m"],
        e: Float[Array, "m m"],
    ) -> Float[Array, "m m"]:
        """The unit attention noise in O(m^3).

        (L E M^T + M E^T L^T) / m with M = V C L (covariance Att / m^2), or the causal one
        (`_causal.causal_mix_noise`).
        """
        if config.causal:
            return _causal.causal_mix_noise(v, factor, e)
        other = _limit.attention_other(v, factor)
        return _limit.mix_noise(factor, other, e) / v.shape[-1]
