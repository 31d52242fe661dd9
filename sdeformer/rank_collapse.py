"""Rank collapse at initialisation: token correlations with depth for shaped and standard models."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import metrics
from .config import ShapedConfig

MODEL_KINDS: dict[str, tuple[str, ...]] = {
    "shaped": ("attention", "mlp"),
    "unshaped": ("standard_attention", "mlp"),
    "preln": ("preln_attention", "preln_mlp"),
}
"""The three models of the rank-collapse comparison and their layer patterns."""


def kind_config(base: ShapedConfig, kind: str) -> ShapedConfig:
    """`base` with the layer pattern of one model kind ("shaped", "unshaped" or "preln")."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose from {tuple(MODEL_KINDS)}")
    return base.replace(blocks=MODEL_KINDS[kind])


def equicorrelated(m: int, rho: float, dtype=jnp.float32) -> Float[Array, "m m"]:
    """The m x m covariance with unit variances and all correlations equal to rho.

    Also `sdeformer.equicorrelated`: the input covariance of the commands' --tokens and --rho0.
    """
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 2:
        raise ValueError(f"m={m!r} is invalid; pass a number of tokens m >= 2")
    if not -1.0 / (m - 1) <= rho < 1.0:
        raise ValueError(
            f"rho={rho!r} does not give a covariance for m={m} tokens; "
            f"pick -1/(m-1) <= rho < 1 (here {-1.0 / (m - 1):.3g} <= rho < 1)"
        )
    return ((1.0 - rho) * jnp.eye(m) + rho * jnp.ones((m, m))).astype(dtype)


def collapse_summary(paths: Float[Array, "samples layers m m"]) -> dict[str, np.ndarray]:
    """Per-layer mean and standard error over samples of the rank-collapse measures.

    Returns numpy arrays of shape (layers,) keyed `<measure>_mean` and `<measure>_se` for
    measures `mean_correlation`, `stable_rank`, `min_eigenvalue`.
    """
    measures = {
        "mean_correlation": metrics.mean_correlation(paths),
        "stable_rank": metrics.stable_rank(paths),
        "min_eigenvalue": metrics.min_correlation_eigenvalue(paths),
    }
    out = {}
    samples = paths.shape[0]
    for name, values in measures.items():
        values = np.asarray(values, dtype=np.float64)
        out[f"{name}_mean"] = values.mean(axis=0)
        out[f"{name}_se"] = (
            values.std(axis=0, ddof=1) / np.sqrt(samples) if samples > 1 else 0 * values[0]
        )
    return out
