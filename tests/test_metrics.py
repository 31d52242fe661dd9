import jax.numpy as jnp
import numpy as np
import pytest

from sdeformer import metrics


def test_correlation_and_measures():
    v = jnp.array([[4.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(metrics.correlation(v), [[1.0, 0.5], [0.5, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(metrics.mean_correlation(v), 0.5, rtol=1e-6)
    np.testing.assert_allclose(metrics.min_correlation_eigenvalue(v), 0.5, rtol=1e-6)
    np.testing.assert_allclose(metrics.stable_rank(v), 25.0 / 19.0, rtol=1e-6)


def test_extremes_and_batching():
    m = 4
    eye = jnp.eye(m)
    ones = jnp.ones((m, m))
    batch = jnp.stack([eye, 2.0 * ones])
    np.testing.assert_allclose(metrics.stable_rank(batch), [m, 1.0], rtol=1e-6)
    np.testing.assert_allclose(metrics.mean_correlation(batch), [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(metrics.min_correlation_eigenvalue(batch), [1.0, 0.0], atol=1e-5)
    a, b = metrics.offdiagonal_pairs(m)
    assert len(a) == m * (m - 1) // 2 and bool(jnp.all(a < b))


def test_equicorrelated_is_public_and_checks_its_inputs():
    """`sdeformer.equicorrelated(m, rho)`: unit variances, every correlation rho; bad m or rho
    named in the error."""
    import sdeformer as sdf

    v = np.asarray(sdf.equicorrelated(3, 0.25))
    np.testing.assert_allclose(v, 0.75 * np.eye(3) + 0.25)
    with pytest.raises(ValueError, match="m=1 is invalid"):
        sdf.equicorrelated(1, 0.5)
    with pytest.raises(ValueError, match="rho=-0.6 does not give a covariance"):
        sdf.equicorrelated(3, -0.6)
