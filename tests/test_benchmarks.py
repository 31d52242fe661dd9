"""The benchmarks' own machinery: bench_tokens at a tiny size, and the O(m^3) Euler baseline's law.

The benchmark numbers are only meaningful if the baseline integrates the same SDE as
`solve_sde`; the second test checks that in law (first and second moments of V at time T).
"""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from benchmarks import bench_tokens
from benchmarks._baseline import euler_paths
from benchmarks._tokens import initial_covariance, solve
from sdeformer import ShapedConfig


def test_bench_tokens_quick_writes_finite_json(tmp_path):
    measures = ["sde", "baseline", "matmul", "law_attention", "compare"]
    out = tmp_path / "tokens.json"
    bench_tokens.main(
        ["--quick", "--tokens", "2", "3", "--measures", *measures, "--out", str(out)]
        + ["--store", str(tmp_path / "units"), "--no-figure"]
    )
    data = json.loads(out.read_text())
    for key in ("machine", "settings", "load", "rows", "exponents", "goals", "config"):
        assert key in data, key
    assert [r["m"] for r in data["rows"]] == [2, 3]
    for row in data["rows"]:
        assert set(row["measures"]) == set(bench_tokens.MEASURES)
        for name in measures:
            res = row["measures"][name]
            assert res["status"] == "ok", (row["m"], name, res)
            for field in ("seconds", "rate", "cost"):
                assert math.isfinite(res[field]) and res[field] > 0, (name, field, res[field])
        assert row["measures"]["law_full"]["status"] == "skipped"
        assert math.isfinite(row["sde_over_baseline"]) and row["sde_over_baseline"] > 0
        assert math.isfinite(row["sde_fraction_of_matmul"])
    for name in measures:
        assert math.isfinite(data["exponents"][name]["all"]["exponent"]), name
    # A second run reuses the stored units (resumable) and rebuilds the same rows.
    bench_tokens.main(
        ["--quick", "--tokens", "2", "3", "--out", str(out), "--store", str(tmp_path / "units")]
        + ["--no-figure", "--measures", *measures]
    )
    again = json.loads(out.read_text())
    assert again["rows"][0]["measures"]["sde"] == data["rows"][0]["measures"]["sde"]


def _moments(vs: np.ndarray, v0: np.ndarray) -> tuple[np.ndarray, ...]:
    """Means of V_ab and of |V_ab - V0_ab| (a spread robust to the heavy tails of V), upper
    triangle, with their standard errors."""
    i, j = np.triu_indices(vs.shape[-1])
    x = vs[:, i, j].astype(np.float64)
    d = np.abs(x - np.asarray(v0, np.float64)[i, j])
    n = x.shape[0]
    se = lambda y: y.std(0, ddof=1) / np.sqrt(n)  # noqa: E731
    return x.mean(0), se(x), d.mean(0), se(d)


def test_baseline_euler_has_the_law_of_solve_sde():
    """Same Euler scheme, different noise formulation: equal laws of V_ab(T) in two moments.

    With 2000 paths each, 6 entries x (mean of V_ab, mean of |V_ab - V0_ab|) = 12 z-scores;
    |z| < 4.5 for all of them has a false-alarm probability of about 1e-4 under equal laws
    (normal approximation of sample means). Power: doubling kappa in the baseline (a wrong Lin
    noise) must move some mean |V_ab - V0_ab| by more than 4.5 standard errors.
    """
    config = ShapedConfig(tau0=1.0, gamma=0.4, c_minus=-1.0)
    m, paths, steps, T = 3, 2000, 20, 0.5
    v0 = initial_covariance(m)
    sol = solve(config, v0, T, paths, key=jr.key(1), num_steps=steps, progress=False)
    ref, ref_alive = np.asarray(sol.vs[:, -1]), np.asarray(sol.alive[:, -1])

    def baseline(kappa_scale, key):
        v, alive = euler_paths(
            config, v0, T, 1e3, key=key, num_paths=paths, num_steps=steps, kappa_scale=kappa_scale
        )
        return np.asarray(v), np.asarray(alive)

    base, base_alive = baseline(1.0, jr.key(2))
    assert ref_alive.mean() > 0.98 and base_alive.mean() > 0.98
    mr, smr, vr, svr = _moments(ref[ref_alive], v0)
    mb, smb, vb, svb = _moments(base[base_alive], v0)
    z_mean = (mr - mb) / np.hypot(smr, smb)
    z_var = (vr - vb) / np.hypot(svr, svb)
    assert np.all(np.abs(z_mean) < 4.5), z_mean
    assert np.all(np.abs(z_var) < 4.5), z_var
    assert jnp.all(jnp.isfinite(jnp.asarray(base)))

    wrong, wrong_alive = baseline(2.0, jr.key(3))
    _, _, vw, svw = _moments(wrong[wrong_alive], v0)
    assert np.max(np.abs((vr - vw) / np.hypot(svr, svw))) > 4.5, "the check has no power"


