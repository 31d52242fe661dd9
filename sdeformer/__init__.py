"""sdeformer: shaped Transformers, their covariance SDE and exact finite-width laws, in JAX."""

from __future__ import annotations

from . import metrics as metrics
from .blocks import Block as Block
from .blocks import MissingFaceError as MissingFaceError
from .blocks import PreLNAttention as PreLNAttention
from .blocks import PreLNMLP as PreLNMLP
from .blocks import ShapedAttention as ShapedAttention
from .blocks import ShapedMLP as ShapedMLP
from .blocks import StandardAttention as StandardAttention
from .config import ShapedConfig as ShapedConfig
from .laws import law_covariance_paths as law_covariance_paths
from .laws import sample_covariance_paths as sample_covariance_paths
from .model import ShapedTransformer as ShapedTransformer
from .model import explicit_covariance_paths as explicit_covariance_paths
from .model import input_from_covariance as input_from_covariance
from .wishart import bartlett_factor as bartlett_factor
from .wishart import wishart as wishart

__version__ = "0.1.0"
