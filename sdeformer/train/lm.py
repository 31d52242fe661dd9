"""A causal language model around a stack of layers: the shaped Transformer or the Pre-LN baseline.

    h_0     = (E[token_i] + P[i]) / sqrt(2)                    E: vocab x n, iid N(0, 1)
    h_d     = layers(h_0)                                       d layers, causal attention
    logits  = norm(h_d) R / sqrt(n)                             R: n x vocab, iid N(0, 1)

Positions P: "sinusoidal" (fixed, P[i, 2k] = sqrt(2) sin(i / 10000^(2k/n)), P[i, 2k+1] the
cosine, so every entry has mean square about 1 like E) or "learned" (iid N(0, 1), trained).
`norm` is the final LayerNorm of the Pre-LN baseline and the identity for the shaped model (the
shaped layers keep the token covariance O(1) without normalisation).

Model kinds:

- "shaped": layers `ShapedAttention` + `ShapedMLP` with `ShapedConfig(causal=True)`, run through
  the per-layer shaping scalars of `Shaping` so that a `ShapingSchedule` can anneal ("recover")
  or train ("learn") them. With the shaped values the layer is exactly the blocks' own forward
  pass (tested); the blocks' weights and their `logits` method are reused as they are.
- "shaped-ln": "shaped" with a final LayerNorm before the readout (same body and weights).
- "preln": the Pre-LN Transformer, blocks ("preln_attention", "preln_mlp"): `x + Attn(LN(x))`,
  `x + MLP(LN(x))` with unit residual weights, and a final LayerNorm.
- "gpt2-preln": the standard (GPT-2) Pre-LN Transformer: "preln" whose residual output weights
  (`Wo`, or `Wv` without an output projection, and the MLP's `Wpost`) start at
  `N(0, 1 / (2 d))` instead of `N(0, 1)` (GPT-2's `1 / sqrt(2L)` scaling of the residual
  projections, L = d layers of two residual branches each). They are trained as they are.
- "postln": the Post-LN Transformer of Vaswani et al. (2017): `z = LN_1(x + Attn(x))`,
  `out = LN_2(z + MLP(z))`, unit residual weights, no final LayerNorm (the last layer's output
  is already normalised). It uses the weights of the Pre-LN blocks (their LayerNorm gains and
  biases become the post-residual ones).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..blocks._attention import row_softmax, uniform_attention
from ..blocks.preln import layer_norm
from ..config import ShapedConfig, check_width
from ..finite import ShapedTransformer
from .shaping import Shaping

ARCHITECTURES = ("shaped", "shaped-ln", "preln", "gpt2-preln", "postln")
SHAPED_ARCHITECTURES = ("shaped", "shaped-ln")
FINAL_NORM = ("shaped-ln", "preln", "gpt2-preln")
"""The architectures with a final LayerNorm before the readout."""
POSITIONS = ("sinusoidal", "learned")
SHAPED_BLOCKS = ("attention", "mlp")
PRELN_BLOCKS = ("preln_attention", "preln_mlp")


def sinusoidal_positions(length: int, n: int, dtype=jnp.float32) -> Float[Array, "length n"]:
    """Fixed sinusoidal position codes scaled by sqrt(2) (mean square about 1 per entry)."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    freq = 10000.0 ** (-2.0 * (np.arange(n) // 2) / n)[None, :]
    angle = pos * freq
    codes = np.where(np.arange(n) % 2 == 0, np.sin(angle), np.cos(angle)) * math.sqrt(2.0)
    return jnp.asarray(codes, dtype)


