"""Distances between two samples of many scalar features at once, with their noise levels.

Every function takes `x` (size_a, features) and `y` (size_b, features) (1-D arrays are one
feature) and returns one value per feature. All of them sort the pooled sample once per feature
(`numpy.argsort` along axis 0) and then work in O(samples) per feature, with no Python loop over
features:

- `ks_statistic`: the two-sample Kolmogorov-Smirnov statistic D = sup_t |F_x(t) - F_y(t)|;
  its noise level `ks_noise` is the 95 % quantile of D under equal laws from
  `scipy.stats.kstwo` with n = round(size_a size_b / (size_a + size_b)) (the asymptotic method of
  `scipy.stats.ks_2samp`), and `ks_pvalue` its p-value;
- `wasserstein1`: W1 = int |F_x - F_y| dt;
- `wasserstein_noise`: the 95 % quantile of W1 under the permutation null (both samples drawn
  without replacement from the pooled one). Given the pooled sorted values z_(1) <= ... <= z_(N),
  the W1 of a relabelled split is sum_k |cx_k / size_a - cy_k / size_b| (z_(k+1) - z_(k)) with
  cx, cy the label counts among the first k: the law of the label sequence is the same for every
  feature, so one set of random label sequences serves all features and the permutation null is
  one matrix product (rounds, N) x (N, features). This is the exact Monte Carlo permutation test,
  not an approximation; `scipy.stats.permutation_test` would re-sort every resample (rounds x
  features sorts), which is what this avoids;
- `energy_distance`: the unbiased (U-statistic) estimator of the squared energy distance
  D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'| = 2 int (F_x - F_y)^2 dt, whose expectation is exactly
  D^2 (0 when the laws agree, so it can be negative), with its delete-one jackknife deviations
  (the jackknife variance over-estimates the variance, Efron-Stein, so intervals are
  conservative), from prefix sums of the pooled sorted sample;
- `mean_difference`: mean_x - mean_y with the same jackknife structure.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _as_2d(x, y):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    one = x.ndim == 1
    if one:
        x, y = x[:, None], y[:, None]
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"samples of shapes {x.shape} and {y.shape}: need (size_a, features) and "
            "(size_b, features) with the same number of features"
        )
    return x, y, one


def _out(value, one):
    return value[0] if one else value


@dataclasses.dataclass(frozen=True)
class Pooled:
    """The pooled sample sorted per feature.

    Values `z` (N, F), `is_x` (N, F) labels and `order` (N, F) the input row (x rows first, then
    y rows) at each sorted position.
    """

    z: np.ndarray
    is_x: np.ndarray
    order: np.ndarray
    size_a: int
    size_b: int

    @classmethod
    def of(cls, x, y) -> Pooled:
        """The pooled, per-feature sorted sample of `x` (size_a, F) and `y` (size_b, F)."""
        z = np.concatenate([x, y], axis=0)
        order = np.argsort(z, axis=0)
        z = np.take_along_axis(z, order, axis=0)
        return cls(z, order < x.shape[0], order, x.shape[0], y.shape[0])

    def unsort(self, values: np.ndarray) -> np.ndarray:
        """Values at the sorted positions (N, F) back in input row order (N, F)."""
        out = np.empty_like(values)
        np.put_along_axis(out, self.order, values, axis=0)
        return out

    @property
    def cdf_gap(self) -> np.ndarray:
        """F_x - F_y just after each pooled value (N, F)."""
        fx = np.cumsum(self.is_x, axis=0) / self.size_a
        fy = np.cumsum(~self.is_x, axis=0) / self.size_b
        return fx - fy


def ks_statistic(x, y):
    """Two-sample KS statistic per feature (equals `scipy.stats.ks_2samp(...).statistic`)."""
    x, y, one = _as_2d(x, y)
    p = Pooled.of(x, y)
    last = np.ones(p.z.shape, bool)  # ECDFs are compared after the last of tied values
    last[:-1] = p.z[1:] != p.z[:-1]
    return _out(np.max(np.abs(p.cdf_gap) * last, axis=0), one)


def wasserstein1(x, y):
    """Wasserstein-1 distance of the two empirical laws per feature."""
    x, y, one = _as_2d(x, y)
    p = Pooled.of(x, y)
    return _out(np.sum(np.abs(p.cdf_gap[:-1]) * np.diff(p.z, axis=0), axis=0), one)


def ks_effective_size(size_a: int, size_b: int) -> int:
    """The effective size size_a size_b / (size_a + size_b) (at least 1) of a two-sample KS test."""
    return max(1, round(size_a * size_b / (size_a + size_b)))


def ks_noise(size_a: int, size_b: int, level: float = 0.95) -> float:
    """`level` quantile of the KS statistic under equal laws (`scipy.stats.kstwo`)."""
    return float(stats.kstwo.ppf(level, ks_effective_size(size_a, size_b)))


def ks_pvalue(statistic, size_a: int, size_b: int):
    """Asymptotic p-value of a two-sample KS statistic (as `ks_2samp(method="asymp")`)."""
    return np.clip(stats.kstwo.sf(statistic, ks_effective_size(size_a, size_b)), 0.0, 1.0)


def permutation_labels(size_a: int, size_b: int, rounds: int, seed: int) -> np.ndarray:
    """`rounds` uniformly random label sequences (rounds, size_a + size_b) of the permutation null.

    True marks the first sample; these are the relabellings of the permutation null (the same for
    every feature).
    """
    rng = np.random.default_rng(seed)
    base = np.zeros((rounds, size_a + size_b), bool)
    base[:, :size_a] = True
    return rng.permuted(base, axis=1)


def wasserstein_null(x, y, *, rounds: int = 200, seed: int = 0):
    """W1 of `rounds` random relabellings of the pooled sample, per feature (rounds, features)."""
    x, y, one = _as_2d(x, y)
    p = Pooled.of(x, y)
    labels = permutation_labels(p.size_a, p.size_b, rounds, seed)
    gap = np.cumsum(labels, axis=1) / p.size_a - np.cumsum(~labels, axis=1) / p.size_b
    null = np.abs(gap[:, :-1]) @ np.diff(p.z, axis=0)
    return null[:, 0] if one else null


def wasserstein_noise(x, y, *, rounds: int = 200, seed: int = 0, level: float = 0.95):
    """`level` quantile of W1 under the permutation null: W1 below it is within noise."""
    return np.quantile(wasserstein_null(x, y, rounds=rounds, seed=seed), level, axis=0)


@dataclasses.dataclass(frozen=True)
class JackknifeEstimate:
    """An estimate per feature with its delete-one jackknife deviations.

    `value` (F,); `dev_a` (size_a, F) and `dev_b` (size_b, F): theta_(-i) - mean_i theta_(-i)
    for deleting observation i of each sample. The jackknife variance is
    (size_a - 1)/size_a sum dev_a^2 + (size_b - 1)/size_b sum dev_b^2; two estimates that share
    the second sample (the same paths, in the same order) have covariance
    (size_b - 1)/size_b sum dev_b dev_b' (`jackknife_covariance`).
    """

    value: np.ndarray
    dev_a: np.ndarray
    dev_b: np.ndarray

    @property
    def variance(self) -> np.ndarray:
        """The jackknife variance (F,) of `value` (formula in the class docstring)."""
        na, nb = self.dev_a.shape[0], self.dev_b.shape[0]
        return (na - 1) / na * np.sum(self.dev_a**2, axis=0) + (nb - 1) / nb * np.sum(
            self.dev_b**2, axis=0
        )

    @property
    def se(self) -> np.ndarray:
        """The jackknife standard error (F,) of `value`: the square root of `variance`."""
        return np.sqrt(self.variance)


def _centre(theta):
    return theta - theta.mean(axis=0, keepdims=True)


def mean_difference(x, y) -> JackknifeEstimate:
    """mean_x - mean_y per feature; its jackknife variance is s_x^2/size_a + s_y^2/size_b."""
    x, y, _ = _as_2d(x, y)
    na, nb = x.shape[0], y.shape[0]
    value = x.mean(axis=0) - y.mean(axis=0)
    dev_a = -(x - x.mean(axis=0)) / (na - 1)
    dev_b = (y - y.mean(axis=0)) / (nb - 1)
    return JackknifeEstimate(value, dev_a, dev_b)


def energy_distance(x, y) -> JackknifeEstimate:
    """Unbiased estimator of the squared energy distance per feature, with jackknife deviations.

    U = 2 S_xy / (na nb) - S_xx / (na (na - 1)) - S_yy / (nb (nb - 1)), with S_xy the sum of
    |x_i - y_j| over all pairs and S_xx, S_yy the sums over ordered pairs of distinct
    observations. E[U] = D^2 exactly. Needs at least 3 observations in each sample.
    """
    x, y, _ = _as_2d(x, y)
    na, nb = x.shape[0], y.shape[0]
    if min(na, nb) < 3:
        raise ValueError(f"energy_distance: samples of sizes {na} and {nb}; need >= 3 each")
    p = Pooled.of(x, y)
    z, is_x = p.z, p.is_x
    zx, zy = np.where(is_x, z, 0.0), np.where(is_x, 0.0, z)
    # counts and sums of each sample strictly before each pooled position
    cx = np.cumsum(is_x, axis=0) - is_x
    cy = np.cumsum(~is_x, axis=0) - ~is_x
    sx = np.cumsum(zx, axis=0) - zx
    sy = np.cumsum(zy, axis=0) - zy
    total_x, total_y = zx.sum(axis=0), zy.sum(axis=0)
    # sum over the other sample of |z - .| and over the own sample (excluding itself)
    cross_to_y = z * cy - sy + (total_y - sy) - z * (nb - cy)
    cross_to_x = z * cx - sx + (total_x - sx) - z * (na - cx)
    own_x = z * cx - sx + (total_x - sx - z) - z * (na - cx - 1)
    own_y = z * cy - sy + (total_y - sy - z) - z * (nb - cy - 1)
    # back in input order: rows of x then rows of y
    cross = p.unsort(np.where(is_x, cross_to_y, cross_to_x))
    own = p.unsort(np.where(is_x, own_x, own_y))
    a_i, c_j = cross[:na], cross[na:]  # sum_j |x_i - y_j| and sum_i |y_j - x_i|
    b_i, d_j = own[:na], own[na:]  # sums within each sample, excluding the observation
    s_xy, s_xx, s_yy = a_i.sum(axis=0), b_i.sum(axis=0), d_j.sum(axis=0)
    value = 2 * s_xy / (na * nb) - s_xx / (na * (na - 1)) - s_yy / (nb * (nb - 1))
    minus_a = (
        2 * (s_xy - a_i) / ((na - 1) * nb)
        - (s_xx - 2 * b_i) / ((na - 1) * (na - 2))
        - s_yy / (nb * (nb - 1))
    )
    minus_b = (
        2 * (s_xy - c_j) / (na * (nb - 1))
        - s_xx / (na * (na - 1))
        - (s_yy - 2 * d_j) / ((nb - 1) * (nb - 2))
    )
    return JackknifeEstimate(value, _centre(minus_a), _centre(minus_b))


def jackknife_covariance(dev_1: np.ndarray, dev_2: np.ndarray) -> np.ndarray:
    """Covariance of two jackknifed estimates through a shared sample: (n - 1)/n sum dev dev'."""
    n = dev_1.shape[0]
    return (n - 1) / n * np.sum(dev_1 * dev_2, axis=0)


def moments(x):
    """Per feature: mean, standard deviation, their standard errors and quantiles.

    The standard error of the standard deviation is the normal-theory one; the quantiles are
    `QUANTILES` (len(QUANTILES), F).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    size = x.shape[0]
    sd = x.std(axis=0, ddof=1)
    return (
        x.mean(axis=0),
        sd / math.sqrt(size),
        sd,
        sd / math.sqrt(2 * (size - 1)),
        np.quantile(x, QUANTILES, axis=0),
    )
