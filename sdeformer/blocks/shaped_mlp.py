"""The shaped-ReLU MLP block: ReLU slopes 1 + c/sqrt(n), normalised so that E[sigma(g)^2] c = 1."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._linalg import psd_sqrt
from ..config import ShapedConfig, check_width
from . import _limit
from ._base import Block, normal


def relu_slopes(config: ShapedConfig, n: int) -> tuple[float, float, float]:
    """(s_plus, s_minus, c): the shaped ReLU's slopes at width n and its normalising constant."""
    s_plus = 1.0 + config.c_plus / math.sqrt(n)
    s_minus = 1.0 + config.c_minus / math.sqrt(n)
    return s_plus, s_minus, 2.0 / (s_plus**2 + s_minus**2)


def shaped_relu(h: Array, s_plus: float, s_minus: float) -> Array:
    """sigma(x) = s_plus max(x, 0) + s_minus min(x, 0)."""
    return s_plus * jnp.maximum(h, 0.0) + s_minus * jnp.minimum(h, 0.0)


class ShapedMLP(Block):
    """Shaped-ReLU MLP block (Noci et al. 2023, SPEC.md section 2).

        s_pm = 1 + c_pm / sqrt(n),  sigma(x) = s_plus max(x, 0) + s_minus min(x, 0)
        c = 2 / (s_plus^2 + s_minus^2)
        X_next = lam Z + gam sqrt(c / n_h) sigma(Z Wpre / sqrt(n)) Wpost

    Paper -> code: c_+, c_- -> `config.c_plus`, `config.c_minus`; hidden width n_h = r n ->
    `config.mlp_ratio`; W^pre, W^post -> `wpre` (n x n_h), `wpost` (n_h x n), iid N(0, 1).
    As n grows the activation tends to the identity at rate 1/sqrt(n): that is the shaping.

    Limit face (SPEC.md section 3, derivation in docs/theory.md), rho_ab = V_ab/sqrt(V_aa V_bb):

        b_mlp_ab  = gam^2 nu(rho_ab) sqrt(V_aa V_bb),
        nu(rho)   = ((c_+ - c_-)^2 / (2 pi)) (sqrt(1 - rho^2) - rho arccos(rho))
        Sigma_mlp = gam^2 (2 - gam^2 + gam^2 / r) Lin
    """

    config: ShapedConfig = eqx.field(static=True)
    wpre: Float[Array, "n nh"]
    wpost: Float[Array, "nh n"]
    name = "mlp"

    def __init__(self, config: ShapedConfig, n: int, *, key: PRNGKeyArray, dtype=jnp.float32):
        n = check_width(n, name="n")
        nh = config.n_h(n)
        prekey, postkey = jr.split(key)
        self.config = config
        self.wpre = normal(prekey, (n, nh), dtype)
        self.wpost = normal(postkey, (nh, n), dtype)

    def __call__(self, z: Float[Array, "m n"]) -> Float[Array, "m n"]:
        n, nh = self.wpre.shape
        s_plus, s_minus, c = relu_slopes(self.config, n)
        hidden = shaped_relu(z @ self.wpre / math.sqrt(n), s_plus, s_minus)
        return self.config.lam * z + self.config.gamma * math.sqrt(c / nh) * (hidden @ self.wpost)

    @classmethod
    def drift(cls, config: ShapedConfig, v: Float[Array, "m m"]) -> Float[Array, "m m"]:
        """The MLP drift b_mlp(V) (m, m); zero on the diagonal and when c_plus = c_minus."""
        return _limit.mlp_drift(config, v)

    @classmethod
    def noise_covariance(
        cls, config: ShapedConfig, v: Float[Array, "m m"]
    ) -> Float[Array, "m m m m"]:
        """Sigma_mlp_{ab,cd} = gam^2 (2 - gam^2 + gam^2 / r) Lin_{ab,cd}, per unit time."""
        return _limit.mlp_coefficient(config) * _limit.lin_tensor(v)

    @classmethod
    def noise_factor(cls, config: ShapedConfig, v: Float[Array, "m m"]) -> Float[Array, "m m k"]:
        """F (m, m, m(m+1)/2) with F F^T = Sigma_mlp (see `_limit`), for PSD V."""
        return math.sqrt(_limit.mlp_coefficient(config)) * _limit.lin_factor(psd_sqrt(v))
