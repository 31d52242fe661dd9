"""One-step moments of finite networks: n E[dV] and n Cov[dV] of one layer at a fixed V.

These estimate, from explicit Equinox blocks at width n, the drift and the noise covariance that
the covariance SDE (docs/theory.md section 4) predicts as n -> infinity. Variance reduction:

- drift: the value / output-projection weights are integrated out exactly,
  `E[V_Z | A, X] = lam^2 V_X + gam^2 (1/H) sum_h A_h V_X A_h^T` (also with W^O), and the MLP's
  W^post too, `E[V_next | Z, W^pre] = lam^2 V_Z + gam^2 c sigma(h) sigma(h)^T / n_h`, with the
  linear-activation control variate `h h^T / n_h` (conditional mean V_Z) subtracted; the query
  weights are antithetic (W^Q and -W^Q, which flips the O(1/sqrt n) first-order attention term).
  The estimate is unbiased for n E[dV] at width n.
- noise: the plain sample covariance of dV over the antithetic pairs (each pair's average of
  the outer products is one sample, so the standard errors are honest).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._convention import follows_convention
from .._linalg import gram
from ..blocks import ShapedMLP, block_types
from ..blocks._attention import AbstractAttention
from ..blocks.shaped_mlp import relu_slopes, shaped_relu
from ..config import ShapedConfig, check_covariance, check_width
from ._explicit import default_batch_size, input_from_covariance


class OneStepMoments(eqx.Module):
    """n E[dV] and n Cov[dV] of one layer at width `n`, with their Monte Carlo standard errors.

    `drift` (m, m) and `noise` (m, m, m, m), with `drift_se` and `noise_se`; `num_samples` pairs.

    `conditional_noise` is n Cov of the conditional drift samples / n (for an attention-only layer:
    n Cov(E[dV | W^Q, W^K]), whose limit is the attention part gam^4/(tau0^2 m^2 H) Att of
    Sigma_att, free of the Lin term's Monte Carlo noise).
    """

    drift: Float[Array, "m m"]
    drift_se: Float[Array, "m m"]
    noise: Float[Array, "m m m m"]
    noise_se: Float[Array, "m m m m"]
    conditional_noise: Float[Array, "m m m m"]
    conditional_noise_se: Float[Array, "m m m m"]
    n: int = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)


@eqx.filter_jit
def _pairs(config, n, v, keys):
    """Per antithetic pair: the pair-mean drift sample and both members' dV."""
    x0 = input_from_covariance(v, n)

    def pair(sample_key):
        block_keys = jr.split(sample_key, len(config.blocks))
        blocks = [
            cls(config, n, key=k, dtype=v.dtype)
            for cls, k in zip(block_types(config.blocks), block_keys, strict=True)
        ]
        d1, dv1 = _layer_sample(config, n, x0, blocks, 1.0)
        d2, dv2 = _layer_sample(config, n, x0, blocks, -1.0)
        return d1, d2, dv1, dv2

    return jax.vmap(pair)(keys)


def _pair_cov(dv1, dv2):
    """Covariance of paired samples and the standard errors of its entries.

    One sample per pair: the pair's mean outer product.
    """
    num = dv1.shape[0]
    mean = 0.5 * (dv1.mean(0) + dv2.mean(0))
    c1 = dv1 - mean
    c2 = dv2 - mean

    def avg(x, y):
        return jnp.einsum("sab,scd->abcd", x, y) / num

    # one sample per pair: P = (c1 c1 + c2 c2) / 2, entrywise over (ab, cd)
    first = 0.5 * (avg(c1, c1) + avg(c2, c2))
    second = 0.25 * (avg(c1 * c1, c1 * c1) + 2 * avg(c1 * c2, c1 * c2) + avg(c2 * c2, c2 * c2))
    var = jnp.clip(second - first**2, 0.0) * num / (num - 1)
    return first, jnp.sqrt(var / num)


@jax.jit
def _reduce(n, d1, d2, dv1, dv2):
    dsample = 0.5 * (d1 + d2)  # antithetic pair mean
    num = dsample.shape[0]
    drift = dsample.mean(0)
    drift_se = dsample.std(0, ddof=1) / jnp.sqrt(num)
    noise, noise_se = _pair_cov(dv1, dv2)
    cond, cond_se = _pair_cov(d1, d2)
    return drift, drift_se, n * noise, n * noise_se, cond / n, cond_se / n


def _layer_sample(config, n, x0, blocks, sign):
    """(conditional drift sample, dV) of one layer.

    Every attention block's W^Q is multiplied by `sign` (the antithetic member of a pair uses -1).
    """
    v0 = gram(x0)
    x = x0
    drift = jnp.zeros_like(v0)
    g2 = config.gamma**2
    for block in blocks:
        vx = gram(x)
        if isinstance(block, AbstractAttention):
            block = eqx.tree_at(lambda b: b.wq, block, sign * block.wq)
            a = block.attention_matrix(x)
            avat = jnp.einsum("hij,jk,hlk->il", a, vx, a) / a.shape[0]
            drift = drift + n * g2 * (avat - vx)
        elif isinstance(block, ShapedMLP):
            nh = block.wpre.shape[-1]
            s_plus, s_minus, c = relu_slopes(config, n)
            h = x @ block.wpre / math.sqrt(n)
            act = shaped_relu(h, s_plus, s_minus)
            drift = drift + n * g2 * (c * act @ act.T - h @ h.T) / nh
        else:  # no exact conditional expectation here: the plain increment (unbiased, noisier)
            drift = drift + n * (gram(block(x)) - vx)
        x = block(x)
    return drift, gram(x) - v0


@follows_convention
def one_step_moments(
    config: ShapedConfig,
    v: Float[Array, "m m"],
    *,
    width: int,
    num_samples: int,
    key: PRNGKeyArray,
    batch_size: int | None = None,
    key_impl: str | None = "rbg",
) -> OneStepMoments:
    """Estimate n E[dV] and n Cov[dV] for one layer of explicit networks at width `n`.

    The layer is all blocks of `config.blocks`, in order, started from
    `input_from_covariance(v, n)`.

    `num_samples` antithetic pairs of independent layers (2 num_samples networks); see the module
    docstring for the variance reduction.

    `key_impl="rbg"` (the default) draws from the "rbg" key
    `jr.wrap_key_data(jr.bits(key, (4,), uint32), impl="rbg")` derived from a typed `key` of
    another implementation (deterministic in `key`; threefry takes seconds per call site to
    compile on CPU, rbg a fraction of that); `key_impl=None` uses `key` exactly as given, its
    implementation included. Raw uint32 keys are always used as given. As
    n -> infinity the drift tends to `CovarianceSDE(config).drift(v)` and the noise to
    `noise_covariance(v)` (differences O(1/n) for the shaped blocks, O(1/sqrt n) for the MLP
    drift when c_plus + c_minus != 0).
    """
    n = check_width(width, name="width")
    num_samples = check_width(num_samples, minimum=2, name="num_samples")
    v = check_covariance(v, name="v")
    if batch_size is None:
        batch_size = max(1, default_batch_size(config, n) // 2)
    batch_size = min(check_width(batch_size, name="batch_size"), num_samples)
    if key_impl not in ("rbg", None):
        raise ValueError(f"key_impl={key_impl!r} is invalid; pass 'rbg' or None (keep `key`)")
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    if key_impl == "rbg" and typed and str(jr.key_impl(key)) != "rbg":
        # "rbg" keys compile several times faster than threefry on CPU (same key -> same result)
        key = jr.wrap_key_data(jr.bits(key, (4,), jnp.uint32), impl="rbg")
    keys = jr.split(key, num_samples)
    chunks = [
        _pairs(config, n, v, keys[start : start + batch_size])
        for start in range(0, num_samples, batch_size)
    ]
    parts = (jnp.concatenate(part) for part in zip(*chunks, strict=True))
    return OneStepMoments(*_reduce(jnp.asarray(n, v.dtype), *parts), n, num_samples)
