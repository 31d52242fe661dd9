"""The exact covariance chain of a stack at initialisation, at finite width, without n x n matrices.

At initialisation the weights' law is invariant under rotations of the width, so the covariance
V_l = X_l X_l^T / n of a stack of shaped (or standard-attention) blocks is a Markov chain on
m x m PSD matrices whose one-step law is given by each block's `law_step` (docs/theory.md
section 5). Sampling it costs O(m^3) per attention block and O(m n_h) per MLP block,
against O(n^2) random numbers per block for the explicit network.
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._convention import check_sampler_sizes, follows_convention
from .._linalg import cov_factor, symmetrize
from .._wishart import complement_dof
from ..blocks import MissingFaceError, block_types
from ..config import ShapedConfig, check_width
from ._explicit import default_batch_size, explicit_covariance_paths

METHODS = ("law", "explicit")
"""The samplers `sample_covariance_paths` can use."""


@lru_cache(maxsize=256)
def check_law(config: ShapedConfig, n: int = 2, m: int = 2) -> None:
    """Raise `MissingFaceError` naming the blocks when a block of `config.blocks` has no law.

    Each block's law face is traced abstractly (`jax.eval_shape`, no computation), so a block
    type that gains a law needs no change here. Successful checks are cached per (config, n, m):
    tracing costs about 0.1 s, which small sampling calls would otherwise pay every time.
    """
    for cls in block_types(config.blocks):
        try:
            jax.eval_shape(
                lambda v, k, cls=cls: cls.law_step(config, n, v, key=k),
                jax.ShapeDtypeStruct((m, m), jnp.float32),
                jr.key(0),
            )
            if cls.law_factor_step is not None:  # the optional factor form of the law face
                jax.eval_shape(
                    lambda f, k, cls=cls: cls.law_factor_step(config, n, f, key=k),
                    jax.ShapeDtypeStruct((m, m), jnp.float32),
                    jr.key(0),
                )
        except MissingFaceError as error:
            raise MissingFaceError(
                f"config.blocks={config.blocks!r} has no exact law chain: {error}"
            ) from None


def law_batch_size(config: ShapedConfig, n: int, m: int, budget_bytes: float | None = None) -> int:
    """Samples run at once by the law chain so that one layer's draws stay within budget_bytes.

    The MLP law draws an m x n_h Gaussian matrix (and its activation) per sample; attention
    needs O(H m^2) numbers (about 3.3 m^2 normals and a dozen m x m temporaries per head). The
    count assumes 8-byte numbers and a few temporaries per entry. The default budget is 32 MiB
    on CPU, which keeps a batch's random numbers near the caches, and 256 MiB on accelerators,
    where larger batches fill the device. On CPU (one thread, m = 64, n = 256) this gives 64
    samples for attention-only stacks and 32 for attention + MLP, the fastest of the batch sizes
    8 to 256 measured there (16 and 12 samples before, 20% slower).
    """
    if budget_bytes is None:
        budget_bytes = 2**25 if jax.default_backend() == "cpu" else 2**28
    per_sample = 16 * m * m * config.heads
    if "mlp" in config.blocks:
        per_sample += 4 * m * config.n_h(n)
    return max(1, int(budget_bytes // (8 * per_sample)))


def factor_step(cls: type, config: ShapedConfig, n: int, l: Array, *, key: PRNGKeyArray) -> Array:
    """One block's law step on factors: F (m x k) with F F^T ~ V_next given L L^T = V.

    Uses the block's `law_factor_step` when it has one (shaped and standard attention, the
    shaped MLP), else its `law_step` on `L L^T` followed by `cov_factor`. A subclass that
    overrides `law_step` below the class defining `law_factor_step` (Pre-LN attention, whose
    `law_step` raises `MissingFaceError`) keeps control: its `law_step` is used.
    """

    def owner(name):
        return next((k for k in cls.__mro__ if name in vars(k)), None)

    factor_owner, step_owner = owner("law_factor_step"), owner("law_step")
    if factor_owner is not None and issubclass(factor_owner, step_owner):
        return cls.law_factor_step(config, n, l, key=key)
    return cov_factor(cls.law_step(config, n, l @ l.T, key=key))


@partial(jax.jit, static_argnames=("config", "n", "depth", "num_samples", "batch_size"))
def _law_paths(config, n, depth, v0, num_samples, key, batch_size):
    types = block_types(config.blocks)
    # Every step works on a factor L of the current V (docs/theory.md section 5): each block
    # returns F with F F^T = V_next, whose Cholesky factor (m^3 / 3 flops, `cov_factor`) feeds
    # the next block. V0's factor is shared by all samples.
    l0 = cov_factor(v0)

    def one_path(sample_key):
        def layer(l, layer_key):
            for cls, block_key in zip(types, jr.split(layer_key, len(types)), strict=True):
                f = factor_step(cls, config, n, l, key=block_key)
                v = symmetrize(f @ f.T)
                l = cov_factor(v)
            return l, v

        _, covs = jax.lax.scan(layer, l0, jr.split(sample_key, depth))
        return jnp.concatenate([v0[None], covs])

    return jax.lax.map(one_path, jr.split(key, num_samples), batch_size=batch_size)


@follows_convention
def law_covariance_paths(
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
    """Covariance paths V_0..V_d sampled from the exact finite-width law (no n x n matrix).

    Same signature, shapes and law as `explicit_covariance_paths`: `config` fixes the blocks of
    a layer, `v0` is the m x m input covariance, `width` the width n (n >= m), `depth` the
    number of layers d (or `T`: d = round(T n)) and `num_samples` the number of independent
    networks. The chain runs under
    `lax.scan` over depth (memory flat in depth) and is vmapped over `batch_size` samples at a
    time (default: `law_batch_size`). Returns (num_samples, d + 1, m, m).

    Raises `MissingFaceError` for blocks without an exact law (Pre-LN) and `ValueError` for
    n < m or invalid sizes.
    """
    n, depth, num_samples, v0 = check_sampler_sizes(width, depth, T, num_samples, v0)
    m = v0.shape[-1]
    complement_dof(n, m)  # raises for n < m
    check_law(config, n, m)
    if config.out_proj and n % config.heads:
        raise ValueError(
            f"width n={n} is not divisible by heads={config.heads}; with out_proj=True each head "
            "has n / heads value columns: pick n a multiple of heads or set out_proj=False"
        )
    if batch_size is None:
        batch_size = law_batch_size(config, n, m)
    batch_size = min(check_width(batch_size, name="batch_size"), num_samples)
    return _law_paths(config, n, depth, v0, num_samples, key, batch_size)


def default_sampler_batch(method: str, config: ShapedConfig, n: int, m: int) -> int:
    """Samples per batch when none is given: `law_batch_size` or the explicit networks' rule."""
    if method == "law":
        return law_batch_size(config, n, m)
    return default_batch_size(config, n)


@follows_convention
def sample_covariance_paths(
    config: ShapedConfig,
    v0: ArrayLike,
    *,
    width: int,
    depth: int | None = None,
    T: float | None = None,
    num_samples: int,
    key: PRNGKeyArray,
    method: str = "law",
    batch_size: int | None = None,
) -> Float[Array, "samples layers m m"]:
    """Covariance paths at initialisation, by the exact law chain or the explicit network.

    `method="law"` uses `law_covariance_paths` (fast, exact in law, no n x n matrices);
    `method="explicit"` draws the networks' weights (`explicit_covariance_paths`, the ground
    truth, also for Pre-LN blocks). Both return (num_samples, depth + 1, m, m).
    """
    if method == "law":
        sampler = law_covariance_paths
    elif method == "explicit":
        sampler = explicit_covariance_paths
    else:
        raise ValueError(f"method={method!r} is invalid; choose one of {METHODS}")
    return sampler(
        config,
        v0,
        width=width,
        depth=depth,
        T=T,
        num_samples=num_samples,
        key=key,
        batch_size=batch_size,
    )
