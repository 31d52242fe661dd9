"""Width sweeps: one unit per (width, scaling, init), and the log-log fit of kernel errors."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..compare import PowerLawFit, loglog_fit
from ..compare.rates import _undetermined
from .analytic import analytic_ntk, ntk_scale
from .empirical import empirical_ntk, min_eigenvalue
from .encoder import ShallowEncoder
from .gd import fit_linear_rate, train_gd


def kernel_errors(
    xs: Float[Array, "N tokens d"],
    width: int,
    *,
    scaling: str | float,
    init: str,
    seeds: int,
    key: PRNGKeyArray,
    strategy: str = "auto",
) -> dict[str, Any]:
    """Empirical NTK at `seeds` independent initialisations against the uniform-attention kernel.

    Returns "errors" (||K - Kbar||_F / ||Kbar||_F per initialisation), "lambda_min" (smallest
    eigenvalue of each K) and "lambda_min_analytic" (of Kbar).
    """
    kbar = analytic_ntk(xs, init=init, width=width)
    errors, lams = [], []
    for s in range(seeds):
        model = ShallowEncoder(
            xs.shape[-1], width, scaling=scaling, init=init, key=jr.fold_in(key, s), dtype=xs.dtype
        )
        k = empirical_ntk(model, xs, strategy=strategy)
        errors.append(float(jnp.linalg.norm(k - kbar) / jnp.linalg.norm(kbar)))
        lams.append(float(min_eigenvalue(k)))
    return {
        "errors": errors,
        "lambda_min": lams,
        "lambda_min_analytic": float(min_eigenvalue(kbar)),
    }


def fit_loglog(widths, samples) -> PowerLawFit:
    """Fit log(mean error) = intercept + slope log(width), weighting each width by its error.

    Each width is weighted by its Monte Carlo error (`sdeformer.compare.loglog_fit`, the same
    `PowerLawFit` as the width sweeps).

    `samples[i]` holds the errors at `widths[i]` (one per initialisation); the standard error of
    log(mean) is se(mean)/mean (delta method), `slope_se` is inflated by sqrt(chi^2 / dof) when
    the points scatter more than their error bars (never deflated). The fit is "undetermined"
    with fewer than 2 widths or fewer than 2 initialisations per width.
    """
    widths = np.asarray(widths, dtype=np.float64)
    if widths.size < 2 or any(len(s) < 2 for s in samples):
        used = np.zeros(widths.shape, bool)
        return _undetermined(
            widths, used, "need >= 2 widths with >= 2 initialisations each", method="loglog"
        )
    means = np.array([np.mean(s) for s in samples])
    ses = np.array([np.std(s, ddof=1) / math.sqrt(len(s)) for s in samples])
    return loglog_fit(widths, means, np.maximum(ses, 1e-12 * means))


def run_unit(
    xs: Float[Array, "N tokens d"],
    ys: Float[Array, " N"],
    width: int,
    *,
    scaling: str | float,
    init: str,
    key: PRNGKeyArray,
    seeds: int = 4,
    steps: int = 200,
    lr_factor: float = 1.0,
    checkpoints: int = 4,
    strategy: str = "auto",
) -> dict[str, Any]:
    """Everything the `ntk` command records for one (width, scaling, init), as JSON-ready values.

    The kernel comparison uses `seeds` initialisations (the first is the one trained); training is
    `train_gd` from that first initialisation, with `fit_linear_rate` on its loss curve.
    """
    kern = kernel_errors(
        xs, width, scaling=scaling, init=init, seeds=seeds, key=key, strategy=strategy
    )
    model = ShallowEncoder(
        xs.shape[-1], width, scaling=scaling, init=init, key=jr.fold_in(key, 0), dtype=xs.dtype
    )
    attn = np.asarray(jnp.stack([model.attention(x) for x in xs[:8]]))
    uniform_gap = float(np.max(np.abs(attn - 1.0 / xs.shape[1])))
    run = train_gd(
        model,
        xs,
        ys,
        steps=steps,
        lr_factor=lr_factor,
        checkpoints=checkpoints,
        ntk_strategy=strategy,
    )
    scale = ntk_scale(init, width)
    return {
        "width": width,
        "scaling": scaling,
        "init": init,
        "tau0": float(model.tau0),
        "ntk_scale": scale,
        "kernel_errors": kern["errors"],
        "lambda_min_seeds": kern["lambda_min"],
        "lambda_min": run["lambda_min_0"],
        "lambda_max": run["lambda_max_0"],
        "lambda_min_normalised": run["lambda_min_0"] / scale,
        "lambda_min_analytic": kern["lambda_min_analytic"],
        "attention_uniform_gap": uniform_gap,
        "lr": run["lr"],
        "losses": run["losses"].tolist(),
        "rate_fit": fit_linear_rate(run["losses"]),
        "predicted_rate": run["predicted_rate"],
        "checkpoint_steps": run["checkpoint_steps"],
        "ntk_change": run["ntk_change"],
        "weight_change": run["weight_change"],
    }
