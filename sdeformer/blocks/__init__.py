"""Residual block types, each with a finite, a law and a limit face (see `Block`)."""

from __future__ import annotations

from ..config import BLOCK_NAMES
from ._base import Block as Block
from ._base import MissingFaceError as MissingFaceError
from .preln import PreLNAttention as PreLNAttention
from .preln import PreLNMLP as PreLNMLP
from .shaped_attention import ShapedAttention as ShapedAttention
from .shaped_mlp import ShapedMLP as ShapedMLP
from .standard_attention import StandardAttention as StandardAttention

BLOCK_TYPES: dict[str, type[Block]] = {
    cls.name: cls
    for cls in (ShapedAttention, ShapedMLP, StandardAttention, PreLNAttention, PreLNMLP)
}
assert tuple(BLOCK_TYPES) == BLOCK_NAMES


def block_types(names: tuple[str, ...]) -> tuple[type[Block], ...]:
    """The block classes of a layer pattern such as `config.blocks`."""
    return tuple(BLOCK_TYPES[name] for name in names)
