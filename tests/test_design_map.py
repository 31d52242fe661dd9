"""sdeformer.design.phase_map: structure, common random numbers, refusals, the CLI."""

import json

import jax.random as jr
import numpy as np
import pytest

from sdeformer import ShapedConfig
from sdeformer.cli import main
from sdeformer.design import PhaseMap, grid_axis, phase_map
from sdeformer.rank_collapse import equicorrelated

CONFIG = ShapedConfig()
V0 = equicorrelated(2, 0.3)
SIZES = dict(width=16, depth=4, num_samples=100)  # T = 0.25, 32 steps: a small solve per cell
CLI_SIZES = ["--tokens", "2", "--rho0", "0.3", "--width", "16", "--depth", "4", "--samples", "100"]


@pytest.fixture(scope="module")
def grid3():
    x = grid_axis("tau0", 0.5, 3.0, 3)
    y = grid_axis("gamma", 0.2, 0.9, 3)
    return phase_map(CONFIG, V0, x=x, y=y, key=jr.key(0), **SIZES)


def test_structure_and_json(grid3):
    assert isinstance(grid3, PhaseMap)
    for arr in (grid3.p_collapse, grid3.p_blowup, grid3.median_mean_rho, grid3.p_left_psd_cone):
        assert arr.shape == (3, 3) and np.all(np.isfinite(arr))
    for arr in (grid3.p_collapse, grid3.p_blowup, grid3.p_left_psd_cone):
        assert np.all((arr >= 0) & (arr <= 1))
    assert np.all(grid3.p_left_psd_cone <= grid3.p_blowup)
    assert np.all(np.abs(grid3.median_mean_rho) <= 1)
    report = json.loads(json.dumps(grid3.to_dict(), allow_nan=False))
    assert set(report) >= {"settings", "definitions", "p_collapse", "p_blowup", "median_mean_rho"}
    s = report["settings"]
    assert s["x"] == {"name": "tau0", "values": [0.5, 1.75, 3.0]}
    assert s["y"]["name"] == "gamma" and s["samples_per_cell"] == 100 and s["tokens"] == 2
    assert s["method"] == "sde" and s["sde_num_steps"] >= 25  # T / 0.01 at least
    assert np.asarray(report["p_blowup"]).shape == (3, 3)
    assert "m=2" in str(grid3) and "100 paths per cell" in str(grid3)


def test_noise_grows_with_gamma(grid3):
    # at gamma = 0.2 the SDE barely moves in T = 0.25: the median stays near rho0 = 0.3 and no
    # path stops; at gamma = 0.9 some paths spread far (a property of the SDE, not of noise)
    assert np.all(np.abs(grid3.median_mean_rho[0] - 0.3) < 0.05)
    assert np.all(grid3.p_blowup[0] == 0)


def test_common_random_numbers_and_cli(grid3, tmp_path):
    # the 2 x 2 map of the CLI has the 3 x 3 map's corners as its cells and the same steps
    # (the same most demanding corner): with one key the cells must agree exactly
    out = tmp_path / "map"
    argv = ["design", "map", "--x", "tau0:0.5:3:2", "--y", "gamma:0.2:0.9:2", "--out", str(out)]
    assert main(argv + CLI_SIZES + ["--seed", "0", "--workers", "1"]) == 0  # one row at a time
    report = json.loads((out / "map.json").read_text())
    assert (out / "map.png").stat().st_size > 1000
    assert report["command"] == "design map" and report["seed"] == 0
    assert report["settings"]["sde_num_steps"] == grid3.num_steps
    for name, arr in (("p_blowup", grid3.p_blowup), ("median_mean_rho", grid3.median_mean_rho)):
        np.testing.assert_array_equal(np.asarray(report[name]), arr[::2, ::2])


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (("temperature", [1.0, 2.0]), ("gamma", [0.2, 0.5]), "'temperature' is unknown"),
        (("tau0", [1.0, 1.0]), ("gamma", [0.2, 0.5]), "not an increasing grid"),
        (("tau0", [1.0, 2.0]), ("gamma", [0.5, 1.2]), "gamma=1.2.*strictly between 0 and 1"),
        (("tau0", [-1.0, 2.0]), ("gamma", [0.2, 0.5]), "tau0=-1.*> 0"),
        (("gamma", [0.2, 0.5]), ("gamma", [0.2, 0.5]), "both 'gamma'"),
    ],
)
def test_bad_axes_refused(x, y, match):
    with pytest.raises(ValueError, match=match):
        phase_map(CONFIG, V0, x=x, y=y, key=jr.key(0), **SIZES)


