"""Rates without bias: the simulation study with known truths (reduced; the full one is
benchmarks/bench_rates.py), exit states from the solver, and undetermined fits."""

import math
import types

import numpy as np
import pytest

from sdeformer import compare
from sdeformer.compare import simulate

WIDTHS = (2, 3, 4, 6, 8, 12, 16)


@pytest.mark.parametrize(
    ("statistic", "truth", "reuse"),
    [("energy", -0.5, False), ("energy", 0.0, False), ("mean", -1.0, True)],
)
def test_fitted_slope_covers_the_truth(statistic, truth, reuse, full):
    """200 synthetic sweeps (widths 2-16, 2000 samples per source) with a known slope: the 95 %
    interval covers the truth in 90-99 % of them (binomial sd 1.5 % at 95 %) and the mean bias is
    below a quarter of the mean standard error (the old log-log fit of thresholded KS distances
    was biased by 1.5-3 standard errors). Truths: -1/2 (energy distance, independent SDE samples
    per width), 0 (no convergence: a fixed offset) and -1 (difference of means, one SDE sample
    shared by all widths, correlation modelled)."""
    result = simulate.run_study(
        widths=WIDTHS,
        slope=truth,
        statistic=statistic,
        reuse=reuse,
        replications=1000 if full else 200,
        num_samples=2000,
        seed=11,
    )
    assert result["determined"] >= 0.95, result
    assert 0.90 <= result["coverage95"] <= 0.99, result
    assert result["bias_over_se"] < 0.25, result


def test_true_slope_is_exact_in_the_synthetic_law():
    """The synthetic shifts give energy distances that are exact power laws."""
    delta = simulate.shifts("energy", WIDTHS, -0.5, 0.3)
    d = np.array([simulate.energy_distance_of_shift(s) for s in delta])
    np.testing.assert_allclose(d / d[0], (np.array(WIDTHS) / 2) ** -0.5, rtol=1e-9)


def test_fit_power_law_power_check():
    """The fit tells -1/2 from -1: with 20 replications at slope -1 (difference of means), the
    intervals exclude -1/2 in most of them."""
    rng = np.random.default_rng(0)
    widths = np.array(WIDTHS, float)
    excluded = 0
    for _ in range(20):
        values = 0.3 * (widths / 2) ** -1 + rng.normal(0, 0.01, widths.size)
        fit = compare.fit_power_law(widths, values, np.full(widths.size, 0.01), signed=True)
        excluded += not fit.covers(-0.5)
    assert excluded >= 18


def test_undetermined_fits_never_read_as_rates():
    widths = np.array([2, 4, 8, 16])
    zero_se = compare.fit_power_law(widths, [1.0, 0.5, 0.25, 0.125], [0.0] * 4)
    assert zero_se.status == "undetermined" and "need >= 3" in zero_se.reason
    noise = compare.fit_power_law(widths, [0.01, -0.02, 0.0, 0.01], [0.05] * 4, power=2)
    assert not noise.determined and "differs from 0" in noise.reason
    assert noise.describe().startswith("rate undetermined")
    assert all(math.isnan(v) for v in noise.interval())
    log = compare.loglog_fit(widths, [1.0, 0.5, 0.25, 0.125], [0.01] * 4)
    assert log.method == "loglog" and isinstance(log, compare.PowerLawFit)
    assert abs(log.slope + 1) < 1e-9


def test_t_quantile_when_the_scatter_sets_the_error():
    """Points scattered 5x beyond their error bars: the standard error is inflated from the
    residuals and the interval uses Student's t with k - 2 degrees of freedom."""
    rng = np.random.default_rng(1)
    widths = np.array([2.0, 4, 8, 16, 32])
    values = 1.0 * widths**-0.5 * (1 + 0.05 * rng.normal(size=5))
    fit = compare.fit_power_law(widths, values, np.full(5, 0.01 * values.mean()))
    assert fit.distribution == "t" and fit.dof == 3 and fit.chi2_dof > 1
    assert fit.quantile() == pytest.approx(3.182, abs=1e-3)


def test_exit_state_is_held_and_psd_exits_are_failures():
    """From a solver result with `v_exit`: a path that crossed the bound holds its exit state
    after the exit; one that left the PSD cone is a failure from its exit on."""
    ts = np.array([0.0, 0.5, 1.0])
    vs = np.tile(np.eye(2), (3, 3, 1, 1))
    alive = np.array([[True, True, True], [True, False, False], [True, True, False]])
    v_exit = np.stack([np.eye(2), 5e3 * np.eye(2), np.diag([1.0, -1e-3])])
    solution = types.SimpleNamespace(
        ts=ts, vs=vs, alive=alive, exit_reason=np.array([0, 2, 1]), v_exit=v_exit
    )
    src = compare.CovarianceSamples.from_solution("SDE", solution)
    np.testing.assert_allclose(src.vs[1, 1], 5e3 * np.eye(2))  # state at the exit
    np.testing.assert_allclose(src.vs[2, 2], np.diag([1.0, -1e-3]))
    np.testing.assert_array_equal(src.failed[:, 2], [False, False, True])
    np.testing.assert_array_equal(src.usable(2, "stopped"), [True, True, False])
    np.testing.assert_array_equal(src.usable(2, "survival"), [True, False, False])
    assert src.failed_fraction[-1] == pytest.approx(1 / 3)


def test_sweep_rows_model_the_shared_sde_sample():
    """Width rows built from synthetic covariance sources: with one SDE sample for all widths
    the covariance of the estimates has the jackknife cross terms (positive here: a low SDE mean
    raises every width's distance alike) and the shared matrix marks the rows; with separate
    blocks neither."""
    rng = np.random.default_rng(2)

    def source(label, shift, size=1500):
        rho = np.clip(0.3 + shift + 0.2 * rng.normal(size=size), -0.95, 0.95)
        vs = np.tile(np.eye(2), (size, 1, 1, 1))
        vs[:, 0, 0, 1] = vs[:, 0, 1, 0] = rho
        return compare.CovarianceSamples(label, np.array([1.0]), vs, np.ones((size, 1), bool))

    sde = source("SDE", 0.0)
    rows = [
        compare.width_distances(source(f"n={n}", 0.3 / n), sde, time=1.0, rounds=20)
        for n in (2, 4, 8)
    ]
    cov = compare.sweep_covariance(rows, "mean_diff")
    assert np.all(cov[np.triu_indices(3, 1)] > 0)
    from sdeformer.compare.width_sweep import shared_matrix

    np.testing.assert_allclose(shared_matrix(rows), np.full((3, 3), 1 / 1500))
    for i, row in enumerate(rows):
        row["_sde_block"] = i
    assert (
        np.count_nonzero(compare.sweep_covariance(rows, "mean_diff") - np.diag(np.diag(cov))) == 0
    )
    assert np.count_nonzero(shared_matrix(rows) - np.diag(np.diag(shared_matrix(rows)))) == 0
    fits = compare.fit_width_sweep([2, 4, 8], rows)
    assert set(fits) == {"energy", "mean"} and all(
        isinstance(f, compare.PowerLawFit) for f in fits.values()
    )
