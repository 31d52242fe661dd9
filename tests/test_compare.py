"""The comparison layer: distances, their noise levels, stopping, rate fits."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from sdeformer import compare


def test_distances_match_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=300), rng.normal(0.2, 1.3, size=170)
    assert math.isclose(compare.ks_statistic(x, y), stats.ks_2samp(x, y).statistic, rel_tol=1e-12)
    assert math.isclose(compare.wasserstein1(x, y), stats.wasserstein_distance(x, y), rel_tol=1e-9)


def test_noise_levels_separate_equal_from_different_laws():
    """Two samples of one law: KS and W1 below their 95 % noise levels (fixed seed); a shift of
    0.3 standard deviations with 4000 samples each is ~13 standard errors: far above both."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=4000), rng.normal(size=4000)
    same = compare.compare_feature(x, y, feature="g")
    assert same.ks < same.ks_noise and same.w1 < same.w1_noise and abs(same.mean_z) < 3
    shifted = compare.compare_feature(x, y + 0.3, feature="g")
    assert shifted.ks > 3 * shifted.ks_noise and shifted.w1 > 3 * shifted.w1_noise
    assert shifted.mean_z < -8


def test_features_and_bad_samples():
    v = np.array([[4.0, 1.0], [1.0, 1.0]])
    f = compare.features(v[None])
    assert set(f) == {"rho_0_1", "logvar_0", "logvar_1"}
    assert math.isclose(f["rho_0_1"][0], 0.5) and math.isclose(f["logvar_0"][0], math.log(4))
    with pytest.raises(ValueError, match="non-finite"):
        compare.compare_feature(np.array([1.0, np.nan, 2.0]), np.ones(3))
    with pytest.raises(ValueError, match="need >= 2"):
        compare.compare_feature(np.array([1.0]), np.ones(3))


