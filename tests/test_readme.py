"""The README's opening commands and its Python example (run as written)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import jax

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
    assert "token correlation at t = T" in out.getvalue()
