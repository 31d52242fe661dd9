"""The README's opening commands, the API reference (mkdocs, strict) and the examples in the
package's docstrings (doctests). The README's Python example runs in tests/test_docs.py."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_begins_with_make_run_and_make_test():
    text = README.read_text()
    first_block = text.split("```")[1]
    lines = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert lines[:2] == ["make run", "make test"]


# ------------------------------------------------------------------------ API reference, doctests


def _package_modules() -> list[str]:
    import pkgutil

    import sdeformer

    return sorted(
        info.name
        for info in pkgutil.walk_packages(sdeformer.__path__, prefix="sdeformer.")
        if ".cli." not in info.name + "."  # the command modules print and write files
    )


def test_docstring_examples_run():
    """Every `>>>` example in the package's docstrings runs and prints what it shows."""
    import doctest
    import importlib

    tried = failed = 0
    reports = []
    for name in _package_modules():
        module = importlib.import_module(name)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result = doctest.testmod(
                module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
            )
        tried += result.attempted
        failed += result.failed
        if result.failed:
            reports.append(out.getvalue())
    assert failed == 0, "\n".join(reports)
    assert tried >= 10  # power: the examples exist (sdeformer.results alone has several)


def test_api_reference_builds_without_warnings(tmp_path):
    """`mkdocs build --strict` (what `make docs` runs): no warning from mkdocs or griffe."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]'")
    pytest.importorskip(
        "mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed"
    )
    import os
    import subprocess
    import sys

    root = README.parent
    # without executed notebooks (tests/test_notebooks.py builds the site with them)
    env = dict(os.environ, SDEFORMER_NOTEBOOKS_DIR=str(tmp_path / "none" / "notebooks"))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == []
    api = (tmp_path / "api" / "sde" / "index.html").read_text()
    assert "solve_sde" in api and "CovarianceSDE" in api  # the reference has the real content
    assert "provenance" in (tmp_path / "api" / "results" / "index.html").read_text()


# ------------------------------------------------------------------------ one docstring style


def _ruff(*args: str, stdin: str | None = None):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *args],
        cwd=README.parent,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_package_docstrings_follow_pep257():
    """`ruff check` (pyproject: pydocstyle, PEP 257 convention) passes on the package.

    The style (docs/usage.md, "Docstrings"): a one-line summary ending in a period, a blank line,
    then the prose; every public function, method and class has a docstring.
    """
    pytest.importorskip("ruff", reason="ruff is not installed: pip install -e '.[dev]'")
    done = _ruff("sdeformer")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # power: the same configuration flags a summary that runs on and an undocumented function
    bad = (
        'def f():\n    """A summary that runs on\n    to a second line."""\n\n\n'
        "def g():\n    pass\n"
    )
    probe = _ruff("--stdin-filename", "sdeformer/probe.py", "-", stdin=bad)
    assert probe.returncode == 1
    assert {"D205", "D209", "D103"} <= set(re.findall(r"\bD\d{3}\b", probe.stdout)), probe.stdout