def architecture_config(arch: str, base: ShapedConfig | None = None) -> ShapedConfig:
    """`base` (default `ShapedConfig()`) made causal with the layer pattern of `arch`."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
    base = ShapedConfig() if base is None else base
    blocks = SHAPED_BLOCKS if arch in SHAPED_ARCHITECTURES else PRELN_BLOCKS
    return base.replace(causal=True, blocks=blocks)


class LanguageModel(eqx.Module):
    """Causal language model: embedding + positions, a stack of layers, (LayerNorm,) readout.

    Acts on one sequence of token ids (m,) and returns the next-token logits (m, vocab) and the
    last layer's hidden state (m, n); batch with `jax.vmap`. See the module docstring for the
    maths and the two architectures.
    """

    arch: str = eqx.field(static=True)
    position_kind: str = eqx.field(static=True)
    max_len: int = eqx.field(static=True)
    embedding: Float[Array, "vocab n"]
    positions: Float[Array, "max_len n"] | None
    body: ShapedTransformer
    shaping: Shaping | None
    final_gain: Float[Array, " n"] | None
    final_bias: Float[Array, " n"] | None
    readout: Float[Array, "n vocab"]

    def __init__(
        self,
        arch: str,
        *,
        vocab: int,
        max_len: int,
        width: int,
        depth: int,
        config: ShapedConfig | None = None,
        positions: str = "sinusoidal",
        key: PRNGKeyArray,
        dtype=jnp.float32,
    ):
        vocab = check_width(vocab, minimum=2, name="vocab")
        max_len = check_width(max_len, name="max_len")
        width = check_width(width, name="width")
        depth = check_width(depth, name="depth")
        if positions not in POSITIONS:
            raise ValueError(f"positions={positions!r} is unknown; choose from {POSITIONS}")
        config = architecture_config(arch, config)
        ekey, pkey, bkey, rkey = jr.split(key, 4)
        self.arch = arch
        self.position_kind = positions
        self.max_len = max_len
        self.embedding = jr.normal(ekey, (vocab, width), dtype)
        if positions == "learned":
            self.positions = jr.normal(pkey, (max_len, width), dtype)
        else:
            self.positions = None
        body = ShapedTransformer(config, width, depth, key=bkey, dtype=dtype)
        self.body = gpt2_scaled(body) if arch == "gpt2-preln" else body
        if arch in SHAPED_ARCHITECTURES:
            self.shaping = Shaping.shaped(config, width, depth, dtype)
        else:
            self.shaping = None
        if arch in FINAL_NORM:
            self.final_gain = jnp.ones((width,), dtype)
            self.final_bias = jnp.zeros((width,), dtype)
        else:
            self.final_gain = self.final_bias = None
        self.readout = jr.normal(rkey, (width, vocab), dtype)

    @property
    def config(self) -> ShapedConfig:
        """The `ShapedConfig` of the body."""
        return self.body.config

    @property
    def width(self) -> int:
        """The width n (the embedding dimension)."""
        return self.embedding.shape[1]

    @property
    def depth(self) -> int:
        """The number of layers of the body."""
        return self.body.depth

    def initial_shaping(self) -> Shaping:
        """The shaped values of the scalars (what "fixed" uses and "recover" starts from)."""
        return Shaping.shaped(self.config, self.width, self.depth, self.embedding.dtype)

    def embed(self, tokens: Int[Array, " m"]) -> Float[Array, "m n"]:
        """The input (m, n) of the body: (token embedding + positions) / sqrt(2)."""
        m = tokens.shape[0]
        if m > self.max_len:
            raise ValueError(f"sequence of {m} tokens is longer than max_len={self.max_len}")
        if self.positions is None:
            pos = sinusoidal_positions(m, self.width, self.embedding.dtype)
        else:
            pos = self.positions[:m]
        return (self.embedding[tokens] + pos) / math.sqrt(2.0)

    def hidden(
        self, tokens: Int[Array, " m"], shaping: Shaping | None = None
    ) -> Float[Array, "m n"]:
        """The last layer's hidden state. `shaping` overrides the model's scalars (shaped only)."""
        h = self.embed(tokens)
        if self.arch == "postln":
            return postln_stack(self.body, h)
        if self.shaping is None:
            return plain_stack(self.body, h)
        return shaped_stack(self.body, self.shaping if shaping is None else shaping, h)

    def __call__(
        self, tokens: Int[Array, " m"], shaping: Shaping | None = None
    ) -> tuple[Float[Array, "m vocab"], Float[Array, "m n"]]:
        """The logits (m, vocab) and the body's output (m, n) for one sequence of tokens."""
        h = self.hidden(tokens, shaping)
        out = h if self.final_gain is None else layer_norm(h, self.final_gain, self.final_bias)
        return out @ self.readout / math.sqrt(self.width), h


def plain_stack(body: ShapedTransformer, x: Float[Array, "m n"]) -> Float[Array, "m n"]:
    """Run the stacked layers of `body` as they are (its blocks' own forward passes)."""
    params, static = eqx.partition(body.layers, eqx.is_array)

    def layer(h, layer_params):
        for block in eqx.combine(layer_params, static):
            h = block(h)
        return h, None

    out, _ = jax.lax.scan(layer, x, params)
    return out


