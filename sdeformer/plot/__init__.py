"""Matplotlib figures. The library never plots unless one of these functions is called.

Every figure function takes `ax=None`: by default it makes a new figure; pass an Axes (or, for
the functions with several panels, a sequence of Axes, one per panel) to draw into a figure of
your own. Each returns the `matplotlib.figure.Figure` it drew on. The library never chooses a
matplotlib backend (so `plt.show()` works in scripts and notebooks); only the command line
selects the non-interactive Agg backend, since it writes PNG files.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._base import _axes, _finish, _pyplot
from ._base import save_figure as save_figure
from ._compare import feature_bands_figure as feature_bands_figure
from ._compare import histogram_bins as histogram_bins
from ._compare import rank_collapse_figure as rank_collapse_figure
from ._compare import rho_density_figure as rho_density_figure

# ------------------------------------------------------------------------------------------- ntk


def _ntk_groups(units):
    """Units of the `ntk` command grouped by (scaling, init), each sorted by width."""
    groups: dict[tuple[str, str], list] = {}
    for unit in units:
        groups.setdefault((str(unit["scaling"]), unit["init"]), []).append(unit)
    return {key: sorted(group, key=lambda u: u["width"]) for key, group in groups.items()}


def ntk_eigenvalue_figure(units, *, ax=None):
    """Smallest NTK eigenvalue at initialisation against the width d_m, raw and rescaled.

    Rescaled: divided by the NTK's width scale (d_m for LeCun/He, 1 for NTK initialisation);
    dashed: the uniform-attention kernel's. Bars: min-max over the initialisations of each unit.
    `ax`: two Axes or None.
    """
    fig, axes, new = _axes(ax, 2, (11, 4))
    for (scaling, init), group in _ntk_groups(units).items():
        widths = np.array([u["width"] for u in group], dtype=float)
        lams = [np.asarray(u["lambda_min_seeds"], dtype=float) for u in group]
        scales = np.array([u["ntk_scale"] for u in group], dtype=float)
        style = "-" if scaling == "linear" else ":"
        for ax, div in zip(axes, (np.ones_like(scales), scales), strict=True):
            mid = np.array([np.median(v) for v in lams]) / div
            lo = np.array([v.min() for v in lams]) / div
            hi = np.array([v.max() for v in lams]) / div
            ax.errorbar(
                widths,
                mid,
                yerr=[mid - lo, hi - mid],
                ls=style,
                marker="o",
                ms=3,
                capsize=2,
                label=f"{init}, tau0 {scaling}",
            )
    for ax, title in zip(axes, ("lambda_min(K_0)", "lambda_min(K_0) / width scale"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width d_m")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if new:
        fig.suptitle("Smallest eigenvalue of the empirical NTK at initialisation")
    return _finish(fig, new)


def ntk_loss_figure(units, *, ax=None):
    """Training loss of full-batch GD against the step.

    One panel per (scaling, init), one curve per width (darker = wider). `ax`: None, or
    len(scalings) x len(inits) Axes (row-major).
    """
    plt = _pyplot()
    groups = _ntk_groups(units)
    scalings = sorted({k[0] for k in groups})
    inits = sorted({k[1] for k in groups})
    fig, flat, new = _axes(
        ax,
        len(scalings) * len(inits),
        (4 * len(inits), 3.2 * len(scalings)),
        nrows=len(scalings),
        ncols=len(inits),
        squeeze=False,
        sharey=True,
    )
    axes = np.empty((len(scalings), len(inits)), dtype=object)
    axes.ravel()[:] = flat
    for (scaling, init), group in groups.items():
        ax = axes[scalings.index(scaling), inits.index(init)]
        cmap = plt.get_cmap("viridis")
        for i, unit in enumerate(group):
            color = cmap(1 - (i + 1) / (len(group) + 1))
            ax.plot(unit["losses"], color=color, label=f"d_m={unit['width']}")
        ax.set_yscale("log")
        ax.set_title(f"init {init}, tau0 {scaling}", fontsize=10)
        ax.set_xlabel("GD step")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("loss (1/2N) sum r^2")
    axes[0, 0].legend(fontsize=7)
    if new:
        fig.suptitle("Full-batch gradient descent on the squared loss")
    return _finish(fig, new)


def ntk_kernel_error_figure(units, fits, *, ax=None):
    """NTK distance from its limit, weight movement and NTK movement against width.

    Left: ||K - Kbar||_F / ||Kbar||_F against width (mean +- 2 se over initialisations) with the
    fitted power law; Kbar is the uniform-attention kernel, the limit under tau0 = d_m^-1 only.
    Middle and right: relative weight movement and NTK movement during training against width.
    `fits[f"{scaling}/{init}"]` is the `PowerLawFit` of `sdeformer.ntk.fit_loglog`.
    `ax`: three Axes or None.
    """
    fig, axes, new = _axes(ax, 3, (15, 4))
    for (scaling, init), group in _ntk_groups(units).items():
        widths = np.array([u["width"] for u in group], dtype=float)
        errs = [np.asarray(u["kernel_errors"], dtype=float) for u in group]
        mean = np.array([e.mean() for e in errs])
        se = np.array([e.std(ddof=1) / np.sqrt(e.size) if e.size > 1 else 0.0 for e in errs])
        style = "-" if scaling == "linear" else ":"
        fit = fits.get(f"{scaling}/{init}")
        determined = fit is not None and fit.determined
        label = f"{init}, tau0 {scaling}"
        if determined:
            label += f" (slope {fit.slope:.2f}+-{fit.slope_se:.2f})"
        (line,) = axes[0].plot(widths, mean, ls=style, marker="o", ms=3, label=label)
        axes[0].fill_between(
            widths, mean - 2 * se, mean + 2 * se, color=line.get_color(), alpha=0.2
        )
        if determined and scaling == "linear":
            axes[0].plot(
                widths,
                np.exp(fit.intercept) * widths**fit.slope,
                color=line.get_color(),
                lw=0.8,
                alpha=0.6,
            )
        axes[1].plot(
            widths,
            [u["weight_change"] for u in group],
            ls=style,
            marker="o",
            ms=3,
            color=line.get_color(),
            label=label.split(" (")[0],
        )
        axes[2].plot(
            widths,
            [u["ntk_change"][-1] for u in group],
            ls=style,
            marker="o",
            ms=3,
            color=line.get_color(),
        )
    titles = (
        "||K - Kbar||_F / ||Kbar||_F (Kbar: uniform attention)",
        "weight movement ||theta_T - theta_0|| / ||theta_0||",
        "NTK movement ||K_T - K_0||_F / ||K_0||_F",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width d_m")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    if new:
        fig.suptitle("Empirical vs infinite-width NTK, and lazy training")
    return _finish(fig, new)


def distance_vs_width_figure(
    widths, distances: Mapping[str, tuple], fits: Mapping[str, object], *, ax=None
):
    """Distances to the SDE against width on log-log axes, with noise levels and fitted slopes.

    `distances[name] = (values, errors, noise)` arrays over `widths`; `fits[name]` is a
    `compare.PowerLawFit` (or None when no fit was possible).
    """
    fig, (ax,), new = _axes(ax, 1, (6.5, 4.2))
    widths = np.asarray(widths, dtype=float)
    for name, (values, errors, noise) in distances.items():
        values, errors = np.asarray(values), np.asarray(errors)
        bar = ax.errorbar(widths, values, yerr=2 * errors, marker="o", capsize=3, label=name)
        color = bar.lines[0].get_color()
        if noise is not None:
            ax.plot(widths, noise, ls=":", color=color, lw=1)
        fit = fits.get(name)
        if fit is not None:
            grid = np.geomspace(widths.min(), widths.max(), 50)
            ax.plot(
                grid,
                np.exp(fit.intercept) * grid**fit.slope,
                ls="--",
                color=color,
                label=f"fit: slope {fit.slope:.2f} +- {fit.slope_se:.2f}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width n (depth T n)")
    ax.set_ylabel("distance to the SDE law at t = T")
    ax.set_title("finite width vs SDE (dotted: 95 % noise level)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return _finish(fig, new)


def train_sweep_figure(
    rows, *, title: str = "Final validation loss against learning rate", ax=None
):
    """Final validation loss against learning rate (log x), one line per model kind.

    `rows` are the dictionaries of `sdeformer.train.lr_sweep.summarise`: points are the mean over
    seeds, bars span min to max; learning rates where every seed diverged are marked with an
    "x" at the top of the panel.
    """
    fig, (ax,), new = _axes(ax, 1, (6.4, 4.2))
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
    return _finish(fig, new)
