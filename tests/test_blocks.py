"""The finite faces of the blocks: shapes, dtypes, masks, scalings (docs/theory.md section 2)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from sdeformer import ShapedConfig
from sdeformer.blocks import BLOCK_TYPES, MissingFaceError
from sdeformer.blocks.shaped_mlp import relu_slopes
from sdeformer.finite import input_from_covariance

M, N = 5, 16
CONFIGS = [
    ShapedConfig(),
    ShapedConfig(heads=4, out_proj=True, causal=True, key_width=3, mlp_ratio=2.0),
    ShapedConfig(heads=2, key_ratio=0.5, causal=True),
]


@pytest.mark.parametrize("name", sorted(BLOCK_TYPES))
@pytest.mark.parametrize("config", CONFIGS)
def test_shapes_dtypes_jit_vmap(name, config, key):
    cls = BLOCK_TYPES[name]
    block = cls(config, N, key=key)
    x = jr.normal(jr.fold_in(key, 1), (M, N))
    y = eqx.filter_jit(block)(x)
    assert y.shape == (M, N) and y.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y)))
    batch = jr.normal(jr.fold_in(key, 2), (3, M, N))
    yb = jax.vmap(block)(batch)
    assert yb.shape == (3, M, N)
    np.testing.assert_allclose(yb[0], block(batch[0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BLOCK_TYPES))
def test_float64(name, key):
    with jax.enable_x64(True):
        block = BLOCK_TYPES[name](ShapedConfig(heads=2), N, key=key, dtype=jnp.float64)
        x = jr.normal(jr.fold_in(key, 1), (M, N), dtype=jnp.float64)
        assert block(x).dtype == jnp.float64


@pytest.mark.parametrize("name", ["attention", "standard_attention", "preln_attention"])
def test_causal_mask(name, key):
    """With causal=True, output token i depends on input tokens j <= i only."""
    block = BLOCK_TYPES[name](ShapedConfig(causal=True, heads=2), N, key=key)
    x = jr.normal(jr.fold_in(key, 1), (M, N))
    jac = jax.jacobian(block)(x)  # (M, N, M, N): d y_i / d x_j
    influence = jnp.abs(jac).sum(axis=(1, 3))
    upper = np.triu(np.ones((M, M), bool), k=1)
    assert float(influence[upper].max()) == 0.0
    assert float(influence[~upper].min()) > 0.0
    a = block.attention_matrix(x)
    assert float(jnp.abs(a[:, upper]).max()) == 0.0


@pytest.mark.parametrize("causal", [False, True])
def test_shaped_attention_rows_sum_to_one(causal, key):
    block = BLOCK_TYPES["attention"](ShapedConfig(causal=causal, heads=3), N, key=key)
    a = block.attention_matrix(jr.normal(jr.fold_in(key, 1), (M, N)))
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-6)


def test_shaped_attention_tends_to_identity(key):
    """A - I = softmax(G / (tau0 sqrt n)) - 11^T/m with G of a law that does not depend on n
    (q, k rows are N(0, V) for every n), so sqrt(n) ||A - I|| tends to a limit in law: the mean
    over 40 networks of ||A - I||_F must shrink by sqrt(1024 / 64) = 4 up to O(n^{-1/2}) effects
    and the Monte Carlo error (relative standard error of the ratio of two 40-sample means ~ 0.1).
    """
    cfg = ShapedConfig(key_width=8, tau0=0.5)
    v = 0.7 * jnp.eye(M) + 0.3

    def mean_distance(n):
        x = input_from_covariance(v, n)

        def one(k):
            block = BLOCK_TYPES["attention"](cfg, n, key=k)
            return jnp.linalg.norm(block.attention_matrix(x)[0] - jnp.eye(M))

        return float(jax.vmap(one)(jr.split(jr.fold_in(key, n), 40)).mean())

    ratio = mean_distance(64) / mean_distance(1024)
    assert 4 * 0.7 < ratio < 4 * 1.3, ratio


def test_relu_slopes_normalisation():
    """c = 2 / (s+^2 + s-^2) makes E[sigma(g)^2] c = 1 for g ~ N(0, 1)."""
    s_plus, s_minus, c = relu_slopes(ShapedConfig(c_plus=0.5, c_minus=-2.0), 12)
    assert math.isclose(c * 0.5 * (s_plus**2 + s_minus**2), 1.0)
    assert math.isclose(s_plus, 1 + 0.5 / math.sqrt(12))


def _one_step_mean_z(cls, config, n, v, samples, key):
    """z-scores of the Monte Carlo mean of each entry of dV = V_next - V after one block."""
    x = input_from_covariance(v, n)

    def step(k):
        y = cls(config, n, key=k)(x)
        return y @ y.T / n - v

    dv = jax.lax.map(step, jr.split(key, samples), batch_size=250)
    mean, se = dv.mean(0), dv.std(0) / math.sqrt(samples)
    iu = np.triu_indices(v.shape[0])
    return np.asarray(mean / se)[iu], np.asarray(mean)[iu], np.asarray(dv.std(0))[iu]


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("attention", ShapedConfig(gamma=0.6, key_width=16)),
        ("attention", ShapedConfig(gamma=0.6, key_width=16, heads=2, out_proj=True)),
        ("mlp", ShapedConfig(gamma=0.6, c_minus=-1.0, mlp_ratio=1.0)),
    ],
)
def test_shaped_blocks_preserve_the_covariance_in_mean(name, config, key):
    """lam^2 + gam^2 = 1: E[V_next | V] = V + O(1/n) while dV fluctuates at O(1/sqrt(n)).

    At n = 256 with 2000 networks, the drift term b/n shifts each entry's mean by about
    b / (n se) = b sqrt(S) / (sqrt(n) sqrt(Sigma)) < 1 standard error for these V, so every
    entry must lie within 4 standard errors of 0 (a wrong residual scale, e.g. an O(1) mean
    change, would sit tens of standard errors away). The per-step fluctuation must be of
    order 1/sqrt(n).
    """
    n, samples = 256, 2000
    v = jnp.array([[1.0, 0.3, -0.2], [0.3, 1.2, 0.1], [-0.2, 0.1, 0.8]])
    z, mean, std = _one_step_mean_z(BLOCK_TYPES[name], config, n, v, samples, key)
    assert np.abs(z).max() < 4.0, z
    assert 0.2 < np.sqrt(n) * std.min() and np.sqrt(n) * std.max() < 5.0, np.sqrt(n) * std


def test_blocks_without_a_limit_say_so():
    v = jnp.eye(3)
    for name in ("standard_attention", "preln_attention", "preln_mlp"):
        with pytest.raises(MissingFaceError, match="no covariance SDE limit"):
            BLOCK_TYPES[name].drift(ShapedConfig(), v)
        with pytest.raises(MissingFaceError, match="no covariance SDE limit"):
            BLOCK_TYPES[name].noise_covariance(ShapedConfig(), v)
    for name in ("preln_attention", "preln_mlp"):
        with pytest.raises(MissingFaceError, match="LayerNorm"):
            BLOCK_TYPES[name].law_step(ShapedConfig(), 8, v, key=jr.key(0))


def test_construction_errors(key):
    with pytest.raises(ValueError, match="not divisible by heads=3"):
        BLOCK_TYPES["attention"](ShapedConfig(heads=3, out_proj=True), 16, key=key)
    with pytest.raises(ValueError, match="n=0"):
        BLOCK_TYPES["mlp"](ShapedConfig(), 0, key=key)
