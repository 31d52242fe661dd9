"""Shaped attention: Softmax attention centred at the identity with temperature tau0 sqrt(n n_k)."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._linalg import psd_sqrt
from ..config import ShapedConfig
from . import _limit
from ._attention import AbstractAttention, row_softmax, uniform_attention
from ._base import MissingFaceError


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

    Limit face (SPEC.md section 3, derivation in docs/theory.md), with C = I - 11^T/m,
    K = V C V C V, s = tr(V C V C), w = diag(C V C), u = w - mean(w):

        b_att     = (gam^2/tau0^2) [s V / m^2 + (diag(V) (u^T V) + (u^T V)^T diag(V)^T) / (2m)]
        Sigma_att = kappa_att Lin + gam^4 / (tau0^2 m^2 H) Att(V, K)
        kappa_att = gam^2 (2 - gam^2)   (2 gam^2 with the output projection)

    The causal variant has no limit face here (it raises `MissingFaceError`).
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

    @classmethod
    def _check_limit(cls, config: ShapedConfig) -> None:
        if config.causal:
            raise MissingFaceError(
                "block 'attention' with causal=True has no covariance SDE limit in sdeformer: "
                "SPEC.md section 3 gives the limit of non-causal shaped attention only (the "
                "causal centring breaks the permutation symmetry the formulas use); use "
                "causal=False for the SDE, or compare finite networks with the exact laws"
            )

    @classmethod
    def drift(cls, config: ShapedConfig, v: Float[Array, "m m"]) -> Float[Array, "m m"]:
        """The attention drift b_att(V) (m, m); it does not depend on the number of heads."""
        cls._check_limit(config)
        return _limit.attention_drift(config, v)

    @classmethod
    def noise_covariance(
        cls, config: ShapedConfig, v: Float[Array, "m m"]
    ) -> Float[Array, "m m m m"]:
        """Sigma_att_{ab,cd} = kappa_att Lin + gam^4 / (tau0^2 m^2 H) Att, per unit time."""
        cls._check_limit(config)
        kappa, alpha = _limit.attention_coefficients(config)
        m = v.shape[-1]
        return kappa * _limit.lin_tensor(v) + (alpha / m**2) * _limit.mix_tensor(
            v, _limit.attention_k(v)
        )

    @classmethod
    def noise_factor(cls, config: ShapedConfig, v: Float[Array, "m m"]) -> Float[Array, "m m k"]:
        """F (m, m, m(m+1)/2 + m^2) with F F^T = Sigma_att (see `_limit`), for PSD V."""
        cls._check_limit(config)
        kappa, alpha = _limit.attention_coefficients(config)
        m = v.shape[-1]
        factor = psd_sqrt(v)
        other = v @ _limit.centring(m, v.dtype) @ factor  # (V C L)(V C L)^T = V C V C V
        return jnp.concatenate(
            [
                math.sqrt(kappa) * _limit.lin_factor(factor),
                (math.sqrt(alpha) / m) * _limit.mix_factor(factor, other),
            ],
            axis=-1,
        )
