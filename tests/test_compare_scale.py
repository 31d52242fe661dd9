"""The comparison at many tokens: vectorised distances equal per-feature references, noise levels
match their definitions, unambiguous names, pair subsets, summaries, and a smoke test at m = 64."""

import math
import time

import numpy as np
import pytest
from scipy import stats

from sdeformer import compare
from sdeformer.compare import distances as dist
from sdeformer.compare.features import FeatureSet, canonical_name, select_pairs


def _samples(seed, shape_a=(300, 7), shape_b=(170, 7), shift=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape_a) * rng.uniform(0.5, 2, shape_a[1])
    y = rng.normal(shift, 1.3, size=shape_b)
    return x, y


def test_vectorised_distances_equal_per_feature_references():
    """KS and W1 of all features at once equal scipy's per-feature values (also with ties)."""
    x, y = _samples(0)
    x[:40, 0] = 0.5  # ties within and across the samples
    y[:30, 0] = 0.5
    ks, w1 = dist.ks_statistic(x, y), dist.wasserstein1(x, y)
    for f in range(x.shape[1]):
        ref = stats.ks_2samp(x[:, f], y[:, f])
        assert math.isclose(ks[f], ref.statistic, rel_tol=1e-12)
        assert math.isclose(w1[f], stats.wasserstein_distance(x[:, f], y[:, f]), rel_tol=1e-9)
    assert math.isclose(dist.ks_statistic(x[:, 1], y[:, 1]), ks[1])  # 1-D: one feature


def test_energy_u_statistic_and_jackknife_match_brute_force():
    """The U-statistic of the squared energy distance and its delete-one values, by brute force
    over all pairs at small sizes; scipy's (V-statistic) energy distance from the same sums."""
    x, y = _samples(1, (23, 3), (17, 3), shift=0.4)
    est = dist.energy_distance(x, y)

    def u_stat(a, b):
        na, nb = a.size, b.size
        sxy = np.abs(a[:, None] - b[None, :]).sum()
        sxx = np.abs(a[:, None] - a[None, :]).sum()
        syy = np.abs(b[:, None] - b[None, :]).sum()
        return 2 * sxy / (na * nb) - sxx / (na * (na - 1)) - syy / (nb * (nb - 1)), (sxy, sxx, syy)

    for f in range(3):
        a, b = x[:, f], y[:, f]
        u, (sxy, sxx, syy) = u_stat(a, b)
        assert math.isclose(est.value[f], u, rel_tol=1e-10)
        v_stat = 2 * sxy / (a.size * b.size) - sxx / a.size**2 - syy / b.size**2
        assert math.isclose(math.sqrt(v_stat), stats.energy_distance(a, b), rel_tol=1e-10)
        minus_a = np.array([u_stat(np.delete(a, i), b)[0] for i in range(a.size)])
        minus_b = np.array([u_stat(a, np.delete(b, j))[0] for j in range(b.size)])
        np.testing.assert_allclose(est.dev_a[:, f], minus_a - minus_a.mean(), atol=1e-12)
        np.testing.assert_allclose(est.dev_b[:, f], minus_b - minus_b.mean(), atol=1e-12)
    md = dist.mean_difference(x, y)
    se = np.sqrt(x.var(axis=0, ddof=1) / 23 + y.var(axis=0, ddof=1) / 17)
    np.testing.assert_allclose(md.se, se, rtol=1e-12)


