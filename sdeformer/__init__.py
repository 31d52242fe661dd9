"""sdeformer: shaped Transformers, their covariance SDE and exact finite-width laws, in JAX."""

from __future__ import annotations

from . import metrics as metrics
from . import ntk as ntk
from . import sharding as sharding
from . import train as train
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
from .ntk import ShallowEncoder as ShallowEncoder
from .ntk import analytic_ntk as analytic_ntk
from .ntk import empirical_ntk as empirical_ntk
from .rank_collapse import equicorrelated as equicorrelated
from .results.origin import package_version as _package_version
from .sde import EXIT_REASONS as EXIT_REASONS
from .sde import CovarianceSDE as CovarianceSDE
from .sde import SDESolution as SDESolution
from .sde import sde_memory_estimate as sde_memory_estimate
from .sde import solve_sde as solve_sde
from .sde import suggest_num_steps as suggest_num_steps
from .sharding import initialize_multihost as initialize_multihost
from .sharding import sample_mesh as sample_mesh
from .sharding import sharded_covariance_paths as sharded_covariance_paths
from .sharding import sharded_solve_sde as sharded_solve_sde

__version__ = _package_version()
"""The installed version (the package metadata, written from pyproject.toml)."""
