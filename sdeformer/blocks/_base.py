"""The interface every block type implements: a finite face, a law face and a limit face."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from ..config import ShapedConfig
from ._limit import NoiseTerms


class MissingFaceError(NotImplementedError):
    """Raised when a block type is asked for a face (law or limit) that it does not have."""


class Block(eqx.Module):
    """Base class of the residual blocks (docs/theory.md sections 2, 4, 5).

    A block type is one class with three faces that share `ShapedConfig`:

    1. finite: the module itself; `__init__(config, n, *, key, dtype)` draws iid N(0, 1) weights
       for width `n`, `__call__(x)` maps one sequence `x` of shape (m, n) to the next (m, n).
    2. law: `law_step(config, n, v, *, key)` samples the next m x m covariance given the current
       one at finite width `n` exactly, without any n x n matrix (docs/theory.md section 5).
    3. limit (docs/theory.md section 4), the faces `sdeformer.CovarianceSDE` uses:
       - `drift(config, v, *, width=None)`: the block's drift b(V) (m, m); with `width=n` the
         exact finite-width drift where one is known in closed form (else the limit's);
       - `noise_covariance(config, v)`: Sigma(V) (m, m, m, m), dense, for tests and small m;
       - `noise_terms(config)`: a `NoiseTerms` (kappa of Lin, alpha and kind of the attention
         term), which the solver merges over the blocks of a layer;
       - `mix_noise(config, v, factor, e)`: for blocks with `noise_terms(config).mix > 0`, the
         unit attention noise (m, m) applied to an iid N(0, 1) matrix `e` given `factor`
         (L L^T = V), in O(m^3): its covariance is Sigma's attention term divided by `mix`.

    A block type that lacks a face raises `MissingFaceError` saying why.
    """

    config: eqx.AbstractVar[ShapedConfig]
    name: ClassVar[str] = "block"

    def __call__(self, x: Float[Array, "m n"]) -> Float[Array, "m n"]:
        raise NotImplementedError

    @classmethod
    def law_step(
        cls, config: ShapedConfig, n: int, v: Float[Array, "m m"], *, key: PRNGKeyArray
    ) -> Float[Array, "m m"]:
        raise MissingFaceError(f"block {cls.name!r} has no exact finite-width law yet")

    @classmethod
    def _no_limit(cls) -> MissingFaceError:
        return MissingFaceError(
            f"block {cls.name!r} has no covariance SDE limit; the limit exists for the shaped "
            "blocks 'attention' and 'mlp' only"
        )

    @classmethod
    def drift(
        cls, config: ShapedConfig, v: Float[Array, "m m"], *, width: int | None = None
    ) -> Float[Array, "m m"]:
        raise cls._no_limit()

    @classmethod
    def noise_covariance(
        cls, config: ShapedConfig, v: Float[Array, "m m"]
    ) -> Float[Array, "m m m m"]:
        raise cls._no_limit()

    @classmethod
    def noise_terms(cls, config: ShapedConfig) -> NoiseTerms:
        raise cls._no_limit()

    @classmethod
    def mix_noise(
        cls,
        config: ShapedConfig,
        v: Float[Array, "m m"],
        factor: Float[Array, "m m"],
        e: Float[Array, "m m"],
    ) -> Float[Array, "m m"]:
        raise MissingFaceError(f"block {cls.name!r} has no attention term in its noise")


def normals(key: PRNGKeyArray, shapes: list[tuple[int, ...]], dtype) -> list[Array]:
    """Independent iid N(0, 1) arrays of the given shapes from ONE call to the PRNG.

    Weights are raw N(0, 1): every scale factor is written explicitly where they are used. One
    call per block (not one per weight) keeps compile times low: on CPU each `jax.random` call
    site costs about a second of XLA compilation.
    """
    sizes = [math.prod(shape) for shape in shapes]
    flat = jax.random.normal(key, (sum(sizes),), dtype)
    out, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(flat[start : start + size].reshape(shape))
        start += size
    return out
