"""Stacks of blocks: the finite shaped Transformer and its covariance paths at initialisation."""

from __future__ import annotations

import math
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._convention import check_sampler_sizes, follows_convention
from .._linalg import gram, psd_sqrt
from ..blocks import Block, block_types
from ..config import ShapedConfig, check_width


class ShapedTransformer(eqx.Module):
    """A depth-d stack of layers; each layer applies the blocks of `config.blocks` in order.

    The weights of each block position are stacked along a leading depth axis (built with
    `eqx.filter_vmap`) and the layers run under `lax.scan`, so compile time does not grow with
    depth. The module acts on one sequence `x` of shape (m, n); batch with `jax.vmap`.

    Layer time: layer l sits at time t = l / n of the covariance SDE; depth d at T = d / n.
    """

    config: ShapedConfig = eqx.field(static=True)
    layers: tuple[Block, ...]

    def __init__(
        self,
        config: ShapedConfig,
        n: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        dtype=jnp.float32,
    ):
        n = check_width(n, name="n")
        depth = check_width(depth, name="depth")
        self.config = config
        keys = jr.split(key, (len(config.blocks), depth))
        self.layers = tuple(
            eqx.filter_vmap(lambda k, cls=cls: cls(config, n, key=k, dtype=dtype))(keys[i])
            for i, cls in enumerate(block_types(config.blocks))
        )

    @property
    def depth(self) -> int:
        """The number of layers d (the length of the stacked parameters)."""
        leaf = jax.tree_util.tree_leaves(eqx.filter(self.layers, eqx.is_array))[0]
        return leaf.shape[0]

    def __call__(self, x: Float[Array, "m n"]) -> Float[Array, "m n"]:
        """The output X_d (m, n) of the network at input `x`."""
        return self.covariance_path(x)[0]

    def covariance_path(
        self, x: Float[Array, "m n"]
    ) -> tuple[Float[Array, "m n"], Float[Array, "layers m m"]]:
        """The output and the covariances V_0, ..., V_d (V_l = X_l X_l^T / n after layer l)."""
        params, static = eqx.partition(self.layers, eqx.is_array)

        def layer(h, layer_params):
            for block in eqx.combine(layer_params, static):
                h = block(h)
            return h, gram(h)

        out, covs = jax.lax.scan(layer, x, params)
        return out, jnp.concatenate([gram(x)[None], covs])


def input_from_covariance(v0: Float[Array, "m m"], n: int) -> Float[Array, "m n"]:
    """A hidden state X0 of width n with X0 X0^T / n = V0 exactly: X0 = sqrt(n) [L, 0].

    At initialisation the law of the covariance path depends on X0 only through V0 (the
    weights' law is rotation invariant), so any X0 with this covariance gives the same law.
    """
    m = v0.shape[-1]
    if n < m:
        raise ValueError(
            f"width n={n} is smaller than the number of tokens m={m}; X0 X0^T / n = V0 needs "
            "n >= m: pass a larger n"
        )
    factor = psd_sqrt(v0) * math.sqrt(n)
    return jnp.concatenate([factor, jnp.zeros((m, n - m), v0.dtype)], axis=-1)


def weights_per_layer(config: ShapedConfig, n: int) -> int:
    """Number of Gaussian weights one layer draws at width n (for memory planning)."""
    count = 0
    for name in config.blocks:
        if name.endswith("attention"):
            p = n // config.heads if config.out_proj else n
            count += config.heads * (2 * n * config.n_k(n) + n * p)
            count += n * n if config.out_proj else 0
        else:
            count += 2 * n * config.n_h(n)
    return count


def default_batch_size(config: ShapedConfig, n: int, budget_bytes: float = 2**28) -> int:
    """How many samples to run at once so that one layer's weights stay within budget_bytes."""
    return max(1, int(budget_bytes // (8 * weights_per_layer(config, n))))


@partial(jax.jit, static_argnames=("config", "n", "depth", "num_samples", "batch_size"))
def _explicit_paths(config, n, depth, v0, num_samples, key, batch_size):
    types = block_types(config.blocks)
    x0 = input_from_covariance(v0, n)

    def one_path(sample_key):
        def layer(h, layer_key):
            for cls, block_key in zip(types, jr.split(layer_key, len(types)), strict=True):
                h = cls(config, n, key=block_key, dtype=v0.dtype)(h)
            return h, gram(h)

        _, covs = jax.lax.scan(layer, x0, jr.split(sample_key, depth))
        return jnp.concatenate([gram(x0)[None], covs])

    return jax.lax.map(one_path, jr.split(key, num_samples), batch_size=batch_size)


@follows_convention
def explicit_covariance_paths(
    config: ShapedConfig,
    v0: ArrayLike,
    *,
    width: int,
    depth: int | None = None,
    T: float | None = None,
    num_samples: int,
    key: PRNGKeyArray,
    batch_size: int | None = None,
) -> Float[Array, "samples layers m m"]:
    """Covariance paths V_0..V_d of freshly initialised explicit networks (the ground truth).

    Each sample is an independent network whose layers' weights are drawn inside the `lax.scan`
    over depth and discarded after use, so memory is flat in depth; samples run `batch_size` at
    a time (default: as many as fit 256 MiB of weights). `v0` is the input covariance; the input
    itself is `input_from_covariance(v0, n)`. Returns an array of shape (num_samples, d+1, m, m).
    """
    n, depth, num_samples, v0 = check_sampler_sizes(width, depth, T, num_samples, v0)
    if batch_size is None:
        batch_size = default_batch_size(config, n)
    batch_size = min(check_width(batch_size, name="batch_size"), num_samples)
    return _explicit_paths(config, n, depth, v0, num_samples, key, batch_size)
