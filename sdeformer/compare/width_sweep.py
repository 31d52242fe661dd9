"""Width sweeps: the distance between a feature's finite-width law and the SDE's, and its rate.

The rate in n is fitted by `rates.fit_power_law`.

The rates are fitted from unbiased estimators (`DISTANCES`):

- "energy": the U-statistic of the squared energy distance (expectation exactly D^2, 0 when the
  laws agree) with its jackknife error; the slope reported is that of D (power 2);
- "mean": the signed difference of means (power 1).

The energy statistic's variance grows with its mean, so its fit weights come from a variance
model b s_i + c t_i mu_i evaluated at the fitted mean, not from each point's own jackknife error
(`rates.fit_power_law(variance_basis=...)`).

Independent SDE samples per width (`sdeformer sweep-width` solves num_samples x widths paths in
one call and gives each width its own block) make the estimates independent. When one SDE sample
is shared by all widths, the estimates are correlated through it; each row keeps the SDE half of
its jackknife deviations, path by path (`_sde_deviations`), and `fit_width_sweep` adds their
cross-covariances (only between rows whose SDE samples are the same paths). `simulate.py`
measures the coverage and bias in both designs (docs: the coverage table): the shared design is
fine for the difference of means but leaves a bias of about half a standard error in the
energy-distance slope, so independent samples are the default.
KS and W1 are reported with their noise levels as descriptions of the laws; they are not fitted
(both are biased upward near the noise floor).

Expected slopes (docs/theory.md, finite-width drift): about -1/2 for stacks with MLP blocks and
c_plus + c_minus != 0 against the limit SDE, about -1 otherwise and against the finite-width SDE.
"""

from __future__ import annotations

import math

import numpy as np

from . import distances as dist
from .features import FeatureSet
from .rates import PowerLawFit, fit_power_law
from .samples import CovarianceSamples

DISTANCES = ("energy", "mean")
"""Distances with fitted rates: energy distance (from its unbiased square) and |mean difference|."""

DESCRIPTIVE = ("ks", "w1")
"""Distances reported with noise levels but not fitted."""

POWERS = {"energy": 2, "mean": 1}

CONDITIONING = "none: stopped paths keep their exit state, exit indicator compared beside"
"""How `width_distances` treats stopped paths (the same rule for both sources)."""


def _feature_values(src: CovarianceSamples, time: float, feature: str):
    """(values, exited, kept, name) of one feature at `time`, the exit held as a state.

    Every path that did not fail numerically is kept (`usable(i, "stopped")`): a path that
    stopped holds the feature value of its exit state, and `exited` (kept paths) says which
    stopped. Neither source is conditioned on survival (docs/theory.md section 4, "Measured").
    """
    i = src.index_of(time)
    fs = FeatureSet.from_names([feature], src.m)
    kept = src.usable(i, "stopped")
    values = fs.values(src.vs[kept, i])[:, 0]
    return values, ~src.alive[kept, i], kept, fs.names[0]


class WidthDistances(dict):
    """The dict `width_distances` returns, printed as a short summary (no per-path arrays)."""

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}"
            for k, v in self.items()
            if not k.startswith("_")
        )
        paths = len(next(iter(self.get("_sde_deviations", {}).values()), []))
        return f"WidthDistances({shown}; per-path deviations of {paths} SDE paths not shown)"


