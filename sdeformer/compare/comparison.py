"""Two sources compared at chosen times, feature by feature: `compare_sources` and its result.

`Comparison` holds the rows (`rows.FeatureComparison`, one per feature and time), the stopped
and failed fractions of both sources, its markdown table and the note on the verdict levels.
Numerically failed paths (PSD exits of the SDE) are excluded, and a comparison is refused
(`DiscretisationError`) when too many failed.
"""

from __future__ import annotations

import dataclasses
import math

from .features import SUMMARY_FEATURES, FeatureSet, canonical_name, initial_trace
from .rows import FeatureComparison as FeatureComparison
from .rows import compare_arrays as compare_arrays
from .rows import compare_feature as compare_feature
from .rows import z_score as z_score
from .samples import CovarianceSamples

MODES = ("survival", "stopped")

STOPPED_Z = 3.0
"""`Comparison.stopping_notes`: the |z| of two stopped fractions above which a note is printed."""

MAX_FAILED_FRACTION = 0.01
"""Default largest fraction of numerically failed paths (PSD exits) a comparison accepts."""


class DiscretisationError(ValueError):
    """Too many SDE paths failed numerically (left the PSD cone) for a trustworthy comparison."""


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

    def __repr__(self) -> str:
        times = ", ".join(f"{t:.3g}" for t in self._rows_by_time())
        counts = ", ".join(f"{k} {v}" for k, v in self.verdict_counts().items())
        return (
            f"Comparison({self.label_a!r} vs {self.label_b!r}, mode {self.mode!r}: "
            f"{len(self.rows)} rows at t = {times}; {counts}; .table() shows them)"
        )

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
            "stopped_fraction_a": _by_time_text(self.stopped_a),
            "stopped_fraction_b": _by_time_text(self.stopped_b),
            "failed_fraction_a": _by_time_text(self.failed_a),
            "failed_fraction_b": _by_time_text(self.failed_b),
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
        per_time = self._rows_by_time()
        levels = [2 * len(rows) * rows[0].alpha for rows in per_time.values() if rows]
        if not levels:
            return "no rows"
        level = max(levels)
        alpha = min(r.alpha for r in self.rows)
        expected = sum(levels)
        return (
            f"verdict level: family-wise {level:.3g} at each of {len(per_time)} time(s) "
            "(Bonferroni: "
            f"alpha = {alpha:.3g} per test, KS and means, on each of up to "
            f"{max(len(v) for v in per_time.values())} features); with equal laws expect at "
            f"most {expected:.2g} 'above noise' row(s) by chance. The KS / W1 noise columns are "
            f"95 % levels of one row: about {0.05 * len(self.rows):.1f} of the {len(self.rows)} "
            "rows exceed each by chance, which alone is no alarm"
        )

    def stopping_notes(self, z_max: float = STOPPED_Z) -> list[str]:
        """Notes on the times where rows are above noise and the stopped fractions differ.

        The stopped fractions of the two sources are compared by a two-proportion z test (the
        path counts are the rows' sizes over the fractions kept). Where |z| > `z_max`, the
        sources differ in how often their paths stop (a real difference, in the upper tail of
        the variances, not a chance alarm), and the laws compared at that time, conditional on
        survival or stopped, differ in their tails by that alone.
        """
        notes = []
        for t, rows in self._rows_by_time().items():
            above = [r.feature for r in rows if r.verdict == "above noise"]
            if not above:
                continue
            sa, sb = self.stopped_a.get(t, 0.0), self.stopped_b.get(t, 0.0)
            kept_a = 1 - sa - self.failed_a.get(t, 0.0) if self.mode == "survival" else 1.0
            kept_b = 1 - sb - self.failed_b.get(t, 0.0) if self.mode == "survival" else 1.0
            na = rows[0].size_a / max(kept_a, 1e-12)
            nb = rows[0].size_b / max(kept_b, 1e-12)
            pooled = (sa * na + sb * nb) / (na + nb)
            se = math.sqrt(max(pooled * (1 - pooled), 0.0) * (1 / na + 1 / nb))
            z = (sb - sa) / se if se > 0 else 0.0
            if abs(z) > z_max:
                notes.append(
                    f"note: at t={t:.3g} the sources stop different fractions of their paths "
                    f"({self.label_a} {sa:.2%}, {self.label_b} {sb:.2%}; z = {z:.1f}): a real "
                    "difference in the upper tail of the variances, not a chance alarm. The "
                    f"laws compared there ({self.mode}) differ in their tails by that alone, "
                    f"so the row(s) above noise at that time ({', '.join(above)}) can come "
                    "from it"
                )
        return notes

    def verdict_counts(self) -> dict[str, int]:
        """How many rows have each verdict ("within noise", "above noise", "undetermined")."""
        out = {"within noise": 0, "above noise": 0, "undetermined": 0}
        for r in self.rows:
            out[r.verdict] += 1
        return out

    def _rows_by_time(self) -> dict[float, list[FeatureComparison]]:
        """The rows at each time, in the order of the times."""
        return {
            t: [r for r in self.rows if r.time == t] for t in sorted({r.time for r in self.rows})
        }

    def _shown_rows(self, max_rows: int, worst: int) -> list[FeatureComparison]:
        """Every row up to `max_rows`, else the summaries and the `worst` rows of each group."""
        if len(self.rows) <= max_rows:
            return list(self.rows)
        shown = []
        for at_t in self._rows_by_time().values():
            shown += [r for r in at_t if r.feature in SUMMARY_FEATURES]
            for prefix in ("rho_", "logvar_"):
                group = [
                    r
                    for r in at_t
                    if r.feature.startswith(prefix) and r.feature not in SUMMARY_FEATURES
                ]
                shown += sorted(group, key=lambda r: -r.noise_ratio)[:worst]
        return shown

    def _fractions_text(self, of_a: dict, of_b: dict) -> str:
        """'t=0.5: a 1.00%, b 0.00%, ...': two sources' fractions at each compared time."""
        return ", ".join(
            f"t={t:.3g}: {self.label_a} {of_a.get(t, 0):.2%}, {self.label_b} {of_b.get(t, 0):.2%}"
            for t in self.stopped_a
        )

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
        shown = self._shown_rows(max_rows, worst)
        for r in shown:
            z = r.mean_z
            lines.append(
                f"| {r.time:.3g} | {r.feature} | {r.mean_a:.4f} +- {r.mean_se_a:.4f} | "
                f"{r.mean_b:.4f} +- {r.mean_se_b:.4f} | {z:+.2f} | {r.std_a:.4f} | "
                f"{r.std_b:.4f} | {r.ks:.4f} | {r.ks_noise:.4f} | {r.w1:.4f} | {r.w1_noise:.4f} | "
                f"{r.verdict} |"
            )
        note = (
            "laws conditional on survival to t"
            if self.mode == "survival"
            else "laws of the stopped processes V_(t ^ tau)"
        )
        out = "\n".join(lines) + f"\n\nstopped paths ({note}): "
        out += self._fractions_text(self.stopped_a, self.stopped_b)
        failed = {t: max(self.failed_a.get(t, 0), self.failed_b.get(t, 0)) for t in self.stopped_a}
        if any(f > 0 for f in failed.values()):
            out += "\nnumerical failures (PSD exits, excluded): "
            out += self._fractions_text(self.failed_a, self.failed_b)
        counts = self.verdict_counts()
        out += "\nverdicts over all rows: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        out += "\n" + self.levels_note()
        out += "".join(f"\n{note}" for note in self.stopping_notes())
        if len(shown) < len(self.rows):
            out += (
                f"\n(showing {len(shown)} of {len(self.rows)} rows: summary features and the "
                f"{worst} pairs / log variances furthest above noise at each time; "
                f"{self.feature_set.get('pair_rule', '')})"
            )
        return out


