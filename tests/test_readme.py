"""The README's opening commands and its Python example (run as written), the API reference
(mkdocs, strict) and the examples in the package's docstrings (doctests)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import jax
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_begins_with_make_run_and_make_test():
    text = README.read_text()
    first_block = text.split("```")[1]
    lines = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert lines[:2] == ["make run", "make test"]


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    out = io.StringIO()
    # the example's time is XLA compilation; skip most optimisation passes (same maths)
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme_example"})
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
    _check_agreement(out.getvalue())


LINE = re.compile(
    r"(?P<label>width \d+|SDE):\s+(?P<mean>-?[\d.]+) \+- (?P<se>[\d.]+) "
    r"\(sd (?P<sd>[\d.]+), (?P<count>\d+) samples\)"
)


def _check_agreement(text: str) -> None:
    """The README's claim "the two laws agree", checked on its printed numbers.

    Means: |difference| <= 4 standard errors of the difference (two-sided, false alarm about
    6e-5 under agreement; the finite-width bias at n = 32 is well inside this). Spreads: the
    standard error of a sample sd is about sd / sqrt(2 N) (normal approximation; rho is bounded,
    so its law has light tails), and the two sds must agree within 4 such errors plus the
    printed rounding.
    """
    found = {m["label"]: m for m in LINE.finditer(text)}
    assert len(found) == 2 and "SDE" in found, f"expected two summary lines in:\n{text}"
    finite, sde = (found[k] for k in sorted(found, key=lambda k: k == "SDE"))
    mean_a, mean_b = float(finite["mean"]), float(sde["mean"])
    se = (float(finite["se"]) ** 2 + float(sde["se"]) ** 2) ** 0.5
    assert abs(mean_a - mean_b) <= 4 * se + 1e-4, (mean_a, mean_b, se)
    sd_a, sd_b = float(finite["sd"]), float(sde["sd"])
    n_a, n_b = int(finite["count"]), int(sde["count"])
    sd_se = ((sd_a**2 / (2 * n_a)) + (sd_b**2 / (2 * n_b))) ** 0.5
    assert abs(sd_a - sd_b) <= 4 * sd_se + 1e-4, (sd_a, sd_b, sd_se)
    assert n_b >= 0.9 * n_a  # most SDE paths survive to T (else the comparison is conditional)


def test_agreement_check_has_power():
    """The check fails when the laws disagree: shifted means, other spreads, missing lines."""
    good = "  width 32: 0.2813 +- 0.0125 (sd 0.5572, 2000 samples)\n" + (
        "  SDE:      0.2744 +- 0.0121 (sd 0.5402, 1990 samples)\n"
    )
    _check_agreement(good)
    for bad in (
        good.replace("0.2744", "0.2100"),  # means 4.0 standard errors apart
        good.replace("sd 0.5402", "sd 0.4800"),  # spreads 13 % apart
        good.replace("1990 samples", "1500 samples"),  # a quarter of the SDE paths stopped
        good.splitlines()[0],  # the SDE line is gone
    ):
        with pytest.raises(AssertionError):
            _check_agreement(bad)


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
    import subprocess
    import sys

    root = README.parent
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=root,
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
