"""sdeformer: shaped Transformers, their covariance SDE and exact finite-width laws, in JAX."""

from __future__ import annotations

import importlib

from . import compare as compare
from . import metrics as metrics
from . import results as results
from .blocks import Block as Block
from .blocks import MissingFaceError as MissingFaceError
from .blocks import PreLNAttention as PreLNAttention
from .blocks import PreLNMLP as PreLNMLP
from .blocks import ShapedAttention as ShapedAttention
from .blocks import ShapedMLP as ShapedMLP
from .blocks import StandardAttention as StandardAttention
from .blocks import register_block as register_block
from .blocks import registered_blocks as registered_blocks
from .blocks import unregister_block as unregister_block
from .config import ShapedConfig as ShapedConfig
from .finite import OneStepMoments as OneStepMoments
from .finite import ShapedTransformer as ShapedTransformer
from .finite import bartlett_factor as bartlett_factor
from .finite import explicit_covariance_paths as explicit_covariance_paths
from .finite import input_from_covariance as input_from_covariance
from .finite import law_covariance_paths as law_covariance_paths
from .finite import one_step_moments as one_step_moments
from .finite import sample_covariance_paths as sample_covariance_paths
from .finite import wishart as wishart
from .rank_collapse import equicorrelated as equicorrelated
from .results.origin import package_version as _package_version
from .sde import EXIT_REASONS as EXIT_REASONS
from .sde import CovarianceSDE as CovarianceSDE
from .sde import SDESolution as SDESolution
from .sde import sde_memory_estimate as sde_memory_estimate
from .sde import solve_sde as solve_sde
from .sde import suggest_num_steps as suggest_num_steps

__version__ = _package_version()
"""The installed version (the package metadata, written from pyproject.toml)."""

# The applications and the multi-device layer are imported when first used (PEP 562), so
# `import sdeformer` does not load optax, the NTK code or the sharding layer.
_LAZY_MODULES = ("train", "ntk", "sharding")
_LAZY_NAMES = {
    "ShallowEncoder": "ntk",
    "analytic_ntk": "ntk",
    "empirical_ntk": "ntk",
    "initialize_multihost": "sharding",
    "sample_mesh": "sharding",
    "sharded_covariance_paths": "sharding",
    "sharded_solve_sde": "sharding",
}


def __getattr__(name: str):
    """`sdeformer.train`, `sdeformer.ntk`, `sdeformer.sharding` and their names, on first use."""
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'sdeformer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_MODULES, *_LAZY_NAMES])
