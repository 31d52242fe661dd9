"""Figures of finite networks against the SDE: feature densities and bands, rank collapse.

Histograms choose their bins by `histogram_bins`: the Freedman-Diaconis width
h = 2 IQR / N^(1/3) of each sample, and no more than sqrt(N) bins for the smallest sample N
(so 40 samples get at most 7 bins, not 50).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ._base import _axes, _finish

MIN_BINS = 5
"""Fewest bins of a histogram (a sample with no spread still gets a readable step)."""


def histogram_bins(samples: Sequence[np.ndarray], lo: float, hi: float) -> int:
    """Bins over [lo, hi] for histograms of `samples` drawn on one axis (one bin grid for all).

    The Freedman-Diaconis rule h = 2 IQR / N^(1/3) for each sample, the finest rule that every
    sample supports (the largest of the bin widths), capped by ceil(sqrt(N)) bins of the
    smallest sample N, and at least `MIN_BINS`.
    """
    sizes = [int(np.size(x)) for x in samples if np.size(x) > 0]
    if not sizes or not hi > lo:
        return MIN_BINS
    widths = []
    for x in samples:
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.size > 1:
            q25, q75 = np.quantile(x, [0.25, 0.75])
            widths.append(2 * (q75 - q25) / x.size ** (1 / 3))
    width = max(widths, default=0.0)
    cap = math.ceil(math.sqrt(min(sizes)))
    bins = cap if width <= 0 else min(cap, math.ceil((hi - lo) / width))
    return max(MIN_BINS, bins)


def _features_list(features: str | Sequence[str]) -> list[str]:
    return [features] if isinstance(features, str) else list(features)


def _feature(src, name: str, index: int | None = None) -> np.ndarray:
    """One feature of a source's samples, at time index `index` (samples,) or all (samples, k).

    log_mean_var is relative to tr(V_0) of the source at t = 0.
    """
    from ..compare.features import features, initial_trace

    vs = src.vs if index is None else src.vs[:, index]
    return features(vs, trace0=initial_trace(src.ts, src.vs))[name]


def rho_density_figure(
    sources,
    *,
    features: str | Sequence[str] = "rho_0_1",
    time: float | None = None,
    title: str | None = None,
    ax=None,
):
    """Histograms (densities) of features at one time (default: the last), one panel each.

    `sources` is a sequence of `compare.CovarianceSamples`; only paths alive at that time count.
    Bins by `histogram_bins` (one grid per panel). `title` heads the figure (e.g. the
    settings); `ax`: one Axes per feature or None.
    """
    names = _features_list(features)
    fig, axes, new = _axes(ax, len(names), (5 * len(names), 4))
    for ax, name in zip(axes, names, strict=True):
        values = []
        for src in sources:
            i = len(src.ts) - 1 if time is None else src.index_of(time)
            values.append((src, i, _feature(src, name, i)[src.alive[:, i]]))
        lo = min(float(np.quantile(x, 0.001)) for _, _, x in values)
        hi = max(float(np.quantile(x, 0.999)) for _, _, x in values)
        bins = np.linspace(lo, hi, histogram_bins([x for _, _, x in values], lo, hi) + 1)
        for src, _, x in values:
            ax.hist(
                x, bins=bins, density=True, histtype="step", lw=1.6, label=f"{src.label} ({x.size})"
            )
        t = values[0][0].ts[values[0][1]]
        ax.set_xlabel(name.replace("_", " "))
        ax.set_ylabel("density")
        ax.set_title(f"law of {name} at t = {t:.3g} ({len(bins) - 1} bins)", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title and new:
        fig.suptitle(title, fontsize=10)
    return _finish(fig, new)


def feature_bands_figure(
    sources, *, features: str | Sequence[str] = "rho_0_1", title: str | None = None, ax=None
):
    """Mean and 5-95 % / 25-75 % quantile bands of features over t, one panel each.

    Over the surviving paths at each time. `title` heads the figure; `ax`: one Axes per feature.
    """
    names = _features_list(features)
    fig, axes, new = _axes(ax, len(names), (6 * len(names), 4))
    for ax, name in zip(axes, names, strict=True):
        for src in sources:
            f = _feature(src, name)  # (samples, k)
            rows = [f[src.alive[:, i], i] for i in range(len(src.ts))]
            mean = [x.mean() for x in rows]
            q05, q25, q75, q95 = np.array(
                [np.quantile(x, [0.05, 0.25, 0.75, 0.95]) for x in rows]
            ).T
            (line,) = ax.plot(src.ts, mean, lw=1.8, label=f"{src.label} mean")
            ax.fill_between(src.ts, q05, q95, color=line.get_color(), alpha=0.12)
            ax.fill_between(src.ts, q25, q75, color=line.get_color(), alpha=0.22)
        ax.set_xlabel("t = layer / n")
        ax.set_ylabel(name.replace("_", " "))
        ax.set_title(f"{name}: mean, 25-75 % and 5-95 % bands", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title and new:
        fig.suptitle(title, fontsize=10)
    return _finish(fig, new)


_COLLAPSE_PANELS = (
    ("mean_correlation", "mean off-diagonal correlation"),
    ("stable_rank", "stable rank tr(V)^2 / tr(V^2)"),
    ("min_eigenvalue", "smallest eigenvalue of correlation"),
)


def rank_collapse_figure(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    *,
    n: int,
    sde: Mapping[str, Sequence] | None = None,
    title: str | None = None,
    ax=None,
):
    """Mean correlation, stable rank and smallest correlation eigenvalue against layer time l/n.

    `curves[kind]` holds the arrays of `rank_collapse.collapse_summary` for one model kind:
    each drawn as its mean over networks with a band of +-2 standard errors of that mean.
    `sde` (from `rank_collapse.sde_collapse_bands`) adds the limit SDE's median (dashed) and
    5-95 % band (hatched) of each measure. `title` heads the figure (default: the width);
    `ax`: three Axes (one per measure) or None.
    """
    fig, axes, new = _axes(ax, 3, (13, 3.8))
    for ax, (measure, label) in zip(axes, _COLLAPSE_PANELS, strict=True):
        for kind, curve in curves.items():
            mean = np.asarray(curve[f"{measure}_mean"])
            se = np.asarray(curve[f"{measure}_se"])
            t = np.arange(mean.shape[0]) / n
            (line,) = ax.plot(t, mean, label=f"{kind}: mean, +-2 s.e. band")
            ax.fill_between(t, mean - 2 * se, mean + 2 * se, color=line.get_color(), alpha=0.2)
        if sde is not None:
            _sde_overlay(ax, sde, measure, n)
        ax.set_xlabel("layer time t = l / n")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if new:
        fig.suptitle(title or f"Rank collapse at initialisation (n = {n})", fontsize=10)
    return _finish(fig, new)


def _sde_overlay(ax, sde: Mapping[str, Sequence], measure: str, n: int) -> None:
    """The SDE's median (dashed) and 5-95 % band (hatched) of one measure."""
    t = np.asarray(sde["layers"], dtype=float) / n

    def column(q):
        return np.array([np.nan if v is None else v for v in sde[f"{measure}_{q}"]], dtype=float)

    ax.plot(t, column("q50"), ls="--", color="black", lw=1.2, label="limit SDE: median")
    ax.fill_between(
        t,
        column("q05"),
        column("q95"),
        facecolor="none",
        edgecolor="black",
        hatch="//",
        lw=0.0,
        alpha=0.5,
        label="limit SDE: 5-95 % of paths",
    )
