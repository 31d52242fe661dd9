"""The exponential step of `sdeformer.sde._psd_scheme` (docs/theory.md, "A scheme that stays in the
cone"): its noise is the contract noise, its Ito correction is exact, it stays positive definite
where Euler does not, and its one-step moments are Euler's to O(dt)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from sdeformer.config import ShapedConfig
from sdeformer.sde import (
    CovarianceSDE,
    euler_step,
    exponential_step,
    ito_correction,
    ito_correction_dense,
    whitened_noise,
)

CONFIGS = [
    ShapedConfig(tau0=1.0, gamma=0.4, c_minus=-1.0),
    ShapedConfig(tau0=0.7, gamma=0.6, heads=2, out_proj=True, blocks=("attention",)),
    ShapedConfig(gamma=0.5, c_plus=0.5, c_minus=-2.0, mlp_ratio=2.0, blocks=("mlp",)),
    ShapedConfig(tau0=1.5, gamma=0.5, blocks=("attention", "mlp", "attention")),
]


def _random_pd(key, m, smallest=0.1):
    a = jr.normal(key, (m, m))
    return a @ a.T / m + smallest * jnp.eye(m)


def _jacobian(fn, m):
    """d fn(dw) / d dw as an (m*m, k) matrix (fn is linear in dw: the exact covariance); dw has
    an m x m "lin" and, with attention, "mix" increment, as `CovarianceSDE.brownian_shape`."""
    jac = jax.jacfwd(fn)({"lin": jnp.zeros((m, m)), "mix": jnp.zeros((m, m))})
    return jnp.concatenate([jac[k].reshape(m * m, m * m) for k in ("lin", "mix")], axis=1)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("m", [2, 3, 5])
def test_noise_is_the_sde_noise_and_whitening_is_exact(config, m, key):
    """L X_N L^T = sde.noise(V, L, dw) for every dw, and Cov(noise) = Sigma(V) (exactly, via the
    Jacobian of the noise, which is linear in dw)."""
    sde = CovarianceSDE(config)
    v = _random_pd(jr.fold_in(key, m), m)
    factor = jnp.linalg.cholesky(v)
    kappa, alpha = sde.lin_coefficient, sde.mix_coefficient

    def noise(dw):
        return sde.noise(v, factor, dw)

    def whitened(dw):
        return factor @ whitened_noise(factor, dw, kappa, alpha) @ factor.T

    jn, jw = _jacobian(noise, m), _jacobian(whitened, m)
    scale = float(jnp.abs(jn).max())
    np.testing.assert_allclose(jw, jn, atol=1e-5 * scale)
    sigma = sde.noise_covariance(v).reshape(m * m, m * m)
    np.testing.assert_allclose(jn @ jn.T, sigma, atol=2e-5 * float(jnp.abs(sigma).max()))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("m", [2, 4])
def test_ito_correction_closed_form(config, m, key):
    """c(V) = L E[X_N^2] L^T / 2 (E[X_N^2] exact from the Jacobian) = the dense contraction
    (1/2) sum_bc Sigma_{ab,cd} (V^-1)_bc = the O(m^3) closed form."""
    sde = CovarianceSDE(config)
    v = _random_pd(jr.fold_in(key, 10 + m), m)
    factor = jnp.linalg.cholesky(v)
    kappa, alpha = sde.lin_coefficient, sde.mix_coefficient
    jac = _jacobian(lambda dw: whitened_noise(factor, dw, kappa, alpha), m).reshape(m, m, -1)
    ex2 = jnp.einsum("ijq,jkq->ik", jac, jac)  # E[X_N^2] per unit time
    from_moments = 0.5 * factor @ ex2 @ factor.T
    closed = ito_correction(v, kappa, alpha)
    dense = ito_correction_dense(sde.noise_covariance(v), factor)
    scale = float(jnp.abs(closed).max())
    np.testing.assert_allclose(closed, from_moments, atol=2e-5 * scale)
    np.testing.assert_allclose(closed, dense, atol=2e-5 * scale)


@pytest.mark.parametrize("m", [3, 4])
def test_causal_correction_is_the_second_moment(m, key):
    """Causal attention (no closed form here): the dense correction c(V) equals
    L E[X_N^2] L^T / 2 with X_N = L^-1 noise L^-T (exact, from the Jacobian), and the step
    returns a positive-diagonal factor."""
    config = ShapedConfig(tau0=0.8, gamma=0.6, heads=2, causal=True)
    sde = CovarianceSDE(config)
    v = _random_pd(jr.fold_in(key, 20 + m), m)
    factor = jnp.linalg.cholesky(v)
    vinv_l = jnp.linalg.inv(factor)
    jac = _jacobian(lambda dw: vinv_l @ sde.noise(v, factor, dw) @ vinv_l.T, m).reshape(m, m, -1)
    from_moments = 0.5 * factor @ jnp.einsum("ijq,jkq->ik", jac, jac) @ factor.T
    dense = ito_correction_dense(sde.noise_covariance(v), factor)
    np.testing.assert_allclose(dense, from_moments, atol=1e-4 * float(jnp.abs(dense).max()))
    dw = {"lin": jr.normal(key, (m, m)) * 0.1, "mix": jr.normal(jr.fold_in(key, 1), (m, m)) * 0.1}
    nxt = exponential_step(sde, factor, 0.01, dw)
    assert bool(jnp.all(jnp.isfinite(nxt))) and bool(jnp.all(jnp.diagonal(nxt) > 0))


def test_steps_stay_positive_definite_where_euler_leaves_the_cone(key):
    """Near-singular V (eigenvalues 1, 1e-2, 1e-4, 1e-6) and large steps: every exponential step
    returns a lower-triangular factor with a positive finite diagonal (so V_next is positive
    definite), while Euler from the same V and increments leaves the cone for dt >= 0.1 (power
    check). Before the drift split, the plain exponential step overflowed here (X ~ 1e5 dt)."""
    config = CONFIGS[0]
    sde = CovarianceSDE(config)
    m, paths = 4, 512
    q, _ = jnp.linalg.qr(jr.normal(jr.fold_in(key, 1), (m, m)))
    v = (q * jnp.array([1.0, 1e-2, 1e-4, 1e-6])) @ q.T
    v = 0.5 * (v + v.T)
    factor = jnp.linalg.cholesky(v)
    for dt in (1e-2, 1e-1, 1.0):
        z = jr.normal(jr.fold_in(key, int(10 / dt)), (paths, 2, m, m)) * jnp.sqrt(dt)
        dws = {"lin": z[:, 0], "mix": z[:, 1]}
        nxt = jax.vmap(lambda dw, dt=dt: exponential_step(sde, factor, dt, dw))(dws)
        assert bool(jnp.all(jnp.isfinite(nxt)))
        assert bool(jnp.all(jnp.triu(nxt, 1) == 0))
        assert bool(jnp.all(jnp.diagonal(nxt, axis1=1, axis2=2) > 0))
        euler = jax.vmap(lambda dw, dt=dt: euler_step(sde, v, dt, dw))(dws)
        outside = float(jnp.mean(jnp.linalg.eigvalsh(euler)[:, 0] < 0))
        # measured 0 / 7% / 85% at dt = 0.01 / 0.1 / 1 (2000 draws): the power check needs dt >= 0.1
        assert dt < 0.1 or outside > 0.03, (dt, outside)


def _one_step_moments(step, v, dt, key, pairs):
    """Antithetic mean of the increment and mean of its outer product, per unit time."""
    m = v.shape[-1]
    z = jr.normal(key, (pairs, 2, m, m)) * jnp.sqrt(dt)

    def incr(zz):
        return step({"lin": zz[0], "mix": zz[1]}) - v

    plus, minus = jax.vmap(incr)(z), jax.vmap(incr)(-z)
    mean = 0.5 * (plus + minus)
    second = 0.5 * (
        jnp.einsum("pab,pcd->pabcd", plus, plus) + jnp.einsum("pab,pcd->pabcd", minus, minus)
    )
    return mean / dt, second / dt


def test_one_step_moments_match_euler(key):
    """E[dV]/dt = b(V) + O(dt) and E[dV dV]/dt = Sigma(V) + O(dt) for the exponential step, at
    dt = 1e-3 (so the O(dt) remainders are ~1e-3 of the moments) with 20000 antithetic pairs.
    Tolerance: 5 Monte Carlo standard errors + 5 dt (the O(dt) remainder, coefficients O(1) at this
    V). Power check: the step without the Ito correction (drift b + c instead of b) is off by c(V),
    far beyond the tolerance."""
    config = ShapedConfig(tau0=0.8, gamma=0.6, c_plus=0.5, c_minus=-1.0)
    sde = CovarianceSDE(config)
    m, dt, pairs = 3, 1e-3, 20000
    v = _random_pd(jr.fold_in(key, 3), m, smallest=0.3)
    factor = jnp.linalg.cholesky(v)
    b = sde.drift(v)
    corr = ito_correction(v, sde.lin_coefficient, sde.mix_coefficient)

    class Uncorrected:
        """The same SDE with drift b + c: the step then lacks its Ito correction."""

        def __init__(self, inner):
            self.config, self.inner = inner.config, inner
            self.lin_coefficient = inner.lin_coefficient
            self.mix_coefficient = inner.mix_coefficient
            self.has_attention_noise = inner.has_attention_noise

        def drift(self, vv):
            return self.inner.drift(vv) + ito_correction(
                vv, self.lin_coefficient, self.mix_coefficient
            )

    def exp_step(dw, s=sde):
        f = exponential_step(s, factor, dt, dw)
        return f @ f.T

    mean, second = _one_step_moments(exp_step, v, dt, jr.fold_in(key, 4), pairs)
    m_mean, m_se = jnp.mean(mean, 0), jnp.std(mean, 0) / np.sqrt(pairs)
    tol = 5 * m_se + 5 * dt * float(jnp.abs(b).max() + jnp.abs(corr).max())
    assert bool(jnp.all(jnp.abs(m_mean - b) < tol)), (m_mean - b, tol)
    sigma = sde.noise_covariance(v)
    s_mean, s_se = jnp.mean(second, 0), jnp.std(second, 0) / np.sqrt(pairs)
    s_tol = 5 * s_se + 5 * dt * float(jnp.abs(sigma).max())
    assert bool(jnp.all(jnp.abs(s_mean - sigma) < s_tol))

    bad_mean, _ = _one_step_moments(
        lambda dw: exp_step(dw, Uncorrected(sde)), v, dt, jr.fold_in(key, 4), pairs
    )
    z = jnp.abs(jnp.mean(bad_mean, 0) - b) / tol
    assert float(z.max()) > 5, z  # the missing correction c(V) is rejected


def test_solve_sde_exponential_never_leaves_the_cone(key):
    """solve_sde(solver="exponential") from a nearly singular V0 (eigenvalues 1 .. 1e-6) with
    5 steps of 0.2: no path leaves the PSD cone, while Euler with the same key loses many
    (power check); from V0 = I no path is non-finite; a singular V0 is refused."""
    from sdeformer.sde import solve_sde

    config = CONFIGS[0]
    m = 4
    q, _ = jnp.linalg.qr(jr.normal(jr.fold_in(key, 1), (m, m)))
    v0 = (q * jnp.array([1.0, 1e-2, 1e-4, 1e-6])) @ q.T
    v0 = np.asarray(0.5 * (v0 + v0.T), np.float64)
    kw = dict(num_samples=256, key=key, num_steps=5, save_times=2)
    expo = solve_sde(config, v0, T=1.0, solver="exponential", **kw).summary()
    euler = solve_sde(config, v0, T=1.0, solver="euler", **kw).summary()
    assert expo["left_psd_cone"] == 0 and expo["non_finite"] == 0, expo
    assert euler["left_psd_cone"] > 10, euler
    eye = solve_sde(config, np.eye(m), T=1.0, solver="exponential", **kw).summary()
    assert eye["left_psd_cone"] == 0 and eye["non_finite"] == 0, eye
    with pytest.raises(ValueError, match="positive definite v0"):
        solve_sde(config, np.ones((m, m)), T=1.0, solver="exponential", **kw)
