"""Exact finite-width one-step moments of the shaped MLP (docs/theory.md, "Finite width"): the
drift c(n) b_mlp and the noise covariance at width n, against explicit networks, with power
checks that reject the limit formulas at small n."""

from __future__ import annotations

import inspect
import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import FULL

import sdeformer as sf
from sdeformer.blocks import _limit
from sdeformer.blocks.shaped_mlp import relu_slopes

V3 = jnp.array([[1.0, 0.3, 0.1], [0.3, 1.5, 0.5], [0.1, 0.5, 0.8]])
V2 = jnp.array([[1.2, -0.4], [-0.4, 0.7]])

MLP = sf.ShapedConfig(gamma=0.7, c_plus=0.5, c_minus=-2.0, blocks=("mlp",))

# Each entry against its Monte Carlo standard error, |z| < 4 (m = 3: 6 drift entries; m = 2:
# 6 unique noise entries; family-wise false alarm < 2e-3 per check under normality). The drift
# formula is exact at every n (no bias); the power checks demand |z| > 4 for the limit formula.
Z = 4.0


def _drift_z(est, want):
    assert bool(jnp.all(est.drift_se > 0)), est.drift_se
    return float((jnp.abs(est.drift - want) / est.drift_se).max())


# (width, pairs): the one-step drift estimator of `one_step_moments` integrates W^post out and
# subtracts the linear control variate; its per-sample variance is O(1) in n (measured se of
# the (0, 1) entry: 1.5 / sqrt(pairs)). The limit differs from the exact drift by
# (c(n) - 1) b_mlp: 0.095 (25%) at n = 32, so 10000 pairs give the power check |z| about 6.
# n = 512 (c - 1 = 7%, explicit weights 2 x 512^2 per network) runs with the slow suite only.
WIDTHS = [
    (32, 10000),
    (128, 1000),
    pytest.param(512, 2000 if FULL else 200, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("n, pairs", WIDTHS)
def test_mlp_drift_is_exact_at_finite_width(n, pairs, key):
    est = sf.one_step_moments(MLP, V3, width=n, num_samples=pairs, key=jr.fold_in(key, n))
    c = relu_slopes(MLP, n)[2]
    limit = _limit.mlp_drift(MLP, V3)
    assert _drift_z(est, c * limit) < Z
    if n == 32:  # power: the limit (c = 1) is rejected at small width
        assert _drift_z(est, limit) > Z


@pytest.mark.skipif(
    "width" not in inspect.signature(sf.ShapedMLP.drift).parameters,
    reason="ShapedMLP.drift(config, v, width=n) lands with branch `sde`",
)
def test_mlp_drift_api_matches_the_exact_drift():
    for n in (8, 32, 512):
        c = relu_slopes(MLP, n)[2]
        np.testing.assert_allclose(
            sf.ShapedMLP.drift(MLP, V3, width=n), c * _limit.mlp_drift(MLP, V3), rtol=1e-6
        )
    np.testing.assert_allclose(sf.ShapedMLP.drift(MLP, V3), _limit.mlp_drift(MLP, V3))


# --- the exact finite-width noise covariance of the MLP block ----------------------------------


def _segments(factor):
    """Angles on [0, 2 pi] where a coordinate of factor @ (cos t, sin t) changes sign."""
    cuts = [0.0, 2 * math.pi]
    for row in np.asarray(factor):
        t0 = math.atan2(-row[0], row[1])  # row . (cos t, sin t) = 0
        cuts += [(t0 + k * math.pi) % (2 * math.pi) for k in range(2)]
    return np.unique(np.array(cuts))


def gaussian_moments_2d(v, s_plus, s_minus, nodes=24):
    """g_ab = E[sigma(x_a) sigma(x_b)] and F_abcd = E[sigma_a sigma_b sigma_c sigma_d] for
    x ~ N(0, V), V 2 x 2 (numpy float64). sigma is positively homogeneous, so with x = r L u,
    u = (cos t, sin t): E[f(x)] = E[r^p] (1/2 pi) int f(L u) dt for f of degree p,
    E[r^2] = 2, E[r^4] = 8 (r^2 ~ chi^2_2). Between the sign changes the integrand is a
    trigonometric polynomial of degree <= 4, integrated exactly by Gauss-Legendre."""
    factor = np.linalg.cholesky(np.asarray(v, np.float64))
    cuts = _segments(factor)
    xg, wg = np.polynomial.legendre.leggauss(nodes)
    ts, ws = [], []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        ts.append(0.5 * (hi - lo) * xg + 0.5 * (hi + lo))
        ws.append(0.5 * (hi - lo) * wg)
    t, w = np.concatenate(ts), np.concatenate(ws) / (2 * math.pi)
    x = factor @ np.stack([np.cos(t), np.sin(t)])  # (2, points)
    s = s_plus * np.maximum(x, 0.0) + s_minus * np.minimum(x, 0.0)
    g = 2.0 * np.einsum("ap,bp,p->ab", s, s, w)
    f = 8.0 * np.einsum("ap,bp,cp,dp,p->abcd", s, s, s, s, w)
    return g, f


def mlp_noise_finite(config, v, n):
    """n Cov(dV) of one shaped-MLP block at width n, exactly (docs/theory.md, "Finite width"):
    with Phi = (c/n_h) sigma(H) sigma(H)^T, g = E[sigma sigma], Q = c^2 (F - g x g) (so that
    n_h Cov(Phi_ab, Phi_cd) = Q_abcd), mixed(A, B)_abcd = A_ac B_bd + A_ad B_bc + A_bc B_ad
    + A_bd B_ac:

        n Cov(dV)_abcd = gam^4 (n / n_h) Q_abcd + lam^2 gam^2 mixed(c g, V)_abcd
                         + gam^4 [Lin(c g)_abcd + (Q_acbd + Q_adbc) / n_h]

    (m = 2 here, where g and F are computed exactly by `gaussian_moments_2d`)."""
    s_plus, s_minus, c = relu_slopes(config, n)
    nh = config.n_h(n)
    v = np.asarray(v, np.float64)
    g, f = gaussian_moments_2d(v, s_plus, s_minus)
    q = c**2 * (f - np.einsum("ab,cd->abcd", g, g))
    phi = c * g

    def mixed(a, b):
        return (
            np.einsum("ac,bd->abcd", a, b)
            + np.einsum("ad,bc->abcd", a, b)
            + np.einsum("bc,ad->abcd", a, b)
            + np.einsum("bd,ac->abcd", a, b)
        )

    g2 = config.gamma**2
    lam2 = 1.0 - g2
    cross = np.einsum("acbd->abcd", q) + np.einsum("adbc->abcd", q)  # Q_acbd + Q_adbc
    lin_phi = 0.5 * mixed(phi, phi)
    return g2**2 * (n / nh) * q + lam2 * g2 * mixed(phi, v) + g2**2 * (lin_phi + cross / nh)


def test_exact_noise_reduces_to_the_limit():
    """c_pm = 0 (identity activation): the exact noise is kappa_mlp Lin + gam^4 (Lin + 2 V x V)
    / n_h (the Wishart fluctuation of the hidden units), and tends to kappa_mlp Lin."""
    cfg = sf.ShapedConfig(gamma=0.6, c_plus=0.0, c_minus=0.0, mlp_ratio=2.0, blocks=("mlp",))
    v = np.asarray(V2, np.float64)
    lin = np.einsum("ac,bd->abcd", v, v) + np.einsum("ad,bc->abcd", v, v)
    kappa = _limit.mlp_coefficient(cfg)
    for n in (4, 64):
        want = kappa * lin + cfg.gamma**4 * (lin + 2 * np.einsum("ab,cd->abcd", v, v)) / (2 * n)
        np.testing.assert_allclose(mlp_noise_finite(cfg, v, n), want, rtol=1e-10, atol=1e-12)
    big = mlp_noise_finite(MLP, v, 10**8)
    np.testing.assert_allclose(big, _limit.mlp_coefficient(MLP) * lin, rtol=2e-3, atol=1e-6)


def test_gaussian_moments_2d_against_closed_forms():
    """g against the arc-cosine kernel; F for the identity activation against Isserlis."""
    v = np.asarray(V2, np.float64)
    sp, sm = 1.3, 0.4
    g, f = gaussian_moments_2d(v, sp, sm)
    rho = v[0, 1] / math.sqrt(v[0, 0] * v[1, 1])
    k = (math.sqrt(1 - rho**2) + rho * (math.pi - math.acos(rho))) / (2 * math.pi)
    want01 = ((sp - sm) ** 2 * k + sp * sm * rho) * math.sqrt(v[0, 0] * v[1, 1])
    np.testing.assert_allclose(g[0, 1], want01, rtol=1e-12)
    np.testing.assert_allclose(np.diag(g), (sp**2 + sm**2) / 2 * np.diag(v), rtol=1e-12)
    _, f1 = gaussian_moments_2d(v, 1.0, 1.0)
    iss = (
        np.einsum("ab,cd->abcd", v, v)
        + np.einsum("ac,bd->abcd", v, v)
        + np.einsum("ad,bc->abcd", v, v)
    )
    np.testing.assert_allclose(f1, iss, rtol=1e-12)


def _unique_pairs(m):
    pairs = [(a, b) for a in range(m) for b in range(a, m)]
    return [(p, q) for i, p in enumerate(pairs) for q in pairs[i:]]


def _max_z(est, se, want):
    return max(
        abs(float(est[a, b, c, d] - want[a, b, c, d])) / float(se[a, b, c, d])
        for (a, b), (c, d) in _unique_pairs(est.shape[0])
    )


# Small widths, where the finite-width corrections are 10-40% of the limit: n = 8 with r = 2 and
# n = 16 with r = 1. Explicit networks at these widths are cheap, so many samples.
# Measured at 8000 pairs: exact formula max |z| 1.6 and 0.7, the limit rejected at |z| 17.9 and
# 7.7 (40000 pairs: 2.4 and 1.3; 37 and 19).
NOISE_CASES = [(8, 2.0, 40000 if FULL else 8000), (16, 1.0, 40000 if FULL else 8000)]


@pytest.mark.parametrize("n, ratio, pairs", NOISE_CASES)
def test_mlp_noise_is_exact_at_finite_width(n, ratio, pairs, key):
    cfg = MLP.replace(mlp_ratio=ratio)
    est = sf.one_step_moments(cfg, V2, width=n, num_samples=pairs, key=jr.fold_in(key, 100 + n))
    want = mlp_noise_finite(cfg, V2, n)
    assert _max_z(est.noise, est.noise_se, want) < Z
    # power: the limit kappa_mlp Lin is rejected
    limit = np.asarray(sf.ShapedMLP.noise_covariance(cfg, V2))
    assert _max_z(est.noise, est.noise_se, limit) > Z
