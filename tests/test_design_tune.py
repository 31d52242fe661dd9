"""sdeformer.design.tune: the finite-difference gradient, a tuned and certified target, refusals.

solve_sde cannot be differentiated in a configuration parameter (CovarianceSDE keeps the
configuration static and its noise coefficients as Python floats), so there is no pathwise
(jvp) derivative to check against finite differences. What the search relies on is checked
instead: under common random numbers (one key, one number of steps) the statistic is a smooth
function of the parameter between path events, so in float64 central differences at h and h / 2
agree to 1e-3 relative (their difference is O(h^2); Monte Carlo noise does not enter).
"""

import json

import jax
import jax.random as jr
import numpy as np
import pytest

from sdeformer import ShapedConfig, suggest_num_steps
from sdeformer.cli import main
from sdeformer.design import STATISTICS, tune
from sdeformer.design._cells import sde_endpoint
from sdeformer.design._tune import _statistic_function
from sdeformer.rank_collapse import equicorrelated

CONFIG = ShapedConfig()
V0 = equicorrelated(2, 0.3)
# c_minus moves the MLP drift (c_plus - c_minus)^2: at T = 1, m = 2 the mean correlation runs
# from about 0.17 (c_minus = 0) to 0.40 (c_minus = -3), so 0.3 is inside the range
TUNE = dict(
    params=["c_minus"],
    statistic="mean_rho:mean",
    width=8,
    depth=8,
    key=jr.key(0),
    ranges={"c_minus": (-3.0, 0.0)},
    num_samples=200,
    certify_samples=300,
)
CLI_TUNE = ["--tune", "c_minus", "--range", "c_minus:-3:0", "--tokens", "2", "--rho0", "0.3"]
CLI_TUNE += ["--width", "8", "--depth", "8", "--samples", "200", "--certify-samples", "300"]


def test_pathwise_gradient_matches_central_differences_float64():
    """The tuner's gradient (jax.jvp through the solve, Brownian paths fixed) of the p_collapse
    surrogate in gamma, against central differences with common random numbers: 1e-3 relative."""
    with jax.enable_x64(True):
        v0 = np.asarray(V0, np.float64)
        T = 0.25
        solve = dict(
            T=T, num_samples=64, key=jr.key(3), num_steps=suggest_num_steps(CONFIG, v0, T),
            bound=1e3, dtype=np.float64,
        )  # fmt: skip
        end = sde_endpoint(CONFIG.replace(gamma=0.5), v0, **solve)
        assert not end.stopped.any()  # no path event near the point
        g = _statistic_function(CONFIG, v0, ["gamma"], "p_collapse", 0.5, 0.2, solve)
        value, grad = g(np.array([0.5]), True)
        h = 1e-5
        up, _ = g(np.array([0.5 + h]), False)
        down, _ = g(np.array([0.5 - h]), False)
    central = (up - down) / (2 * h)
    assert abs(central) > 1e-4  # the statistic depends on gamma
    assert abs(grad[0] - central) <= 1e-3 * abs(central), (grad[0], central)
    assert value == pytest.approx(0.5 * (up + down), rel=1e-6)


@pytest.fixture(scope="module")
def tuned():
    return tune(CONFIG, V0, target=0.3, **TUNE)


def test_tune_reaches_the_target_and_certifies(tuned):
    assert tuned.converged
    assert abs(tuned.sde_value - 0.3) <= 0.005
    assert -3.0 <= tuned.tuned["c_minus"] <= 0.0
    assert tuned.config.c_minus == pytest.approx(tuned.tuned["c_minus"])
    cert = tuned.certificate
    assert cert["method"] == "law" and cert["samples"] == 300
    assert cert["lower"] <= cert["value"] <= cert["upper"]
    # the law chain at n = 8 is not the limit SDE: the interval need not hold the target, but
    # the certified mean correlation is near it (the O(1/n) gap is well below 0.1 here)
    assert abs(cert["value"] - 0.3) < 0.1
    report = json.loads(json.dumps(tuned.to_dict(), allow_nan=False))
    assert set(report) >= {"tuned", "certificate", "search", "settings"}
    assert report["search"]["history"][0]["c_minus"] == -3.0  # the range ends come first


def test_unreachable_target_refused():
    with pytest.raises(ValueError, match="unreachable.*c_minus in -3..0.*widen the range"):
        tune(CONFIG, V0, target=0.9, **TUNE)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"params": ["beta"]}, "'beta' is unknown"),
        ({"params": ["gamma", "tau0", "c_plus"]}, "one or two"),
        ({"statistic": "mean_rho:q99"}, "unknown"),
        ({"statistic": "p_collapse", "target": 1.5}, "probability in"),
        ({"ranges": {"c_minus": (0.0, -3.0)}}, "empty"),
        ({"params": ["gamma"], "ranges": {"gamma": (0.2, 1.3)}}, "gamma=1.3"),
    ],
)
def test_bad_input_refused(change, match):
    kwargs = {**TUNE, "target": 0.3, **change}
    with pytest.raises(ValueError, match=match):
        tune(CONFIG, V0, **kwargs)


def test_statistics_listed():
    assert STATISTICS == ("mean_rho:q50", "mean_rho:mean", "p_collapse")


def test_cli_json(tuned, tmp_path, capsys):
    out = tmp_path / "tune"
    argv = ["design", "tune", "--target", "mean_rho:mean=0.3", "--out", str(out), "--json"]
    assert main(argv + CLI_TUNE) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"tuned", "certificate", "seed", "provenance"}
    # the same search (seed 0 is key 0): the same tuned value
    assert report["tuned"]["c_minus"] == pytest.approx(tuned.tuned["c_minus"], rel=1e-9)
    assert (out / "tune.json").is_file()


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--tune", "beta", "--target", "mean_rho:q50=0.3"], "unknown parameter 'beta'"),
        (["--tune", "gamma", "--target", "mean_rho:q99=0.3"], "unknown statistic"),
        (["--tune", "gamma", "--target", "0.3"], "STATISTIC=VALUE"),
        (["--target", "mean_rho:q50=0.3"], "needs --tune"),
        (["--tune", "gamma", "--target", "mean_rho:q50=0.3", "--range", "gamma:0.2:1.5"], "1.5"),
    ],
)
def test_cli_refusals_write_nothing(tmp_path, capsys, flags, match):
    out = tmp_path / "refused"
    assert main(["design", "tune", "--out", str(out), *flags]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()
