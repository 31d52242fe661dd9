"""Matplotlib figures. The library never plots unless one of these functions is called.

Every figure function takes `ax=None`: by default it makes a new figure; pass an Axes (or, for
the functions with several panels, a sequence of Axes, one per panel) to draw into a figure of
your own. Each returns the `matplotlib.figure.Figure` it drew on. The library never chooses a
matplotlib backend (so `plt.show()` works in scripts and notebooks); only the command line
selects the non-interactive Agg backend, since it writes PNG files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .results.files import atomic_path


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


def rank_collapse_figure(curves: Mapping[str, Mapping[str, np.ndarray]], *, n: int, ax=None):
    """Mean correlation, stable rank and smallest correlation eigenvalue against layer time l/n.

    `curves[kind]` holds the arrays of `rank_collapse.collapse_summary` for one model kind.
    Bands are +-2 standard errors over samples. `ax`: three Axes (one per measure) or None.
    """
    fig, axes, new = _axes(ax, 3, (13, 3.8))
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
    if new:
        fig.suptitle(f"Rank collapse at initialisation (n = {n})")
    return _finish(fig, new)


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


# --------------------------------------------------------------------- finite networks vs SDE


def rho_density_figure(sources, *, feature: str = "rho_0_1", time: float | None = None, ax=None):
    """Histograms (densities) of one feature at one time (default: the last) for each source.

    `sources` is a sequence of `compare.CovarianceSamples`; only paths alive at that time count.
    """
    from .compare import features

    fig, (ax,), new = _axes(ax, 1, (6, 4))
    values = []
    for src in sources:
        i = len(src.ts) - 1 if time is None else src.index_of(time)
        x = features(src.vs[:, i])[feature][src.alive[:, i]]
        values.append((src, i, x))
    lo = min(float(np.quantile(x, 0.001)) for _, _, x in values)
    hi = max(float(np.quantile(x, 0.999)) for _, _, x in values)
    bins = np.linspace(lo, hi, 50)
    for src, _, x in values:
        ax.hist(
            x, bins=bins, density=True, histtype="step", lw=1.6, label=f"{src.label} ({x.size})"
        )
    t = values[0][0].ts[values[0][1]]
    ax.set_xlabel(feature.replace("_", " "))
    ax.set_ylabel("density")
    ax.set_title(f"law of {feature} at t = {t:.3g}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, new)


def feature_bands_figure(sources, *, feature: str = "rho_0_1", ax=None):
    """Mean and 5-95 % / 25-75 % quantile bands of one feature over t for each source.

    Over the surviving paths at each time.
    """
    from .compare import features

    fig, (ax,), new = _axes(ax, 1, (7, 4))
    for src in sources:
        f = features(src.vs)[feature]  # (samples, k)
        mean, q05, q25, q75, q95 = [], [], [], [], []
        for i in range(len(src.ts)):
            x = f[src.alive[:, i], i]
            mean.append(x.mean())
            a, b, c, d = np.quantile(x, [0.05, 0.25, 0.75, 0.95])
            q05.append(a)
            q25.append(b)
            q75.append(c)
            q95.append(d)
        (line,) = ax.plot(src.ts, mean, lw=1.8, label=f"{src.label} mean")
        ax.fill_between(src.ts, q05, q95, color=line.get_color(), alpha=0.12)
        ax.fill_between(src.ts, q25, q75, color=line.get_color(), alpha=0.22)
    ax.set_xlabel("t = layer / n")
    ax.set_ylabel(feature.replace("_", " "))
    ax.set_title(f"{feature}: mean, 25-75 % and 5-95 % bands", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
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