def test_from_paths_stops_at_the_bound():
    # Three paths over 4 layers, m = 2: the second crosses the bound 10 at layer 2, the third
    # goes non-finite at layer 3.
    paths = np.tile(np.eye(2), (3, 4, 1, 1))
    paths[1, 2:] *= 20.0
    paths[2, 3, 0, 0] = np.nan
    src = compare.CovarianceSamples.from_paths("finite", paths, n=4, bound=10.0)
    np.testing.assert_allclose(src.ts, [0, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(src.alive[1], [True, True, False, False])
    np.testing.assert_array_equal(src.alive[2], [True, True, True, False])
    np.testing.assert_allclose(src.vs[1, 3], 20 * np.eye(2))  # held at its exit state
    np.testing.assert_allclose(src.vs[2, 3], np.eye(2))  # exit state non-finite: last valid
    assert np.all(np.isfinite(src.vs))
    np.testing.assert_allclose(src.stopped_fraction, [0, 0, 1 / 3, 2 / 3])
    with pytest.raises(ValueError, match="no samples at t=0.3"):
        src.index_of(0.3)


def test_compare_sources_modes_and_self_comparison():
    """Two independent sets of random covariances from one law: every feature's KS p-value is
    above 0.001 (a Bonferroni level for the 3 features at fixed seed)."""
    rng = np.random.default_rng(2)

    def source(label, size):
        g = rng.normal(size=(size, 5, 2, 6))
        vs = g @ np.swapaxes(g, -1, -2) / 6
        return compare.CovarianceSamples(label, np.linspace(0, 1, 5), vs, np.ones((size, 5), bool))

    a, b = source("a", 1500), source("b", 1200)
    result = compare.compare_sources(a, b, times=[0.5, 1.0])
    assert len(result.rows) == 6
    assert all(r.ks_pvalue > 1e-3 for r in result.rows)
    assert "| t | feature |" in result.table() and "conditional on survival" in result.table()
    assert result.row("rho_1_0").feature == "rho_0_1"  # either order finds the row
    stopped = compare.compare_sources(a, b, mode="stopped", feature_names=["rho_0_1"])
    assert len(stopped.rows) == 1 and "stopped processes" in stopped.table()
    with pytest.raises(ValueError, match="mode='both'"):
        compare.compare_sources(a, b, mode="both")
    with pytest.raises(ValueError, match="unknown feature"):
        compare.compare_sources(a, b, feature_names=["rho_99"])
    with pytest.raises(ValueError, match="unknown feature 'rho_01'.*use rho_a_b"):
        compare.compare_sources(a, b, feature_names=["rho_01"])  # the old spelling is removed


def test_power_law_fit_recovers_slope():
    rng = np.random.default_rng(3)
    widths = np.array([8, 16, 32, 64, 128])
    truth = 2.0 * widths**-0.5
    errors = np.full(5, 0.01)  # constant errors: the last points sit near the noise floor
    fit = compare.fit_power_law(widths, truth + rng.normal(0, 0.01, 5), errors)
    assert fit.determined and abs(fit.slope + 0.5) < 3 * fit.slope_se and fit.slope_se < 0.05
    assert fit.method == "gls" and fit.to_dict()["interval95"][0] < -0.5
    # squared distances: power 2 reports the slope of the distance itself
    sq = compare.fit_power_law(widths, truth**2 + rng.normal(0, 1e-3, 5), np.full(5, 1e-3), power=2)
    assert abs(sq.slope + 0.5) < 3 * sq.slope_se
    # fewer than three usable widths, or nothing above noise: undetermined, slope NaN
    short = compare.fit_power_law(widths, truth, [0.01, 0.01, np.nan, 0.0, np.inf])
    assert not short.determined and math.isnan(short.slope) and "need >= 3" in short.reason
    flat = compare.fit_power_law(widths, np.zeros(5), np.ones(5))
    assert flat.status == "undetermined" and flat.to_dict()["slope"] is None


# ------------------------------------------------------------- finite networks against the SDE

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402

from sdeformer import ShapedConfig  # noqa: E402
from sdeformer.cli import main  # noqa: E402

SPEC_CONFIG = ShapedConfig(tau0=1.0, gamma=0.4, c_minus=-1.0)
SPEC_V0 = jnp.array([[1.0, 0.3], [0.3, 1.0]])
SAMPLES = 12000  # one sample size everywhere below, so the compiled samplers are shared


@pytest.fixture(scope="module")
def spec_sde():
    """SDE paths of the docs/theory.md section 7 setting at the layer times l / 8 of a width-8
    network."""
    return compare.sde_source(
        SPEC_CONFIG,
        SPEC_V0,
        times=np.arange(9) / 8,
        num_samples=SAMPLES,
        key=jr.key(7),
        num_steps=200,
    )


def test_distances_shrink_with_width(spec_sde):
    """The exact law at width 2 is far from the SDE; at width 32 it is within noise.

    12000 samples on each side: the KS noise level is 1.36 sqrt(2 / 12000) = 0.018. At n = 2
    (depth 2) the law of rho_01 at t = 1 differs from the SDE's by several noise levels (KS
    about 0.06 in a 50000-sample sweep), at n = 8 by less (about 0.013), and at n = 32 both KS
    and the unbiased squared energy distance falls within noise. (Between n = 8 and n = 32 both
    distances are at the noise floor, so their order is not tested.)
    """
    sde, _ = spec_sde
    rows = []
    for n in (2, 8, 32):
        finite = compare.finite_source(
            SPEC_CONFIG, SPEC_V0, width=n, T=1.0, num_samples=SAMPLES, key=jr.key(n)
        )
        rows.append(compare.width_distances(finite, sde, time=1.0, rounds=20))
    small, middle, large = rows
    assert small["ks"] > 3 * small["ks_noise"] and small["w1"] > 3 * small["w1_noise"]
    # the unbiased squared energy distance: n = 2 far above n = 8 (several standard errors)
    gap = small["energy2"] - middle["energy2"]
    assert gap > 3 * math.hypot(small["energy2_se"], middle["energy2_se"])
    assert large["ks"] < large["ks_noise"]
    # n = 32: the unbiased estimate is within 3 standard errors of 0 (W1 is biased upward at the
    # noise floor, so it is not asked to fall below its noise level here)
    assert abs(large["energy2"]) < 3 * large["energy2_se"]


def test_a_source_against_itself_is_within_noise():
    """Two independent law-chain samples at n = 8: every feature's KS p-value is above
    0.001 (Bonferroni for 3 features at a family-wise 0.3 %) with fixed keys."""
    a = compare.finite_source(
        SPEC_CONFIG, SPEC_V0, width=8, T=1.0, num_samples=SAMPLES, key=jr.key(1), label="a"
    )
    b = compare.finite_source(
        SPEC_CONFIG, SPEC_V0, width=8, T=1.0, num_samples=SAMPLES, key=jr.key(2), label="b"
    )
    result = compare.compare_sources(a, b, w1_rounds=50)
    assert all(r.ks_pvalue > 1e-3 for r in result.rows), result.table()
    assert all(abs(r.mean_z) < 3.5 for r in result.rows), result.table()


def test_sde_exits_are_reported_beside_finite_survival(spec_sde):
    sde, solution = spec_sde
    summary = solution.summary()
    assert summary["paths"] == SAMPLES
    assert np.isclose(sde.stopped_fraction[-1], 1 - summary["survival_fraction"])
    assert np.all(np.isfinite(sde.vs))


def test_coefficient_table_matches_the_sde():
    """One-step drift and noise of explicit networks at n = 64 against the SDE coefficients:
    every z-score within 4.5 (the estimator's own tests check it tightly; this checks wiring)."""
    rows = compare.coefficient_table(SPEC_CONFIG, SPEC_V0, width=64, num_samples=400, key=jr.key(3))
    assert [r["entry"] for r in rows] == ["0_0", "0_1", "1_1"]
    assert all(abs(r["drift_z"]) < 4.5 and abs(r["noise_z"]) < 4.5 for r in rows), rows


def test_compare_and_sweep_commands(spec_sde, tmp_path, capsys):
    # Same sizes as above (n = 8, T = 1, 12000 samples and paths, 200 steps): the compiled SDE
    # solver is reused (the command's law chain is the sharded sampler, one key per sample).
    small = ["--T", "1", "--steps", "200", "--no-progress", "--samples", str(SAMPLES)]
    out = tmp_path / "cmp"
    args = ["compare", "--width", "8", "--method", "law"]
    assert main([*args, "--moment-samples", "0", *small, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["comparisons"]) == {"law"}
    assert report["sde_exits"]["paths"] == SAMPLES
    assert report["sde_exits"]["discretisation_failure_fraction"] <= 0.01
    law = report["comparisons"]["law"]
    assert law["features"]["pairs_compared"] == 1 and not law["features"]["pair_subset"]
    assert {r["feature"] for r in law["rows"]} == {"rho_0_1", "logvar_0", "logvar_1"}
    assert law["verdicts"]["above noise"] <= 1, law["verdicts"]  # n = 8 is close to the SDE
    assert (out / "compare.json").exists() and (out / "feature_density.png").exists()
    sweep = tmp_path / "sweep"
    args = ["sweep-width", "--widths", "2,8", "--samples", str(SAMPLES), "--shared-sde", *small]
    assert main([*args, "--out", str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "| n | depth | energy |" in printed and "\nenergy: distance ~ " in printed
    # two widths cannot determine a rate: it says so instead of printing a slope
    assert "rate undetermined" in printed
    first = json.loads((sweep / "sweep_width.json").read_text())["rows"]
    assert main([*args, "--out", str(sweep), "--json"]) == 0  # resumes from the two units
    assert json.loads(capsys.readouterr().out)["rows"] == first
    assert main([*args[:2], "8", *args[3:], "--out", str(tmp_path / "bad")]) == 2
    assert "need at least two widths" in capsys.readouterr().err