def test_grid_axis_refuses_empty_ranges():
    with pytest.raises(ValueError, match="empty; pass a lower end below"):
        grid_axis("tau0", 2.0, 1.0, 4)
    with pytest.raises(ValueError, match="count >= 2"):
        grid_axis("tau0", 1.0, 2.0, 1)


def test_rows_at_once_do_not_change_the_map(grid3):
    # grid3 ran with the default workers (the CPU cores): one row at a time and three at once
    # must give the same numbers in the same cells
    x, y = grid_axis("tau0", 0.5, 3.0, 3), grid_axis("gamma", 0.2, 0.9, 3)
    one = phase_map(CONFIG, V0, x=x, y=y, key=jr.key(0), workers=1, **SIZES)
    three = phase_map(CONFIG, V0, x=x, y=y, key=jr.key(0), workers=3, **SIZES)
    for name in ("p_collapse", "p_blowup", "median_mean_rho", "p_left_psd_cone"):
        np.testing.assert_array_equal(getattr(one, name), getattr(grid3, name))
        np.testing.assert_array_equal(getattr(three, name), getattr(grid3, name))


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_workers_refused(workers):
    x, y = ("tau0", [1.0, 2.0]), ("gamma", [0.2, 0.5])
    with pytest.raises(ValueError, match=f"workers={workers!r} is invalid"):
        phase_map(CONFIG, V0, x=x, y=y, key=jr.key(0), workers=workers, **SIZES)


def test_bad_method_refused():
    x, y = ("tau0", [1.0, 2.0]), ("gamma", [0.2, 0.5])
    with pytest.raises(ValueError, match="not a phase-map method"):
        phase_map(CONFIG, V0, x=x, y=y, key=jr.key(0), method="explicit", **SIZES)
    preln = ShapedConfig(blocks=("preln_attention", "preln_mlp"))
    with pytest.raises(ValueError, match="method='sde'"):
        phase_map(preln, V0, x=x, y=y, key=jr.key(0), **SIZES)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--x", "foo:0:1:3", "--y", "gamma:0.2:0.9:3"], "unknown parameter 'foo'"),
        (["--x", "tau0:1:1:3", "--y", "gamma:0.2:0.9:3"], "is empty"),
        (["--x", "tau0:1:2:3", "--y", "gamma:0.2:1.5:3"], "gamma=1.5"),
        (["--x", "tau0:1:2"], "NAME:LO:HI:COUNT"),
        (["--x", "tau0:1:2:3"], "needs --y"),
        (["--x", "tau0:1:2:3", "--y", "gamma:0.2:0.9:3", "--method", "explicit"], "sde"),
        (["--x", "tau0:1:2:3", "--y", "gamma:0.2:0.9:3", "--width", "0"], "--width"),
    ],
)
def test_cli_refusals_write_nothing(tmp_path, capsys, flags, match):
    out = tmp_path / "refused"
    try:
        code = main(["design", "map", "--out", str(out), *flags])
    except SystemExit as err:  # argparse's own refusals (a non-positive --width)
        code = err.code
    assert code == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_law_map_matches_the_forecast_cell_by_cell():
    # method="law": each cell is forecast(method="law") with the map's one key
    from sdeformer.design import forecast

    x, y = ("tau0", [1.0, 2.0]), ("c_minus", [-1.5, -0.5])
    sizes = dict(width=8, depth=4, num_samples=64)
    pm = phase_map(CONFIG, V0, x=x, y=y, key=jr.key(1), method="law", **sizes)
    assert pm.method == "law" and pm.num_steps is None
    assert np.all(pm.p_left_psd_cone == 0)
    fc = forecast(CONFIG.replace(tau0=2.0, c_minus=-0.5), V0, key=jr.key(1), **sizes)
    assert pm.median_mean_rho[1, 1] == pytest.approx(fc.final.features["mean_rho"]["q50"].value)
    assert pm.p_blowup[1, 1] == fc.final.p_blowup.value


