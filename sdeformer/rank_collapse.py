"""Rank collapse at initialisation: token correlations with depth for shaped and standard models."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import metrics
from ._typing import AnyArray
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


def collapse_summary(paths: Float[AnyArray, "samples layers m m"]) -> dict[str, np.ndarray]:
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


BAND_QUANTILES = {"q05": 0.05, "q50": 0.5, "q95": 0.95}
"""The quantiles of the SDE's bands: the 5-95 % band and the median."""


def sde_collapse_bands(
    config: ShapedConfig,
    v0,
    *,
    width: int,
    depth: int,
    num_samples: int,
    key,
    num_steps: int | None = None,
    save_times: int = 17,
    bound: float = 1e3,
) -> dict:
    """Quantile bands of the rank-collapse measures of the limit SDE at T = depth / width.

    The shaped network of width n and depth d is compared with the SDE on [0, T], T = d / n:
    layer l sits at SDE time t = l / n. Returns lists keyed `layers` (l = t n at the
    `save_times` equally spaced times), `alive` (the fraction of paths not stopped by t) and
    `<measure>_<q>` for the measures of `collapse_summary` and the quantiles `BAND_QUANTILES`,
    over the paths alive at each time (the law conditional on survival). `num_steps` defaults
    to `sdeformer.sde.suggest_num_steps` (the step rule); it is returned as `num_steps`.
    """
    from .sde import solve_sde, suggest_num_steps

    T = depth / width
    if num_steps is None:
        num_steps = suggest_num_steps(config, v0, T)
    sol = solve_sde(
        config,
        v0,
        T=T,
        num_samples=num_samples,
        key=key,
        save_times=save_times,
        num_steps=num_steps,
        bound=bound,
    )
    vs = np.asarray(sol.vs, dtype=np.float64)
    alive = np.asarray(sol.alive)
    measures = {
        "mean_correlation": metrics.mean_correlation(vs),
        "stable_rank": metrics.stable_rank(vs),
        "min_eigenvalue": metrics.min_correlation_eigenvalue(vs),
    }
    out = {
        "layers": (np.asarray(sol.ts, dtype=np.float64) * width).tolist(),
        "alive": alive.mean(axis=0).tolist(),
        "num_samples": int(num_samples),
        "num_steps": int(num_steps),
    }
    for name, values in measures.items():
        values = np.asarray(values, dtype=np.float64)
        for label, q in BAND_QUANTILES.items():
            out[f"{name}_{label}"] = [
                float(np.quantile(values[alive[:, i], i], q)) if alive[:, i].any() else None
                for i in range(values.shape[1])
            ]
    return out
