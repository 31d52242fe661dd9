"""Normal numbers from raw Threefry output words, shared by the counter-based samplers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array


def uniform_open(words: Array, dtype) -> Array:
    """Uniform numbers in (-1, 1) from uint32 words (one word per float32, two per float64)."""
    if jnp.dtype(dtype) == jnp.float64:
        hi, lo = words[..., 0::2].astype(jnp.uint64), words[..., 1::2].astype(jnp.uint64)
        bits = ((hi << 32) | lo) >> 12 | jnp.uint64(0x3FF0000000000000)
    else:
        bits = (words >> 9) | jnp.uint32(0x3F800000)
    u = jax.lax.bitcast_convert_type(bits, dtype) - 1.0  # [0, 1)
    return jnp.maximum(2.0 * u - 1.0, jnp.nextafter(jnp.asarray(-1.0, dtype), 0.0))


def normals_from_words(words: Array, dtype) -> Array:
    """Iid N(0, 1) numbers from uint32 words by the inverse error function (as `jax.random`)."""
    return math.sqrt(2.0) * jax.scipy.special.erfinv(uniform_open(words, dtype))
