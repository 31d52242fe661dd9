"""The limit faces of the shaped blocks against independent computations (docs/theory.md
section 4)."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdeformer as sf
from sdeformer.blocks import MissingFaceError, _limit

M = 3


def random_covariance(key, m=M, rank=None):
    x = jr.normal(key, (m, rank or m + 2))
    return x @ x.T / x.shape[1] + (0.1 * jnp.eye(m) if rank is None else 0.0)


CONFIGS = [
    sf.ShapedConfig(tau0=0.7, gamma=0.6, c_plus=0.3, c_minus=-1.2),
    sf.ShapedConfig(tau0=1.3, gamma=0.8, heads=4, out_proj=True, mlp_ratio=0.5),
    sf.ShapedConfig(tau0=0.5, gamma=0.3, heads=2, mlp_ratio=3.0, blocks=("attention",)),
]


def test_tensors_against_entrywise_loops(key):
    v = np.asarray(random_covariance(key), np.float64)
    c = np.eye(M) - 1.0 / M
    k = v @ c @ v @ c @ v
    lin = np.zeros((M,) * 4)
    att = np.zeros((M,) * 4)
    for a, b, cc, d in itertools.product(range(M), repeat=4):
        lin[a, b, cc, d] = v[a, cc] * v[b, d] + v[a, d] * v[b, cc]
        att[a, b, cc, d] = v[a, cc] * k[b, d] + v[a, d] * k[b, cc] + v[b, cc] * k[a, d]
        att[a, b, cc, d] += v[b, d] * k[a, cc]
    vj = jnp.asarray(v, jnp.float32)
    np.testing.assert_allclose(_limit.lin_tensor(vj), lin, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        _limit.mix_tensor(vj, _limit.attention_k(vj)), att, rtol=1e-4, atol=1e-5
    )
    # the attention drift, entrywise as written in docs/theory.md section 4
    cfg = CONFIGS[0]
    cvc = c @ v @ c
    s, w = np.trace(cvc @ v), np.diag(cvc)
    uv = (w - w.mean()) @ v
    b = np.array(
        [
            [
                s * v[a, bb] / M**2 + (v[a, a] * uv[bb] + v[bb, bb] * uv[a]) / (2 * M)
                for bb in range(M)
            ]
            for a in range(M)
        ]
    )
    np.testing.assert_allclose(
        sf.ShapedAttention.drift(cfg, vj), cfg.gamma**2 / cfg.tau0**2 * b, rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("cfg", CONFIGS)
def test_sigma_symmetries_psd_and_factor(cfg, key):
    sde = sf.CovarianceSDE(cfg)

    @jax.jit
    def terms(v):
        return sde.noise_covariance(v), sde.noise_factor(v), sde.pair_covariance(v)

    for v in (random_covariance(key), random_covariance(jr.fold_in(key, 1), rank=1)):
        sigma, factor, pair_cov = terms(v)
        np.testing.assert_allclose(sigma, jnp.transpose(sigma, (1, 0, 2, 3)), atol=1e-6)
        np.testing.assert_allclose(sigma, jnp.transpose(sigma, (0, 1, 3, 2)), atol=1e-6)
        np.testing.assert_allclose(sigma, jnp.transpose(sigma, (2, 3, 0, 1)), atol=1e-6)
        pairs = sigma.reshape(M * M, M * M)
        scale = float(jnp.abs(pairs).max())
        assert float(jnp.linalg.eigvalsh(pairs)[0]) > -1e-5 * scale  # PSD as a matrix on pairs
        assert factor.shape[-1] == sde.brownian_dim(M)
        # the O(m^3) noise pushed through basis increments has exactly the covariance Sigma,
        # also for the singular (rank-one) V (its jittered Cholesky factor is off by 1e-4)
        np.testing.assert_allclose(
            jnp.einsum("abk,cdk->abcd", factor, factor), sigma, atol=1e-4 * scale
        )
        i, j = np.triu_indices(M)
        np.testing.assert_allclose(pair_cov, sigma[i, j][:, i, j])


def _softmax_expansion(v):
    """Derivatives at G = 0 of f(G) = A V A^T, A = I + softmax_rows(G) - 11^T/m."""
    m = v.shape[-1]

    def f(g):
        a = jnp.eye(m) + jax.nn.softmax(g, axis=-1) - 1.0 / m
        return a @ v @ a.T

    zero = jnp.zeros((m, m))
    return jax.jacfwd(f)(zero), jax.hessian(f)(zero)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_attention_terms_from_the_softmax_expansion(cfg, key):
    """Independent derivation: with eps = 1/(tau0 sqrt n), A V A^T - V = eps J.G + eps^2/2 G.H.G,
    and E[G_ij G_kl] = V_ik V_jl, so b_att = gam^2/tau0^2 (1/2) sum H V V and the attention part
    of Sigma is gam^4/(tau0^2 H) J (V x V) J^T."""
    with jax.enable_x64(True):
        v = jnp.asarray(random_covariance(key), jnp.float64)
        g2 = cfg.gamma**2
        kappa = 2 * g2 if cfg.out_proj else g2 * (2 - g2)

        @jax.jit
        def both(v):
            jac, hess = _softmax_expansion(v)
            drift = g2 / cfg.tau0**2 * 0.5 * jnp.einsum("abijkl,ik,jl->ab", hess, v, v)
            att = jnp.einsum("abij,cdkl,ik,jl->abcd", jac, jac, v, v)
            att = g2**2 / (cfg.tau0**2 * cfg.heads) * att
            sigma = sf.ShapedAttention.noise_covariance(cfg, v) - kappa * _limit.lin_tensor(v)
            return drift, sf.ShapedAttention.drift(cfg, v), att, sigma

        drift, got_drift, att, sigma = both(v)
        np.testing.assert_allclose(got_drift, drift, rtol=1e-10)
        np.testing.assert_allclose(sigma, att, atol=1e-12)


def test_mlp_drift_is_the_limit_of_the_exact_finite_width_drift():
    """n (c E[sigma(x) sigma(y)] - rho) in closed form (arc-cosine kernel) tends to nu(rho)."""
    with jax.enable_x64(True):
        cfg = sf.ShapedConfig(gamma=0.7, c_plus=0.4, c_minus=-1.3, blocks=("mlp",))
        rho = np.linspace(-0.99, 0.99, 9)
        n = 1e8  # bias O(1/sqrt n) = 1e-4 relative; cancellation error ~1e-8
        sp, sm = 1 + cfg.c_plus / math.sqrt(n), 1 + cfg.c_minus / math.sqrt(n)
        k = (np.sqrt(1 - rho**2) + rho * (np.pi - np.arccos(rho))) / (2 * np.pi)
        exact = n * (2 / (sp**2 + sm**2) * ((sp - sm) ** 2 * k + sp * sm * rho) - rho)
        nu = _limit.relu_nu(cfg.c_plus, cfg.c_minus, jnp.asarray(rho))
        np.testing.assert_allclose(nu, exact, rtol=1e-3, atol=1e-7)
        v = jnp.array([[2.0, 0.6], [0.6, 0.5]])
        b = sf.ShapedMLP.drift(cfg, v)
        rho01 = 0.6 / 1.0
        assert float(b[0, 0]) == float(b[1, 1]) == 0.0
        np.testing.assert_allclose(
            b[0, 1], cfg.gamma**2 * float(_limit.relu_nu(0.4, -1.3, jnp.asarray(rho01)))
        )
        same = sf.ShapedMLP.drift(cfg.replace(c_plus=-0.5, c_minus=-0.5), v)
        assert float(jnp.abs(same).max()) == 0.0


def test_heads_out_proj_and_ratio_enter_as_specified():
    v = jnp.array([[1.0, 0.2], [0.2, 0.7]])
    base = sf.ShapedConfig(tau0=0.8, gamma=0.5)
    lin = _limit.lin_tensor(v)
    att = _limit.mix_tensor(v, _limit.attention_k(v))
    g2 = 0.25
    for heads, proj in ((1, False), (3, False), (2, True)):
        cfg = base.replace(heads=heads, out_proj=proj)
        kappa = 2 * g2 if proj else g2 * (2 - g2)
        want = kappa * lin + g2**2 / (0.64 * 4 * heads) * att
        np.testing.assert_allclose(sf.ShapedAttention.noise_covariance(cfg, v), want, rtol=1e-5)
        np.testing.assert_allclose(
            sf.ShapedAttention.drift(cfg, v), sf.ShapedAttention.drift(base, v), rtol=1e-6
        )
    for r in (0.5, 1.0, 4.0):
        cfg = base.replace(mlp_ratio=r)
        want = g2 * (2 - g2 + g2 / r) * lin
        np.testing.assert_allclose(sf.ShapedMLP.noise_covariance(cfg, v), want, rtol=1e-6)
    full = sf.CovarianceSDE(base)
    np.testing.assert_allclose(
        full.noise_covariance(v), g2 * (4 - g2) * lin + g2**2 / (0.64 * 4) * att, rtol=1e-5
    )


def test_missing_limits_are_clear():
    v = jnp.eye(2)
    for cls in (sf.StandardAttention, sf.PreLNAttention, sf.PreLNMLP):
        with pytest.raises(MissingFaceError, match="has no covariance SDE limit"):
            cls.noise_covariance(sf.ShapedConfig(), v)
    for blocks in (("attention", "standard_attention"), ("preln_attention", "preln_mlp")):
        with pytest.raises(ValueError, match="has no covariance SDE limit"):
            sf.CovarianceSDE(sf.ShapedConfig(blocks=blocks))
    for cls in (sf.StandardAttention, sf.PreLNMLP):
        for face in (
            lambda cls=cls: cls.noise_terms(sf.ShapedConfig()),
            lambda cls=cls: cls.drift(sf.ShapedConfig(), v),
        ):
            with pytest.raises(MissingFaceError, match="has no covariance SDE limit"):
                face()
    with pytest.raises(MissingFaceError, match="no attention term"):
        sf.ShapedMLP.mix_noise(sf.ShapedConfig(), v, v, v)


@pytest.mark.parametrize(
    "cfg",
    [
        sf.ShapedConfig(tau0=0.7, gamma=0.6, c_plus=0.3, c_minus=-1.2),
        sf.ShapedConfig(tau0=1.3, gamma=0.8, heads=4, out_proj=True, blocks=("attention",) * 2),
        sf.ShapedConfig(gamma=0.5, blocks=("mlp",)),
        sf.ShapedConfig(tau0=0.9, gamma=0.7, heads=2, out_proj=True, causal=True),
    ],
)
def test_noise_is_exact_at_m_2_to_5(cfg):
    """The O(m^3) noise (basis increments pushed through `noise`) against the dense Sigma, and
    the closed-form Stratonovich correction against autodiff through the Cholesky factor."""
    with jax.enable_x64(True):
        sde = sf.CovarianceSDE(cfg)
        assert sde.lin_coefficient == pytest.approx(
            sum(_block_terms(cfg, name).lin for name in cfg.blocks)
        )

        @jax.jit
        def errors(v):
            f = sde.noise_factor(v)
            sigma = sde.noise_covariance(v)
            err = jnp.abs(jnp.einsum("abk,cdk->abcd", f, f) - sigma).max()
            if cfg.causal:
                return err, jnp.zeros(())
            closed = sde.stratonovich_correction(v, sde.factor(v))
            return err, jnp.abs(closed - sde.stratonovich_correction_autodiff(v)).max()

        for m in (2, 3, 4, 5):
            x = jr.normal(jr.key(m), (m, m + 2), jnp.float64)
            noise_err, correction_err = errors(x @ x.T / (m + 2))
            assert float(noise_err) < 1e-12 and float(correction_err) < 1e-12


def _block_terms(cfg, name):
    return sf.blocks.BLOCK_TYPES[name].noise_terms(cfg)


def test_noise_monte_carlo(key):
    """Cov(dV) of the O(m^3) noise by Monte Carlo at m = 4 matches Sigma(V) entrywise within
    4.5 standard errors (family-wise false alarm < 1e-3 over 55 unique entries), while a
    kappa 20% too large is rejected by the same bound (power)."""
    cfg = sf.ShapedConfig(tau0=0.8, gamma=0.6, heads=2)
    sde = sf.CovarianceSDE(cfg)
    v = random_covariance(key, 4)
    n = 40000
    shapes = sde.brownian_shape(4)
    keys = jr.split(jr.fold_in(key, 1), len(shapes))
    dw = {k: jr.normal(kk, (n, *s.shape)) for kk, (k, s) in zip(keys, shapes.items(), strict=True)}
    factor = sde.factor(v)
    dv = np.asarray(jax.jit(jax.vmap(lambda d: sde.noise(v, factor, d)))(dw), np.float64)
    prod = np.einsum("sab,scd->sabcd", dv, dv)
    est, se = prod.mean(0), prod.std(0) / math.sqrt(n)
    sigma = np.asarray(sde.noise_covariance(v), np.float64)
    lin = np.asarray(_limit.lin_tensor(v), np.float64)
    z_good = np.abs(est - sigma) / se
    z_bad = np.abs(est - (sigma + 0.2 * sde.lin_coefficient * lin)) / se
    assert z_good.max() < 4.5
    assert z_bad.max() > 4.5


def test_fast_arccos_is_as_accurate_as_float32_arccos():
    """The float32 polynomial arccos of relu_nu: within 3e-7 relative of float64 arccos over
    [-1, 1] (jnp.arccos in float32: 1.7e-7), exact pass-through for float64 inputs."""
    from sdeformer.blocks._limit import fast_arccos

    x = np.concatenate(
        [np.linspace(-1, 1, 20001), 1 - np.logspace(-7, -1, 200), -1 + np.logspace(-7, -1, 200)]
    ).astype(np.float32)
    ref = np.arccos(x.astype(np.float64))
    got = np.asarray(fast_arccos(jnp.asarray(x)), np.float64)
    assert fast_arccos(jnp.asarray(x)).dtype == jnp.float32
    assert np.max(np.abs(got - ref) / np.maximum(ref, 1e-30)) < 3e-7
    assert np.max(np.abs(got - ref)) < 5e-7
    with jax.enable_x64(True):
        x64 = jnp.linspace(-1.0, 1.0, 101, dtype=jnp.float64)
        np.testing.assert_array_equal(np.asarray(fast_arccos(x64)), np.asarray(jnp.arccos(x64)))
