"""The Bartlett Wishart sampler and its chi-square draws: moments, laws, ranks and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import stats

from sdeformer._wishart import (
    bartlett_factor,
    chi_square_from_normals,
    chi_square_size,
    complement_dof,
    wishart,
)

ALPHA = 1e-3  # family-wise false-alarm rate of each test (Bonferroni over its entries)


@pytest.mark.parametrize("m, dof", [(4, 2), (3, 3), (3, 400)])
def test_wishart_moments(m, dof, key):
    """E[W] = dof I and Var[W_ij] = dof (1 + [i = j]) for W ~ Wish_m(dof), dof < m included.

    z-scores of the m(m+1)/2 means (standard error sqrt(Var / S), Var known) and of the
    variances (standard error from the sample's fourth central moment, delta method), with a
    two-sided Bonferroni threshold over the 2 m(m+1)/2 tests. Also the rank: min(m, dof)."""
    samples = 20_000
    w = np.asarray(
        jax.vmap(lambda k: wishart(k, m, dof, jnp.float32))(jr.split(key, samples)), np.float64
    )
    iu = np.triu_indices(m)
    x = w[:, iu[0], iu[1]]
    eye = (iu[0] == iu[1]).astype(float)
    true_var = dof * (1.0 + eye)
    z_mean = (x.mean(0) - dof * eye) / np.sqrt(true_var / samples)
    centred = x - x.mean(0)
    var, mu4 = (centred**2).mean(0), (centred**4).mean(0)
    z_var = (var - true_var) / np.sqrt((mu4 - var**2) / samples)
    z_crit = stats.norm.isf(ALPHA / 2 / (2 * x.shape[1]))
    assert np.abs(z_mean).max() < z_crit, z_mean
    assert np.abs(z_var).max() < z_crit, z_var
    eig = np.linalg.eigvalsh(w[0])  # rank min(m, dof), up to float32 round-off
    assert (eig > 1e-4 * eig.max()).sum() == min(m, dof)


def test_chi_square_law(key):
    """KS against scipy's chi^2(df) for the degrees of freedom the Bartlett factor uses
    (integers >= 1, including the shape-boost branch df = 1); threshold ALPHA / (number of df)."""
    dfs = np.array([1.0, 2.0, 3.0, 7.0, 1000.0], np.float32)
    samples = 20_000
    size = chi_square_size(len(dfs))
    z = jr.normal(key, (samples, size), jnp.float32)
    draws = np.asarray(jax.vmap(lambda zz: chi_square_from_normals(zz, jnp.asarray(dfs)))(z))
    for i, df in enumerate(dfs):
        p = stats.kstest(draws[:, i], stats.chi2(df).cdf).pvalue
        assert p > ALPHA / len(dfs), (df, p)


def test_bartlett_shapes_and_zero_dof(key):
    shapes = jax.eval_shape(lambda k: (bartlett_factor(k, 4, 2), bartlett_factor(k, 3, 10)), key)
    assert [s.shape for s in shapes] == [(4, 2), (3, 3)]
    np.testing.assert_array_equal(jax.jit(lambda k: wishart(k, 3, 0))(key), np.zeros((3, 3)))
    t = np.asarray(jax.jit(lambda k: bartlett_factor(k, 4, 6))(key))
    np.testing.assert_array_equal(np.triu(t, 1), 0.0)  # lower triangular
    assert (np.diag(t) > 0).all()


def test_wishart_errors(key):
    with pytest.raises(ValueError, match="dof=-1"):
        bartlett_factor(key, 3, -1)
    with pytest.raises(ValueError, match="m=0"):
        wishart(key, 0, 3)
    with pytest.raises(ValueError, match="n >= number of tokens m, got n=3, m=5"):
        complement_dof(3, 5)
    assert complement_dof(5, 5) == 0


def test_chi_square_rounds_bound():
    """`REJECTION_BOUNDS` bounds the Marsaglia-Tsang rejection probability, computed exactly by
    quadrature (P(reject) = 1 - E[min(1, exp(x^2/2 + d - d v + d log v)) 1{v > 0}], x ~ N(0,1)),
    at every tabulated shape and on a grid of shapes up to 1000 (it decreases with the shape),
    and the candidates `chi_square_rounds` draws keep all-rejected below 3e-16 per variate."""
    from scipy import integrate

    from sdeformer._wishart import FAILURE_BOUND, REJECTION_BOUNDS, chi_square_rounds

    def rejection(shape):
        d = shape - 1.0 / 3.0
        c = 1.0 / np.sqrt(9.0 * d)

        def accept(x):
            v = (1.0 + c * x) ** 3
            return stats.norm.pdf(x) * min(1.0, np.exp(0.5 * x * x + d - d * v + d * np.log(v)))

        return 1.0 - integrate.quad(accept, -1.0 / c, 40.0, limit=500, epsabs=1e-14)[0]

    for shape, bound in REJECTION_BOUNDS:
        assert rejection(shape) <= bound, shape
    for shape in (1.2, 1.7, 2.5, 4.0, 7.0, 15.0, 30.0, 60.0, 128.0, 1000.0):
        tabulated = min(p for a, p in REJECTION_BOUNDS if a <= shape)
        assert rejection(shape) <= tabulated, shape
    for df in (2, 3, 4, 6, 7, 20, 40, 100, 129, 2000):
        rounds = chi_square_rounds(df)
        assert rejection(df / 2) ** rounds < FAILURE_BOUND, df
    assert chi_square_rounds(None) == chi_square_rounds(1) == 12


def test_chi_square_law_large_df(key):
    """KS against scipy for large degrees of freedom drawn with the reduced candidate count the
    Bartlett factors use (min_df = 129: 5 candidates, no shape boost)."""
    dfs = np.array([129.0, 160.0, 192.0], np.float32)
    samples = 20_000
    z = jr.normal(key, (samples, chi_square_size(len(dfs), 129)), jnp.float32)
    draws = np.asarray(
        jax.vmap(lambda zz: chi_square_from_normals(zz, jnp.asarray(dfs), min_df=129))(z)
    )
    for i, df in enumerate(dfs):
        p = stats.kstest(draws[:, i], stats.chi2(df).cdf).pvalue
        assert p > ALPHA / len(dfs), (df, p)


def test_law_normals_are_iid_standard_normals():
    """The law steps' normals (both Threefry output words used): N(0, 1) marginals, the two
    words of a block uncorrelated, the same numbers for a key alone or vmapped; other key
    implementations fall back to `normals`."""
    from sdeformer.blocks._base import law_normals, normals

    a, b = law_normals(jr.key(3), [(100, 100), (10_000,)], jnp.float32)
    assert a.shape == (100, 100) and b.shape == (10_000,) and a.dtype == jnp.float32
    flat = np.concatenate([np.asarray(a).ravel(), np.asarray(b)])
    # 20000 numbers: a KS p-value below 1e-3 has probability 1e-3 under the null
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    # the first 10000 numbers are the y0 words, the next 10000 the y1 words of the same blocks:
    # their correlation is N(0, 1 / 10000) when independent (5 standard errors = 0.05)
    assert abs(np.corrcoef(flat[:10_000], flat[10_000:])[0, 1]) < 0.05
    assert abs(flat.mean()) < 5 / np.sqrt(flat.size) and abs(flat.var() - 1) < 5 * np.sqrt(
        2 / flat.size
    )
    keys = jr.split(jr.key(4), 3)
    batched = jax.vmap(lambda k: law_normals(k, [(7, 5)], jnp.float32)[0])(keys)
    alone = np.stack([np.asarray(law_normals(k, [(7, 5)], jnp.float32)[0]) for k in keys])
    np.testing.assert_array_equal(np.asarray(batched), alone)
    rbg = jr.key(5, impl="rbg")
    np.testing.assert_array_equal(
        np.asarray(law_normals(rbg, [(4, 4)], jnp.float32)[0]),
        np.asarray(normals(rbg, [(4, 4)], jnp.float32)[0]),
    )
