"""The limiting covariance SDE of a shaped Transformer stack (docs/theory.md section 4).

    dV_t = b(V_t) dt + Sigma(V_t)^{1/2} dB_t,      V_0 = X_0 X_0^T / n,

with `b` and `Sigma` the sums of the limit terms of the blocks in `config.blocks` (one layer is
one pass through the pattern; a layer lasts 1/n of SDE time, so depth d is T = d / n).

Every block's noise is `kappa_i Lin + alpha_i <attention term>` (`Block.noise_terms`), so the
whole stack's noise is `kappa Lin + alpha <attention term>` with kappa = sum_i kappa_i and
alpha = sum over attention blocks of gam^4 / (tau0^2 H). With one factor L L^T = V per step
(Cholesky), Z and E m x m matrices of iid N(0, dt) entries, S = (Z + Z^T)/sqrt(2), M = V C L:

    dV_noise = sqrt(kappa) L S L^T + (sqrt(alpha)/m) (L E M^T + M E^T L^T)

has exactly the covariance Sigma(V) dt (docs/theory.md section 4, "Noise factor used by the
solver") at O(m^3) time and O(m^2) memory: no m^4 object is ever formed. The causal variant
replaces the attention term by `_causal.causal_mix_noise`.

Paper -> code: b -> `CovarianceSDE.drift`, Sigma -> `noise_covariance` (dense, tests only),
L -> `factor`, (Z, E) -> the Brownian pytree {"lin", "mix"} of `brownian_shape`, the noise
above -> `noise`, kappa -> `lin_coefficient`, alpha -> `mix_coefficient`.

The solver (`solve_sde`, in `sdeformer.sde._solve`) steps whole batches of paths in one
`diffrax.diffeqsolve`; see its docstring for the exit rules and the Stratonovich option.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import _lapack
from .._typing import Scalar
from ..blocks import MissingFaceError, ShapedAttention, _limit, block_types
from ..config import ShapedConfig, check_width, with_values

STRATONOVICH_AUTODIFF_MAX_TOKENS = 16
"""Largest m for the O(m^5) autodiff Stratonovich correction (causal attention only)."""


def triu_vector(v: Float[Array, "*batch m m"]) -> Float[Array, "*batch p"]:
    """The m(m+1)/2 upper-triangular entries (row-major, a <= b) of symmetric matrices."""
    i, j = np.triu_indices(v.shape[-1])
    return v[..., i, j]


def triu_matrix(y: Float[Array, "*batch p"], m: int) -> Float[Array, "*batch m m"]:
    """Inverse of `triu_vector`: the symmetric matrix with these upper-triangular entries."""
    i, j = np.triu_indices(m)
    out = jnp.zeros((*y.shape[:-1], m, m), y.dtype)
    out = out.at[..., i, j].set(y)
    return out.at[..., j, i].set(y)


def default_psd_tol(m: int, dtype) -> float:
    """100 m eps: above the rounding error of a Cholesky factorisation of an m x m matrix."""
    return 100 * m * float(jnp.finfo(dtype).eps)


def psd_factor_batch(v: Float[Array, "b m m"], psd_tol: float | Array | None = None):
    """(L, psd) for a stack of symmetric V: factors L L^T = V and whether V is PSD up to tolerance.

    Per matrix:

    1. Cholesky of V when V is positive definite (a finite factor is the PSD test);
    2. else Cholesky of V + delta I, delta = psd_tol tr(V)/m (default `default_psd_tol`): V is
       PSD up to delta exactly when this exists (a singular PSD V lands here; L L^T = V + delta I,
       relative error psd_tol);
    3. else (V indefinite beyond the tolerance, `psd` False) the factor of V + s I with s from
       Gershgorin's bound on the smallest eigenvalue, so the factor is never NaN.

    Steps 2-3 run, for the whole stack, only when step 1 fails for some matrix (`lax.cond`), and
    step 3's shift is computed from step 2's result, so the factorisations run one after another
    (see `sdeformer._lapack` for why batched factorisations must not run side by side on a CPU).
    Only Cholesky factorisations, O(m^3): batched eigh is slow on CPUs.
    """
    m = v.shape[-1]
    if psd_tol is None:
        psd_tol = default_psd_tol(m, v.dtype)
    chol = _lapack.cholesky(v)
    ok = jnp.all(jnp.isfinite(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)

    def fallback(_):
        eye = jnp.eye(m, dtype=v.dtype)
        trace = jnp.trace(v, axis1=-2, axis2=-1) / m
        delta = (psd_tol * jnp.maximum(trace, jnp.finfo(v.dtype).tiny))[:, None, None]
        jittered = _lapack.cholesky(v + delta * eye)
        psd = jnp.all(jnp.isfinite(jnp.diagonal(jittered, axis1=-2, axis2=-1)), axis=-1)
        diag = jnp.diagonal(v, axis1=-2, axis2=-1)
        gershgorin = jnp.min(2 * diag - jnp.sum(jnp.abs(v), axis=-1), axis=-1)
        # a shift of 0 where step 2 succeeded: the repair depends on step 2's result
        shift = jnp.where(psd, 0.0, jnp.maximum(-gershgorin, 0.0))[:, None, None]
        repaired = _lapack.cholesky(v + (delta + shift) * eye)
        factor = jnp.where(
            ok[:, None, None], chol, jnp.where(psd[:, None, None], jittered, repaired)
        )
        return jnp.where(jnp.isfinite(factor), factor, 0.0), ok | psd

    return jax.lax.cond(jnp.all(ok), lambda _: (chol, ok), fallback, None)


def psd_factor(v: Float[Array, "m m"], psd_tol: float | Array | None = None):
    """(L, psd) for one symmetric V: `psd_factor_batch` on a stack of one."""
    factor, psd = psd_factor_batch(v[None], psd_tol)
    return factor[0], psd[0]


@functools.lru_cache(maxsize=256)
def _check_limit_faces(config: ShapedConfig, width: int | None) -> None:
    """Raise ValueError unless every block of the pattern has the limit faces the solver uses.

    The faces are `Block.drift`, `noise_covariance`, `noise_terms`, and `mix_noise` with an
    attention term (abstract evaluation, cached: it costs a trace). The solver merges the
    attention terms of several blocks into one, so they must all use the shaped attention's
    `mix_noise`.
    """
    probe = jnp.eye(2, dtype=jnp.float32)
    for cls in block_types(config.blocks):
        try:
            terms = cls.noise_terms(config)
            jax.eval_shape(lambda v, cls=cls: cls.drift(config, v, width=width), probe)
            jax.eval_shape(lambda v, cls=cls: cls.noise_covariance(config, v), probe)
            if terms.mix:
                jax.eval_shape(lambda v, cls=cls: cls.mix_noise(config, v, v, v), probe)
        except MissingFaceError as err:
            raise ValueError(
                f"CovarianceSDE: config.blocks={config.blocks!r} contains {cls.name!r}, which "
                f"has no covariance SDE limit ({err})"
            ) from err
        if terms.mix and cls.mix_noise.__func__ is not ShapedAttention.mix_noise.__func__:
            raise ValueError(
                f"CovarianceSDE: block {cls.name!r} has an attention noise term (noise_terms "
                f"mix={terms.mix}) with its own mix_noise; the solver supports the shaped "
                "attention's term only (subclass ShapedAttention, or put the noise in `lin`)"
            )


class CovarianceSDE(eqx.Module):
    """The covariance SDE of a stack of shaped blocks: the sum of the blocks' limit terms.

    `CovarianceSDE(config, width=None)`; with `width=n` each block uses its exact finite-width
    drift where one is known in closed form (the shaped MLP's, docs/theory.md section 4),
    else its limit drift. All methods are pure functions of one V (jit/vmap them):

    - `drift(V)` (m, m): b(V);
    - `noise_covariance(V)` (m, m, m, m): `Sigma[a, b, c, d] = Cov(dV_ab, dV_cd) / dt`,
      dense O(m^4) (tests, small m);
    - `factor(V)` (m, m): L with L L^T = V (Cholesky; jittered for singular V, `psd_factor`);
    - `brownian_shape(m, dtype)`: the Brownian pytree {"lin": (m, m), "mix": (m, m)}
      ("mix" only with attention blocks);
    - `noise(V, L, dw)` (m, m): the symmetric noise increment above, linear in dw, O(m^3);
      with dw of iid N(0, dt) entries its covariance is `noise_covariance(V) dt`;
    - `lin_coefficient`, `mix_coefficient`: kappa and alpha;
    - `stratonovich_correction(V, L)`: -1/2 sum_k (D G_k) G_k for the Stratonovich solvers.

    Raises `ValueError` at construction if a block of `config.blocks` has no limit face.
    """

    config: ShapedConfig = eqx.field(static=True)
    width: int | None = eqx.field(static=True)
    values: dict[str, Array] | None = None

    def __init__(self, config: ShapedConfig, width: int | None = None, values: dict | None = None):
        if width is not None:
            width = check_width(width, name="width")
        _check_limit_faces(config, width)
        self.config = config
        self.width = width
        if values is not None:
            with_values(config, values)  # refuses a field that cannot be a JAX value
            values = {k: jnp.asarray(v) for k, v in values.items()} or None
        self.values = values

    def _blocks(self):
        return block_types(self.config.blocks)

    @property
    def _config(self) -> ShapedConfig:
        """The configuration the coefficients read: `config` with `values` put in."""
        return self.config if self.values is None else with_values(self.config, self.values)

    @property
    def lin_coefficient(self) -> Scalar:
        """kappa: the blocks' Lin coefficients summed (independent Lin noises merge).

        A float, or a JAX value when the SDE has `values`.
        """
        kappa = sum(cls.noise_terms(self._config).lin for cls in self._blocks())
        return float(kappa) if self.values is None else kappa

    @property
    def mix_coefficient(self) -> Scalar:
        """alpha: the attention blocks' gam^4 / (tau0^2 H) summed (0 without attention).

        A float, or a JAX value when the SDE has `values`.
        """
        alpha = sum(cls.noise_terms(self._config).mix for cls in self._blocks())
        return float(alpha) if self.values is None else alpha

    @property
    def has_attention_noise(self) -> bool:
        """Whether the noise has the attention term (decided by the blocks, never by values)."""
        return self._mix_block() is not None

    def _mix_block(self):
        """The block whose attention noise term the SDE uses, or None (decided by `config`)."""
        for cls in self._blocks():
            if cls.noise_terms(self.config).mix:
                return cls
        return None

    def drift(self, v: Float[Array, "m m"]) -> Float[Array, "m m"]:
        """b(V): the sum of the blocks' drifts (finite-width ones if `width` is set)."""
        return sum(cls.drift(self._config, v, width=self.width) for cls in self._blocks())

    def noise_covariance(self, v: Float[Array, "m m"]) -> Float[Array, "m m m m"]:
        """Sigma(V)_{ab,cd}: the sum of the blocks' noise covariances (per unit time), dense."""
        return sum(cls.noise_covariance(self._config, v) for cls in self._blocks())

    def factor(self, v: Float[Array, "m m"]) -> Float[Array, "m m"]:
        """L with L L^T = V: Cholesky, never NaN.

        For a singular V the Cholesky factor of V + delta I, delta = 100 m eps tr(V)/m
        (`psd_factor` documents the fallbacks).
        """
        return psd_factor(v)[0]

    def brownian_shape(self, m: int, dtype=jnp.float32) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes of the Brownian increments `noise` takes: iid N(0, dt) entries."""
        shape = {"lin": jax.ShapeDtypeStruct((m, m), jnp.dtype(dtype))}
        if self.has_attention_noise:
            shape["mix"] = jax.ShapeDtypeStruct((m, m), jnp.dtype(dtype))
        return shape

    def noise(
        self, v: Float[Array, "m m"], factor: Float[Array, "m m"], dw: dict[str, Array]
    ) -> Float[Array, "m m"]:
        """sqrt(kappa) L S L^T + sqrt(alpha) (unit attention noise), O(m^3), symmetric."""
        block = self._mix_block()
        kappa, alpha = self.lin_coefficient, self.mix_coefficient
        if block is not None and not self.config.causal:
            # fused: B = L (sqrt(kappa/2) Z L^T + (sqrt(alpha)/m) E M^T), noise = B + B^T
            # (the same numbers as the two faces below, four m x m products instead of five)
            m = v.shape[-1]
            other = _limit.attention_other(v, factor)
            half = factor @ (
                jnp.sqrt(kappa / 2) * (dw["lin"] @ factor.T)
                + (jnp.sqrt(alpha) / m) * (dw["mix"] @ other.T)
            )
            return half + half.T
        out = jnp.sqrt(kappa) * _limit.lin_noise(factor, dw["lin"])
        if block is not None:
            out = out + jnp.sqrt(alpha) * block.mix_noise(self.config, v, factor, dw["mix"])
        return out

    def stratonovich_correction(
        self, v: Float[Array, "m m"], factor: Float[Array, "m m"]
    ) -> Float[Array, "m m"]:
        """-1/2 sum_k (D G_k) G_k with G(V) dw = `noise(V, chol(V), dw)`.

        Added to the Ito drift it gives the drift of the equivalent Stratonovich SDE (for the
        Cholesky factor).

        Closed form in O(m^3) (docs/theory.md section 4, "Stratonovich form"): with
        a^2 = kappa/2, c = sqrt(alpha)/m, N = L^T C L, D = diag(1, ..., m),
        r_i = sum_{j<i} N_jj + N_ii/2 and U the upper triangle of N with half its diagonal,
        W = kappa D + c^2 (D N^2 + N^2 + |N|_F^2 I + diag(r) N + U N), the correction is
        -L (W + W^T) L^T / 2. The causal attention term uses the autodiff form
        (`stratonovich_correction_autodiff`, O(m^5)).
        """
        if self.has_attention_noise and self.config.causal:
            return self.stratonovich_correction_autodiff(v)
        m = v.shape[-1]
        dtype = v.dtype
        kappa, alpha = self.lin_coefficient, self.mix_coefficient
        d = jnp.arange(1, m + 1, dtype=dtype)
        w = kappa * jnp.diag(d)
        if self.has_attention_noise:
            cl = _limit.centre_rows(factor)
            n = cl.T @ cl  # L^T C L (C is a projection)
            n2 = n @ n
            nd = jnp.diagonal(n)
            r = jnp.cumsum(nd) - 0.5 * nd
            upper = jnp.triu(n, 1) + 0.5 * jnp.diag(nd)
            eye = jnp.eye(m, dtype=dtype)
            inner = d[:, None] * n2 + n2 + jnp.sum(n * n) * eye + r[:, None] * n + upper @ n
            w = w + (alpha / m**2) * inner
        return -0.5 * factor @ (w + w.T) @ factor.T

    def stratonovich_correction_autodiff(self, v: Float[Array, "m m"]) -> Float[Array, "m m"]:
        """The same correction by forward-mode autodiff through the Cholesky factor.

        One direction per Brownian coordinate: O(m^5) time, O(m^4) memory (small m, tests).
        """
        m = v.shape[-1]
        if m > STRATONOVICH_AUTODIFF_MAX_TOKENS:
            raise ValueError(
                f"the autodiff Stratonovich correction costs O(m^5) and is limited to m <= "
                f"{STRATONOVICH_AUTODIFF_MAX_TOKENS} tokens (got m = {m}); use solver='euler'"
            )
        shapes = self.brownian_shape(m, v.dtype)
        names = list(shapes)
        k = len(names) * m * m
        basis = jnp.eye(k, dtype=v.dtype).reshape(k, len(names), m, m)

        def g(u, e):
            return self.noise(u, _lapack.cholesky(u), dict(zip(names, e, strict=True)))

        def one(e):
            return jax.jvp(lambda u: g(u, e), (v,), (g(v, e),))[1]

        return -0.5 * jnp.sum(jax.vmap(one)(basis), axis=0)

    # --- dense forms, for tests and small m ------------------------------------------------

    def noise_factor(self, v: Float[Array, "m m"]) -> Float[Array, "m m k"]:
        """F (m, m, k) with `noise(V, L, dw) = F . dw`, so `sum_k F_abk F_cdk = Sigma_abcd`.

        Basis increments pushed through `noise`. Dense O(m^4): tests and small m only.
        """
        m = v.shape[-1]
        factor = self.factor(v)
        names = list(self.brownian_shape(m, v.dtype))
        k = len(names) * m * m
        basis = jnp.eye(k, dtype=v.dtype).reshape(k, len(names), m, m)
        cols = jax.vmap(lambda e: self.noise(v, factor, dict(zip(names, e, strict=True))))(basis)
        return jnp.moveaxis(cols, 0, -1)

    def brownian_dim(self, m: int) -> int:
        """k, the number of scalar Brownian motions (2 m^2 with attention, m^2 without)."""
        return len(self.brownian_shape(m)) * m * m

    def pair_covariance(self, v: Float[Array, "m m"]) -> Float[Array, "p p"]:
        """Covariance per unit time of the upper-triangular coordinates of dV (dense)."""
        i, j = np.triu_indices(v.shape[-1])
        sigma = self.noise_covariance(v)
        return sigma[i, j][:, i, j]

    def diffusion(self, v: Float[Array, "m m"]) -> Float[Array, "p k"]:
        """The dense diffusion matrix on the upper triangle (rows of `noise_factor`)."""
        i, j = np.triu_indices(v.shape[-1])
        return self.noise_factor(v)[i, j]