@pytest.mark.parametrize("measure", ["sde", "law_attention", "explicit_full"])
def test_plan_skips_a_measure_predicted_past_the_limit(measure):
    """A run of size 10 that took 80 s at m = 32 predicts past the 90 s limit at m = 128 even at
    the smallest size; a measure skipped at a smaller m stays skipped."""
    p = bench_tokens.PROFILES["cpu"]
    cost = 80.0 / bench_tokens.units_per_run(measure, 10, p)
    last = {"status": "ok", "seconds": 80.0, "compile_s": 1.0, "cost": cost}
    size, reason = bench_tokens.plan_measure(measure, 128, 1000, [(32, last)], p)
    assert size is None and "limit" in reason
    failed = {"status": "skipped", "reason": "memory"}
    size, reason = bench_tokens.plan_measure(measure, 64, 10, [(32, failed)], p)
    assert size is None and "m=32" in reason


def test_plan_shrinks_paths_to_fit_the_limit():
    p = bench_tokens.PROFILES["cpu"]
    last = {"status": "ok", "seconds": 30.0, "compile_s": 1.0, "cost": 30.0 / (1000 * p.steps)}
    size, reason = bench_tokens.plan_measure("sde", 64, 1000, [(32, last)], p)
    assert reason is None and p.min_paths <= size < 1000


def test_plan_predicts_the_comparison_with_at_least_m_squared():
    """compare_sources caps its pairs, but each sample's correlations cost O(m^2)."""
    p = bench_tokens.PROFILES["cpu"]
    quick = {"status": "ok", "seconds": 20.0, "compile_s": 0.0, "cost": 20.0}
    assert bench_tokens.plan_measure("compare", 256, 2000, [(128, quick)], p) == (2000, None)
    mid = {"status": "ok", "seconds": 30.0, "compile_s": 0.0, "cost": 30.0}
    size, reason = bench_tokens.plan_measure("compare", 256, 2000, [(128, mid)], p)
    assert size is None and "predicted 120 s" in reason
    slow = {"status": "ok", "seconds": 100.0, "compile_s": 0.0, "cost": 100.0}
    size, reason = bench_tokens.plan_measure("compare", 256, 2000, [(128, slow)], p)
    assert size is None and "took" in reason


def test_bench_design_records_autos_choice_at_every_size():
    from benchmarks import bench_design
    from sdeformer.design import METHODS

    rows = bench_design.auto_choices(bench_design.PROFILES["gpu"])
    assert [(r["m"], r["n"]) for r in rows][0] == (64, 256)
    assert max(r["m"] for r in rows) == 256 and max(r["n"] for r in rows) == 1024
    for r in rows:
        assert r["method"] in METHODS and r["method"] != "auto" and r["reason"]
        assert {c["method"] for c in r["candidates"]} <= set(METHODS)
    data = {"forecasts": [], "auto": rows,
            "map": {"grid": 2, "m": 2, "n": 8, "paths_per_cell": 4, "sde_num_steps": 9,
                    "seconds": 1.0},
            "tune": {"search_samples": 4, "evaluations": 3, "certify_samples": 8,
                     "seconds": 2.0}}  # fmt: skip
    assert "auto at m=256, n=d=1024" in "\n".join(bench_design.summary(data))
