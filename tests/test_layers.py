"""The layer contract of the package (pyproject.toml, [tool.importlinter]) holds and bites."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

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
    assert "4 kept, 0 broken" in out.stdout


@pytest.mark.parametrize(
    ("module", "line", "message"),
    [
        (
            "config.py",
            "from . import cli",
            "sdeformer.config is not allowed to import sdeformer.cli",
        ),
        (
            "design/__init__.py",
            "from .. import train",
            "sdeformer.design is not allowed to import sdeformer.train",
        ),
        ("sde/__init__.py", "import optax", "sdeformer.sde is not allowed to import optax"),
    ],
    ids=["upward", "sibling-faces", "optax-in-core"],
)
def test_a_bad_import_is_flagged(tmp_path, module, line, message):
    """A copy of the package with one forbidden import breaks its contract, named."""
    shutil.copytree(ROOT / "sdeformer", tmp_path / "sdeformer")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "sdeformer" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa: E402 (deliberate)\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert message in " ".join(out.stdout.split())
