"""Sample-size planning: how many samples per source a comparison needs to detect a gap.

A row of a comparison (`rows.FeatureComparison`) is "above noise" when the KS p-value or the
two-sided p-value of the z-score of the difference of means falls below the per-test level
alpha = level / (2 F) (`rows.verdict_alpha`: family-wise `level` over the F features of one
time, two tests per row). The plan asks for the samples at which the mean test alone detects a
gap delta in a feature's mean with probability `power` (the KS test can only add detections,
so the plan is, if anything, conservative for a shift of the mean).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from .rows import VERDICT_LEVEL, verdict_alpha

POWER = 0.8
"""Default power of a plan."""


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """The samples per source that detect a gap in one feature's mean (two-sample z-test).

    Two sources with standard deviations s_a and s_b of the feature and N samples each: the
    difference of sample means has standard error se = sqrt((s_a^2 + s_b^2) / N), and the
    two-sided test at level alpha detects a true gap delta with probability

        power(N) = Phi(delta / se - z) + Phi(-delta / se - z),   z = Phi^-1(1 - alpha / 2).

    Dropping the second term (below alpha / 2) and solving power(N) = 1 - beta gives the
    normal approximation

        N = ceil( (z_(1 - alpha/2) + z_(1 - beta))^2 (s_a^2 + s_b^2) / delta^2 ),

    which is 2 (z_(1 - alpha/2) + z_(1 - beta))^2 / d^2 for equal sds (d = delta / s, the
    standardised gap): 63 per group at d = 0.5, alpha = 0.05, power 0.8, the textbook value of
    the normal approximation (the t-test adds one: 64).
    """

    feature: str
    gap: float
    sd_a: float
    sd_b: float
    alpha: float
    power: float
    samples: int

    def to_dict(self) -> dict:
        """The plan as a JSON-ready dict."""
        return dataclasses.asdict(self)


def plan_samples(
    sd: float,
    gap: float,
    *,
    num_features: int = 1,
    level: float = VERDICT_LEVEL,
    power: float = POWER,
    sd_b: float | None = None,
    feature: str = "x",
) -> SamplePlan:
    """The samples per source that detect a gap `gap` in a feature's mean (see `SamplePlan`).

    `sd` (and `sd_b`, default `sd`) are the feature's standard deviations in the two sources;
    the test's level is the verdict's: alpha = level / (2 num_features) (`rows.verdict_alpha`).
    """
    if not (math.isfinite(gap) and gap > 0):
        raise ValueError(f"gap={gap!r}: pass the gap to detect, a finite number > 0")
    for name, value in (("sd", sd), ("sd_b", sd if sd_b is None else sd_b)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}={value!r}: pass a finite standard deviation >= 0")
    if not 0 < power < 1:
        raise ValueError(f"power={power!r}: pass a probability in (0, 1), e.g. 0.8")
    sd_b = sd if sd_b is None else sd_b
    alpha = verdict_alpha(num_features, level)
    z = stats.norm.isf(alpha / 2) + stats.norm.ppf(power)
    samples = max(2, math.ceil(z**2 * (sd**2 + sd_b**2) / gap**2))
    return SamplePlan(feature, float(gap), float(sd), float(sd_b), alpha, float(power), samples)


def detection_power(
    gap: float, sd_a: float, sd_b: float, size_a: int, size_b: int, alpha: float
) -> float:
    """The probability that the two-sided mean test at level `alpha` detects the gap `gap`.

    Normal approximation with both terms (see `SamplePlan`), at sizes `size_a` and `size_b`.
    """
    se = math.sqrt(sd_a**2 / size_a + sd_b**2 / size_b)
    if se == 0:
        return 1.0
    z = stats.norm.isf(alpha / 2)
    return float(stats.norm.cdf(gap / se - z) + stats.norm.cdf(-gap / se - z))


def plan_from_pilot(
    pilot: np.ndarray,
    names: list[str],
    gap: float,
    *,
    num_features: int | None = None,
    level: float = VERDICT_LEVEL,
    power: float = POWER,
) -> list[SamplePlan]:
    """One `SamplePlan` per feature from a pilot sample `pilot` (samples, len(names)).

    The pilot's standard deviation stands for both sources' (they should agree if the laws do;
    a pilot of P samples sets N to within a relative error of about sqrt(2 / P), 8 % at
    P = 300). `num_features`: the F of the verdict's level (default: len(names)).
    """
    pilot = np.asarray(pilot, dtype=np.float64)
    if pilot.ndim != 2 or pilot.shape[1] != len(names) or pilot.shape[0] < 2:
        raise ValueError(
            f"pilot has shape {pilot.shape}; need (samples >= 2, {len(names)}) for the features"
        )
    count = len(names) if num_features is None else num_features
    sds = pilot.std(axis=0, ddof=1)
    return [
        plan_samples(float(sd), gap, num_features=count, level=level, power=power, feature=name)
        for name, sd in zip(names, sds, strict=True)
    ]