def gpt2_scaled(body: ShapedTransformer) -> ShapedTransformer:
    """`body` (Pre-LN layers) with its residual output weights multiplied by 1 / sqrt(2 d).

    The weights that write into the residual stream are `Wo` (or `Wv` when the attention has no
    output projection) and the MLP's `Wpost`; there are 2 d residual branches.
    """
    scale = 1.0 / math.sqrt(2.0 * body.depth)
    attn_out = "wo" if body.config.out_proj else "wv"
    body = eqx.tree_at(
        lambda b: getattr(b.layers[0], attn_out), body, replace_fn=lambda w: w * scale
    )
    return eqx.tree_at(lambda b: b.layers[1].wpost, body, replace_fn=lambda w: w * scale)


def postln_stack(body: ShapedTransformer, x: Float[Array, "m n"]) -> Float[Array, "m n"]:
    """Run the Pre-LN layers of `body` as Post-LN layers under `lax.scan`.

    Each layer is `z = LN_1(h + Attn(h))`, `out = LN_2(z + sqrt(2 / n_h) relu(z Wpre / sqrt(n))
    Wpost)`: the blocks' weights, with their LayerNorm gains and biases after the residual sum.
    """
    if tuple(body.config.blocks) != PRELN_BLOCKS:
        raise ValueError(f"postln_stack needs the layers {PRELN_BLOCKS}, got {body.config.blocks}")
    params, static = eqx.partition(body.layers, eqx.is_array)

    def layer(h, layer_params):
        attn, mlp = eqx.combine(layer_params, static)
        z = layer_norm(h + attn.branch(h), attn.ln_gain, attn.ln_bias)
        n, nh = mlp.wpre.shape
        hidden = jax.nn.relu(z @ mlp.wpre / math.sqrt(n))
        out = z + math.sqrt(2.0 / nh) * (hidden @ mlp.wpost)
        return layer_norm(out, mlp.ln_gain, mlp.ln_bias), None

    out, _ = jax.lax.scan(layer, x, params)
    return out


def shaped_stack(
    body: ShapedTransformer, shaping: Shaping, x: Float[Array, "m n"]
) -> Float[Array, "m n"]:
    """Run the stacked shaped layers of `body` under `lax.scan`.

    The layers follow the pattern ("attention", "mlp"), with the per-layer shaping scalars of
    `shaping` (see `sdeformer.train.shaping`).
    """
    config = body.config
    if tuple(config.blocks) != SHAPED_BLOCKS:
        raise ValueError(f"shaped_stack needs the layers {SHAPED_BLOCKS}, got {config.blocks}")
    params, static = eqx.partition(body.layers, eqx.is_array)
    lam, gam = config.lam, config.gamma

    def layer(h, inputs):
        layer_params, scalars = inputs
        attn, mlp = eqx.combine(layer_params, static)
        identity, beta, s_plus, s_minus = scalars
        m, n = h.shape
        g = attn.logits(h)
        eye_minus_c = jnp.eye(m, dtype=h.dtype) - uniform_attention(m, config.causal, h.dtype)
        a = row_softmax(beta * g, config.causal) + identity * eye_minus_c
        values = jnp.einsum("mn,hnp->hmp", h, attn.wv) / math.sqrt(n)
        mixed = jnp.einsum("hij,hjp->hip", a, values)
        if attn.wo is None:
            branch = mixed.sum(axis=0) / math.sqrt(config.heads)
        else:
            branch = jnp.transpose(mixed, (1, 0, 2)).reshape(m, n) @ attn.wo / math.sqrt(n)
        z = lam * h + gam * branch
        nh = mlp.wpre.shape[1]
        pre = z @ mlp.wpre / math.sqrt(n)
        act = s_plus * jnp.maximum(pre, 0.0) + s_minus * jnp.minimum(pre, 0.0)
        scale = jnp.sqrt(2.0 / (s_plus**2 + s_minus**2) / nh)
        return lam * z + gam * scale * (act @ mlp.wpost), None

    scalars = (shaping.identity, shaping.beta, shaping.s_plus, shaping.s_minus)
    out, _ = jax.lax.scan(layer, x, (params, scalars))
    return out
