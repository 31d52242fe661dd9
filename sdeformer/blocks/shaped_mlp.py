"""The shaped-ReLU MLP block: ReLU slopes 1 + c/sqrt(n), normalised so that E[sigma(g)^2] c = 1."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _linalg
from .._linalg import symmetrize
from .._typing import Scalar
from .._wishart import bartlett_from_normals, bartlett_size, complement_dof
from ..config import ShapedConfig, check_width
from . import _limit
from ._base import Block, law_normals, normals


def relu_slopes(config: ShapedConfig, n: int) -> tuple[Scalar, Scalar, Scalar]:
    """(s_plus, s_minus, c): the shaped ReLU's slopes at width n and its normalising constant."""
    s_plus = 1.0 + config.c_plus / math.sqrt(n)
    s_minus = 1.0 + config.c_minus / math.sqrt(n)
    return s_plus, s_minus, 2.0 / (s_plus**2 + s_minus**2)


def shaped_relu(h: Array, s_plus: Scalar, s_minus: Scalar) -> Array:
    """sigma(x) = s_plus max(x, 0) + s_minus min(x, 0)."""
    return s_plus * jnp.maximum(h, 0.0) + s_minus * jnp.minimum(h, 0.0)


class ShapedMLP(Block):
    """Shaped-ReLU MLP block (Noci et al. 2023, docs/theory.md section 2).

        s_pm = 1 + c_pm / sqrt(n),  sigma(x) = s_plus max(x, 0) + s_minus min(x, 0)
        c = 2 / (s_plus^2 + s_minus^2)
        X_next = lam Z + gam sqrt(c / n_h) sigma(Z Wpre / sqrt(n)) Wpost

    Paper -> code: c_+, c_- -> `config.c_plus`, `config.c_minus`; hidden width n_h = r n ->
    `config.mlp_ratio`; W^pre, W^post -> `wpre` (n x n_h), `wpost` (n_h x n), iid N(0, 1).
    As n grows the activation tends to the identity at rate 1/sqrt(n): that is the shaping.

    Limit faces (docs/theory.md section 4), rho_ab = V_ab/sqrt(V_aa V_bb):

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
        self.config = config
        self.wpre, self.wpost = normals(key, [(n, nh), (nh, n)], dtype)

    def __call__(self, z: Float[Array, "m n"]) -> Float[Array, "m n"]:
        """The block's output X_next = lam Z + gam sqrt(c / n_h) sigma(Z Wpre / sqrt(n)) Wpost."""
        n, nh = self.wpre.shape
        s_plus, s_minus, c = relu_slopes(self.config, n)
        hidden = shaped_relu(z @ self.wpre / math.sqrt(n), s_plus, s_minus)
        return self.config.lam * z + self.config.gamma * math.sqrt(c / nh) * (hidden @ self.wpost)

    @classmethod
    def drift(
        cls, config: ShapedConfig, v: Float[Array, "m m"], *, width: int | None = None
    ) -> Float[Array, "m m"]:
        """The MLP drift b_mlp(V) (m, m); zero on the diagonal and when c_plus = c_minus.

        With `width=n`: the exact one-step drift of the finite MLP at width n,
        c(n) b_mlp(V), c(n) = 2 / (s_plus^2 + s_minus^2) (docs/theory.md section 4, "Shaped-ReLU
        MLP: drift"); it differs from the limit by O(n^-1/2) unless c_plus + c_minus = 0.
        """
        b = _limit.mlp_drift(config, v)
        if width is None:
            return b
        return relu_slopes(config, check_width(width, name="width"))[2] * b

    @classmethod
    def noise_terms(cls, config: ShapedConfig) -> _limit.NoiseTerms:
        """kappa_mlp Lin, kappa_mlp = gam^2 (2 - gam^2 + gam^2 / r); no attention term."""
        return _limit.NoiseTerms(_limit.mlp_coefficient(config))

    @classmethod
    def noise_covariance(
        cls, config: ShapedConfig, v: Float[Array, "m m"]
    ) -> Float[Array, "m m m m"]:
        """Sigma_mlp_{ab,cd} = gam^2 (2 - gam^2 + gam^2 / r) Lin_{ab,cd}, per unit time."""
        return _limit.mlp_coefficient(config) * _limit.lin_tensor(v)

    @classmethod
    def law_step(
        cls, config: ShapedConfig, n: int, v: Float[Array, "m m"], *, key: PRNGKeyArray
    ) -> Float[Array, "m m"]:
        """Exact draw of V_next = X_next X_next^T / n given V_Z = Z Z^T / n = `v` at width n.

        `F F^T` for the factor `F = law_factor_step(config, n, cov_factor(v), key=key)`; see
        `law_factor_step` for the law. The law chain calls `law_factor_step` directly.
        """
        f = cls.law_factor_step(config, n, _linalg.cov_factor(v), key=key)
        return symmetrize(f @ f.T)

    @classmethod
    def law_factor_step(
        cls, config: ShapedConfig, n: int, l_z: Float[Array, "m m"], *, key: PRNGKeyArray
    ) -> Float[Array, "m k"]:
        """A factor F (m x k, k <= 2m) with F F^T distributed as V_next given V_Z = L_Z L_Z^T.

        docs/theory.md section 5 (MLP): pre-activations `H = L_Z N` (N: m x n_h
        iid N(0, 1); any factor L_Z L_Z^T = V_Z gives the same law since N is rotation
        invariant), `S = sigma(H) sigma(H)^T = L_S L_S^T`, `P = L_S E''` (E'': k x m iid
        N(0, 1)) and `T T^T = W ~ Wish_k(n - m)` (Bartlett):

            V_next = lam^2 V_Z + lam gam sqrt(c / (n n_h)) (L_Z P^T + P L_Z^T)
                     + gam^2 (c / (n n_h)) (P P^T + L_S W L_S^T)
                   = F F^T,  F = [lam L_Z + gam sqrt(c/(n n_h)) P,  gam sqrt(c/(n n_h)) L_S T]

        Any L_S (m x k) with L_S L_S^T = S gives the same law: the Cholesky factor
        `cov_factor(S)` (k = m) when n_h > m, else sigma(H) itself (k = n_h, S is singular).
        Cost: m n_h Gaussian draws (the nonlinearity needs them), O(m^2 n_h + m^3) flops and
        no eigendecomposition.
        """
        m = l_z.shape[-1]
        n = check_width(n, name="n")
        dof = complement_dof(n, m)
        nh = config.n_h(n)
        k = min(m, nh)
        s_plus, s_minus, c = relu_slopes(config, n)
        dtype = l_z.dtype
        lam, gam = config.lam, config.gamma
        # One PRNG call for the whole step (each jax.random call site costs compile time).
        z_h, e, z_w = law_normals(key, [(m, nh), (k, m), (bartlett_size(k, dof),)], dtype)
        act = shaped_relu(l_z @ z_h, s_plus, s_minus)
        l_s = act if nh <= m else _linalg.cov_factor(act @ act.T)
        # F = [lam L_Z + s L_S E'', s L_S T] with one product L_S [E'', T].
        noise = jnp.concatenate([e, bartlett_from_normals(z_w, k, dof)], axis=1)
        f = (gam * math.sqrt(c / (n * nh))) * (l_s @ noise)
        return f.at[:, :m].add(lam * l_z)
