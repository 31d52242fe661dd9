"""The registry of block types: names to classes, below `config` and `blocks` (layer 1).

`sdeformer.register_block` (in `sdeformer.blocks`) fills it; `ShapedConfig` reads it to check
block names and `is_shaped`, without importing the blocks (which import the config).
"""

from __future__ import annotations

REGISTRY: dict[str, type] = {}
"""Registered block classes by name (the built-in ones and the user's)."""

BUILTIN: set[str] = set()
"""Names of the built-in block types (they cannot be unregistered)."""

RETIRED: set[str] = set()
"""Names unregistered in this process (registering them again clears JAX's caches)."""

LIMIT_FACES = ("drift", "noise_covariance", "noise_terms")
"""The faces a block needs for the covariance SDE limit (`Block.has_face`)."""
