"""Residual block types, each with a finite, a law and a limit face (see `Block`).

The built-in types are registered here; a user's own type is registered with
`sdeformer.register_block` (docs/usage.md, "Your own block type"), without editing this file.
"""

from __future__ import annotations

from ..config import BLOCK_NAMES
from . import _base
from ._base import Block as Block
from ._base import MissingFaceError as MissingFaceError
from ._base import register_block as register_block
from ._base import registered_blocks as registered_blocks
from ._base import unregister_block as unregister_block
from ._limit import NoiseTerms as NoiseTerms
from .preln import PreLNAttention as PreLNAttention
from .preln import PreLNMLP as PreLNMLP
from .shaped_attention import ShapedAttention as ShapedAttention
from .shaped_mlp import ShapedMLP as ShapedMLP
from .standard_attention import StandardAttention as StandardAttention

BLOCK_TYPES: dict[str, type[Block]] = {
    cls.name: register_block(cls)
    for cls in (ShapedAttention, ShapedMLP, StandardAttention, PreLNAttention, PreLNMLP)
}
"""The built-in block types by name (`registered_blocks()` adds the user's)."""
assert tuple(BLOCK_TYPES) == BLOCK_NAMES
_base._BUILTIN.update(BLOCK_TYPES)


def block_types(names: tuple[str, ...]) -> tuple[type[Block], ...]:
    """The registered block classes of a layer pattern such as `config.blocks`."""
    registry = _base._REGISTRY
    for name in names:
        if name not in registry:
            raise ValueError(
                f"unknown block {name!r}; the registered blocks are {tuple(registry)} "
                "(register your own with sdeformer.register_block)"
            )
    return tuple(registry[name] for name in names)
