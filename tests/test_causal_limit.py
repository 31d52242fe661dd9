"""The limit of causal shaped attention (docs/theory.md, "Causal attention"): the O(m^3) drift and
O(m^3) noise against naive O(m^4) references, the softmax expansion, the non-causal special case,
and one-step moments of explicit causal networks at n = 128 (with power checks)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import FULL

import sdeformer as sf
from sdeformer.blocks import _causal, _limit

V3 = jnp.array([[1.0, 0.3, 0.1], [0.3, 1.5, 0.5], [0.1, 0.5, 0.8]])
V4 = jnp.array(
    [[1.2, -0.2, 0.4, 0.1], [-0.2, 0.7, 0.2, 0.3], [0.4, 0.2, 1.0, -0.3], [0.1, 0.3, -0.3, 0.9]]
)


def random_covariance(key, m, rank=None):
    x = jr.normal(key, (m, rank or m + 2), jnp.float64)
    return x @ x.T / x.shape[1] + (0.1 * jnp.eye(m) if rank is None else 0.0)


def causal_structure(m):
    """The causal centrings C^(a) and counts k_a (0-based a sees positions j <= a)."""
    cs = []
    for a in range(m):
        p = (np.arange(m) <= a).astype(float)
        cs.append(np.diag(p) - np.outer(p, p) / (a + 1))
    return cs, np.arange(1, m + 1, dtype=float)


def naive_terms(v, cs=None, ks=None):
    """The causal formulas of docs/theory.md (section 4) by entrywise loops (numpy, float64,
    O(m^6)), for any per-row centrings `cs` (C^(a), zero outside row a's positions) and counts
    `ks` (default: causal)."""
    v = np.asarray(v, np.float64)
    m = v.shape[0]
    if cs is None:
        cs, ks = causal_structure(m)
    b = np.zeros((m, m))
    for a, c in itertools.product(range(m), repeat=2):
        s = np.trace(cs[a] @ v @ cs[c] @ v)
        seen_a, seen_c = np.diag(cs[a]) != 0, np.diag(cs[c]) != 0  # positions row a sees
        ua = (np.diag(cs[a] @ v @ cs[a]) - np.trace(cs[a] @ v @ cs[a]) / ks[a]) * seen_a
        uc = (np.diag(cs[c] @ v @ cs[c]) - np.trace(cs[c] @ v @ cs[c]) / ks[c]) * seen_c
        b[a, c] = v[a, c] * s / (ks[a] * ks[c]) + v[a, a] * (ua @ v)[c] / (2 * ks[a])
        b[a, c] += v[c, c] * (uc @ v)[a] / (2 * ks[c])
    kk = {(a, c): v @ cs[a] @ v @ cs[c] @ v for a, c in itertools.product(range(m), repeat=2)}
    mix = np.zeros((m,) * 4)
    for a, bb, c, d in itertools.product(range(m), repeat=4):
        mix[a, bb, c, d] = (
            v[a, c] * kk[a, c][bb, d] / (ks[a] * ks[c])
            + v[a, d] * kk[a, d][bb, c] / (ks[a] * ks[d])
            + v[bb, c] * kk[bb, c][a, d] / (ks[bb] * ks[c])
            + v[bb, d] * kk[bb, d][a, c] / (ks[bb] * ks[d])
        )
    return b, mix


CFG = sf.ShapedConfig(tau0=0.7, gamma=0.6, causal=True)


@jax.jit
def _fast_terms(v):
    return _causal.causal_attention_drift(CFG, v), _causal.causal_mix_tensor(v)


@pytest.mark.parametrize("m", [2, 5])
def test_fast_terms_against_naive_loops(m, key):
    with jax.enable_x64(True):
        v = random_covariance(jr.fold_in(key, m), m)
        b, mix = naive_terms(v)
        g = CFG.gamma**2 / CFG.tau0**2
        drift, fast_mix = _fast_terms(v)
        np.testing.assert_allclose(drift, g * b, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(fast_mix, mix, rtol=1e-11, atol=1e-13)


def test_first_token_has_no_attention_term(key):
    with jax.enable_x64(True):
        v = random_covariance(key, 5)
        b, mix = _fast_terms(v)
        # token 0 sees only itself: no drift of V_00, no attention noise on V_00
        assert float(b[0, 0]) == 0.0
        assert float(jnp.abs(mix[0, 0]).max()) < 1e-14


def _causal_softmax_expansion(v):
    """Derivatives at G = 0 of f(G) = A V A^T for causal A = I + softmax_causal(G) - U."""
    m = v.shape[-1]
    u = jnp.tril(jnp.ones((m, m))) / jnp.arange(1.0, m + 1.0)[:, None]
    mask = jnp.tril(jnp.ones((m, m), bool))

    def f(g):
        a = jnp.eye(m) + jax.nn.softmax(jnp.where(mask, g, -jnp.inf), axis=-1) - u
        return a @ v @ a.T

    zero = jnp.zeros((m, m))
    return jax.jacfwd(f)(zero), jax.hessian(f)(zero)


def test_terms_from_the_causal_softmax_expansion(key):
    """Independent derivation (as tests/test_limit.py does for the non-causal block): with
    eps = 1/(tau0 sqrt n), A V A^T - V = eps J.G + eps^2/2 G.H.G and E[G_ij G_kl] = V_ik V_jl, so
    b_att = gam^2/tau0^2 (1/2) sum H V V and the attention noise is gam^4/(tau0^2 H) J (V x V) J^T.
    The masked logits (j > i) do not enter (their Jacobian columns vanish)."""
    with jax.enable_x64(True):
        m = 4
        v = random_covariance(jr.fold_in(key, 10 + m), m)
        jac, hess = jax.jit(_causal_softmax_expansion)(v)
        drift = 0.5 * np.einsum("abijkl,ik,jl->ab", hess, v, v)
        att = np.einsum("abij,cdkl,ik,jl->abcd", jac, jac, v, v)
        g = CFG.gamma**2 / CFG.tau0**2
        fast_drift, fast_mix = _fast_terms(v)
        np.testing.assert_allclose(fast_drift, g * drift, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(fast_mix, att, rtol=1e-10, atol=1e-13)


def test_non_causal_special_case(key):
    """The causal formulas with every k_a = m and C^(a) = C are the non-causal terms of
    docs/theory.md (`_limit.attention_drift`, `_limit.mix_tensor / m^2`), and the O(m^3) noise
    construction with C^(a) = C is (L E M^T + M E^T L^T) / m, M = V C L."""
    with jax.enable_x64(True):
        m = 4
        v = random_covariance(key, m)
        c = np.asarray(_limit.centring(m, v.dtype))
        b, mix = naive_terms(v, [c] * m, np.full(m, float(m)))
        g = CFG.gamma**2 / CFG.tau0**2
        np.testing.assert_allclose(g * b, _limit.attention_drift(CFG, v), rtol=1e-12)
        k = _limit.attention_k(v)
        np.testing.assert_allclose(mix, _limit.mix_tensor(v, k) / m**2, rtol=1e-12, atol=1e-14)
        lf = jnp.linalg.cholesky(v)
        e = jr.normal(jr.fold_in(key, 3), (m, m), jnp.float64)
        mm = v @ c @ lf
        want = (lf @ e @ mm.T + mm @ e.T @ lf.T) / m
        y = (v @ (c @ (lf @ e.T @ lf.T)) / m).T  # Z[:, a] = C P[:, a] / m, Y = (V Z)^T
        np.testing.assert_allclose(y + y.T, want, rtol=1e-10, atol=1e-12)


@jax.jit
def _noise_jacobian(v, lf, e0):
    return jax.jacfwd(lambda e: _causal.causal_mix_noise(v, lf, e))(e0)


@pytest.mark.parametrize("m", [2, 4])
def test_mix_noise_covariance_is_the_mix_tensor(m, key):
    """Cov(causal_mix_noise(V, L, E)) = causal_mix_tensor(V) exactly: the noise is linear in E,
    so its covariance is J J^T with J its Jacobian in E (no Monte Carlo needed); also for a
    non-Cholesky factor (any L L^T = V) and a singular V; the result is symmetric."""
    with jax.enable_x64(True):
        for i, v in enumerate(
            (random_covariance(jr.fold_in(key, m), m), random_covariance(jr.fold_in(key, 9), m, 1))
        ):
            lf = sf._linalg.psd_sqrt(v) if i else jnp.linalg.cholesky(v)
            e0 = jnp.zeros((m, m), jnp.float64)
            jac = _noise_jacobian(v, lf, e0)
            cov = np.einsum("abij,cdij->abcd", jac, jac)
            np.testing.assert_allclose(cov, _fast_terms(v)[1], rtol=1e-9, atol=1e-12)
            e = jr.normal(jr.fold_in(key, 5), (m, m), jnp.float64)
            x = _causal.causal_mix_noise(v, lf, e)
            np.testing.assert_array_equal(x, x.T)


def test_jit_vmap_and_float32(key):
    vs = jnp.stack([V4, 2.0 * V4, V4 + jnp.eye(4)])
    drift = jax.jit(jax.vmap(lambda v: _causal.causal_attention_drift(CFG, v)))(vs)
    assert drift.dtype == jnp.float32 and drift.shape == (3, 4, 4)
    np.testing.assert_allclose(drift[1], 8.0 * drift[0], rtol=1e-5)  # cubic in V
    lf = jnp.linalg.cholesky(vs)
    es = jr.normal(key, (3, 4, 4))
    noise = jax.jit(jax.vmap(_causal.causal_mix_noise))(vs, lf, es)
    assert noise.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(noise)))


# --- one-step moments of explicit causal networks ----------------------------------------------


def _unique_pairs(m):
    pairs = [(a, b) for a in range(m) for b in range(a, m)]
    return [(p, q) for i, p in enumerate(pairs) for q in pairs[i:]]


def _z(est, se, want):
    """|est - want| / se entrywise; entries with se = 0 (exactly deterministic ones, such as
    token 0's, which attends only to itself) must agree to rounding and get z = 0."""
    diff = jnp.abs(est - want)
    assert bool(jnp.all(jnp.where(se > 0, True, diff < 1e-6))), (est, want, se)
    return jnp.where(se > 0, diff / jnp.where(se > 0, se, 1.0), 0.0)


def _max_z(est, se, want):
    """Largest |z| over the unique entries (ab <= cd) of a 4-index covariance; entries whose
    standard error is 0 (exactly deterministic ones, such as token 0's attention noise) must
    agree to rounding and are left out of the z-scores."""
    zs = []
    for (a, b), (c, d) in _unique_pairs(est.shape[0]):
        s = float(se[a, b, c, d])
        diff = abs(float(est[a, b, c, d] - want[a, b, c, d]))
        if s > 0:
            zs.append(diff / s)
        else:
            assert diff < 1e-6, ((a, b, c, d), diff)
    return max(zs)


def _max_z_wrong(est, se, want):
    """Largest |z| of a formula that should be rejected (entries with se = 0 left out)."""
    z = jnp.abs(est - want) / jnp.where(se > 0, se, jnp.inf)
    return float(z.max())


# Each entry is compared with its Monte Carlo standard error. m = 3 has 6 drift and 21 noise
# entries, m = 4 has 10 and 55; a 4-standard-error bound keeps the family-wise false alarm below
# 5e-3 per check under normality, and the finite-width bias at n = 128 (O(1/n); measured max |z|
# <= 3 at 1000 and 4000 pairs) stays inside. The power checks demand |z| > 4 for the non-causal
# formulas: measured at 1000 pairs (m = 3), drift (tokens >= 1) |z| 7.5, conditional noise |z| 17
# (docs/theory.md; m = 4 below). The full noise is dominated by the Lin term, so the sharp test of
# the attention noise is the conditional one.
Z = 4.0
N_WIDTH = 128

CASES = [
    # (config, V, pairs): one head without W^O at m = 3; two heads with W^O at m = 4 (whose
    # power is larger: at 500 pairs max |z| 1.3 / 2.6 / 3.0, the non-causal formulas at 10.7
    # and 35.5)
    (
        sf.ShapedConfig(tau0=0.5, gamma=0.7, causal=True, blocks=("attention",), key_width=8),
        V3,
        4000 if FULL else 1000,
    ),
    (
        sf.ShapedConfig(
            tau0=0.8,
            gamma=0.6,
            heads=2,
            out_proj=True,
            causal=True,
            blocks=("attention",),
            key_width=8,
        ),
        V4,
        4000 if FULL else 500,
    ),
]


def _causal_sigma(cfg, v):
    kappa, alpha = _limit.attention_coefficients(cfg)
    return kappa * _limit.lin_tensor(v), alpha * _causal.causal_mix_tensor(v)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_one_step_moments_of_causal_networks(case, key):
    cfg, v, pairs = CASES[case]
    m = v.shape[0]
    est = sf.one_step_moments(cfg, v, width=N_WIDTH, num_samples=pairs, key=jr.fold_in(key, case))
    drift = _causal.causal_attention_drift(cfg, v)
    assert float(_z(est.drift, est.drift_se, drift).max()) < Z, (est.drift, drift, est.drift_se)
    lin, att = _causal_sigma(cfg, v)
    # the attention part alone, from n Cov(E[dV | W^Q, W^K]) (no Lin-term Monte Carlo noise)
    assert _max_z(est.conditional_noise, est.conditional_noise_se, att) < Z
    # the whole noise covariance of the block
    assert _max_z(est.noise, est.noise_se, lin + att) < Z
    # power: the non-causal formulas (section 4 of docs/theory.md) are rejected
    nc = cfg.replace(causal=False)
    # (on tokens >= 1: token 0's drift is 0 in both, and its se is float rounding)
    inner = (slice(1, None), slice(1, None))
    b_nc = _limit.attention_drift(nc, v)
    assert _max_z_wrong(est.drift[inner], est.drift_se[inner], b_nc[inner]) > Z
    kappa, alpha = _limit.attention_coefficients(nc)
    att_nc = (alpha / m**2) * _limit.mix_tensor(v, _limit.attention_k(v))
    assert _max_z_wrong(est.conditional_noise, est.conditional_noise_se, att_nc) > Z


# --- the PSD cone (docs/theory.md, "The PSD cone") ---------------------------------------------


def _log_det_drift(cfg, v):
    """Ito drift of log det V from the dense coefficients: tr(V^-1 b) - (1/2) sum_abcd
    (V^-1)_da (V^-1)_bc Sigma_ab,cd (causal attention + MLP)."""
    kappa, alpha = _limit.attention_coefficients(cfg)
    kappa = kappa + _limit.mlp_coefficient(cfg)

    @jax.jit
    def drift(v):
        sigma = kappa * _limit.lin_tensor(v) + alpha * _causal.causal_mix_tensor(v)
        b = _causal.causal_attention_drift(cfg, v) + _limit.mlp_drift(cfg, v)
        vi = jnp.linalg.inv(v)
        return jnp.trace(vi @ b) - 0.5 * jnp.einsum("da,bc,abcd->", vi, vi, sigma)

    return float(drift(v)), kappa


def _log_det_parts(v):
    """h = E tr(V^-1 D V D^T) = sum_ab (V^-1)_ab V_ab S_ab/(k_a k_b) >= 0, tr E[Q], E tr(D^2)."""
    v = np.asarray(v)
    m = v.shape[0]
    cs, ks = causal_structure(m)
    s = np.array([[np.trace(cs[a] @ v @ cs[c] @ v) for c in range(m)] for a in range(m)])
    h = float(np.sum(np.linalg.inv(v) * v * s / np.outer(ks, ks)))
    u = np.asarray(jax.jit(_causal._u_rows)(jnp.asarray(v)))
    tr_q = sum(v[a, a] * u[a, a] / (2 * ks[a]) for a in range(m))
    tr_d2 = sum(
        v[a, b] * (cs[a] @ v @ cs[b])[b, a] / (ks[a] * ks[b]) for a in range(m) for b in range(m)
    )
    return h, tr_q, tr_d2


def test_log_det_drift_is_bounded_below_near_the_boundary():
    """The decomposition used in the proof that the SDE stays positive definite:

    drift of log det V = (gam^2/tau0^2) [(1 - gam^2/H) h + 2 tr E[Q] - (gam^2/H) E tr(D^2)]
                         - kappa m (m + 1) / 2 + gam^2 kappa_nu (tr(R^-1 A) - m),

    h >= 0 and tr(R^-1 A) >= 0 (A_ab = E|g_a||g_b|, g ~ N(0, R)); the other terms involve no
    V^-1. Checked against the dense Ito formula along V_eps = X X^T + eps I (rank 2 + eps, m = 3):
    h and tr(R^-1 A) grow like 1/eps (the boundary repels), the drift never goes below the
    bound made of the V^-1-free terms."""
    with jax.enable_x64(True):
        cfg = sf.ShapedConfig(tau0=0.8, gamma=0.7, heads=2, causal=True, c_plus=0.5, c_minus=-2.0)
        g2, t2, heads, m = cfg.gamma**2, cfg.tau0**2, cfg.heads, 3
        kappa_nu = (cfg.c_plus - cfg.c_minus) ** 2 / 4
        x = np.array([[1.0, 0.2], [0.3, 1.0], [1.3, 1.2]])
        hs = []
        for eps in (1e-1, 1e-3, 1e-5):
            v = jnp.asarray(x @ x.T + eps * np.eye(m))
            ito, kappa = _log_det_drift(cfg, v)
            h, tr_q, tr_d2 = _log_det_parts(v)
            d = np.sqrt(np.diag(np.asarray(v)))
            rho = np.clip(np.asarray(v) / np.outer(d, d), -1.0, 1.0)
            a = (2 / np.pi) * (np.sqrt(1 - rho**2) + rho * np.arcsin(rho))
            tr_ra = float(np.trace(np.linalg.solve(rho, a)))
            bounded = g2 / t2 * (2 * tr_q - g2 / heads * tr_d2) - kappa * m * (m + 1) / 2
            closed = g2 / t2 * (1 - g2 / heads) * h + bounded + g2 * kappa_nu * (tr_ra - m)
            np.testing.assert_allclose(ito, closed, rtol=1e-7)
            assert h >= 0 and tr_ra >= 0
            assert ito >= bounded - g2 * kappa_nu * m
            hs.append(h)
        assert hs[2] > 100 * hs[0]  # the causal h is unbounded near the boundary (sign matters)