def width_distances(
    finite: CovarianceSamples,
    sde: CovarianceSamples,
    *,
    time: float,
    feature: str = "rho_0_1",
    rounds: int = 200,
    seed: int = 0,
) -> dict:
    """Distances between the finite and SDE laws of one feature at one time, exits included.

    Both sources keep every path that did not fail numerically; a stopped path enters with the
    feature value of its exit state, and the exit indicator is compared as a second feature
    ("exit_diff" = finite exit fraction - SDE exit fraction, with "exit_se"). No source is
    conditioned on survival.

    Keys: "energy2" (unbiased squared energy distance) and "energy2_se"; "energy" (its square
    root, clipped at 0, for plots) with "energy_se" (delta method) and "energy_noise" (the
    distance whose square is 1.96 standard errors); "mean_diff" (signed) with "mean_se", "mean"
    (its absolute value) and "mean_noise" (1.96 se); "ks" with "ks_noise" (`scipy.stats.kstwo`)
    and "ks_pvalue", "w1" with "w1_noise" (permutation, `rounds`); sizes and stopped fractions;
    and "_sde_deviations" (not for JSON): the SDE-side jackknife deviations of "energy2" and
    "mean_diff", one per SDE path (0 for paths that failed numerically by `time`), for
    `fit_width_sweep`.
    """
    x, exit_x, _, name = _feature_values(finite, time, feature)
    y, exit_y, kept_y, _ = _feature_values(sde, time, feature)
    if min(x.size, y.size) < 3:
        raise ValueError(
            f"{name} at t={time:.4g}: {x.size} finite and {y.size} SDE paths usable; need >= 3 each"
        )
    energy = dist.energy_distance(x, y)
    mean = dist.mean_difference(x, y)
    e2, e2_se = float(energy.value[0]), float(energy.se[0])
    d = math.sqrt(max(e2, 0.0))
    md, md_se = float(mean.value[0]), float(mean.se[0])
    exits = dist.mean_difference(exit_x.astype(np.float64), exit_y.astype(np.float64))
    ks = float(dist.ks_statistic(x, y))
    deviations = {}
    for key, est in (("energy2", energy), ("mean_diff", mean)):
        full = np.zeros(kept_y.size)
        full[kept_y] = est.dev_b[:, 0]
        deviations[key] = full
    return WidthDistances(
        {
            "time": float(time),
            "feature": name,
            "size_finite": int(x.size),
            "size_sde": int(y.size),
            "energy2": e2,
            "energy2_se": e2_se,
            "energy": d,
            "energy_se": e2_se / (2 * d) if d > 0 else math.sqrt(e2_se),
            "energy_noise": math.sqrt(1.96 * e2_se),
            "mean_diff": md,
            "mean": abs(md),
            "mean_se": md_se,
            "mean_noise": 1.96 * md_se,
            "ks": ks,
            "ks_noise": dist.ks_noise(x.size, y.size),
            "ks_pvalue": float(dist.ks_pvalue(ks, x.size, y.size)),
            "w1": float(dist.wasserstein1(x, y)),
            "w1_noise": float(dist.wasserstein_noise(x, y, rounds=rounds, seed=seed)),
            "exited_finite": float(exit_x.mean()),
            "exited_sde": float(exit_y.mean()),
            "exit_diff": float(exits.value[0]),
            "exit_se": float(exits.se[0]),
            "conditioning": CONDITIONING,
            "stopped_finite": float(finite.stopped_fraction[finite.index_of(time)]),
            "stopped_sde": float(sde.stopped_fraction[sde.index_of(time)]),
            "_sde_deviations": deviations,
        }
    )


def public_row(row: dict) -> dict:
    """A `width_distances` row without its per-path arrays (for JSON)."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def sweep_covariance(rows: list[dict], key: str) -> np.ndarray:
    """Covariance (k, k) of the estimates `key` ("energy2" or "mean_diff") across widths.

    Each row's own variance on the diagonal plus the cross-covariances through the shared SDE
    sample (jackknife, from `_sde_deviations`; none when the rows lack them).
    """
    se = np.array([r[f"{key}_se" if key != "mean_diff" else "mean_se"] for r in rows], float)
    cov = np.diag(se**2)
    devs = [r.get("_sde_deviations", {}).get(key) for r in rows]
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            shared = rows[i].get("_sde_block") == rows[j].get("_sde_block")
            if (
                shared
                and devs[i] is not None
                and devs[j] is not None
                and devs[i].size == devs[j].size
            ):
                cov[i, j] = cov[j, i] = float(
                    dist.jackknife_covariance(devs[i][:, None], devs[j][:, None])[0]
                )
    return cov


def shared_matrix(rows: list[dict]) -> np.ndarray:
    """(k, k): 1 / SDE sample size where two rows share their SDE sample (`_sde_block`), else 0."""
    k = len(rows)
    out = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if rows[i].get("_sde_block") == rows[j].get("_sde_block"):
                out[i, j] = 1.0 / max(rows[i]["size_sde"], rows[j]["size_sde"])
    return out


def fit_width_sweep(widths, rows: list[dict]) -> dict[str, PowerLawFit]:
    """Rates of the energy distance and of the difference of means against width.

    GLS with the covariance of `sweep_covariance`; "undetermined" fits where the data say nothing.
    """
    fits = {}
    energy = [r["energy2"] for r in rows]
    inv = np.array([1 / r["size_finite"] + 1 / r["size_sde"] for r in rows])
    fits["energy"] = fit_power_law(
        widths,
        energy,
        covariance=sweep_covariance(rows, "energy2"),
        power=2,
        variance_basis=(inv**2, inv),
        shared=shared_matrix(rows),
    )
    mean = [r["mean_diff"] for r in rows]
    fits["mean"] = fit_power_law(
        widths, mean, covariance=sweep_covariance(rows, "mean_diff"), power=1, signed=True
    )
    return fits
