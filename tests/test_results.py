"""Result files: atomic writes, resuming, foreign or corrupted results, kills, a full disk."""

import dataclasses
import errno
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sdeformer.cli import main
from sdeformer.results import (
    ResultsError,
    ResultStore,
    fold_in_name,
    load_arrays_module,
    provenance,
    read_arrays_header,
    read_json,
    save_arrays_module,
    to_dataframe,
    to_xarray,
    write_json,
)

ROOT = Path(__file__).parents[1]
TINY = ["--width", "8", "--depth", "4", "--tokens", "3", "--samples", "2", "--no-progress"]


def _disk_full(monkeypatch, when=lambda path: True):
    """Make Path.write_text / np.savez fail like a full disk for the paths `when` picks."""
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if when(self):
            real(self, "partial")  # something was written before the disk filled up
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def _temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


def test_write_json_disk_full_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    write_json(path, {"a": 1})
    _disk_full(monkeypatch)
    with pytest.raises(OSError) as info:
        write_json(path, {"a": 2})
    assert info.value.errno == errno.ENOSPC
    assert read_json(path) == {"a": 1}
    assert _temporaries(tmp_path) == []


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError, match="Out of range float"):
        write_json(tmp_path / "x.json", {"a": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_store_records_config_and_version_and_resumes(tmp_path):
    from sdeformer import __version__

    store = ResultStore(tmp_path / "r", "demo", {"n": 4})
    manifest = read_json(tmp_path / "r" / "manifest.json")
    assert manifest["provenance"] == provenance()
    del manifest["provenance"]
    assert manifest == {"kind": "demo", "config": {"n": 4}, "version": __version__}
    store.save("a", {"x": 1})
    store.save_arrays("b", {"v": np.arange(6.0).reshape(2, 3), "ok": np.array([True, False])})
    again = ResultStore(tmp_path / "r", "demo", {"n": 4})
    assert again.has("a") and again.has_arrays("b") and not again.has("b")
    assert again.load("a") == {"x": 1}
    arrays = again.load_arrays("b")
    np.testing.assert_array_equal(arrays["v"], np.arange(6.0).reshape(2, 3))
    assert arrays["ok"].dtype == bool
    # What the rerun reused and computed; a unit written and read back by one run is not reused.
    again.save("c", {"x": 2})
    assert again.load("c") == {"x": 2}
    assert (
        again.resumed_text()
        == f"resumed: reused a, b from the earlier run in {again.directory}; computed c"
    )
    assert store.resumed_text() is None  # the first run reused nothing
    # overwrite=True starts afresh: every unit is gone.
    fresh = ResultStore(tmp_path / "r", "demo", {"n": 5}, overwrite=True)
    assert fresh.names() == [] and not fresh.has_arrays("b")


def test_store_refuses_foreign_and_corrupted(tmp_path):
    d = tmp_path / "r"
    ResultStore(d, "demo", {"n": 4})
    with pytest.raises(ResultsError, match="another kind"):
        ResultStore(d, "other", {"n": 4})
    (d / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ResultsError, match="another kind"):
        ResultStore(d, "demo", {"n": 4})
    (d / "manifest.json").write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(ResultsError, match="not valid JSON"):
        ResultStore(d, "demo", {"n": 4})
    # Units whose manifest is gone have an unknown configuration.
    (d / "manifest.json").unlink()
    (d / "units").mkdir()
    (d / "units" / "a.json").write_text("{}")
    with pytest.raises(ResultsError, match="no manifest.json"):
        ResultStore(d, "demo", {"n": 4})
    store = ResultStore(d, "demo", {"n": 4}, overwrite=True)
    (d / "units" / "b.npz").write_bytes(b"not a zip file")
    with pytest.raises(ResultsError, match="not a readable .npz"):
        store.load_arrays("b")
    with pytest.raises(ResultsError, match="unit name"):
        store.save("../escape", {})


def test_store_disk_full_keeps_finished_units(tmp_path, monkeypatch):
    store = ResultStore(tmp_path / "r", "demo", {"n": 4})
    store.save("a", {"x": 1})
    _disk_full(monkeypatch, when=lambda p: ".b.json." in p.name or ".a.json." in p.name)
    with pytest.raises(OSError):
        store.save("b", {"x": 2})
    with pytest.raises(OSError):
        store.save("a", {"x": 3})
    assert store.names() == ["a"] and store.load("a") == {"x": 1}
    assert _temporaries(tmp_path) == []


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path):
    store = ResultStore(tmp_path / "r", "demo", {"n": 4})
    store.save("a", {"x": 1})
    stale = tmp_path / "r" / "units" / ".b.json.abc123.tmp"
    stale.write_text('{"x": ')  # a kill in the middle of writing unit b
    checkpoint = tmp_path / "r" / "checkpoints" / ".g.ckpt.def456.tmp"  # a hard exit (grace)
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"half")
    again = ResultStore(tmp_path / "r", "demo", {"n": 4})
    assert again.names() == ["a"] and not stale.exists() and not checkpoint.exists()


