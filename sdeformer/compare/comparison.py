"""Feature-by-feature comparison of two sources at chosen times (vectorised over features).

For every feature (see `features.FeatureSet`) and time: means and standard deviations with
standard errors and the z-score of the difference of means, quantiles, the KS statistic with its
p-value and 95 % noise level (`scipy.stats.kstwo`), W1 with its 95 % permutation noise level.
All features are compared in a few array operations (one sort per feature, one matrix product
for the permutation null), so m = 256 tokens cost seconds, not hours.

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
from .features import SUMMARY_FEATURES, FeatureSet, canonical_name
from .samples import CovarianceSamples

MODES = ("survival", "stopped")

MAX_FAILED_FRACTION = 0.01
"""Default largest fraction of numerically failed paths (PSD exits) a comparison accepts."""


class DiscretisationError(ValueError):
    """Too many SDE paths failed numerically (left the PSD cone) for a trustworthy comparison."""


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
    level: float = 0.05,
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
            alpha=level / (2 * len(names)),
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


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Distances between two sources at chosen times, feature by feature."""

    label_a: str
    label_b: str
    mode: str
    rows: tuple[FeatureComparison, ...]
    stopped_a: dict[float, float]
    stopped_b: dict[float, float]
    failed_a: dict[float, float] = dataclasses.field(default_factory=dict)
    failed_b: dict[float, float] = dataclasses.field(default_factory=dict)
    feature_set: dict = dataclasses.field(default_factory=dict)

    def save(self, path):
        """Write this comparison to one `.npz` file (see `sdeformer.results.arrays`)."""
        from ..results.arrays import save_arrays_module

        return save_arrays_module(path, self)

    @classmethod
    def load(cls, path) -> Comparison:
        """Read a comparison written by `save`."""
        from ..results.arrays import load_arrays_module

        return load_arrays_module(cls, path)

    def to_dataframe(self):
        """A `pandas.DataFrame` with one row per (feature, time) comparison."""
        from ..results.views import to_dataframe

        return to_dataframe(self, records="rows")

    def row(self, feature: str, time: float | None = None) -> FeatureComparison:
        """The row of `feature` (at `time`, else the last time); KeyError if there is none."""
        m = self.feature_set.get("m", 10)
        try:
            feature = canonical_name(feature, m)
        except ValueError:
            pass
        matches = [r for r in self.rows if r.feature == feature]
        if time is not None:
            matches = [r for r in matches if math.isclose(r.time, time, rel_tol=1e-6)]
        if not matches:
            raise KeyError(f"no comparison of {feature!r} at t={time}")
        return matches[-1]

    def to_dict(self) -> dict:
        """The comparison as a JSON-ready dict: labels, stopped fractions, verdicts and rows."""
        return {
            "a": self.label_a,
            "b": self.label_b,
            "mode": self.mode,
            "features": self.feature_set,
            "stopped_fraction_a": {str(t): f for t, f in self.stopped_a.items()},
            "stopped_fraction_b": {str(t): f for t, f in self.stopped_b.items()},
            "failed_fraction_a": {str(t): f for t, f in self.failed_a.items()},
            "failed_fraction_b": {str(t): f for t, f in self.failed_b.items()},
            "verdicts": self.verdict_counts(),
            "levels": self.levels_note(),
            "rows": [r.to_dict() for r in self.rows],
        }

    def levels_note(self) -> str:
        """What the verdicts and the noise columns mean, and the alarms to expect by chance.

        A row's verdict tests at alpha = level / (2 F) (F features at its time, two tests), so
        with equal laws at most `level` rows per time are "above noise" on average (at most
        `level` x times over the table). The KS and W1 noise columns are plain 95 % levels of
        one row: with equal laws about 5 % of the rows exceed each of them by chance.
        """
        times = sorted({r.time for r in self.rows})
        per_time = {t: [r for r in self.rows if r.time == t] for t in times}
        levels = [2 * len(rows) * rows[0].alpha for rows in per_time.values() if rows]
        if not levels:
            return "no rows"
        level = max(levels)
        alpha = min(r.alpha for r in self.rows)
        expected = sum(levels)
        return (
            f"verdict level: family-wise {level:.3g} at each of {len(times)} time(s) (Bonferroni: "
            f"alpha = {alpha:.3g} per test, KS and means, on each of up to "
            f"{max(len(v) for v in per_time.values())} features); with equal laws expect at "
            f"most {expected:.2g} 'above noise' row(s) by chance. The KS / W1 noise columns are "
            f"95 % levels of one row: about {0.05 * len(self.rows):.1f} of the {len(self.rows)} "
            "rows exceed each by chance, which alone is no alarm"
        )

    def verdict_counts(self) -> dict[str, int]:
        """How many rows have each verdict ("within noise", "above noise", "undetermined")."""
        out = {"within noise": 0, "above noise": 0, "undetermined": 0}
        for r in self.rows:
            out[r.verdict] += 1
        return out

    def table(self, *, max_rows: int = 24, worst: int = 8) -> str:
        """A markdown table of the comparison.

        With at most `max_rows` rows, every (time, feature); otherwise the summary features and,
        at each time, the `worst` pairs and log variances furthest above their noise levels (the
        JSON output keeps every row).
        """
        head = (
            f"| t | feature | mean {self.label_a} | mean {self.label_b} | z | "
            f"sd {self.label_a} | sd {self.label_b} | KS | KS noise | W1 | W1 noise | verdict |"
        )
        lines = [head, "|" + "---|" * 12]
        shown = list(self.rows)
        if len(shown) > max_rows:
            shown = []
            for t in sorted({r.time for r in self.rows}):
                at_t = [r for r in self.rows if r.time == t]
                shown += [r for r in at_t if r.feature in SUMMARY_FEATURES]
                for prefix in ("rho_", "logvar_"):
                    group = [
                        r
                        for r in at_t
                        if r.feature.startswith(prefix) and r.feature not in SUMMARY_FEATURES
                    ]
                    shown += sorted(group, key=lambda r: -r.noise_ratio)[:worst]
        for r in shown:
            z = r.mean_z
            lines.append(
                f"| {r.time:.3g} | {r.feature} | {r.mean_a:.4f} +- {r.mean_se_a:.4f} | "
                f"{r.mean_b:.4f} +- {r.mean_se_b:.4f} | {z:+.2f} | {r.std_a:.4f} | "
                f"{r.std_b:.4f} | {r.ks:.4f} | {r.ks_noise:.4f} | {r.w1:.4f} | {r.w1_noise:.4f} | "
                f"{r.verdict} |"
            )
        stops = ", ".join(
            f"t={t:.3g}: {self.label_a} {self.stopped_a[t]:.2%}, {self.label_b} "
            f"{self.stopped_b[t]:.2%}"
            for t in self.stopped_a
        )
        note = (
            "laws conditional on survival to t"
            if self.mode == "survival"
            else "laws of the stopped processes V_(t ^ tau)"
        )
        out = "\n".join(lines) + f"\n\nstopped paths ({note}): {stops}"
        failed = {t: max(self.failed_a.get(t, 0), self.failed_b.get(t, 0)) for t in self.stopped_a}
        if any(f > 0 for f in failed.values()):
            out += "\nnumerical failures (PSD exits, excluded): " + ", ".join(
                f"t={t:.3g}: {self.label_a} {self.failed_a.get(t, 0):.2%}, {self.label_b} "
                f"{self.failed_b.get(t, 0):.2%}"
                for t in failed
            )
        counts = self.verdict_counts()
        out += "\nverdicts over all rows: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        out += "\n" + self.levels_note()
        if len(shown) < len(self.rows):
            out += (
                f"\n(showing {len(shown)} of {len(self.rows)} rows: summary features and the "
                f"{worst} pairs / log variances furthest above noise at each time; "
                f"{self.feature_set.get('pair_rule', '')})"
            )
        return out


