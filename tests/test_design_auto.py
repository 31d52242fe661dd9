"""`forecast(method="auto")` and the calibration study's bookkeeping (no long runs here)."""

import jax.random as jr
import numpy as np
import pytest

from benchmarks import design_calibration as calib
from sdeformer import ShapedConfig, equicorrelated
from sdeformer.design import forecast
from sdeformer.design._auto import choose_method

CONFIG = ShapedConfig()
PRELN = ShapedConfig(blocks=("preln_attention", "preln_mlp"))


def _table(trusted=True, max_error=0.01, sde_cost=(0.1, 1e-9), law_cost=(0.1, 1e-7)):
    cells = [
        {"method": method, "T": T, "width": n, "configs": 3, "meet": 3 if trusted else 1,
         "trusted": trusted, "max_error": max_error}
        for method in ("sde", "finite-width-sde")
        for T in (0.5, 1.0)
        for n in (32, 64)
    ]  # fmt: skip
    costs = {
        "law": {"a": law_cost[0], "b": law_cost[1]},
        "sde": {"a": sde_cost[0], "b": sde_cost[1]},
        "finite-width-sde": {"a": sde_cost[0], "b": 2 * sde_cost[1]},
    }
    family = {"m_min": 2, "m_max": 8, "blocks": [["attention", "mlp"], ["attention"]]}
    return {"cells": cells, "family": family, "costs": {"cpu": costs}}


def _choose(table, config=CONFIG, **kw):
    args = dict(m=4, width=64, depth=64, num_samples=1000, table=table, backend="cpu")
    args.update(kw)
    return choose_method(config, **args)


def test_without_a_table_only_exact_methods_are_eligible():
    choice = _choose(None)
    assert choice.method == "law" and "no calibration table" in choice.reason
    assert _choose(None, config=PRELN).method == "explicit"  # Pre-LN has no law chain


def test_the_sde_wins_where_trusted_cheaper_and_below_the_monte_carlo_error():
    choice = _choose(_table())
    assert choice.method == "sde" and "fastest eligible" in choice.reason
    # N large: the Monte Carlo half-width 0.98 / sqrt(N) drops below the calibrated 0.01
    big = _choose(_table(), num_samples=20_000)
    assert big.method == "law"
    assert "not below the Monte Carlo half-width 0.007 of 20000 samples" in big.reason


def test_untrusted_cells_and_configurations_outside_the_family_are_not_eligible():
    assert "is not trusted (1/3" in _choose(_table(trusted=False)).reason
    assert "m=12 is outside the calibrated 2..8" in _choose(_table(), m=12, width=64).reason
    causal = _choose(_table(), config=CONFIG.replace(causal=True))
    assert causal.method == "law" and "causal attention was not calibrated" in causal.reason


def test_the_lookup_is_conservative():
    # n = 100 uses the n = 64 cells, T = 0.75 the T = 1 cells; T = 2 and n = 16 are outside
    table = _table()
    for cell in table["cells"]:
        if (cell["width"], cell["T"]) == (64, 1.0):
            cell["trusted"] = False
    assert "(n=64, T=1) is not trusted" in _choose(table, width=100, depth=75).reason
    assert "outside the calibrated widths" in _choose(_table(), width=64, depth=128).reason
    assert "outside the calibrated widths" in _choose(_table(), width=16, depth=8).reason


def test_the_cheaper_exact_method_wins_when_the_sde_costs_more():
    choice = _choose(_table(sde_cost=(50.0, 1e-6)))
    assert choice.method == "law"
    est = {c["method"]: c["est_seconds"] for c in choice.candidates}
    assert est["law"] < est["sde"] and est["explicit"] is None  # no measured explicit costs