def _run_cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = "import sys; from sdeformer.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    """SIGKILL a rank-collapse run right after its first unit is written; the rerun computes only
    the missing units and its report equals an uninterrupted run's."""
    kinds = ["--kinds", "shaped,unshaped"]
    killed = tmp_path / "killed"
    proc = _run_cli(["rank-collapse", *TINY, *kinds, "--out", str(killed)])
    first = killed / "units" / "shaped.json"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert first.exists(), proc.stderr.read()[-2000:]
    done = {p.stem for p in (killed / "units").glob("*.json")}
    assert done == {"shaped"}, "the run finished before the kill"
    assert not (killed / "rank_collapse.json").exists()
    shaped_before = first.read_text()

    assert main(["rank-collapse", *TINY, *kinds, "--out", str(killed), "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert first.read_text() == shaped_before  # loaded, not recomputed
    assert main(["rank-collapse", *TINY, *kinds, "--out", str(tmp_path / "whole"), "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert resumed["curves"] == whole["curves"]
    assert resumed["resumed"] == (
        f"resumed: reused shaped from the earlier run in {killed}; computed unshaped"
    )
    assert whole["resumed"] is None
    assert _temporaries(tmp_path) == []


# ----------------------------------------------------------------------------- provenance


def test_provenance_records_versions_devices_and_extra():
    import importlib.metadata
    import platform

    import jax

    info = provenance(extra={"corpus_sha256": "0" * 64})
    assert info["version"] == __import__("sdeformer").__version__
    for lib in ("jax", "jaxlib", "equinox", "diffrax", "optax"):
        assert info["versions"][lib] == importlib.metadata.version(lib)
    assert info["python"] == platform.python_version()
    assert info["backend"] == jax.default_backend()
    assert info["device_count"] == jax.device_count()
    assert info["device_kind"] == jax.devices()[0].device_kind
    assert info["corpus_sha256"] == "0" * 64
    # This checkout is a git work tree: the commit is recorded (40 hex digits, maybe +dirty).
    assert info["git_commit"] is None or len(info["git_commit"].split("+")[0]) == 40
    with pytest.raises(ValueError, match="reserved"):
        provenance(extra={"version": "x"})


def test_provenance_without_git(monkeypatch):
    """No git executable (or no checkout): the commit is None, nothing fails."""
    import subprocess

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert provenance()["git_commit"] is None


def test_commit_dirty_for_code_not_for_written_results(tmp_path):
    """A changed source file marks the commit "+dirty"; a result a run wrote does not."""
    from sdeformer.results.origin import _git_commit

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for path in ("code.py", "benchmarks/results/a.json", "docs/results/b.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("0")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = _git_commit(tmp_path)
    assert clean is not None and not clean.endswith("+dirty")
    (tmp_path / "benchmarks/results/a.json").write_text("1")
    (tmp_path / "docs/results/b.json").write_text("1")
    assert _git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("1")
    assert _git_commit(tmp_path) == clean + "+dirty"


def _age_manifest(directory: Path, version: str = "0.0.1") -> None:
    path = directory / "manifest.json"
    manifest = read_json(path)
    manifest["version"] = version
    manifest["provenance"]["version"] = version
    write_json(path, manifest)


def test_resume_refuses_another_version_unless_accepted(tmp_path):
    d = tmp_path / "r"
    ResultStore(d, "demo", {"n": 4}).save("a", {"x": 1})
    _age_manifest(d)
    with pytest.raises(ResultsError, match=r"sdeformer 0\.0\.1.*--overwrite.*--accept-changed"):
        ResultStore(d, "demo", {"n": 4})
    store = ResultStore(d, "demo", {"n": 4}, accept_changed=True)
    assert store.load("a") == {"x": 1}
    manifest = read_json(d / "manifest.json")
    assert manifest["version"] == "0.0.1"  # the run that created the units
    assert manifest["resumes"] == [provenance()]  # and who resumed them
    ResultStore(d, "demo", {"n": 4}, accept_changed=True)  # the same code again: not re-recorded
    assert read_json(d / "manifest.json")["resumes"] == [provenance()]
    # A different configuration is refused even with accept_changed: units would mix configs.
    with pytest.raises(ResultsError, match="another configuration.*--overwrite"):
        ResultStore(d, "demo", {"n": 5}, accept_changed=True)


def test_cli_resume_refuses_another_version_then_accepts(tmp_path, capsys):
    out = tmp_path / "rc"
    argv = ["rank-collapse", *TINY, "--kinds", "shaped", "--out", str(out), "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["provenance"]["version"] == provenance()["version"]
    assert read_json(out / "provenance.json")["provenance"]["versions"] == provenance()["versions"]
    _age_manifest(out)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--accept-changed" in err and "0.0.1" in err
    assert main([*argv, "--accept-changed"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["curves"] == first["curves"]  # the unit was reused, not recomputed


# ------------------------------------------------------------------------- seeds per unit


def test_fold_in_name_is_stable_and_distinct():
    import jax.random as jr

    def data(k):
        return np.asarray(jr.key_data(k))

    key = jr.key(3)
    np.testing.assert_array_equal(data(fold_in_name(key, "a")), data(fold_in_name(key, "a")))
    assert not np.array_equal(data(fold_in_name(key, "a")), data(fold_in_name(key, "b")))
    # The id is CRC-32 of the name: fixed across processes and Python versions (no hash salt).
    np.testing.assert_array_equal(
        data(fold_in_name(key, "shaped")), data(jr.fold_in(key, 0x100820D5))
    )


# --------------------------------------------------------------- save, load, xarray, pandas


@dataclasses.dataclass(frozen=True)
class _Row:
    feature: str
    time: float
    quantiles: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class _Samples:
    """Stands in for compare.CovarianceSamples (numpy fields, validation in __post_init__)."""

    label: str
    ts: np.ndarray
    vs: np.ndarray
    alive: np.ndarray

    def __post_init__(self):
        if self.vs.shape[1] != self.ts.shape[0]:
            raise ValueError("vs and ts disagree")


@dataclasses.dataclass(frozen=True)
class _Comparison:
    """Stands in for compare.Comparison (nested records, dicts with float keys, inf)."""

    label_a: str
    rows: tuple[_Row, ...]
    stopped: dict


def _solution_class():
    import equinox as eqx
    import jax
    from jaxtyping import Array, Bool, Float, Int

    class _Solution(eqx.Module):
        """Stands in for sde.SDESolution (JAX array fields)."""

        ts: Float[Array, " k"]
        vs: Float[Array, "paths k m m"]
        alive: Bool[Array, "paths k"]
        exit_reason: Int[Array, " paths"]

    _Solution.__qualname__ = "_Solution"
    del jax
    return _Solution


_SOLUTION = _solution_class()


def test_save_load_round_trip_equinox_module(tmp_path):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    sol = _SOLUTION(
        ts=jnp.linspace(0.0, 1.0, 3),
        vs=jnp.asarray(rng.normal(size=(4, 3, 2, 2)), jnp.float32),
        alive=jnp.asarray(rng.random((4, 3)) > 0.3),
        exit_reason=jnp.arange(4, dtype=jnp.int32),
    )
    path = save_arrays_module(tmp_path / "sol.npz", sol)
    back = load_arrays_module(_SOLUTION, path)
    for name in ("ts", "vs", "alive", "exit_reason"):
        a, b = getattr(sol, name), getattr(back, name)
        assert isinstance(b, jax.Array) and b.dtype == a.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    header = read_arrays_header(path)
    assert header["class"].endswith("_Solution")
    assert header["field_names"] == ["ts", "vs", "alive", "exit_reason"]
    assert header["provenance"]["version"] == provenance()["version"]
    assert _temporaries(tmp_path) == []


def test_save_load_round_trip_nested_dataclasses(tmp_path):
    comp = _Comparison(
        "finite",
        (_Row("rho_01", 0.5, (0.1, 0.2)), _Row("rho_01", 1.0, (0.3, float("inf")))),
        {0.5: 0.0, 1.0: 0.25},
    )
    back = load_arrays_module(
        _Comparison, save_arrays_module(tmp_path / "c.npz", comp), classes=(_Row,)
    )
    assert back == comp  # tuples stay tuples, float keys stay floats, inf survives
    samples = _Samples("sde", np.arange(3.0), np.zeros((2, 3, 2, 2)), np.ones((2, 3), bool))
    again = load_arrays_module(_Samples, save_arrays_module(tmp_path / "s.npz", samples))
    assert again.label == "sde" and isinstance(again.vs, np.ndarray)
    np.testing.assert_array_equal(again.alive, samples.alive)
    # the library's own message (unwrapped: the tests' runtime type checker refuses it first)
    with pytest.raises(TypeError, match="arguments look swapped"):
        inspect.unwrap(save_arrays_module)(samples, tmp_path / "swapped.npz")
    assert not (tmp_path / "swapped.npz").exists()


def test_load_refuses_other_class_changed_fields_and_foreign_classes(tmp_path):
    samples = _Samples("sde", np.arange(3.0), np.zeros((2, 3, 2, 2)), np.ones((2, 3), bool))
    path = save_arrays_module(tmp_path / "s.npz", samples)
    with pytest.raises(ResultsError, match="holds a .*_Samples, not a .*_Comparison"):
        load_arrays_module(_Comparison, path)

    @dataclasses.dataclass(frozen=True)
    class _Samples2:
        label: str
        ts: np.ndarray

    _Samples2.__qualname__ = "_Samples"  # same name, other fields: a class that changed
    with pytest.raises(ResultsError, match=r"missing \[\].*extra \['alive', 'vs'\]"):
        load_arrays_module(_Samples2, path)
    comp = _Comparison("a", (_Row("x", 0.0, ()),), {})
    path = save_arrays_module(tmp_path / "c.npz", comp)
    with pytest.raises(ResultsError, match="not part of sdeformer"):
        load_arrays_module(_Comparison, path)  # _Row not allowed: no import of arbitrary code
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ResultsError, match="not a readable .npz"):
        load_arrays_module(_Samples, tmp_path / "bad.npz")
    with pytest.raises(TypeError, match="cannot save field x of type object"):

        @dataclasses.dataclass
        class _Bad:
            x: object

        save_arrays_module(tmp_path / "x.npz", _Bad(object()))


def test_to_xarray_and_to_dataframe_label_dims():
    ts = np.array([0.0, 0.5, 1.0])
    vs = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)
    samples = _Samples("sde", ts, vs, np.ones((2, 3), bool))
    ds = to_xarray(
        samples,
        {"vs": ("sample", "time", "token_a", "token_b"), "alive": ("sample", "time")},
        coords={"time": "ts"},
    )
    assert dict(ds.sizes) == {"sample": 2, "time": 3, "token_a": 2, "token_b": 2}
    assert ds.attrs["label"] == "sde"
    assert float(ds.vs.sel(time=0.5, sample=1, token_a=0, token_b=1)) == vs[1, 1, 0, 1]
    with pytest.raises(ValueError, match="names 2 axes but vs has shape"):
        to_xarray(samples, {"vs": ("sample", "time")})
    df = to_dataframe(
        samples, field="vs", dims=("sample", "time", "token_a", "token_b"), coords={"time": "ts"}
    )
    assert len(df) == vs.size and list(df.columns) == ["sample", "time", "token_a", "token_b", "vs"]
    row = df[(df["sample"] == 1) & (df["time"] == 1.0) & (df.token_a == 1) & (df.token_b == 0)]
    assert row["vs"].item() == vs[1, 2, 1, 0]
    comp = _Comparison("finite", (_Row("rho_01", 0.5, (0.1,)), _Row("rho_01", 1.0, (0.3,))), {})
    table = to_dataframe(comp, records="rows")
    assert table.to_dict("list") == {
        "label_a": ["finite", "finite"],
        "feature": ["rho_01", "rho_01"],
        "time": [0.5, 1.0],
        "quantiles": [(0.1,), (0.3,)],
    }


def test_save_load_and_views_of_the_real_result_classes(tmp_path):
    """SDESolution / CovarianceSamples / Comparison: `save` / `load` round trips, labelled
    `to_xarray` / `to_dataframe` views."""
    import jax.numpy as jnp
    import jax.random as jr

    from sdeformer import SDESolution, ShapedConfig, solve_sde
    from sdeformer.compare import Comparison, CovarianceSamples, compare_sources
    from sdeformer.results import SOLUTION_DIMS

    v0 = jnp.array([[1.0, 0.3], [0.3, 1.0]])
    sol = solve_sde(
        ShapedConfig(gamma=0.4), v0, T=0.2, num_samples=6, key=jr.key(0), num_steps=4, save_times=3
    )
    back = SDESolution.load(sol.save(tmp_path / "sol.npz"))
    for name in SOLUTION_DIMS:
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), getattr(sol, name))
    ds = sol.to_xarray()
    assert dict(ds.sizes) == {"time": 3, "sample": 6, "token_a": 2, "token_b": 2}
    np.testing.assert_array_equal(ds["vs"].values, np.asarray(sol.vs))
    np.testing.assert_allclose(ds["time"].values, np.asarray(sol.ts))

    a = CovarianceSamples("sde", np.asarray(sol.ts), np.asarray(sol.vs), np.asarray(sol.alive))
    b = CovarianceSamples("other", a.ts, a.vs * 1.1, a.alive)
    again = CovarianceSamples.load(a.save(tmp_path / "a.npz"))
    assert again.label == "sde" and np.array_equal(again.vs, a.vs)
    assert np.array_equal(again.failed, a.failed)
    assert a.to_xarray().attrs["label"] == "sde"
    frame = a.to_dataframe()
    assert len(frame) == a.vs.size
    first = frame.iloc[5]  # long format, C order: sample 0, time 1, token (0, 1)
    assert first["vs"] == pytest.approx(float(a.vs[0, 1, 0, 1]))

    comparison = compare_sources(a, b, feature_names=["rho_0_1"])
    loaded = Comparison.load(comparison.save(tmp_path / "c.npz"))
    assert loaded == comparison
    table = comparison.to_dataframe()
    assert len(table) == len(comparison.rows) and "ks" in table.columns