def check_failed_fraction(src, times, max_failed_fraction: float = MAX_FAILED_FRACTION) -> None:
    """Raise `DiscretisationError` where more than `max_failed_fraction` of `src` failed by t.

    Checked at each of `times` (the comparison times), so a source can be checked on its own,
    before the other source is sampled.
    """
    for t in times:
        fraction = float(src.failed_fraction[src.index_of(t)])
        if fraction > max_failed_fraction:
            raise DiscretisationError(
                f"{src.label}: {fraction:.2%} of the paths left the PSD cone (or the solver "
                f"failed) by t={t:.4g}, above max_failed_fraction={max_failed_fraction:.2%}: "
                "outside the step rule these are discretisation errors of the Euler scheme "
                "(inside it, a small fraction of the SDE's paths reach a singular V: "
                "sdeformer.sde._steps); take at least suggest_num_steps(...) steps, or the "
                "exponential solver, which stays in the cone"
            )


def compare_sources(
    a: CovarianceSamples,
    b: CovarianceSamples,
    *,
    times: list[float] | None = None,
    feature_names: list[str] | None = None,
    mode: str = "survival",
    max_pairs: int | None = None,
    pair_seed: int = 0,
    w1_rounds: int = 200,
    seed: int = 0,
    max_failed_fraction: float = MAX_FAILED_FRACTION,
) -> Comparison:
    """Compare the laws of two sources at `times` (default: the last common time).

    mode "survival": at each t, the paths of each source that have not stopped by t (laws
    conditional on survival); mode "stopped": all paths, held at their exit state.
    Numerically failed paths (PSD exits of the SDE) are left out in both modes; a
    `DiscretisationError` is raised when their fraction exceeds `max_failed_fraction` in either
    source (more solver steps fix it).
    `feature_names` defaults to `FeatureSet.default(m, max_pairs=..., seed=pair_seed)`: every pair
    up to `max_pairs` (default `features.MAX_PAIRS`), every log variance and the summaries.
    """
    from .features import MAX_PAIRS

    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown; choose from {MODES}")
    if a.m != b.m:
        raise ValueError(f"{a.label} has m={a.m} tokens and {b.label} m={b.m}")
    if times is None:
        times = [float(min(a.ts[-1], b.ts[-1]))]
    if feature_names is not None:
        fs = FeatureSet.from_names(feature_names, a.m)
    else:
        fs = FeatureSet.default(
            a.m, max_pairs=MAX_PAIRS if max_pairs is None else max_pairs, seed=pair_seed
        )
    rows, stopped_a, stopped_b, failed_a, failed_b = [], {}, {}, {}, {}
    for src in (a, b):
        check_failed_fraction(src, times, max_failed_fraction)
    for t in times:
        ia, ib = a.index_of(t), b.index_of(t)
        keep_a, keep_b = a.usable(ia, mode), b.usable(ib, mode)
        x = fs.values(a.vs[keep_a, ia])
        y = fs.values(b.vs[keep_b, ib])
        stopped_a[float(t)] = float(a.stopped_fraction[ia])
        stopped_b[float(t)] = float(b.stopped_fraction[ib])
        failed_a[float(t)] = float(a.failed_fraction[ia])
        failed_b[float(t)] = float(b.failed_fraction[ib])
        rows += compare_arrays(x, y, fs.names, time=float(t), w1_rounds=w1_rounds, seed=seed)
    return Comparison(
        a.label,
        b.label,
        mode,
        tuple(rows),
        stopped_a,
        stopped_b,
        failed_a,
        failed_b,
        fs.describe(),
    )
