"""Shaping scalars of the trained shaped Transformer and their schedules: fixed, Recover, Learn.

A shaped layer (docs/theory.md section 2) is written with four scalars per layer,

    A_h   = softmax_rows(beta G_h) + iota (I - C)          (C: the (causal) uniform matrix)
    sigma = s_plus max(x, 0) + s_minus min(x, 0),  normalised by c = 2 / (s_plus^2 + s_minus^2)

whose shaped values are `iota = 1`, `beta = 1 / (tau0 sqrt(n))`, `s_pm = 1 + c_pm / sqrt(n)`
(exactly `ShapedAttention` and `ShapedMLP`), and whose standard values are `iota = 0`,
`beta = 1` (Softmax of the logits G, already divided by sqrt(n_k)), `s_plus = 1`, `s_minus = 0`
(ReLU with He scaling sqrt(2 / n_h)). The residual weights lam, gam are not scheduled.

Schedules (see docs/training.md):

- "fixed": the shaped values throughout (plain shaped Transformer).
- "recover": the scalars move linearly from the shaped to the standard values while the
  training progress goes from `start` to `end` (fractions of the run), then stay standard: the
  model ends as a standard (LayerNorm-free) Transformer with Softmax attention and ReLU.
- "learn": the scalars are trainable parameters (one set per layer) initialised at the shaped
  values; they are excluded from weight decay.
- "standard": the standard values throughout: the layer is Softmax attention + a ReLU MLP with
  the same residual weights and no normalisation (the baseline that rank-collapses with depth).
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..config import ShapedConfig

SCHEDULES = ("fixed", "recover", "learn", "standard")


class Shaping(eqx.Module):
    """Per-layer shaping scalars, each of shape (depth,).

    Identity weight, inverse temperature, and the two slopes of the shaped ReLU.
    """

    identity: Float[Array, " depth"]
    beta: Float[Array, " depth"]
    s_plus: Float[Array, " depth"]
    s_minus: Float[Array, " depth"]

    @classmethod
    def shaped(cls, config: ShapedConfig, n: int, depth: int, dtype=jnp.float32) -> Shaping:
        """The values that make a layer exactly `ShapedAttention` followed by `ShapedMLP`."""

        def full(value: float) -> Array:
            return jnp.full((depth,), value, dtype)

        return cls(
            identity=full(1.0),
            beta=full(1.0 / (config.tau0 * math.sqrt(n))),
            s_plus=full(1.0 + config.c_plus / math.sqrt(n)),
            s_minus=full(1.0 + config.c_minus / math.sqrt(n)),
        )

    @classmethod
    def standard(cls, depth: int, dtype=jnp.float32) -> Shaping:
        """The values of a standard layer: no identity, Softmax(G), ReLU."""
        ones, zeros = jnp.ones((depth,), dtype), jnp.zeros((depth,), dtype)
        return cls(identity=zeros, beta=ones, s_plus=ones, s_minus=zeros)

    def interpolate(self, other: Shaping, progress: Float[Array, ""]) -> Shaping:
        """(1 - progress) * self + progress * other, leaf by leaf."""
        return jax.tree.map(lambda a, b: (1.0 - progress) * a + progress * b, self, other)

    def means(self) -> dict[str, float]:
        """Mean over layers of each scalar (for logging)."""
        return {f.name: float(jnp.mean(getattr(self, f.name))) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class ShapingSchedule:
    """How the shaping scalars evolve during training: `mode` in `SCHEDULES`.

    For "recover", `start` and `end` are the fractions of the run between which the scalars move
    linearly from shaped to standard.
    """

    mode: str = "fixed"
    start: float = 0.0
    end: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in SCHEDULES:
            raise ValueError(f"shaping schedule {self.mode!r} is unknown; choose from {SCHEDULES}")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(
                f"shaping schedule: need 0 <= start < end <= 1, got start={self.start}, "
                f"end={self.end}"
            )

    def progress(self, step: Array, total_steps: int) -> Float[Array, ""]:
        """0 (shaped) to 1 (standard) at `step` of `total_steps` ("recover"); 0 otherwise."""
        if self.mode != "recover":
            return jnp.zeros((), jnp.float32)
        frac = step.astype(jnp.float32) / max(total_steps, 1)
        return jnp.clip((frac - self.start) / (self.end - self.start), 0.0, 1.0)

    def apply(self, shaping: Shaping, initial: Shaping, step: Array, total_steps: int) -> Shaping:
        """The scalars used at `step`.

        `shaping` is the model's (trainable under "learn"); `initial` the shaped values. Under
        the other modes no gradient reaches the model's scalars.
        """
        if self.mode == "learn":
            return shaping
        initial = jax.lax.stop_gradient(initial)
        if self.mode == "fixed":
            return initial
        depth = initial.identity.shape[0]
        standard = Shaping.standard(depth, initial.identity.dtype)
        if self.mode == "standard":
            return standard
        return initial.interpolate(standard, self.progress(step, total_steps))
