"""One feature's two laws at one time: the row of a comparison, and all rows at once.

For every feature and time: means and standard deviations with standard errors and the z-score
of the difference of means, quantiles, the KS statistic with its p-value and 95 % noise level
(`scipy.stats.kstwo`), W1 with its 95 % permutation noise level. `compare_arrays` compares all
features in a few array operations (one sort per feature, one matrix product for the
permutation null), so m = 256 tokens cost seconds, not hours.

A z-score whose standard error is 0 or non-finite (for example every sample equal, as at t = 0)
is NaN and the row's verdict is "undetermined", never "within noise". Verdicts are family-wise:
with F features compared at one time, a row is "above noise" when its KS or mean p-value is below
0.05 / (2 F), so equal laws give no "above noise" row in 95 % of comparisons.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from . import distances as dist

VERDICT_LEVEL = 0.05
"""Default family-wise level of the verdicts of one time."""


def verdict_alpha(num_features: int, level: float = VERDICT_LEVEL) -> float:
    """The per-test level alpha = level / (2 F) of a row's verdict among F features (two tests).

    Bonferroni over the F features of one time and the two tests of a row (KS and means).
    """
    if num_features < 1:
        raise ValueError(f"num_features={num_features}: need at least one feature")
    if not 0 < level < 1:
        raise ValueError(f"level={level}: pass a family-wise level in (0, 1), e.g. 0.05")
    return level / (2 * num_features)


def z_score(difference, se):
    """The z-score difference / se, NaN where se is 0 or non-finite (undetermined, never 0)."""
    difference, se = np.asarray(difference, float), np.asarray(se, float)
    ok = np.isfinite(se) & (se > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, difference / np.where(ok, se, 1.0), np.nan)


@dataclasses.dataclass(frozen=True)
class FeatureComparison:
    """The two laws of one scalar feature at one time, and their distances with noise levels."""

    feature: str
    time: float
    size_a: int
    size_b: int
    mean_a: float
    mean_b: float
    mean_se_a: float
    mean_se_b: float
    std_a: float
    std_b: float
    std_se_a: float
    std_se_b: float
    quantiles_a: tuple[float, ...]
    quantiles_b: tuple[float, ...]
    ks: float
    ks_noise: float
    ks_pvalue: float
    w1: float
    w1_noise: float
    alpha: float = 0.05

    @property
    def mean_z(self) -> float:
        """Difference of means in units of its standard error (NaN when that is 0/non-finite)."""
        return float(z_score(self.mean_a - self.mean_b, math.hypot(self.mean_se_a, self.mean_se_b)))

    @property
    def verdict(self) -> str:
        """One of "undetermined", "above noise" or "within noise".

        "undetermined": no usable standard error of the means; "above noise": the KS p-value or
        the two-sided p-value of the mean z-score below `alpha` (a family-wise level when the row
        is one of many, see `compare_arrays`); "within noise" otherwise.
        """
        z = self.mean_z
        if not math.isfinite(z):
            return "undetermined"
        z_pvalue = 2 * stats.norm.sf(abs(z))
        return "above noise" if min(self.ks_pvalue, z_pvalue) < self.alpha else "within noise"

    @property
    def noise_ratio(self) -> float:
        """The larger of KS / its noise level and W1 / its noise level (how far above noise)."""
        ratios = [
            v / s if s > 0 else (math.inf if v > 0 else 0.0)
            for v, s in ((self.ks, self.ks_noise), (self.w1, self.w1_noise))
        ]
        return max(ratios)

    def to_dict(self) -> dict:
        """The row as a JSON-ready dict, with its `mean_z` (None if not finite) and verdict."""
        out = dataclasses.asdict(self)
        z = self.mean_z
        out["mean_z"] = z if math.isfinite(z) else None
        out["verdict"] = self.verdict
        return out


def compare_arrays(
    x,
    y,
    names,
    *,
    time: float = 0.0,
    w1_rounds: int = 200,
    seed: int = 0,
    level: float = VERDICT_LEVEL,
) -> list[FeatureComparison]:
    """Compare two samples (size_a, F) and (size_b, F) of the features `names`, all at once.

    Each row's verdict tests at alpha = level / (2 F) (Bonferroni over the F features and the
    two tests, KS and means), so among many rows of equal laws none is "above noise" with
    probability at least 1 - level. Non-finite values are an error (compare surviving paths
    only), as are fewer than 2 values.
    """
    x, y, _ = dist._as_2d(x, y)
    for which, s in (("first", x), ("second", y)):
        if s.shape[0] < 2:
            raise ValueError(
                f"t={time:.4g}: the {which} sample has {s.shape[0]} value(s); need >= 2 (too few "
                "samples, or every path stopped before this time)"
            )
        bad = ~np.all(np.isfinite(s), axis=0)
        if bad.any():
            raise ValueError(
                f"{names[int(np.argmax(bad))]} at t={time:.4g}: the {which} sample has non-finite "
                "values; compare surviving paths only (see `CovarianceSamples.usable`)"
            )
    mean_a, mse_a, sd_a, sse_a, q_a = dist.moments(x)
    mean_b, mse_b, sd_b, sse_b, q_b = dist.moments(y)
    ks = dist.ks_statistic(x, y)
    pvalue = dist.ks_pvalue(ks, x.shape[0], y.shape[0])
    ks_noise = dist.ks_noise(x.shape[0], y.shape[0])
    w1 = dist.wasserstein1(x, y)
    w1_noise = dist.wasserstein_noise(x, y, rounds=w1_rounds, seed=seed)
    alpha = verdict_alpha(len(names), level)
    return [
        FeatureComparison(
            feature=name,
            time=float(time),
            size_a=int(x.shape[0]),
            size_b=int(y.shape[0]),
            mean_a=float(mean_a[i]),
            mean_b=float(mean_b[i]),
            mean_se_a=float(mse_a[i]),
            mean_se_b=float(mse_b[i]),
            std_a=float(sd_a[i]),
            std_b=float(sd_b[i]),
            std_se_a=float(sse_a[i]),
            std_se_b=float(sse_b[i]),
            quantiles_a=tuple(float(v) for v in q_a[:, i]),
            quantiles_b=tuple(float(v) for v in q_b[:, i]),
            ks=float(ks[i]),
            ks_noise=ks_noise,
            ks_pvalue=float(pvalue[i]),
            w1=float(w1[i]),
            w1_noise=float(w1_noise[i]),
            alpha=alpha,
        )
        for i, name in enumerate(names)
    ]


def compare_feature(
    x, y, *, feature: str = "x", time: float = 0.0, w1_rounds: int = 200, seed: int = 0
) -> FeatureComparison:
    """Compare two samples of one scalar (see `compare_arrays`)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    return compare_arrays(x, y, [feature], time=time, w1_rounds=w1_rounds, seed=seed)[0]