def _by_time_text(fractions: dict[float, float]) -> dict[str, float]:
    """A fraction per time, keyed by the time as text (JSON keys)."""
    return {str(t): f for t, f in fractions.items()}


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
                "(inside it, a small fraction of the SDE's paths reach a singular V, which more "
                "steps do not remove: docs/usage.md, 'How many SDE steps'); take at least "
                "suggest_num_steps(...) steps, or the exponential solver, which stays in the cone"
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
    up to `max_pairs` (default `features.MAX_PAIRS`), every log variance and the summaries
    (`log_mean_var` relative to tr(V_0) of `a` at t = 0, when `a` starts there).
    """
    from .features import MAX_PAIRS

    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown; choose from {MODES}")
    if a.m != b.m:
        raise ValueError(f"{a.label} has m={a.m} tokens and {b.label} m={b.m}")
    if times is None:
        times = [float(min(a.ts[-1], b.ts[-1]))]
    trace0 = initial_trace(a.ts, a.vs)  # tr(V_0), for log_mean_var
    if feature_names is not None:
        fs = FeatureSet.from_names(feature_names, a.m, trace0=trace0)
    else:
        fs = FeatureSet.default(
            a.m,
            max_pairs=MAX_PAIRS if max_pairs is None else max_pairs,
            seed=pair_seed,
            trace0=trace0,
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
