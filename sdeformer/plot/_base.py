"""What every figure shares: the pyplot import, new or given Axes, saving atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..results.files import atomic_path


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _axes(ax, panels: int, figsize, **subplots):
    """(figure, flat list of `panels` axes, whether the figure is new) for `ax` or a new figure."""
    if ax is None:
        fig, axes = _pyplot().subplots(
            subplots.pop("nrows", 1), subplots.pop("ncols", panels), figsize=figsize, **subplots
        )
        return fig, list(np.ravel(axes)), True
    axes = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axes) != panels:
        raise ValueError(
            f"ax: this figure has {panels} panel(s); pass {panels} Axes, got {len(axes)}"
        )
    return axes[0].figure, axes, False


def _finish(fig, new: bool):
    if new:
        fig.tight_layout()
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save atomically (never a half-written PNG) and close the figure."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return path
