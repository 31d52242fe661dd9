"""The phase map's figure: filled contours of p_collapse, p_blowup and the median mean_rho.

Imported only when a figure is asked for (`sdeformer.design.phase_map_figure`); the library
never chooses a matplotlib backend (the command line selects Agg).
"""

from __future__ import annotations

import numpy as np

PANELS = (
    ("p_collapse", "P(collapse: mean_rho >= {threshold:g})", (0.0, 1.0)),
    ("p_blowup", "P(blow-up)", (0.0, 1.0)),
    ("median_mean_rho", "median mean_rho", None),
)


def phase_map_figure(result, *, ax=None):
    """Three panels over (x, y), each a filled contour with labelled level lines."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), sharey=True)
        axes = list(axes)
    else:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != 3:
            raise ValueError(f"ax: the phase map has 3 panels; pass 3 Axes, got {len(axes)}")
        fig = axes[0].figure
    xx, yy = np.meshgrid(result.x, result.y)
    for panel, (name, title, limits) in zip(axes, PANELS, strict=True):
        z = np.asarray(getattr(result, name))
        if limits is None:
            # the data's own range: the median moves little across many maps
            low, high = float(z.min()), float(z.max())
            levels = np.linspace(low, high if high > low else low + 1e-6, 21)
            lines = np.linspace(low, high, 5)[1:-1] if high > low else []
        else:
            levels = np.linspace(*limits, 21)
            lines = [0.05, 0.5]
        filled = panel.contourf(xx, yy, z, levels=levels, cmap="viridis", extend="neither")
        if z.max() > z.min() and len(lines):
            contour = panel.contour(xx, yy, z, levels=lines, colors="white", linewidths=1.0)
            panel.clabel(contour, fmt="%g", fontsize=8)
        fig.colorbar(filled, ax=panel)
        panel.set_title(title.format(threshold=result.collapse_threshold))
        panel.set_xlabel(result.x_name)
    axes[0].set_ylabel(result.y_name)
    fig.suptitle(
        f"{result.method}: n={result.width}, d={result.depth}, m={result.tokens}, "
        f"{result.num_samples} paths per cell (common random numbers)",
        fontsize=10,
    )
    if ax is None:
        fig.tight_layout()
    return fig
