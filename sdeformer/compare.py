"""Distances between laws of covariance samples, with their statistical noise.

Sources of samples (explicit networks, the exact law chain, SDE paths) all give arrays of
covariances `V` of shape (samples, times, m, m) at common times. This module reduces them to
scalar features (correlations rho_ab, log variances log V_aa), and compares the two laws of each
feature at each time by:

- mean and standard deviation, each with its standard error, and the z-score of the difference;
- quantiles (5, 25, 50, 75, 95 %);
- the Kolmogorov-Smirnov statistic D with its p-value and the 95 % critical value
  1.358 sqrt((S1 + S2) / (S1 S2)) of D under equal laws (the noise level of D);
- the Wasserstein-1 distance with its noise level: the 95 % quantile of W1 under a permutation
  null (both samples drawn from the pooled set), so a W1 below it is indistinguishable from noise.

Everything here is host-side NumPy on moderate sample sizes; no plotting, no file I/O.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
from scipy import stats

KS_CRITICAL_95 = 1.3581
"""Asymptotic 95 % critical value of sqrt(S1 S2 / (S1 + S2)) D under equal laws."""


def features(vs: np.ndarray) -> dict[str, np.ndarray]:
    """Scalar features of covariances `vs` (..., m, m): `rho_ab` (a < b) and `logvar_a`."""
    vs = np.asarray(vs, dtype=np.float64)
    m = vs.shape[-1]
    diag = np.diagonal(vs, axis1=-2, axis2=-1)
    out = {}
    for a in range(m):
        for b in range(a + 1, m):
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"rho_{a}{b}"] = vs[..., a, b] / np.sqrt(diag[..., a] * diag[..., b])
    for a in range(m):
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"logvar_{a}"] = np.log(diag[..., a])
    return out


def ks_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup_t |F_x(t) - F_y(t)|."""
    x, y = np.sort(x), np.sort(y)
    grid = np.concatenate([x, y])
    fx = np.searchsorted(x, grid, side="right") / x.size
    fy = np.searchsorted(y, grid, side="right") / y.size
    return float(np.abs(fx - fy).max())


def wasserstein1(x: np.ndarray, y: np.ndarray) -> float:
    """Wasserstein-1 distance of two empirical laws on the line: the integral of |F_x - F_y|."""
    x, y = np.sort(x), np.sort(y)
    grid = np.sort(np.concatenate([x, y]))
    fx = np.searchsorted(x, grid[:-1], side="right") / x.size
    fy = np.searchsorted(y, grid[:-1], side="right") / y.size
    return float(np.sum(np.abs(fx - fy) * np.diff(grid)))


def ks_noise(size_x: int, size_y: int) -> float:
    """95 % critical value of the KS statistic between two samples of these sizes, equal laws."""
    return KS_CRITICAL_95 * math.sqrt((size_x + size_y) / (size_x * size_y))


def wasserstein_noise(x: np.ndarray, y: np.ndarray, *, rounds: int = 200, seed: int = 0) -> float:
    """95 % quantile of W1 under the permutation null: the noise level of `wasserstein1(x, y)`."""
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([x, y])
    null = np.empty(rounds)
    for i in range(rounds):
        perm = rng.permutation(pooled)
        null[i] = wasserstein1(perm[: x.size], perm[x.size :])
    return float(np.quantile(null, 0.95))


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


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

    @property
    def mean_z(self) -> float:
        """Difference of means in units of its standard error."""
        se = math.hypot(self.mean_se_a, self.mean_se_b)
        return (self.mean_a - self.mean_b) / se if se > 0 else 0.0

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["mean_z"] = self.mean_z
        return out


def compare_feature(
    x: np.ndarray,
    y: np.ndarray,
    *,
    feature: str = "x",
    time: float = 0.0,
    w1_rounds: int = 200,
    seed: int = 0,
) -> FeatureComparison:
    """Compare two samples of one scalar; non-finite values are an error, not silently dropped."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    for name, s in (("first", x), ("second", y)):
        if s.size < 2:
            raise ValueError(
                f"{feature} at t={time:.4g}: the {name} sample has {s.size} value(s); need >= 2 "
                "(too few samples, or every path stopped before this time)"
            )
        if not np.all(np.isfinite(s)):
            raise ValueError(
                f"{feature} at t={time:.4g}: the {name} sample has non-finite values; compare "
                "surviving paths only (see `survival_mask`)"
            )

    def moments(s):
        sd = float(s.std(ddof=1))
        return float(s.mean()), sd / math.sqrt(s.size), sd, sd / math.sqrt(2 * (s.size - 1))

    ma, mse_a, sa, sse_a = moments(x)
    mb, mse_b, sb, sse_b = moments(y)
    return FeatureComparison(
        feature=feature,
        time=float(time),
        size_a=x.size,
        size_b=y.size,
        mean_a=ma,
        mean_b=mb,
        mean_se_a=mse_a,
        mean_se_b=mse_b,
        std_a=sa,
        std_b=sb,
        std_se_a=sse_a,
        std_se_b=sse_b,
        quantiles_a=tuple(float(q) for q in np.quantile(x, QUANTILES)),
        quantiles_b=tuple(float(q) for q in np.quantile(y, QUANTILES)),
        ks=ks_distance(x, y),
        ks_noise=ks_noise(x.size, y.size),
        ks_pvalue=float(stats.ks_2samp(x, y).pvalue),
        w1=wasserstein1(x, y),
        w1_noise=wasserstein_noise(x, y, rounds=w1_rounds, seed=seed),
    )


@dataclasses.dataclass(frozen=True)
class CovarianceSamples:
    """Covariance samples of one source at common times.

    `vs`: (samples, k, m, m) covariances at times `ts` (k,); `alive`: (samples, k) True while the
    path has not stopped (an SDE path that left the PSD cone, crossed the bound or went
    non-finite; a finite network whose covariance crossed the same bound). After a path stops,
    `vs` holds its state at the stopping time (the stopped process V_{t ^ tau}).
    """

    label: str
    ts: np.ndarray
    vs: np.ndarray
    alive: np.ndarray

    def __post_init__(self):
        ts, vs, alive = np.asarray(self.ts), np.asarray(self.vs), np.asarray(self.alive, bool)
        if vs.ndim != 4 or vs.shape[-1] != vs.shape[-2] or vs.shape[1] != ts.shape[0]:
            raise ValueError(
                f"{self.label}: vs has shape {vs.shape} and ts {ts.shape}; need vs of shape "
                "(samples, len(ts), m, m)"
            )
        if alive.shape != vs.shape[:2]:
            raise ValueError(f"{self.label}: alive has shape {alive.shape}; need {vs.shape[:2]}")
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "vs", vs)
        object.__setattr__(self, "alive", alive)

    @classmethod
    def from_paths(
        cls, label: str, paths, n: int, *, bound: float = math.inf, every: int = 1
    ) -> CovarianceSamples:
        """Finite-network (or law-chain) paths (samples, d+1, m, m) at layer times t = l / n.

        A path stops at the first layer where some |V_ab| exceeds `bound` or a value is
        non-finite, and is frozen there (the same stopping rule as the SDE solver's bound).
        `every` keeps every `every`-th layer (the last layer is always kept).
        """
        paths = np.asarray(paths, dtype=np.float64)
        layers = np.arange(paths.shape[1])
        keep = np.unique(np.concatenate([layers[::every], layers[-1:]]))
        bad = ~np.all(np.isfinite(paths), axis=(-2, -1)) | (
            np.abs(np.nan_to_num(paths, nan=np.inf)).max(axis=(-2, -1)) > bound
        )
        alive = np.cumsum(bad, axis=1) == 0
        first_bad = np.where(alive.all(axis=1), paths.shape[1], np.argmin(alive, axis=1))
        index = np.minimum(layers[None, :], np.maximum(first_bad[:, None] - 1, 0))
        stopped = np.take_along_axis(paths, index[:, :, None, None], axis=1)
        return cls(label, keep / n, stopped[:, keep], alive[:, keep])

    @property
    def stopped_fraction(self) -> np.ndarray:
        """Fraction of paths stopped at or before each time (k,)."""
        return 1.0 - self.alive.mean(axis=0)

    def index_of(self, t: float, *, rtol: float = 1e-6) -> int:
        """Index of time t in `ts` (a ValueError if this source has no sample at t)."""
        i = int(np.argmin(np.abs(self.ts - t)))
        if abs(self.ts[i] - t) > rtol * max(1.0, abs(t)):
            raise ValueError(
                f"{self.label} has no samples at t={t:.6g} (nearest {self.ts[i]:.6g}); "
                "sample both sources at common times"
            )
        return i


MODES = ("survival", "stopped")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Distances between two sources at chosen times, feature by feature."""

    label_a: str
    label_b: str
    mode: str
    rows: tuple[FeatureComparison, ...]
    stopped_a: dict[float, float]
    stopped_b: dict[float, float]

    def row(self, feature: str, time: float | None = None) -> FeatureComparison:
        matches = [r for r in self.rows if r.feature == feature]
        if time is not None:
            matches = [r for r in matches if math.isclose(r.time, time, rel_tol=1e-6)]
        if not matches:
            raise KeyError(f"no comparison of {feature!r} at t={time}")
        return matches[-1]

    def to_dict(self) -> dict:
        return {
            "a": self.label_a,
            "b": self.label_b,
            "mode": self.mode,
            "stopped_fraction_a": {str(t): f for t, f in self.stopped_a.items()},
            "stopped_fraction_b": {str(t): f for t, f in self.stopped_b.items()},
            "rows": [r.to_dict() for r in self.rows],
        }

    def table(self) -> str:
        """A markdown table: one line per (time, feature)."""
        head = (
            f"| t | feature | mean {self.label_a} | mean {self.label_b} | z | "
            f"sd {self.label_a} | sd {self.label_b} | KS | KS noise | W1 | W1 noise |"
        )
        lines = [head, "|" + "---|" * 11]
        for r in self.rows:
            lines.append(
                f"| {r.time:.3g} | {r.feature} | {r.mean_a:.4f} +- {r.mean_se_a:.4f} | "
                f"{r.mean_b:.4f} +- {r.mean_se_b:.4f} | {r.mean_z:+.2f} | {r.std_a:.4f} | "
                f"{r.std_b:.4f} | {r.ks:.4f} | {r.ks_noise:.4f} | {r.w1:.4f} | {r.w1_noise:.4f} |"
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
        return "\n".join(lines) + f"\n\nstopped paths ({note}): {stops}"


def compare_sources(
    a: CovarianceSamples,
    b: CovarianceSamples,
    *,
    times: list[float] | None = None,
    feature_names: list[str] | None = None,
    mode: str = "survival",
    w1_rounds: int = 200,
    seed: int = 0,
) -> Comparison:
    """Compare the laws of two sources at `times` (default: the last common time).

    mode "survival": at each t, the paths of each source that have not stopped by t (laws
    conditional on survival); mode "stopped": all paths, frozen at their stopping time.
    `feature_names` defaults to every rho_ab and logvar_a.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown; choose from {MODES}")
    if a.vs.shape[-1] != b.vs.shape[-1]:
        raise ValueError(
            f"{a.label} has m={a.vs.shape[-1]} tokens and {b.label} m={b.vs.shape[-1]}"
        )
    if times is None:
        times = [float(min(a.ts[-1], b.ts[-1]))]
    rows, stopped_a, stopped_b = [], {}, {}
    for t in times:
        ia, ib = a.index_of(t), b.index_of(t)
        fa, fb = features(a.vs[:, ia]), features(b.vs[:, ib])
        keep_a = a.alive[:, ia] if mode == "survival" else np.ones(a.vs.shape[0], bool)
        keep_b = b.alive[:, ib] if mode == "survival" else np.ones(b.vs.shape[0], bool)
        stopped_a[float(t)] = float(a.stopped_fraction[ia])
        stopped_b[float(t)] = float(b.stopped_fraction[ib])
        names = feature_names or list(fa)
        for name in names:
            if name not in fa:
                raise ValueError(f"unknown feature {name!r}; available: {list(fa)}")
            rows.append(
                compare_feature(
                    fa[name][keep_a],
                    fb[name][keep_b],
                    feature=name,
                    time=float(t),
                    w1_rounds=w1_rounds,
                    seed=seed,
                )
            )
    return Comparison(a.label, b.label, mode, tuple(rows), stopped_a, stopped_b)


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """distance ~ C n^slope, fitted by weighted least squares on log-log axes."""

    slope: float
    slope_se: float
    intercept: float
    widths: tuple[int, ...]
    used: tuple[bool, ...]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def fit_power_law(widths, distances, errors, noise=None) -> PowerLawFit:
    """Fit log d = intercept + slope log n, weights from the distances' standard errors.

    Points whose distance is not above its noise level (`noise`, when given) carry no
    information about the rate and are left out (reported in `used`). The slope's standard error
    is scaled by the residual spread when that exceeds the one implied by the errors.
    """
    n = np.asarray(widths, dtype=np.float64)
    d = np.asarray(distances, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    used = np.isfinite(d) & (d > 0) & (e > 0)
    if noise is not None:
        used &= d > np.asarray(noise, dtype=np.float64)
    if used.sum() < 3:
        raise ValueError(
            f"only {int(used.sum())} width(s) have a distance above its noise level; a rate "
            "needs at least three: increase the samples or include smaller widths"
        )
    slope, slope_se, intercept, _ = loglog_fit(n[used], d[used], e[used])
    return PowerLawFit(
        slope=slope,
        slope_se=slope_se,
        intercept=intercept,
        widths=tuple(int(v) for v in n),
        used=tuple(bool(u) for u in used),
    )


def loglog_fit(widths, values, errors) -> tuple[float, float, float, float | None]:
    """Weighted least squares of log value = intercept + slope log width.

    The standard error of log value is error / value (delta method). Returns (slope, slope_se,
    intercept, chi2 per degree of freedom or None); slope_se is inflated by sqrt(chi2 / dof)
    when the points scatter more than their error bars (never deflated).
    """
    x = np.log(np.asarray(widths, dtype=np.float64))
    values = np.asarray(values, dtype=np.float64)
    y, sigma = np.log(values), np.asarray(errors, dtype=np.float64) / values
    w = 1.0 / sigma**2
    design = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    coef = cov @ design.T @ (w * y)
    dof = x.size - 2
    chi2 = float(np.sum(w * (y - design @ coef) ** 2)) / dof if dof > 0 else None
    if chi2 is not None:
        cov = cov * max(1.0, chi2)
    return float(coef[1]), float(math.sqrt(cov[1, 1])), float(coef[0]), chi2


def bootstrap_se(statistic, x: np.ndarray, y: np.ndarray, *, rounds: int = 100, seed: int = 0):
    """Bootstrap standard error of `statistic(x, y)` resampling both samples."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.choice(x, x.size), rng.choice(y, y.size)) for _ in range(rounds)]
    return float(np.std(values, ddof=1))


# ------------------------------------------------------------------ sources and width sweeps


def depth_for(T: float, n: int) -> int:
    """Depth d = round(T n) of a network of width n at depth-to-width ratio T (at least 1)."""
    if not (math.isfinite(T) and T > 0):
        raise ValueError(f"T={T!r} is invalid; pass a depth-to-width ratio T > 0")
    depth = round(T * n)
    if depth < 1:
        raise ValueError(
            f"T={T!r} at width n={n} gives round(T n) = 0 layers; pass T >= {0.5 / n:.3g} or a "
            "larger width"
        )
    return depth


def finite_source(
    config,
    n: int,
    T: float,
    v0,
    samples: int,
    *,
    key,
    method: str = "law",
    bound: float = 1e3,
    every: int = 1,
    label: str | None = None,
) -> CovarianceSamples:
    """Covariance samples of finite networks of width n and depth round(T n) at init.

    `method`: "law" (the exact covariance chain, fast) or "explicit" (networks with all their
    weights). Times are layer times l / n; paths stop where some |V_ab| exceeds `bound`.
    """
    from .laws import sample_covariance_paths

    depth = depth_for(T, n)
    paths = sample_covariance_paths(config, n, depth, v0, samples, key=key, method=method)
    return CovarianceSamples.from_paths(
        label or f"{method} n={n}", paths, n, bound=bound, every=every
    )


def sde_source(
    config,
    v0,
    times,
    paths: int,
    *,
    key,
    num_steps: int = 1000,
    bound: float = 1e3,
    solver: str = "euler",
    label: str = "SDE",
):
    """SDE paths saved at `times` (e.g. a finite source's `ts`), as `CovarianceSamples`.

    Returns `(samples, solution)`; the solution keeps the exit reasons and times.
    """
    from .sde import solve_sde

    times = np.asarray(times, dtype=np.float64)
    solution = solve_sde(
        config,
        v0,
        float(times.max()),
        paths,
        key=key,
        save_times=times,
        num_steps=num_steps,
        bound=bound,
        solver=solver,
    )
    samples = CovarianceSamples(
        label, np.asarray(solution.ts), np.asarray(solution.vs), np.asarray(solution.alive)
    )
    return samples, solution


DISTANCES = ("ks", "w1", "mean")
"""Distances reported by a width sweep: KS statistic, Wasserstein-1, |difference of means|."""


def width_distances(
    finite: CovarianceSamples,
    sde: CovarianceSamples,
    *,
    time: float,
    feature: str = "rho_01",
    rounds: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Distances between the finite and SDE laws of one feature at one time (surviving paths),
    each with a bootstrap standard error and its noise level (the value expected between two
    samples of one law of these sizes)."""
    x = features(finite.vs[:, finite.index_of(time)])[feature][
        finite.alive[:, finite.index_of(time)]
    ]
    y = features(sde.vs[:, sde.index_of(time)])[feature][sde.alive[:, sde.index_of(time)]]
    row = compare_feature(x, y, feature=feature, time=time, seed=seed)
    mean_se = math.hypot(row.mean_se_a, row.mean_se_b)
    return {
        "time": float(time),
        "size_finite": int(x.size),
        "size_sde": int(y.size),
        "ks": row.ks,
        "ks_se": bootstrap_se(ks_distance, x, y, rounds=rounds, seed=seed),
        "ks_noise": row.ks_noise,
        "w1": row.w1,
        "w1_se": bootstrap_se(wasserstein1, x, y, rounds=rounds, seed=seed),
        "w1_noise": row.w1_noise,
        "mean": abs(row.mean_a - row.mean_b),
        "mean_se": mean_se,
        "mean_noise": 1.96 * mean_se,
        "ks_pvalue": row.ks_pvalue,
        "stopped_finite": float(finite.stopped_fraction[finite.index_of(time)]),
        "stopped_sde": float(sde.stopped_fraction[sde.index_of(time)]),
    }


def fit_width_sweep(widths, rows: list[dict]) -> dict[str, PowerLawFit | None]:
    """Power-law fits of each distance against width (None where too few points beat noise)."""
    fits = {}
    for name in DISTANCES:
        values = [r[name] for r in rows]
        errors = [r[f"{name}_se"] for r in rows]
        noise = [r[f"{name}_noise"] for r in rows]
        try:
            fits[name] = fit_power_law(widths, values, errors, noise)
        except ValueError:
            fits[name] = None
    return fits


def coefficient_table(config, n: int, v, samples: int, *, key) -> list[dict]:
    """One-step drift and noise of finite networks at V = `v` and width n beside the SDE's.

    Rows for every upper-triangular entry (a, b): the Monte Carlo estimates of n E[dV_ab] and
    n Var[dV_ab] with standard errors (`sdeformer.one_step_moments`, explicit networks of one
    layer) and the SDE's drift b_ab(V) and Sigma_{ab,ab}(V), with the z-scores of the gaps.
    """
    from .moments import one_step_moments
    from .sde import CovarianceSDE

    sde = CovarianceSDE(config)
    est = one_step_moments(config, n, v, samples, key=key)
    v = jnp.asarray(v, dtype=est.drift.dtype)
    drift, noise = np.asarray(sde.drift(v)), np.asarray(sde.noise_covariance(v))
    rows = []
    m = drift.shape[-1]
    for a in range(m):
        for b in range(a, m):
            d_est, d_se = float(est.drift[a, b]), float(est.drift_se[a, b])
            s_est, s_se = float(est.noise[a, b, a, b]), float(est.noise_se[a, b, a, b])
            rows.append(
                {
                    "entry": f"{a}{b}",
                    "drift_finite": d_est,
                    "drift_finite_se": d_se,
                    "drift_sde": float(drift[a, b]),
                    "drift_z": (d_est - float(drift[a, b])) / d_se if d_se > 0 else 0.0,
                    "noise_finite": s_est,
                    "noise_finite_se": s_se,
                    "noise_sde": float(noise[a, b, a, b]),
                    "noise_z": (s_est - float(noise[a, b, a, b])) / s_se if s_se > 0 else 0.0,
                }
            )
    return rows
