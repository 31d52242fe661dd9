"""The layer contract of the package (pyproject.toml, [tool.importlinter]) holds and bites."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINT = pathlib.Path(sys.executable).with_name("lint-imports")


def _lint(cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run(
        [str(LINT)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_package_keeps_its_layers():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def test_an_upward_import_is_flagged(tmp_path):
    """A copy of the package whose config imports the command line breaks the contract."""
    shutil.copytree(ROOT / "sdeformer", tmp_path / "sdeformer")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    config = tmp_path / "sdeformer" / "config.py"
    config.write_text(config.read_text() + "\nfrom . import cli  # noqa: E402 (deliberate)\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "sdeformer.config is not allowed to import sdeformer.cli" in out.stdout
