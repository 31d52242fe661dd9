"""The interface every block type implements: a finite face, a law face and a limit face."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.extend.random import threefry2x32_p
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _block_registry
from .._bits import normals_from_words
from ..config import ShapedConfig
from ._limit import NoiseTerms


class MissingFaceError(NotImplementedError):
    """Raised when a block type is asked for a face (finite, law or limit) that it does not have."""


LIMIT_FACES = _block_registry.LIMIT_FACES
"""The limit faces every block of a `sdeformer.CovarianceSDE` must define (`mix_noise` too when
its `noise_terms(config).mix > 0`)."""


class Block(eqx.Module):
    """Base class of the residual blocks (docs/theory.md sections 2, 4, 5).

    A block type is one class with three faces that share `ShapedConfig`:

    1. finite: the module itself; `__init__(config, n, *, key, dtype)` draws iid N(0, 1) weights
       for width `n`, `__call__(x)` maps one sequence `x` of shape (m, n) to the next (m, n).
    2. law: `law_step(config, n, v, *, key)` samples the next m x m covariance given the current
       one at finite width `n` exactly, without any n x n matrix (docs/theory.md section 5).
       Optional: `law_factor_step(config, n, l, *, key)` returns a factor F with F F^T ~ V_next
       given a factor L L^T = V (a faster form of the same law); `None` (the default) means the
       law chain uses `law_step` on `L L^T` instead.
    3. limit (docs/theory.md section 4), the faces `sdeformer.CovarianceSDE` uses:
       - `drift(config, v, *, width=None)`: the block's drift b(V) (m, m); with `width=n` the
         exact finite-width drift where one is known in closed form (else the limit's);
       - `noise_covariance(config, v)`: Sigma(V) (m, m, m, m), dense, for tests and small m;
       - `noise_terms(config)`: a `NoiseTerms` (kappa of Lin, alpha and kind of the attention
         term), which the solver merges over the blocks of a layer: a block's noise must be
         `kappa Lin + alpha <attention term>` and `noise_covariance` must equal it;
       - `mix_noise(config, v, factor, e)`: for blocks with `noise_terms(config).mix > 0`, the
         unit attention noise (m, m) applied to an iid N(0, 1) matrix `e` given `factor`
         (L L^T = V), in O(m^3): its covariance is Sigma's attention term divided by `mix`.

    Every face that a block type does not define raises `MissingFaceError` saying which face is
    missing; `CovarianceSDE` and the law chain check for the faces they need when they are built.

    A new block type (docs/usage.md, "Your own block type") subclasses `Block`, sets a unique
    `name`, defines the faces it has and is registered with `sdeformer.register_block`; its name
    can then be used in `ShapedConfig(blocks=...)` like the built-in ones.
    """

    config: eqx.AbstractVar[ShapedConfig]
    name: ClassVar[str] = "block"
    law_factor_step: ClassVar[Callable | None] = None

    def __call__(self, x: Float[Array, "m n"]) -> Float[Array, "m n"]:
        """Finite face: the block applied to one sequence `x` (m, n) at the module's width."""
        raise MissingFaceError(
            f"block {self.name!r} ({type(self).__name__}) has no finite face: define "
            "__init__(config, n, *, key, dtype) and __call__(x)"
        )

    @classmethod
    def law_step(
        cls, config: ShapedConfig, n: int, v: Float[Array, "m m"], *, key: PRNGKeyArray
    ) -> Float[Array, "m m"]:
        """Law face: one exact draw of V_next (m, m) given V = `v` at width `n`."""
        raise MissingFaceError(
            f"block {cls.name!r} has no exact finite-width law yet ({cls.__name__} does not "
            "define the law face law_step(config, n, v, *, key))"
        )

    @classmethod
    def has_face(cls, face: str) -> bool:
        """True when this block type defines `face` (a name of a `Block` method) itself."""
        mine, base = getattr(cls, face), getattr(Block, face)
        return getattr(mine, "__func__", mine) is not getattr(base, "__func__", base)

    @classmethod
    def _no_limit(cls, face: str) -> MissingFaceError:
        with_limit = tuple(
            name
            for name, other in registered_blocks().items()
            if all(other.has_face(f) for f in LIMIT_FACES)
        )
        return MissingFaceError(
            f"block {cls.name!r} has no covariance SDE limit ({cls.__name__} does not define the "
            f"limit face {face!r}); the registered blocks with a limit are {with_limit}"
        )

    @classmethod
    def drift(
        cls, config: ShapedConfig, v: Float[Array, "m m"], *, width: int | None = None
    ) -> Float[Array, "m m"]:
        """Limit face: the drift b(V) (m, m).

        With `width=n`, the exact finite-width drift where one is known in closed form.
        """
        raise cls._no_limit("drift")

    @classmethod
    def noise_covariance(
        cls, config: ShapedConfig, v: Float[Array, "m m"]
    ) -> Float[Array, "m m m m"]:
        """Limit face: Sigma(V)_{ab,cd} = Cov(dV_ab, dV_cd) / dt, dense (tests and small m)."""
        raise cls._no_limit("noise_covariance")

    @classmethod
    def noise_terms(cls, config: ShapedConfig) -> NoiseTerms:
        """Limit face: the noise as `lin Lin + mix <attention term>` (what the solver uses)."""
        raise cls._no_limit("noise_terms")

    @classmethod
    def mix_noise(
        cls,
        config: ShapedConfig,
        v: Float[Array, "m m"],
        factor: Float[Array, "m m"],
        e: Float[Array, "m m"],
    ) -> Float[Array, "m m"]:
        """Limit face (blocks with an attention term): the unit attention noise, in O(m^3).

        Applied to the iid N(0, 1) matrix `e`, given `factor` with factor factor^T = V.
        """
        raise MissingFaceError(f"block {cls.name!r} has no attention term in its noise")


_REGISTRY: dict[str, type[Block]] = _block_registry.REGISTRY
_BUILTIN: set[str] = _block_registry.BUILTIN
_RETIRED: set[str] = _block_registry.RETIRED  # names unregistered in this process


def register_block(cls: type) -> type:
    """Register a block type under `cls.name`, so that `ShapedConfig(blocks=(...))` accepts it.

    Use it as a class decorator::

        @sdeformer.register_block
        class MyBlock(sdeformer.Block):
            name = "my_block"
            ...

    The class must subclass `Block`, set a new `name` (a non-empty string) and define the finite
    face (`__init__` and `__call__`); its law and limit faces are optional (using a missing one
    raises `MissingFaceError`). A name that is already registered raises `ValueError`: pick
    another name, or `unregister_block(name)` first (re-running a notebook cell).
    Returns `cls` unchanged.
    """
    if not (isinstance(cls, type) and issubclass(cls, Block)):
        raise TypeError(f"register_block: {cls!r} is not a subclass of sdeformer.Block")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name or name == Block.name:
        raise ValueError(
            f"register_block: {cls.__name__} must set its own class attribute `name` (a "
            f"non-empty string other than {Block.name!r}, e.g. name = 'my_block'), got {name!r}"
        )
    if not cls.has_face("__call__"):
        raise ValueError(
            f"register_block: block {name!r} ({cls.__name__}) has no finite face: define "
            "__init__(config, n, *, key, dtype) and __call__(x)"
        )
    if name in _REGISTRY:
        raise ValueError(
            f"register_block: the block name {name!r} is already registered to "
            f"{_REGISTRY[name].__module__}.{_REGISTRY[name].__qualname__}; pick another name "
            f"for {cls.__name__}, or call sdeformer.unregister_block({name!r}) first"
        )
    if name in _RETIRED:  # jitted code cached for configs naming it used the old class
        jax.clear_caches()
        _RETIRED.discard(name)
    _REGISTRY[name] = cls
    return cls


def unregister_block(name: str) -> None:
    """Remove a block type registered by `register_block` (the built-in ones stay).

    Jitted functions are cached per config, whose key holds the block *names*: registering
    another class under a removed name calls `jax.clear_caches()`, so it is traced afresh.
    """
    if name in _BUILTIN:
        raise ValueError(f"unregister_block: {name!r} is a built-in block and cannot be removed")
    if name not in _REGISTRY:
        raise ValueError(
            f"unregister_block: no block named {name!r} is registered; the registered blocks "
            f"are {tuple(_REGISTRY)}"
        )
    del _REGISTRY[name]
    _RETIRED.add(name)


def registered_blocks() -> dict[str, type[Block]]:
    """The registered block types by name (a copy): the built-in ones, then the user's."""
    return dict(_REGISTRY)


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


def _split(flat: Array, shapes: list[tuple[int, ...]]) -> list[Array]:
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(flat[start : start + size].reshape(shape))
        start += size
    return out


def law_normals(key: PRNGKeyArray, shapes: list[tuple[int, ...]], dtype) -> list[Array]:
    """Independent iid N(0, 1) arrays of the given shapes for a law step, from one Threefry call.

    The same numbers' law as `normals`, at about half the cost of the random bits: with the
    default `jax_threefry_partitionable=True`, `jax.random.normal` turns each Threefry-2x32
    block (two 32-bit output words) into ONE float32, while the law steps, whose cost is
    dominated by their normal draws, use both words. For a Threefry key with data (k0, k1) the
    words are Threefry-2x32 under (k0, k1) of the counters (0, j), j < ceil(words / 2), both
    outputs in turn; they become normals by the inverse error function, as in
    `jax.random.normal`. Elementwise in the counters, so a vmapped call gives each key the same
    numbers as an unbatched one. Keys of other implementations (rbg, ...) and raw uint32 keys
    go through `normals`.
    """
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not typed or str(jax.random.key_impl(key)) != "threefry2x32":
        return normals(key, shapes, dtype)
    count = sum(math.prod(shape) for shape in shapes)
    words = count * (2 if jnp.dtype(dtype) == jnp.float64 else 1)
    pairs = -(-words // 2)
    data = jax.random.key_data(key)
    counters = jnp.arange(pairs, dtype=jnp.uint32)
    y0, y1 = threefry2x32_p.bind(data[0], data[1], jnp.zeros_like(counters), counters)
    bits = jnp.concatenate([y0, y1])[:words]
    flat = normals_from_words(bits, dtype)
    return _split(flat, shapes)