def test_energy_u_statistic_is_unbiased_under_equal_laws():
    """2000 independent pairs of samples of one law (size 50 each): the mean of the U-statistic
    is 0 within 4 standard errors of that mean, while the V-statistic's (scipy's, squared) is
    biased upward by many of them (power check: the test can tell the two apart)."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(50, 2000)), rng.normal(size=(50, 2000))
    u = dist.energy_distance(x, y).value
    assert abs(u.mean()) < 4 * u.std(ddof=1) / math.sqrt(u.size)
    v = np.array([stats.energy_distance(x[:, f], y[:, f]) ** 2 for f in range(200)])
    assert v.mean() > 10 * u.std(ddof=1) / math.sqrt(u.size)


def test_noise_levels_match_their_definitions():
    """KS noise: the 95 % quantile of scipy.stats.kstwo at n = round(na nb / (na + nb)).
    W1 noise: the 95 % quantile of W1 over relabellings of the pooled sample, exactly the W1 of
    the relabelled samples computed by scipy for the same label sequences."""
    x, y = _samples(3, (40, 4), (30, 4))
    assert dist.ks_noise(40, 30) == stats.kstwo.ppf(0.95, round(40 * 30 / 70))
    null = dist.wasserstein_null(x, y, rounds=25, seed=5)
    labels = dist.permutation_labels(40, 30, 25, 5)
    for f in range(4):
        pooled = np.sort(np.concatenate([x[:, f], y[:, f]]))
        ref = [stats.wasserstein_distance(pooled[lab], pooled[~lab]) for lab in labels]
        np.testing.assert_allclose(null[:, f], ref, rtol=1e-10)
    np.testing.assert_allclose(
        dist.wasserstein_noise(x, y, rounds=25, seed=5), np.quantile(null, 0.95, axis=0)
    )


def test_noise_levels_hold_their_level_and_have_power():
    """400 features of equal laws (sizes 300 and 200): KS and W1 exceed their 95 % noise levels
    in about 5 % of them (binomial sd 1.1 %; KS is discrete and conservative, hence the lower
    bound 1 %); a shift of 0.4 sd exceeds both in nearly all features."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 400)), rng.normal(size=(200, 400))
    ks_rate = np.mean(dist.ks_statistic(x, y) > dist.ks_noise(300, 200))
    w1_rate = np.mean(dist.wasserstein1(x, y) > dist.wasserstein_noise(x, y, rounds=200))
    assert 0.01 < ks_rate < 0.09 and 0.02 < w1_rate < 0.09, (ks_rate, w1_rate)
    shifted = y + 0.4
    assert np.mean(dist.ks_statistic(x, shifted) > dist.ks_noise(300, 200)) > 0.9
    assert np.mean(dist.wasserstein1(x, shifted) > dist.wasserstein_noise(x, shifted)) > 0.9


def test_feature_names_are_unambiguous_at_113_tokens():
    fs = FeatureSet.default(113, max_pairs=None)
    names = fs.names
    assert len(names) == len(set(names)) == 4 + 113 * 112 // 2 + 113
    assert "rho_1_112" in names and "rho_11_12" in names
    assert all(canonical_name(n, 113) == n for n in names[:50] + names[-50:])
    assert canonical_name("rho_12_11", 113) == "rho_11_12"
    with pytest.raises(ValueError, match="unknown feature 'rho_01'"):
        canonical_name("rho_01", 4)  # the old spelling rho_ab is removed (CHANGELOG.md)
    with pytest.raises(ValueError, match="unknown feature 'rho_111'"):
        canonical_name("rho_111", 113)
    with pytest.raises(ValueError, match="unknown feature"):
        canonical_name("rho_3_3", 113)


def test_pair_subset_is_seeded_documented_and_contains_the_first_pair():
    a, b, subset = select_pairs(256, max_pairs=500, seed=3)
    a2, b2, _ = select_pairs(256, max_pairs=500, seed=3)
    assert subset and a.size == 500 and np.all(a < b) and (a[0], b[0]) == (0, 1)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    assert len(set(zip(a.tolist(), b.tolist(), strict=True))) == 500
    described = FeatureSet.default(256, max_pairs=500, seed=3).describe()
    assert described["pair_subset"] and described["pair_seed"] == 3
    assert "default_rng(3)" in described["pair_rule"] and described["pairs_total"] == 32640


def test_summary_features_match_metrics():
    """Summary features against sdeformer.metrics (jax) on random covariances."""
    import jax.numpy as jnp

    from sdeformer import metrics

    rng = np.random.default_rng(5)
    g = rng.normal(size=(6, 5, 9))
    vs = g @ np.swapaxes(g, 1, 2) / 9
    f = compare.summary_features(vs)
    v = jnp.asarray(vs)
    np.testing.assert_allclose(f[:, 0], metrics.mean_correlation(v), rtol=1e-5)
    np.testing.assert_allclose(f[:, 1], metrics.min_correlation_eigenvalue(v), rtol=1e-4)
    np.testing.assert_allclose(f[:, 2], metrics.stable_rank(metrics.correlation(v)), rtol=1e-5)
    np.testing.assert_allclose(f[:, 3], np.log(np.diagonal(vs, 0, 1, 2)).std(axis=1))
    assert f.shape[1] == 4  # log_mean_var needs tr(V_0)
    # NumPy input is measured in NumPy, in float64 (the same definitions as for JAX arrays)
    assert metrics.mean_correlation(vs).dtype == np.float64
    np.testing.assert_allclose(metrics.mean_correlation(vs), f[:, 0], rtol=1e-14)
    growth = compare.summary_features(vs, ["log_mean_var"], trace0=2.5)[:, 0]
    np.testing.assert_allclose(growth, np.log(np.trace(vs, axis1=1, axis2=2) / 2.5), rtol=1e-14)
    with pytest.raises(ValueError, match="log_mean_var.*trace0"):
        compare.summary_features(vs, ["log_mean_var"])


