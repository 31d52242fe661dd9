"""Figures explain themselves: the histogram bin rule, titles with the settings, labelled bands."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from sdeformer import ShapedConfig
from sdeformer.cli.common import settings_title
from sdeformer.compare import CovarianceSamples
from sdeformer.plot import histogram_bins, rank_collapse_figure, rho_density_figure


def _sources(sizes, m=3, seed=0):
    """Wishart-like covariance samples at two times, one source per size."""
    rng = np.random.default_rng(seed)
    out = []
    for i, size in enumerate(sizes):
        x = rng.standard_normal((size, 2, m, 8))
        vs = x @ np.swapaxes(x, -1, -2) / 8
        alive = np.ones((size, 2), dtype=bool)
        out.append(CovarianceSamples(f"src{i}", np.array([0.0, 1.0]), vs, alive))
    return out


def test_bins_capped_by_the_square_root_of_the_smallest_sample():
    """40 samples get at most ceil(sqrt(40)) = 7 bins, even beside a large sample."""
    rng = np.random.default_rng(1)
    small, large = rng.standard_normal(40), rng.standard_normal(20000)
    assert histogram_bins([small, large], -4.0, 4.0) == 7
    assert histogram_bins([small], -4.0, 4.0) <= math.ceil(math.sqrt(40))


def test_bins_follow_freedman_diaconis_below_the_cap():
    """For one large sample the count is (hi - lo) / (2 IQR / N^(1/3)), rounded up."""
    x = np.random.default_rng(2).standard_normal(20000)
    q25, q75 = np.quantile(x, [0.25, 0.75])
    expected = math.ceil(8.0 / (2 * (q75 - q25) / 20000 ** (1 / 3)))
    assert expected < math.ceil(math.sqrt(20000))
    assert histogram_bins([x], -4.0, 4.0) == expected


def test_bins_of_a_sample_without_spread_and_an_empty_range():
    assert histogram_bins([np.zeros(100)], -1.0, 1.0) == 10  # no IQR: the sqrt(N) cap
    assert histogram_bins([np.zeros(4)], -1.0, 1.0) == 5  # at least MIN_BINS
    assert histogram_bins([np.ones(50)], 1.0, 1.0) == 5  # hi == lo


def test_density_figure_uses_the_rule_and_heads_with_the_title():
    sources = _sources([40, 2000])
    title = settings_title(ShapedConfig(), m=3, rho0=0.3, n=64, depth=64, T=1.0)
    fig = rho_density_figure(sources, features=["mean_rho", "rho_0_1"], title=title)
    assert fig._suptitle.get_text() == title
    for ax in fig.axes:
        assert len(ax.patches) == 2  # one step histogram per source
        bins_in_title = int(ax.get_title().split("(")[1].split(" bins")[0])
        assert bins_in_title <= math.ceil(math.sqrt(40))
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["src0 (40)", "src1 (2000)"]  # the sample size in the legend
    plt.close(fig)


def test_settings_title_names_every_setting():
    config = ShapedConfig(tau0=1.5, gamma=0.4, c_minus=-0.7)
    title = settings_title(config, m=4, rho0=0.25, n=128, depth=64, T=0.5)
    for part in ("m = 4", "rho0 = 0.25", "tau0 = 1.5", "gamma = 0.4", "c- = -0.7", "n = 128"):
        assert part in title
    assert "depth = 64 (T = 0.5)" in title
    assert "V0 from --v0" in settings_title(config, m=4, rho0=None, n=8, depth=8, T=1.0)


@pytest.mark.parametrize("title", [None, "m = 4, n = 32"])
def test_rank_collapse_bands_are_labelled(title):
    k = 5
    curve = {
        f"{measure}_{part}": np.linspace(0.1, 0.9, k)
        for measure in ("mean_correlation", "stable_rank", "min_eigenvalue")
        for part in ("mean", "se")
    }
    fig = rank_collapse_figure({"shaped": curve, "standard": curve}, n=32, title=title)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["shaped: mean, +-2 s.e. band", "standard: mean, +-2 s.e. band"]
    assert fig._suptitle.get_text() == (title or "Rank collapse at initialisation (n = 32)")
    plt.close(fig)