def test_forecast_auto_says_what_it_chose():
    fc = forecast(
        CONFIG, equicorrelated(3, 0.3), width=8, depth=4, num_samples=32, key=jr.key(0),
        method="auto",
    )  # fmt: skip
    assert fc.choice is not None and fc.method == fc.choice.method
    assert f"method auto chose {fc.method}" in str(fc)
    assert fc.to_dict()["settings"]["auto"]["method"] == fc.method


def test_calibration_configurations_are_fixed_and_in_range():
    profile = calib.PROFILES["cpu"]
    specs = calib.configs(profile)
    assert len(specs) >= 50 and specs == calib.configs(profile)  # one seed, same draws
    assert {s["T"] for s in specs} == set(calib.TIMES)
    assert all(2 <= s["m"] <= 8 and 0 <= s["rho0"] <= 0.8 for s in specs)
    assert all(0.5 <= s["config"].tau0 <= 3 and 0.2 <= s["config"].gamma <= 0.9 for s in specs)
    assert {s["config"].out_proj for s in specs} == {True, False}


def _stat(value, half):
    return {"value": value, "lower": value - half, "upper": value + half}


def test_errors_rule_and_summary_on_synthetic_units():
    profile = calib.Profile(1, (8,), 100)
    spec = calib.configs(profile)[0]
    names = ["mean_rho:q50", "p_collapse"]
    law = {"method": "law", "seconds": 1.0, "statistics": {k: _stat(0.5, 0.01) for k in names}}
    close = {"method": "finite-width-sde", "seconds": 2.0, "p_left_psd_cone": 0.0,
             "statistics": {k: _stat(0.51, 0.01) for k in names}}  # fmt: skip
    far = {"method": "sde", "seconds": 0.5, "p_left_psd_cone": 0.01,
           "statistics": {k: _stat(0.6, 0.01) for k in names}}  # fmt: skip
    units = {
        calib.unit_name(spec, 8): {"forecasts": [law, close]},
        calib.unit_name(spec, None): {"forecasts": [far]},
    }
    rows = calib.rows_of([spec], units, profile)
    by = {r["method"]: r for r in rows}
    assert by["finite-width-sde"]["meets"] and not by["sde"]["meets"]
    assert by["sde"]["max_error"] == pytest.approx(0.1)
    se = np.hypot(0.02 / 3.92, 0.02 / 3.92)
    assert by["sde"]["errors"]["p_collapse"]["se"] == pytest.approx(se)
    cells = {c["method"]: c for c in calib.summarise(rows, profile)}
    assert cells["finite-width-sde"]["trusted"] and not cells["sde"]["trusted"]
    # a forecast the tool refused: recorded with its reason, its cell not trusted
    refused = {"method": "law", "width": 8, "refused": "mean_rho is not finite"}
    units[calib.unit_name(spec, 8)] = {"forecasts": [refused, close]}
    rows = calib.rows_of([spec], units, profile)
    assert all(not r["meets"] and "law: mean_rho is not finite" in r["refused"] for r in rows)
    cells = calib.summarise(rows, profile)
    assert all(c["refused"] == 1 and not c["trusted"] and c["max_error"] is None for c in cells)
    assert "1/1" not in calib.summary(
        {"cells": cells, "machine": {"cpu_model": "x"}, "load_average": None,
         "provenance": {"git_commit": "c"}}
    )  # fmt: skip


def test_costs_are_fitted_from_the_measured_forecasts():
    profile = calib.Profile(2, (8,), 100)
    specs = calib.configs(profile)
    units = {}
    for spec in specs:  # seconds = 1 + 1e-6 * N d m^2 exactly
        depth = round(spec["T"] * 8)
        seconds = 1 + 1e-6 * 100 * depth * spec["m"] ** 2
        law = {"method": "law", "depth": depth, "num_steps": None, "seconds": seconds}
        units[calib.unit_name(spec, 8)] = {"forecasts": [law]}
    costs = calib.fitted_costs(units, specs, 100, (8,))
    assert costs["law"]["a"] == pytest.approx(1) and costs["law"]["b"] == pytest.approx(1e-6)
