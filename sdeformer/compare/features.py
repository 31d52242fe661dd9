"""Scalar features of covariance samples: token correlations, log variances, many-token summaries.

Names are unambiguous at every m: `rho_a_b` (a < b) is the correlation
rho_ab = V_ab / sqrt(V_aa V_bb) of tokens a and b, `logvar_a` is log V_aa, and the summary features
(docs/theory.md, rank collapse) describe all m tokens at once:

- `mean_rho`: the mean off-diagonal correlation (1 under rank collapse);
- `min_eig_rho`: the smallest eigenvalue of the correlation matrix R (0 under rank collapse);
- `stable_rank_rho`: tr(R)^2 / tr(R^2) = m^2 / ||R||_F^2, between 1 and m;
- `logvar_spread`: the standard deviation over tokens of log V_aa;
- `log_mean_var`: log( tr(V) / tr(V_0) ), the growth of the mean token variance from the input
  V_0 (it needs V_0: `trace0`, taken from a source's samples at t = 0).

`mean_rho`, `min_eig_rho` and `log_mean_var` are the features of the design forecast
(`sdeformer.design`), which computes them here; the correlation measures are those of
`sdeformer.metrics` (one definition for NumPy and JAX arrays).

At many tokens the m(m-1)/2 pairs are too many to compare one by one: `select_pairs` keeps every
pair up to `max_pairs` and otherwise a uniform random subset drawn with a fixed seed (recorded in
the comparison's output), always including the pair (0, 1).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from .. import metrics

SUMMARY_FEATURES = ("mean_rho", "min_eig_rho", "stable_rank_rho", "logvar_spread", "log_mean_var")
"""Features that summarise all tokens (see the module docstring)."""

MAX_PAIRS = 2048
"""Default largest number of pairs compared one by one (all pairs up to m = 64)."""

PAIR_SEED = 0
"""Default seed of the random subset of pairs at large m."""

_RHO = re.compile(r"^rho_(\d+)_(\d+)$")
_LOGVAR = re.compile(r"^logvar_(\d+)$")


def rho_name(a: int, b: int) -> str:
    """The name `rho_a_b` of the correlation of tokens a and b."""
    return f"rho_{a}_{b}"


def canonical_name(name: str, m: int) -> str:
    """The canonical form of a feature name, or a ValueError naming the valid forms.

    Accepts `rho_a_b` (either order), `logvar_a` and the summary features.
    """
    if name in SUMMARY_FEATURES:
        return name
    match = _RHO.match(name)
    if match:
        a, b = sorted(int(g) for g in match.groups())
        if a != b and b < m:
            return rho_name(a, b)
    match = _LOGVAR.match(name)
    if match and int(match.group(1)) < m:
        return f"logvar_{int(match.group(1))}"
    raise ValueError(
        f"unknown feature {name!r} for m={m} tokens; use rho_a_b (0 <= a < b < {m}), "
        f"logvar_a (0 <= a < {m}) or one of {SUMMARY_FEATURES}"
    )


def select_pairs(m: int, *, max_pairs: int | None = MAX_PAIRS, seed: int = PAIR_SEED):
    """Index arrays (a, b), a < b, of the pairs compared one by one, and whether they are a subset.

    All m(m-1)/2 pairs when they number at most `max_pairs` (or `max_pairs` is None); otherwise
    `max_pairs` pairs drawn uniformly without replacement with `numpy.random.default_rng(seed)`,
    always including (0, 1), sorted.
    """
    a, b = np.triu_indices(m, k=1)
    if max_pairs is None or a.size <= max_pairs:
        return a, b, False
    if max_pairs < 1:
        raise ValueError(f"max_pairs={max_pairs}: pass at least 1 (or None for every pair)")
    rng = np.random.default_rng(seed)
    chosen = 1 + rng.choice(a.size - 1, size=max_pairs - 1, replace=False)  # index 0 is (0, 1)
    chosen = np.sort(np.concatenate([[0], chosen]))
    return a[chosen], b[chosen], True


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """Which features a comparison uses: pairs (a, b), tokens for log variances, summaries."""

    m: int
    pair_a: np.ndarray
    pair_b: np.ndarray
    tokens: np.ndarray
    summaries: tuple[str, ...]
    subset: bool = False
    seed: int | None = None
    trace0: float | None = None

    @classmethod
    def default(
        cls,
        m: int,
        *,
        max_pairs: int | None = MAX_PAIRS,
        seed: int = PAIR_SEED,
        summaries: bool | None = None,
        trace0: float | None = None,
    ) -> FeatureSet:
        """Every pair (or a subset), every log variance, and the summary features when m >= 3.

        Every pair up to `max_pairs` (else a seeded random subset); the summary features by
        default when m >= 3 (at m = 2 they repeat rho_0_1), `log_mean_var` only with `trace0`.
        """
        a, b, subset = select_pairs(m, max_pairs=max_pairs, seed=seed)
        use_summaries = m >= 3 if summaries is None else summaries
        chosen = tuple(f for f in SUMMARY_FEATURES if trace0 is not None or f != "log_mean_var")
        return cls(
            m,
            a,
            b,
            np.arange(m),
            chosen if use_summaries else (),
            subset,
            seed if subset else None,
            trace0,
        )

    @classmethod
    def from_names(cls, names, m: int, *, trace0: float | None = None) -> FeatureSet:
        """The features named (any name `canonical_name` accepts); `trace0` for log_mean_var."""
        canon = list(dict.fromkeys(canonical_name(n, m) for n in names))
        pairs = [tuple(int(g) for g in _RHO.match(n).groups()) for n in canon if _RHO.match(n)]
        tokens = [int(_LOGVAR.match(n).group(1)) for n in canon if _LOGVAR.match(n)]
        summaries = tuple(n for n in canon if n in SUMMARY_FEATURES)
        a = np.array([p[0] for p in pairs], dtype=np.int64)
        b = np.array([p[1] for p in pairs], dtype=np.int64)
        return cls(m, a, b, np.array(tokens, dtype=np.int64), summaries, trace0=trace0)

    @property
    def names(self) -> list[str]:
        """The feature names: summaries, then correlations `rho_a_b`, then `logvar_a`."""
        return [
            *self.summaries,
            *(rho_name(int(a), int(b)) for a, b in zip(self.pair_a, self.pair_b, strict=True)),
            *(f"logvar_{int(a)}" for a in self.tokens),
        ]

    def describe(self) -> dict:
        """What was compared, for the JSON output (the pair subset is reproducible from it)."""
        total = self.m * (self.m - 1) // 2
        return {
            "m": self.m,
            "pairs_compared": int(self.pair_a.size),
            "pairs_total": total,
            "pair_subset": bool(self.subset),
            "pair_seed": self.seed,
            "pair_rule": (
                f"uniform random subset without replacement, numpy default_rng({self.seed}), "
                "pair (0, 1) always included"
                if self.subset
                else "every pair"
            ),
            "summaries": list(self.summaries),
        }

    def values(self, vs, *, chunk_bytes: int = 2**27) -> np.ndarray:
        """Feature values (samples, features) of covariances `vs` (samples, m, m).

        In the order of `names`. Non-finite where V is not positive on the diagonal. Works through
        the samples in chunks of about `chunk_bytes` of float64 matrices, so memory stays bounded
        at large m.
        """
        if np.ndim(vs) != 3 or np.shape(vs)[-1] != self.m:
            raise ValueError(f"vs has shape {np.shape(vs)}; need (samples, {self.m}, {self.m})")
        size = np.shape(vs)[0]
        step = max(1, chunk_bytes // (8 * self.m * self.m))
        out = np.empty((size, len(self.names)))
        for start in range(0, size, step):
            out[start : start + step] = self._values(vs[start : start + step])
        return out

    def _values(self, vs) -> np.ndarray:
        vs = np.asarray(vs, dtype=np.float64)
        diag = np.diagonal(vs, axis1=-2, axis2=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.sqrt(diag)
            rho = vs[:, self.pair_a, self.pair_b] / (scale[:, self.pair_a] * scale[:, self.pair_b])
            logvar = np.log(diag[:, self.tokens])
        columns = (
            [summary_features(vs, self.summaries, trace0=self.trace0)] if self.summaries else []
        )
        return np.concatenate([*columns, rho, logvar], axis=1)


def summary_features(vs, names=None, *, trace0: float | None = None) -> np.ndarray:
    """The summary features `names` (samples, len(names)) of covariances (samples, m, m).

    `names` defaults to `SUMMARY_FEATURES` (without `log_mean_var` unless `trace0` is given).
    `trace0` = tr(V_0) is needed for `log_mean_var` (a ValueError without it). The smallest
    eigenvalue costs one symmetric eigenvalue problem per sample (O(m^3);
    `metrics.smallest_eigenvalues`); the others are O(m^2).
    """
    if names is None:
        names = [f for f in SUMMARY_FEATURES if trace0 is not None or f != "log_mean_var"]
    vs = np.asarray(vs, dtype=np.float64)
    diag = np.diagonal(vs, axis1=-2, axis2=-1)
    out = []
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = metrics.correlation(vs)
        for name in names:
            if name == "mean_rho":
                out.append(metrics.mean_correlation(vs))
            elif name == "stable_rank_rho":
                out.append(metrics.stable_rank(rho))
            elif name == "min_eig_rho":
                out.append(metrics.smallest_eigenvalues(rho))
            elif name == "logvar_spread":
                out.append(np.log(diag).std(axis=1))
            elif name == "log_mean_var":
                if trace0 is None:
                    raise ValueError(
                        "log_mean_var = log(tr V / tr V_0) needs the input's trace: pass "
                        "trace0=tr(V_0) (a source saved at t = 0 gives it)"
                    )
                out.append(np.log(np.trace(vs, axis1=-2, axis2=-1) / trace0))
            else:
                raise ValueError(
                    f"unknown summary feature {name!r}; choose from {SUMMARY_FEATURES}"
                )
    return np.stack(out, axis=1)


def initial_trace(ts, vs) -> float | None:
    """tr(V_0) of samples `vs` (samples, k, m, m) at times `ts` (k,), if they start at t = 0.

    The mean over samples (every sample of a source starts at the same V_0); None when the
    first time is not 0.
    """
    if ts[0] != 0:
        return None
    return float(np.trace(np.asarray(vs[:, 0], dtype=np.float64), axis1=-2, axis2=-1).mean())


class Features(Mapping):
    """Features of covariances `vs` (..., m, m) as a read-only mapping name -> array (...).

    Computed when asked for (so asking for one feature at m = 256 costs one feature). Accepts
    every name `canonical_name` accepts (legacy `rho_ab` at m <= 10 too).
    """

    def __init__(self, vs, feature_set: FeatureSet | None = None, *, trace0: float | None = None):
        self._vs = np.asarray(vs, dtype=np.float64)
        self._m = self._vs.shape[-1]
        self._trace0 = trace0
        default = FeatureSet.default(self._m, max_pairs=None, trace0=trace0)
        self._names = (feature_set or default).names
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            key = canonical_name(name, self._m)
        except ValueError as err:
            raise KeyError(str(err)) from None
        if key not in self._cache:
            lead = self._vs.shape[:-2]
            flat = self._vs.reshape(-1, self._m, self._m)
            one = FeatureSet.from_names([key], self._m, trace0=self._trace0)
            values = one.values(flat)[:, 0]
            self._cache[key] = values.reshape(lead)
        return self._cache[key]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def features(vs, feature_set: FeatureSet | None = None, *, trace0: float | None = None) -> Features:
    """Scalar features of covariances `vs` (..., m, m): a mapping name -> array (...).

    Keys: every `rho_a_b` and `logvar_a` (and the summaries at m >= 3, `log_mean_var` when
    `trace0` = tr(V_0) is given), or those of `feature_set`; values are computed on access. To
    compare many features at once use `FeatureSet.values` (one (samples, features) array).
    """
    return Features(vs, feature_set, trace0=trace0)