def _wishart_source(label, seed, size, m, k=3, dof=None):
    rng = np.random.default_rng(seed)
    dof = dof or 2 * m
    g = rng.normal(size=(size, k, m, dof)).astype(np.float32)
    vs = (g @ np.swapaxes(g, -1, -2)) / dof
    return compare.CovarianceSamples(label, np.linspace(0, 1, k), vs, np.ones((size, k), bool))


def test_many_tokens_smoke_at_m_64():
    """m = 64, 600 samples per source from one law: all 2016 pairs, 64 log variances and the
    5 summaries (log_mean_var relative to tr V at t = 0) at two times in one vectorised
    comparison. Verdicts are family-wise (Bonferroni at 5 % over the rows of one time): no row
    is "above noise" (fixed seeds); the table shows the summaries and the worst rows only; a
    changed law (fewer degrees of freedom: more spread) is seen by the summaries."""
    a = _wishart_source("a", 1, 600, 64)
    b = _wishart_source("b", 2, 600, 64)
    started = time.perf_counter()
    result = compare.compare_sources(a, b, times=[0.5, 1.0], w1_rounds=100)
    elapsed = time.perf_counter() - started
    assert len(result.rows) == 2 * (5 + 2016 + 64)
    counts = result.verdict_counts()
    assert counts["above noise"] == 0, counts
    # the per-row 95 % noise levels are exceeded in about 5 % of rows (binomial sd 0.3 %)
    over = np.mean([r.ks > r.ks_noise for r in result.rows])
    assert 0.01 < over < 0.09, over
    table = result.table()
    assert "mean_rho" in table and "min_eig_rho" in table and "showing" in table
    assert table.count("\n| 1 |") <= 5 + 16  # summaries + 8 worst pairs + 8 worst log variances
    assert elapsed < 60, elapsed  # seconds on a loaded 2-core machine; about 5 s unloaded
    spread = _wishart_source("c", 3, 600, 64, dof=96)
    changed = compare.compare_sources(a, spread, feature_names=["stable_rank_rho", "mean_rho"])
    assert changed.row("stable_rank_rho").verdict == "above noise"


def test_undetermined_instead_of_agreement():
    """Constant samples (as every feature at t = 0): the z-score is NaN and the verdict
    'undetermined', never 'within noise'."""
    same = compare.compare_feature(np.ones(50), np.ones(40))
    assert math.isnan(same.mean_z) and same.verdict == "undetermined"
    assert same.to_dict()["mean_z"] is None
    assert math.isnan(float(compare.z_score(1.0, 0.0)))
    assert math.isnan(float(compare.z_score(1.0, np.inf)))


def test_psd_exits_are_failures_and_refused_above_the_threshold():
    """An SDE-like source with 3 % of paths failed numerically by t = 1: excluded from both
    modes, counted apart from stops, and refused by default (1 %) with a message naming the step
    rule."""
    a = _wishart_source("finite", 1, 200, 3)
    b = _wishart_source("SDE", 2, 200, 3)
    failed = np.zeros_like(b.alive)
    failed[:6, 2] = True
    alive = b.alive & ~failed
    sde = compare.CovarianceSamples("SDE", b.ts, b.vs, alive, failed)
    assert sde.failed_fraction[-1] == pytest.approx(0.03)
    with pytest.raises(compare.DiscretisationError, match="suggest_num_steps"):
        compare.compare_sources(a, sde)
    lenient = compare.compare_sources(a, sde, mode="stopped", max_failed_fraction=0.05)
    assert lenient.row("rho_0_1").size_b == 194  # failed paths left out of the stopped law too
    assert "numerical failures" in lenient.table()


@pytest.mark.parametrize("m", [5, 40])
def test_smallest_eigenvalue_of_the_correlation_matrix(m):
    """min_eig_rho is the smallest eigenvalue of D^-1/2 V D^-1/2 on both code paths (batched
    eigvalsh below m = 32, one-eigenvalue dsyevr from 32 on), NaN for a non-finite sample."""
    rng = np.random.default_rng(m)
    g = rng.standard_normal((6, m, m + 2))
    vs = g @ np.swapaxes(g, -1, -2)
    vs[3, 1, 1] = np.nan
    got = compare.summary_features(vs, ("min_eig_rho",))[:, 0]
    d = np.sqrt(np.einsum("saa->sa", vs))
    rho = vs / d[:, :, None] / d[:, None, :]
    keep = np.arange(6) != 3
    want = np.linalg.eigvalsh(rho[keep])[:, 0]
    assert np.isnan(got[3])
    np.testing.assert_allclose(got[keep], want, rtol=1e-10, atol=1e-12)
    assert want.min() < 0.2  # the matrices are far from the identity: a real eigenproblem


def test_table_states_the_verdict_level_and_chance_alarms():
    """The table's footer gives the family-wise level, the per-test alpha, the expected chance
    alarms and says the noise columns are plain 95 % levels (one law, 2 times, m = 3: 3 pairs,
    3 log variances and the summaries per time)."""
    a = _wishart_source("a", 3, 300, 3)
    b = _wishart_source("b", 4, 300, 3)
    result = compare.compare_sources(a, b, times=[0.5, 1.0], w1_rounds=50)
    per_time = len(result.rows) // 2
    note = result.levels_note()
    assert "family-wise 0.05 at each of 2 time(s)" in note
    assert f"alpha = {0.05 / (2 * per_time):.3g} per test" in note
    assert "expect at most 0.1 'above noise' row(s) by chance" in note
    assert "95 % levels of one row" in note and note in result.table()
    assert result.to_dict()["levels"] == note


def test_results_print_a_short_summary():
    """Samples and width distances print a line, not their arrays (600 numbers before)."""
    a = _wishart_source("finite", 5, 200, 3)
    b = _wishart_source("sde", 6, 200, 3)
    text = repr(a)
    assert text.startswith("CovarianceSamples('finite': 200 samples of 3 x 3") and len(text) < 200
    row = compare.width_distances(a, b, time=1.0, rounds=20)
    text = repr(row)
    assert "energy2=" in text and "per-path deviations of 200 SDE paths not shown" in text
    assert "_sde_deviations" not in text and len(text) < 800
    assert isinstance(row, dict) and "_sde_deviations" in row
    text = repr(compare.compare_sources(a, b, times=[0.5, 1.0], w1_rounds=20))
    assert text.startswith("Comparison('finite' vs 'sde', mode 'survival': ") and len(text) < 300
    assert "rows at t = 0.5, 1; within noise" in text and "mean_a" not in text


def test_table_notes_a_stopped_fraction_difference_beside_above_noise_rows():
    """Where rows are above noise and the sources stop significantly different fractions of
    their paths (two-proportion z > 3), the table says so; not without above-noise rows, and not
    when the fractions agree (power both ways)."""
    a = _wishart_source("a", 3, 1000, 3)
    b = _wishart_source("b", 4, 1000, 3, dof=3)  # another law: more spread, rows above noise
    b_stopped = compare.CovarianceSamples("b", b.ts, b.vs, b.alive.copy())
    b_stopped.alive[:60, -1] = False  # 6 % of b's paths stop before t = 1, none of a's
    differs = compare.compare_sources(a, b_stopped, times=[0.5, 1.0], w1_rounds=50)
    notes = differs.stopping_notes()
    assert len(notes) == 1 and notes[0].startswith("note: at t=1 the sources stop"), notes
    assert "a 0.00%, b 6.00%" in notes[0] and notes[0] in differs.table()
    above = [r.feature for r in differs.rows if r.time == 1.0 and r.verdict == "above noise"]
    assert above and ", ".join(above) in notes[0]
    assert compare.compare_sources(a, b, times=[0.5, 1.0], w1_rounds=50).stopping_notes() == []
    same = _wishart_source("b", 4, 1000, 3)  # a's law: no row above noise, so no note
    same.alive[:60, -1] = False
    equal_laws = compare.compare_sources(a, same, times=[0.5, 1.0], w1_rounds=50)
    assert equal_laws.verdict_counts()["above noise"] == 0 and equal_laws.stopping_notes() == []
