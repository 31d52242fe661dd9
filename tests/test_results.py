"""Result files: atomic writes, resuming, foreign or corrupted results, kills, a full disk."""

import errno
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
from sdeformer.results import ResultsError, ResultStore, read_json, write_json

ROOT = Path(__file__).parents[1]
TINY = ["--n", "8", "--depth", "4", "--tokens", "3", "--samples", "2", "--no-progress"]


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
    assert manifest == {"kind": "demo", "config": {"n": 4}, "version": __version__}
    store.save("a", {"x": 1})
    store.save_arrays("b", {"v": np.arange(6.0).reshape(2, 3), "ok": np.array([True, False])})
    again = ResultStore(tmp_path / "r", "demo", {"n": 4})
    assert again.has("a") and again.has_arrays("b") and not again.has("b")
    assert again.load("a") == {"x": 1}
    arrays = again.load_arrays("b")
    np.testing.assert_array_equal(arrays["v"], np.arange(6.0).reshape(2, 3))
    assert arrays["ok"].dtype == bool
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
    again = ResultStore(tmp_path / "r", "demo", {"n": 4})
    assert again.names() == ["a"] and not stale.exists()


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
    assert _temporaries(tmp_path) == []
