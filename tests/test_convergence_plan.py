"""benchmarks.convergence: disjoint keys, and no comparison conditions one side on survival."""

import json

import numpy as np

from benchmarks import convergence as conv
from sdeformer import compare
from sdeformer.compare.samples import CovarianceSamples


def test_unit_ids_are_distinct_across_sweeps_replications_and_widths():
    for name in ("cpu", "gpu", "tiny"):
        ids = [conv.unit_id(s, r, n) for s, r, n in conv.units(conv.PROFILES[name])]
        assert len(ids) == len(set(ids))
    assert len({s.name for s in conv.PLAN}) == len(conv.PLAN) == 8
    cpu = conv.PROFILES["cpu"]
    assert cpu.replications >= 8 and max(cpu.widths["attn"]) >= 1024


def _samples(label, values, alive):
    """Samples of one 2 x 2 covariance with correlation `values`, one time t = 1."""
    v = np.stack([np.array([[1.0, r], [r, 1.0]]) for r in values])[:, None]
    return CovarianceSamples(label, np.array([1.0]), v, np.asarray(alive)[:, None])


def test_width_distances_keep_exited_paths_on_both_sides():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, 400)
    y = rng.uniform(-0.5, 0.5, 500)
    y[:50] = 0.99  # paths that exited, held at their exit state
    finite = _samples("finite", x, np.ones(400, bool))
    alive_y = np.ones(500, bool)
    alive_y[:50] = False
    sde = _samples("sde", y, alive_y)
    row = compare.width_distances(finite, sde, time=1.0, rounds=10)
    # every path of both sources enters: none is conditioned away on either side
    assert row["size_finite"] == 400 and row["size_sde"] == 500
    np.testing.assert_allclose(row["mean_diff"], x.mean() - y.mean(), rtol=1e-6)
    np.testing.assert_allclose(row["exit_diff"], 0.0 - 0.1, atol=1e-12)
    assert row["exited_sde"] == 0.1 and row["exited_finite"] == 0.0
    # the same rule for both sources: swapping them flips the signs, sizes follow the samples
    swapped = compare.width_distances(sde, finite, time=1.0, rounds=10)
    assert swapped["size_finite"] == 500 and swapped["size_sde"] == 400
    np.testing.assert_allclose(swapped["exit_diff"], 0.1, atol=1e-12)


def test_numerical_failures_leave_both_sides_alike():
    y = np.linspace(-0.5, 0.5, 300)
    failed = np.zeros((300, 1), bool)
    failed[:30] = True
    sde = CovarianceSamples(
        "sde",
        np.array([1.0]),
        _samples("s", y, np.ones(300, bool)).vs,
        ~failed,
        failed,
    )
    row = compare.width_distances(_samples("f", y, np.ones(300, bool)), sde, time=1.0, rounds=10)
    assert row["size_sde"] == 270 and row["size_finite"] == 300


def test_runs_resume_and_record_commit_command_and_machine(tmp_path, monkeypatch):
    calls = []

    def fake_unit(sweep, rep, n, profile):
        calls.append((sweep.name, rep, n))
        rng = np.random.default_rng(conv.unit_id(sweep, rep, n))
        row = {"n": n, "rep": rep, "exit_diff": 0.0, "exited_finite": 0.0, "exited_sde": 0.0}
        row.update(seconds_finite=0.0, seconds_sde=0.0)
        row.update(mean_diff=0.3 / n + rng.normal(0, 1e-3), mean_se=1e-3)
        row.update(energy2=0.1 / n**2 + rng.normal(0, 1e-6), energy2_se=1e-6)
        return row

    monkeypatch.setattr(conv, "run_unit", fake_unit)
    argv = ["--profile", "tiny", "--out", str(tmp_path), "--only", "width_sweep_finite_attn_T1"]
    assert conv.main(argv) == 0
    assert len(calls) == 6
    assert conv.main(argv) == 0 and len(calls) == 6  # resumed: nothing recomputed
    stored = json.loads((tmp_path / "width_sweep_finite_attn_T1.json").read_text())
    assert stored["command"].startswith("python -m benchmarks.convergence --profile tiny")
    assert stored["commit"] and stored["machines"] and len(stored["units"]) == 6
    assert all("load_average" in u and u["commit"] for u in stored["units"].values())
    assert stored["summary"]["status"] == "fitted"


def test_compare_sources_applies_one_rule_to_both_sources():
    x = np.linspace(-0.5, 0.5, 400)
    alive_x = np.ones(400, bool)
    alive_x[:40] = False
    alive_y = np.ones(400, bool)
    alive_y[:10] = False
    a, b = _samples("a", x, alive_x), _samples("b", x, alive_y)
    for mode, sizes in (("survival", (360, 390)), ("stopped", (400, 400))):
        out = compare.compare_sources(a, b, feature_names=["rho_0_1"], mode=mode, w1_rounds=10)
        row = out.rows[0]
        assert (row.size_a, row.size_b) == sizes, mode
