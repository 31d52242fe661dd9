"""Confidence intervals of a forecast: distribution-free quantile intervals and binomial events.

Both are exact (not asymptotic) and assume only that the samples are independent draws from one
law, which the samplers guarantee (one key per sample).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

LEVEL = 0.95
"""Nominal coverage of every interval of a forecast."""


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval [lower, upper] of (at least) `coverage`.

    `coverage` is the interval's exact coverage probability where it can be computed (for an
    order-statistic interval it is a binomial probability at least LEVEL unless the sample is too
    small to reach it, see `quantile_interval`); `level` is the nominal level asked for.
    """

    value: float
    lower: float
    upper: float
    coverage: float
    level: float = LEVEL

    def to_dict(self) -> dict:
        """Plain JSON-ready dictionary (non-finite numbers as None)."""
        return {k: _json_float(v) for k, v in dataclasses.asdict(self).items()}


def _json_float(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def quantile_interval(values, p: float, level: float = LEVEL) -> Estimate:
    """The sample p-quantile of `values` with a distribution-free order-statistic interval.

    With N independent samples and sorted values x_(1) <= ... <= x_(N), the number of samples
    below the true quantile q_p is Binomial(N, p), so for ranks r < s

        P(x_(r) <= q_p <= x_(s)) >= F(s - 1) - F(r - 1),   F the Binomial(N, p) cdf,

    whatever the (continuous or not) law of the values. The ranks are r = F^{-1}(alpha / 2) and
    s = F^{-1}(1 - alpha / 2) + 1 with alpha = 1 - level (`scipy.stats.binom.ppf`), clipped to
    1..N; the returned `coverage` is F(s - 1) - F(r - 1) of the clipped ranks, below `level`
    only when N is too small for the quantile (e.g. N < 59 for q05 at 95 %). The point estimate
    is `numpy.quantile` (linear interpolation), which lies between x_(r) and x_(s).
    """
    x = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    n = x.size
    if n == 0:
        raise ValueError("quantile_interval: no values; pass at least one sample")
    alpha = 1.0 - level
    binom = stats.binom(n, p)
    r = int(np.clip(binom.ppf(alpha / 2), 1, n))
    s = int(np.clip(binom.ppf(1 - alpha / 2) + 1, 1, n))
    coverage = float(binom.cdf(s - 1) - binom.cdf(r - 1))
    value = float(np.quantile(x, p))
    return Estimate(value, float(min(x[r - 1], value)), float(max(x[s - 1], value)), coverage)


def proportion_interval(successes: int, trials: int, level: float = LEVEL) -> Estimate:
    """The fraction successes / trials with its exact Clopper-Pearson interval.

    The interval is [B^{-1}(alpha/2; k, N - k + 1), B^{-1}(1 - alpha/2; k + 1, N - k)] with B the
    Beta cdf (lower 0 when k = 0, upper 1 when k = N): the set of probabilities not rejected by
    either one-sided binomial test at level alpha / 2. Its coverage is at least `level` for every
    true probability (conservative), so `coverage` reports `level`.
    """
    k, n = int(successes), int(trials)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"proportion_interval: {k} successes in {n} trials is invalid")
    alpha = 1.0 - level
    lower = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return Estimate(k / n, lower, upper, level, level)
