"""sdeformer.design.forecast: structure, law vs explicit agreement, intervals, exits, CLI."""

import json
import math

import jax.random as jr
import numpy as np
import pytest
from scipy import stats

from sdeformer import ShapedConfig, metrics, solve_sde
from sdeformer.cli import main
from sdeformer.design import (
    DEFINITIONS,
    FEATURES,
    QUANTILES,
    forecast,
    proportion_interval,
    quantile_interval,
    sde_num_steps,
)
from sdeformer.rank_collapse import equicorrelated

CONFIG = ShapedConfig()
PRELN = ShapedConfig(blocks=("preln_attention", "preln_mlp"))


def _estimates(fc):
    for d in fc.at:
        for qs in d.features.values():
            yield from qs.values()
        yield d.p_collapse
        yield d.p_blowup


def test_summary_and_json_structure():
    v0 = equicorrelated(3, 0.3)
    fc = forecast(CONFIG, v0, width=8, depth=4, num_samples=64, key=jr.key(0), at_depths=[2])
    text = str(fc)
    assert repr(fc) == text and "array" not in text and "[[" not in text
    assert text.count("\n") < 20 and "mean_rho" in text and "Clopper-Pearson" in text
    report = json.loads(json.dumps(fc.to_dict(), allow_nan=False))
    assert set(report) >= {"settings", "definitions", "features", "p_collapse", "p_blowup"}
    assert set(report["definitions"]) == set(DEFINITIONS)
    assert set(report["features"]) == set(FEATURES)
    for qs in report["features"].values():
        assert set(qs) == set(QUANTILES)
        for est in qs.values():
            assert set(est) == {"value", "lower", "upper", "coverage", "level"}
    assert [d["depth"] for d in report["at_depths"]] == [2, 4]
    settings = report["settings"]
    assert (settings["width"], settings["depth"], settings["tokens"]) == (8, 4, 3)
    assert settings["samples"] == 64 and settings["method"] == "law"
    assert fc.samples["mean_rho"].shape == (64, 2)


def test_law_and_explicit_agree_within_monte_carlo_error():
    v0 = equicorrelated(3, 0.3)
    kwargs = dict(width=16, depth=16, num_samples=400, collapse_threshold=0.5)
    law = forecast(CONFIG, v0, key=jr.key(1), method="law", **kwargs).final
    net = forecast(CONFIG, v0, key=jr.key(2), method="explicit", **kwargs).final

    def agree(a, b):
        # A 95 % interval's half-width h is about 1.96 standard errors, so the difference of two
        # independent estimates has standard error sqrt(h_a^2 + h_b^2) / 1.96; allow 3 of them
        # (a false alarm has probability 0.3 % under the null hypothesis of equal laws).
        h_a, h_b = (a.upper - a.lower) / 2, (b.upper - b.lower) / 2
        tol = 3 * math.hypot(h_a, h_b) / 1.96
        assert abs(a.value - b.value) <= tol, (a, b, tol)

    assert 0.05 < law.p_collapse.value < 0.95  # the threshold makes the event informative
    agree(law.p_collapse, net.p_collapse)
    for name in FEATURES:
        agree(law.features[name]["q50"], net.features[name]["q50"])


def test_intervals_contain_the_estimate_and_cover():
    v0 = equicorrelated(3, 0.3)
    fc = forecast(CONFIG, v0, width=8, depth=8, num_samples=200, key=jr.key(3))
    for est in _estimates(fc):
        assert est.lower <= est.value <= est.upper
        assert est.coverage >= 0.95 - 1e-12  # 200 samples reach 95 % even for q05 and q95
    # The order-statistic interval covers the true median of U(0, 1) in >= 95 % of repetitions
    # (exact binomial coverage 0.965 at N = 100); 400 repetitions: binomial se 0.009, allow 3.
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(400):
        est = quantile_interval(rng.uniform(size=100), 0.5)
        hits.append(est.lower <= 0.5 <= est.upper)
    assert np.mean(hits) >= est.coverage - 3 * 0.009
    # Clopper-Pearson equals scipy's exact binomial interval.
    ci = stats.binomtest(7, 50).proportion_ci(0.95, method="exact")
    est = proportion_interval(7, 50)
    assert np.allclose([est.lower, est.upper], [ci.low, ci.high])
    assert proportion_interval(0, 50).lower == 0 and proportion_interval(50, 50).upper == 1


def test_sde_exits_are_counted_and_kept_in_the_quantiles():
    v0 = equicorrelated(3, 0.3)
    width, depth, n_samples, bound = 8, 8, 200, 4.0
    fc = forecast(
        CONFIG,
        v0,
        width=width,
        depth=depth,
        num_samples=n_samples,
        key=jr.key(4),
        method="sde",
        bound=bound,
    )
    # The same solve directly: forecast passes the key, steps and bound through unchanged.
    sol = solve_sde(
        CONFIG,
        v0,
        T=depth / width,
        num_samples=n_samples,
        key=jr.key(4),
        save_times=np.array([depth / width]),
        num_steps=sde_num_steps(3, width, depth),
        bound=bound,
    )
    reason = np.asarray(sol.exit_reason)
    assert 0.1 < np.mean(reason != 0) < 0.9  # the small bound stops many paths
    assert fc.final.p_blowup.value == pytest.approx(np.mean(reason != 0))
    rho = fc.samples["mean_rho"][:, -1]
    assert rho.shape == (n_samples,)  # every path, not only the survivors
    crossed = reason == 2
    held = np.asarray(metrics.mean_correlation(np.asarray(sol.v_exit)[crossed]))
    np.testing.assert_allclose(rho[crossed], held, rtol=1e-5, atol=1e-6)
    assert fc.final.features["mean_rho"]["q50"].value == pytest.approx(np.quantile(rho, 0.5))
    # Finite networks stop on the same rule: blow-ups are counted, every sample kept.
    law = forecast(
        CONFIG, v0, width=width, depth=depth, num_samples=100, key=jr.key(5), bound=bound
    )
    assert law.final.p_blowup.value > 0.1 and law.samples["mean_rho"].shape == (100, 1)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (dict(v0=np.array([[1.0, 2.0], [2.0, 1.0]])), "positive semi-definite"),
        (dict(depth=0), "depth=0"),
        (dict(width=0), "width=0"),
        (dict(method="nope"), "method='nope'"),
        (dict(method="auto"), "not available yet"),
        (dict(config=PRELN, method="sde"), "use method='explicit'"),
        (dict(config=PRELN, method="law"), "explicit"),
        (dict(collapse_threshold=1.5), "collapse_threshold=1.5"),
        (dict(at_depths=[9]), "at_depths"),
    ],
)
def test_bad_input_is_refused_with_the_fix(change, fragment):
    args = dict(config=CONFIG, v0=equicorrelated(2, 0.3), width=8, depth=4, method="law")
    args.update(change)
    with pytest.raises(ValueError, match="pass|use|pick|sample it with") as info:
        forecast(args.pop("config"), args.pop("v0"), num_samples=4, key=jr.key(0), **args)
    assert fragment in str(info.value)


TINY = ["design", "forecast", "--width", "8", "--depth", "4", "--tokens", "3", "--samples", "32"]


def test_cli_json_parses(tmp_path, capsys):
    out = tmp_path / "fc"
    assert main([*TINY, "--out", str(out), "--json", "--at-depths", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["tokens"] == 3 and report["settings"]["depths"] == [2, 4]
    assert set(report["features"]) == set(FEATURES) and "p_blowup" in report
    assert json.loads((out / "forecast.json").read_text())["p_collapse"] == report["p_collapse"]
    v0 = tmp_path / "v0.npy"
    np.save(v0, np.asarray(equicorrelated(3, 0.5)))
    args = ["design", "forecast", "--width", "8", "--depth", "4", "--samples", "16"]
    assert main([*args, "--v0", str(v0), "--out", str(out), "--method", "explicit"]) == 0
    assert "explicit networks" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--method", "sde", "--blocks", "preln_attention,preln_mlp"], "--method explicit"),
        (["--method", "auto"], "not available yet"),
        (["--rho0", "1.5"], "--rho0 1.5"),
        (["--collapse-threshold", "2"], "--collapse-threshold 2.0"),
        (["--v0", "missing.npy"], "--v0 missing.npy"),
    ],
)
def test_cli_refusals_exit_2_and_write_nothing(argv, fragment, tmp_path, capsys):
    out = tmp_path / "never"
    assert main([*TINY, "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "error" in err
    assert not out.exists()
