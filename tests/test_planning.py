"""Sample-size planning (compare.planning) and the compare/rank-collapse options of issue 24."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from sdeformer import ShapedConfig, compare
from sdeformer.cli import build_parser, main


def test_plan_matches_the_textbook_value():
    """d = 0.5, two-sided alpha = 0.05 (level 0.1 over one feature, two tests), power 0.8:
    2 (1.95996 + 0.84162)^2 / 0.25 = 62.79, so 63 per group (the t-test's table value is 64)."""
    plan = compare.plan_samples(1.0, 0.5, num_features=1, level=0.1)
    assert plan.alpha == pytest.approx(0.05) and plan.samples == 63
    exact = 2 * (stats.norm.isf(0.025) + stats.norm.ppf(0.8)) ** 2 / 0.25
    assert plan.samples == math.ceil(exact)
    # the verdict's level: F = 3 features, alpha = 0.05 / 6 per test, needs more samples
    assert compare.plan_samples(1.0, 0.5, num_features=3).alpha == pytest.approx(0.05 / 6)
    assert compare.plan_samples(1.0, 0.5, num_features=3).samples > 63


def test_planned_samples_give_the_planned_power_in_a_simulation():
    """Gaussian data (sd 1 and 1.5, gap 0.3, F = 3): 6000 simulated experiments at the planned
    N detect the gap with the mean z-test in 0.8 +- 0.02 of them (Monte Carlo sd 0.005), and at
    N / 2 in far fewer (power check of the test itself)."""
    plan = compare.plan_samples(1.0, 0.3, sd_b=1.5, num_features=3)
    z_crit = stats.norm.isf(plan.alpha / 2)
    rng = np.random.default_rng(0)

    def power(n, reps=6000):
        hits = 0
        for _ in range(reps // 500):
            x = rng.normal(0.0, 1.0, (500, n))
            y = rng.normal(0.3, 1.5, (500, n))
            se = np.sqrt(x.var(axis=1, ddof=1) / n + y.var(axis=1, ddof=1) / n)
            hits += int((np.abs(y.mean(axis=1) - x.mean(axis=1)) / se > z_crit).sum())
        return hits / reps

    assert abs(power(plan.samples) - 0.8) < 0.02
    assert power(plan.samples // 2) < 0.55
    predicted = compare.detection_power(0.3, 1.0, 1.5, plan.samples, plan.samples, plan.alpha)
    assert 0.8 <= predicted < 0.81


def test_plan_refuses_bad_inputs():
    for kwargs, fragment in [
        ({"sd": 1.0, "gap": 0.0}, "gap=0.0"),
        ({"sd": -1.0, "gap": 0.1}, "sd=-1.0"),
        ({"sd": 1.0, "gap": 0.1, "power": 1.0}, "power=1.0"),
        ({"sd": 1.0, "gap": 0.1, "num_features": 0}, "num_features=0"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            compare.plan_samples(**kwargs)


def test_every_command_has_the_one_model_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices)
    default = ShapedConfig()
    for name in ("compare", "sweep-width", "rank-collapse", "design"):
        args = sub.choices[name].parse_args(["forecast"] if name == "design" else [])
        assert args.gamma == default.gamma and args.tau0 == default.tau0, name
        assert args.c_minus == default.c_minus, name


TINY = ["--width", "8", "--tokens", "3", "--samples", "2", "--no-progress"]


def test_depth_or_T_and_the_sde_overlay(tmp_path, capsys):
    """rank-collapse: --T 0.5 at width 8 is --depth 4; both at once are refused; --sde adds the
    SDE's bands (ordered quantiles, exact at t = 0) and needs the shaped kind."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["rank-collapse", *TINY, "--depth", "4", "--kinds", "shaped", "--out", str(a)]) == 0
    argv = ["rank-collapse", *TINY, "--T", "0.5", "--kinds", "shaped", "--sde"]
    assert main([*argv, "--sde-samples", "64", "--out", str(b)]) == 0
    capsys.readouterr()
    ra = json.loads((a / "rank_collapse.json").read_text())
    rb = json.loads((b / "rank_collapse.json").read_text())
    assert ra["curves"] == rb["curves"] and rb["settings"]["depth"] == 4
    sde = rb["sde"]
    assert sde["layers"][0] == 0 and sde["layers"][-1] == pytest.approx(4)
    assert sde["mean_correlation_q50"][0] == pytest.approx(0.3, rel=1e-5)
    for q05, q50, q95 in zip(
        sde["mean_correlation_q05"],
        sde["mean_correlation_q50"],
        sde["mean_correlation_q95"],
        strict=True,
    ):
        assert q05 <= q50 <= q95
    assert sde["mean_correlation_q95"][-1] > sde["mean_correlation_q05"][-1]
    with pytest.raises(SystemExit) as info:
        main(["rank-collapse", *TINY, "--depth", "4", "--T", "0.5", "--out", str(tmp_path / "c")])
    assert info.value.code == 2
    bad = tmp_path / "d"
    assert main(["rank-collapse", *TINY, "--kinds", "preln", "--sde", "--out", str(bad)]) == 2
    assert "add shaped to --kinds" in capsys.readouterr().err and not bad.exists()


def test_compare_features_are_checked_before_work_and_plan_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["compare", "--width", "8", "--depth", "8", "--tokens", "3", "--no-progress"]
    assert main([*argv, "--features", "mean_rho,bogus", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown feature 'bogus'" in err and "log_mean_var" in err and not out.exists()
    plan = [*argv, "--plan", "--plan-pilot", "64", "--features", "mean_rho,rho_0_1", "--json"]
    assert main([*plan, "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not out.exists()
    assert {r["feature"] for r in report["rows"]} == {"mean_rho", "rho_0_1"}
    assert report["alpha"] == pytest.approx(0.05 / 4)  # two features, two tests each
    row = report["rows"][0]
    expected = compare.plan_samples(row["sd_a"], 0.02, num_features=2).samples
    assert row["samples"] == expected