def test_an_interrupted_map_resumes_to_the_uninterrupted_result(tmp_path):
    from sdeformer.results import ResultStore

    x, y = grid_axis("tau0", 0.5, 3.0, 2), grid_axis("gamma", 0.2, 0.9, 3)
    args = dict(x=x, y=y, key=jr.key(1), **SIZES)
    whole = phase_map(CONFIG, V0, **args)

    def stop_after_first_row(done, total):
        if done == 2:
            raise KeyboardInterrupt

    store = ResultStore(tmp_path, "design-map", {"map": 1})
    with pytest.raises(KeyboardInterrupt):  # row 1 was in flight beside row 0: not saved
        phase_map(CONFIG, V0, store=store, progress=stop_after_first_row, workers=2, **args)
    assert store.has_arrays("row_0000") and not store.has_arrays("row_0001")
    first_seconds = store.load_arrays("row_0000")["sec"]
    reopened = ResultStore(tmp_path, "design-map", {"map": 1})
    resumed = phase_map(CONFIG, V0, store=reopened, workers=2, **args)
    np.testing.assert_array_equal(resumed.cell_seconds[0], first_seconds)  # read, not recomputed
    for name in ("p_collapse", "p_blowup", "median_mean_rho", "p_left_psd_cone"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))


def test_cli_map_resumes_and_refuses_a_changed_setting(tmp_path, capsys):
    out = tmp_path / "map"
    argv = ["design", "map", "--x", "tau0:0.5:3:2", "--y", "gamma:0.2:0.9:2", "--out", str(out)]
    assert main(argv + CLI_SIZES) == 0
    first = json.loads((out / "map.json").read_text())
    assert sorted(p.name for p in (out / "units").iterdir()) == ["row_0000.npz", "row_0001.npz"]
    assert main(argv + CLI_SIZES) == 0  # every row read back: the same map
    again = json.loads((out / "map.json").read_text())
    assert again["p_blowup"] == first["p_blowup"] and again["seconds"] < first["seconds"]
    capsys.readouterr()
    changed = [s if s != "100" else "120" for s in CLI_SIZES]  # --samples 120
    assert main(argv + changed) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "samples" in err and "--overwrite" in err
    assert main(argv + changed + ["--overwrite"]) == 0


def test_per_row_steps_agree_with_one_common_step_within_monte_carlo_error():
    # the map before per-row steps: every row in the steps of the grid's most demanding cell,
    # Brownian increments keyed by the step's times; now each row takes its own (fewer) steps
    # on one shared Brownian grid. The two are independent samples of the same cells: every
    # statistic must agree within 4 standard errors of the difference
    from sdeformer.design._cells import grid_num_steps, sde_endpoint
    from sdeformer.design._intervals import quantile_interval

    v0, paths, xs, ys = equicorrelated(3, 0.3), 1000, np.array([0.5, 2.0]), np.array([0.3, 0.9])
    sizes = dict(width=16, depth=16)
    new = phase_map(CONFIG, v0, x=("tau0", xs), y=("gamma", ys), key=jr.key(3),
                    num_samples=paths, **sizes)  # fmt: skip
    common = grid_num_steps(CONFIG, v0, 1.0, {"tau0": (0.5, 2.0), "gamma": (0.3, 0.9)})
    assert new.row_steps[0] < new.row_steps[1] and new.row_steps[0] < common
    assert new.num_steps >= common and new.num_steps % new.row_steps[0] == 0
    assert new.p_blowup.max() > 0.02 and new.p_collapse.max() > 0.02  # something to compare
    for j, gamma in enumerate(ys):
        for i, tau0 in enumerate(xs):
            old = sde_endpoint(
                CONFIG, v0, T=1.0, num_samples=paths, key=jr.key(4), num_steps=common,
                bound=1e3, dtype=np.float32, values={"tau0": tau0, "gamma": gamma},
            )  # fmt: skip
            pairs = (
                (new.p_collapse, np.mean(old.mean_rho >= 0.9)),
                (new.p_blowup, np.mean(old.stopped)),
                (new.p_left_psd_cone, np.mean(old.left_cone)),
            )
            for arr, p_old in pairs:
                p_new = arr[j, i]
                se = np.sqrt((p_new * (1 - p_new) + p_old * (1 - p_old)) / paths)
                assert abs(p_new - p_old) <= 4 * se + 1e-12, (j, i, p_new, p_old)
            median = quantile_interval(old.mean_rho, 0.5)
            se = (median.upper - median.lower) / (2 * 1.96)
            assert abs(new.median_mean_rho[j, i] - median.value) <= 4 * np.sqrt(2) * se
