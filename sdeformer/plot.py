"""Matplotlib figures. The library never plots unless one of these functions is called."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .results import atomic_path


def _pyplot():
    import matplotlib

    if os.environ.get("MPLBACKEND") is None and matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save atomically (never a half-written PNG) and close the figure."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def rank_collapse_figure(curves: Mapping[str, Mapping[str, np.ndarray]], *, n: int):
    """Mean correlation, stable rank and smallest correlation eigenvalue against layer time l/n.

    `curves[kind]` holds the arrays of `rank_collapse.collapse_summary` for one model kind.
    Bands are +-2 standard errors over samples.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [
        ("mean_correlation", "mean off-diagonal correlation"),
        ("stable_rank", "stable rank tr(V)^2 / tr(V^2)"),
        ("min_eigenvalue", "smallest eigenvalue of correlation"),
    ]
    for ax, (measure, label) in zip(axes, panels, strict=True):
        for kind, curve in curves.items():
            mean = np.asarray(curve[f"{measure}_mean"])
            se = np.asarray(curve[f"{measure}_se"])
            t = np.arange(mean.shape[0]) / n
            (line,) = ax.plot(t, mean, label=kind)
            ax.fill_between(t, mean - 2 * se, mean + 2 * se, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("layer time t = l / n")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Rank collapse at initialisation (n = {n})")
    fig.tight_layout()
    return fig


def train_sweep_figure(rows, *, title: str = "Final validation loss against learning rate"):
    """Final validation loss against learning rate (log x), one line per model kind.

    `rows` are the dictionaries of `sdeformer.train.sweep.summarise`: points are the mean over
    seeds, bars span min to max; learning rates where every seed diverged are marked with an
    "x" at the top of the panel.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    kinds = list(dict.fromkeys(row["kind"] for row in rows))
    finite = [row["val_loss_max"] for row in rows if row["val_loss_max"] is not None]
    top = max(finite) * 1.05 if finite else 1.0
    for kind in kinds:
        mine = sorted((row for row in rows if row["kind"] == kind), key=lambda r: r["lr"])
        ok = [row for row in mine if row["val_loss_mean"] is not None]
        lrs = np.array([row["lr"] for row in ok])
        mean = np.array([row["val_loss_mean"] for row in ok])
        low = mean - np.array([row["val_loss_min"] for row in ok])
        high = np.array([row["val_loss_max"] for row in ok]) - mean
        line = ax.errorbar(lrs, mean, yerr=[low, high], marker="o", capsize=3, label=kind)
        dead = [row["lr"] for row in mine if row["val_loss_mean"] is None]
        if dead:
            ax.scatter(dead, [top] * len(dead), marker="x", s=60, color=line[0].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final validation loss (nats / token)")
    ax.set_title(title + "\n(x: diverged)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig
