"""Simulation study of the rate fit with known truths (coverage and bias of the fitted slope).

Synthetic sources stand in for "finite network at width n" and "SDE": the SDE sample is
Y ~ N(0, 1) (`num_samples` draws, shared by every width when `reuse=True`, as in a width sweep
that solves the SDE once; fresh per width otherwise) and the width-n sample is X_n ~ N(delta_n, 1),
with delta_n chosen so that the distance is an exact power law in n:

- statistic "energy": the energy distance D(delta) = sqrt(2 E|X - Y| - E|X - X'| - E|Y - Y'|)
  equals D_0 (n / n_0)^slope exactly (delta_n solves it numerically); fitted from the unbiased
  U-statistic of D^2 (power 2) with jackknife covariances;
- statistic "mean": delta_n = delta_0 (n / n_0)^slope, fitted from mean_x - mean_y (signed).

Truths: slope -1/2 (MLP blocks with c_plus + c_minus != 0, docs/theory.md), -1 (otherwise), and 0
(no convergence: a fixed offset at every width). Each replication fits the slope with
`rates.fit_power_law` and records whether its 95 % interval covers the truth. The replications
are the feature axis of the vectorised distances, so hundreds of them cost seconds.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from . import distances as dist
from .rates import fit_power_law

STATISTICS = ("energy", "mean")
TRUTHS = (-0.5, -1.0, 0.0)


def energy_distance_of_shift(delta: float) -> float:
    """Energy distance between N(delta, 1) and N(0, 1) (not squared)."""
    sigma = math.sqrt(2.0)  # X - Y ~ N(delta, 2); X - X' ~ N(0, 2)

    def abs_mean(mu):
        return sigma * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sigma**2)) + mu * (
            1 - 2 * stats.norm.cdf(-mu / sigma)
        )

    return math.sqrt(max(2 * abs_mean(delta) - 2 * abs_mean(0.0), 0.0))


def shift_for_energy_distance(target: float) -> float:
    """The mean shift delta >= 0 whose energy distance (N(delta,1) vs N(0,1)) is `target`."""
    if target <= 0:
        return 0.0
    return float(optimize.brentq(lambda d: energy_distance_of_shift(d) - target, 0.0, 50.0))


def shifts(statistic: str, widths, slope: float, size0: float) -> np.ndarray:
    """delta_n for each width: a distance that scales like (n / n_0)^slope.

    The distance (`statistic`) at the first width is `size0` (the energy distance of a shift
    `size0`, or the shift itself).
    """
    widths = np.asarray(widths, dtype=np.float64)
    scale = (widths / widths[0]) ** slope
    if statistic == "mean":
        return size0 * scale
    d0 = energy_distance_of_shift(size0)
    return np.array([shift_for_energy_distance(d0 * s) for s in scale])


def sweep_estimates(statistic: str, x_by_width, y_by_width, shared: bool):
    """Estimates (k, R) and covariances (R, k, k) for replications along the feature axis."""
    fn = dist.energy_distance if statistic == "energy" else dist.mean_difference
    est = [fn(x, y) for x, y in zip(x_by_width, y_by_width, strict=True)]
    values = np.stack([e.value for e in est])  # (k, R)
    k, reps = values.shape
    cov = np.zeros((reps, k, k))
    for i, e in enumerate(est):
        cov[:, i, i] = e.variance
    if shared:
        for i in range(k):
            for j in range(i + 1, k):
                c = dist.jackknife_covariance(est[i].dev_b, est[j].dev_b)
                cov[:, i, j] = cov[:, j, i] = c
    return values, cov


def run_study(
    *,
    widths=(2, 3, 4, 6, 8, 12, 16, 32),
    slope: float = -0.5,
    statistic: str = "energy",
    reuse: bool = True,
    replications: int = 200,
    num_samples: int = 4000,
    size0: float = 0.3,
    seed: int = 0,
) -> dict:
    """Fit `replications` synthetic width sweeps with a known slope; coverage and bias.

    Returns a dict with the truth, the fraction of determined fits, the coverage of their 95 %
    intervals, the mean bias and mean standard error of the slope, and their ratio.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r}; choose from {STATISTICS}")
    rng = np.random.default_rng(seed)
    widths = np.asarray(widths)
    delta = shifts(statistic, widths, slope, size0)
    y_shared = rng.normal(size=(num_samples, replications))
    xs, ys = [], []
    for d in delta:
        xs.append(d + rng.normal(size=(num_samples, replications)))
        ys.append(y_shared if reuse else rng.normal(size=(num_samples, replications)))
    values, cov = sweep_estimates(statistic, xs, ys, shared=reuse)
    power = 2 if statistic == "energy" else 1
    inv = 2.0 / num_samples
    basis = (np.full(widths.size, inv**2), np.full(widths.size, inv)) if power == 2 else None
    fits = [
        fit_power_law(
            widths,
            values[:, r],
            covariance=cov[r],
            power=power,
            signed=statistic == "mean",
            variance_basis=basis,
            shared=np.full((widths.size, widths.size), 1.0 / num_samples) if reuse else None,
        )
        for r in range(replications)
    ]
    done = [f for f in fits if f.determined]
    slopes = np.array([f.slope for f in done])
    ses = np.array([f.slope_se for f in done])
    covered = np.array([f.covers(slope) for f in done])
    bias = float(slopes.mean() - slope) if done else math.nan
    mean_se = float(ses.mean()) if done else math.nan
    return {
        "statistic": statistic,
        "truth": slope,
        "reuse": reuse,
        "widths": [int(w) for w in widths],
        "num_samples": num_samples,
        "replications": replications,
        "determined": len(done) / replications,
        "coverage95": float(covered.mean()) if done else math.nan,
        "coverage95_se": float(
            math.sqrt(max(covered.mean() * (1 - covered.mean()), 1e-12) / len(done))
        )
        if done
        else math.nan,
        "mean_slope": float(slopes.mean()) if done else math.nan,
        "bias": bias,
        "mean_se": mean_se,
        "bias_over_se": abs(bias) / mean_se if done else math.nan,
        "sd_slope": float(slopes.std(ddof=1)) if len(done) > 1 else math.nan,
    }


def coverage_table(results: list[dict]) -> str:
    """A markdown table of `run_study` results."""
    lines = [
        "| statistic | SDE sample | true slope | determined | 95 % coverage | mean slope | "
        "bias | mean se | sd of slopes | bias / se |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['statistic']} | {'shared' if r['reuse'] else 'independent'} | "
            f"{r['truth']:+.2f} | "
            f"{r['determined']:.1%} | {r['coverage95']:.1%} +- {r['coverage95_se']:.1%} | "
            f"{r['mean_slope']:+.3f} | {r['bias']:+.4f} | {r['mean_se']:.4f} | "
            f"{r['sd_slope']:.4f} | {r['bias_over_se']:.2f} |"
        )
    return "\n".join(lines)
