"""The standard Pre-LN Transformer block (LayerNorm, Softmax attention, ReLU MLP): a baseline."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..config import ShapedConfig, check_width
from ._attention import AbstractAttention, row_softmax
from ._base import Block, MissingFaceError, normals

LAYER_NORM_EPS = 1e-5


def layer_norm(
    x: Float[Array, "m n"], gain: Float[Array, " n"], bias: Float[Array, " n"]
) -> Float[Array, "m n"]:
    """LayerNorm over the width of each token (mean subtracted, variance normalised)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * gain + bias


def _no_law(name: str) -> MissingFaceError:
    return MissingFaceError(
        f"block {name!r} has no exact finite-width covariance law: LayerNorm subtracts the mean "
        "over the width, which is not invariant under rotations of the width, so the covariance "
        "is not a Markov chain; sample it with the explicit network (method='explicit')"
    )


class PreLNAttention(AbstractAttention):
    """Pre-LN attention sub-block: `X + Attn(LN(X))` (a standard Transformer, no shaping).

    Attn is multi-head Softmax attention `A_h = softmax_rows(G_h)` with the projections of
    `AbstractAttention` (1/sqrt(n) scales, logits divided by sqrt(n_k)); LN has a trainable
    gain (init 1) and bias (init 0). The residual branch is added with weight 1.
    """

    ln_gain: Float[Array, " n"]
    ln_bias: Float[Array, " n"]
    name = "preln_attention"

    def __init__(self, config: ShapedConfig, n: int, *, key: PRNGKeyArray, dtype=jnp.float32):
        super().__init__(config, n, key=key, dtype=dtype)
        self.ln_gain = jnp.ones((n,), dtype)
        self.ln_bias = jnp.zeros((n,), dtype)

    @classmethod
    def attention_from_logits(
        cls, config: ShapedConfig, g: Float[Array, "*heads m m"], n: int
    ) -> Float[Array, "*heads m m"]:
        """The attention matrix A = softmax_rows(G) (causal: over positions j <= i)."""
        return row_softmax(g, config.causal)

    def __call__(self, x: Float[Array, "m n"]) -> Float[Array, "m n"]:
        """The block's output X + Attn(LN(X)) (m, n)."""
        return x + self.branch(layer_norm(x, self.ln_gain, self.ln_bias))

    @classmethod
    def law_step(cls, config, n, v, *, key):
        """No law face: raises MissingFaceError (LayerNorm makes V a non-Markov chain)."""
        raise _no_law(cls.name)


class PreLNMLP(Block):
    """Pre-LN MLP sub-block: `X + sqrt(2 / n_h) relu(LN(X) Wpre / sqrt(n)) Wpost` (He scaling)."""

    config: ShapedConfig = eqx.field(static=True)
    wpre: Float[Array, "n nh"]
    wpost: Float[Array, "nh n"]
    ln_gain: Float[Array, " n"]
    ln_bias: Float[Array, " n"]
    name = "preln_mlp"

    def __init__(self, config: ShapedConfig, n: int, *, key: PRNGKeyArray, dtype=jnp.float32):
        n = check_width(n, name="n")
        nh = config.n_h(n)
        self.config = config
        self.wpre, self.wpost = normals(key, [(n, nh), (nh, n)], dtype)
        self.ln_gain = jnp.ones((n,), dtype)
        self.ln_bias = jnp.zeros((n,), dtype)

    def __call__(self, x: Float[Array, "m n"]) -> Float[Array, "m n"]:
        """The block's output X + sqrt(2 / n_h) relu(LN(X) Wpre / sqrt(n)) Wpost (m, n)."""
        n, nh = self.wpre.shape
        hidden = jax.nn.relu(layer_norm(x, self.ln_gain, self.ln_bias) @ self.wpre / math.sqrt(n))
        return x + math.sqrt(2.0 / nh) * (hidden @ self.wpost)

    @classmethod
    def law_step(cls, config, n, v, *, key):
        """No law face: raises MissingFaceError (LayerNorm makes V a non-Markov chain)."""
        raise _no_law(cls.name)
