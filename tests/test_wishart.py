"""The Bartlett Wishart sampler and its chi-square draws: moments, laws, ranks and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import stats

from sdeformer.wishart import (
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

    from sdeformer.wishart import FAILURE_BOUND, REJECTION_BOUNDS, chi_square_rounds

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
