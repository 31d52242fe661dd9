"""Every ```python block of README.md and docs/*.md runs as written (the docs cannot go stale).

The rule for namespaces: the blocks of one file run in order in ONE namespace, as a reader
pasting them into one session would run them. docs/usage.md needs this (its first block defines
`config`, `v0`, `jr` and `sdf`, which the later blocks use); the other files' blocks import what
they use, so sharing changes nothing for them. Each file gets a fresh namespace (a real module in
`sys.modules`, so dataclasses and Equinox modules defined in a block resolve their module), and
block types a file registers are unregistered after its last block. A test run alone (`-k
"usage.md:3"`) first runs the blocks of its file before it, as part of its setup.

Each block runs with the working directory in its own `tmp_path` (files it writes land there),
matplotlib's Agg backend, and `jax_disable_most_optimizations` (a small example's time is XLA
compilation; the maths is the same).

Skips: a block whose line directly above is `<!-- docs-test: skip (reason) -->` (an HTML
comment, invisible in the rendered markdown) is reported as skipped with its reason; a marker
without a reason, or one not followed by a ```python block, fails `test_skip_markers`. The goal
is zero skips (`MAX_SKIPS`). The command lines of the docs (```console, ```bash and indented
blocks, inline `sdeformer ...` spans) and the TOML config example are checked against the real
parser in tests/test_docs_commands.py.

Sizes: the examples are written at small sizes (a few hundred to a few thousand samples, 100 SDE
steps), so that every block runs in seconds; nothing is substituted. The README's example is
also checked for what its prose claims (the two laws agree within 4 standard errors).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import jax
import matplotlib
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import sdeformer as sdf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_SKIPS = 0
"""The most blocks that may carry a skip marker (zero: every block runs)."""

FENCE = re.compile(r"^```python[ \t]*$")
END = re.compile(r"^```[ \t]*$")
MARKER = re.compile(r"^<!--\s*docs-test:")
SKIP = re.compile(r"^<!-- docs-test: skip \((?P<reason>[^()]*\S[^()]*)\) -->$")


@dataclass(frozen=True)
class Block:
    path: Path
    index: int  # 1-based position among the file's python blocks
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # the reason of a skip marker

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.index}"


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of one markdown file, in order, with their skip markers."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            start = i
            i += 1
            while i < len(lines) and not END.match(lines[i]):
                i += 1
            assert i < len(lines), f"{path.name}:{start + 1}: a ```python block is not closed"
            above = lines[start - 1] if start else ""
            skip = SKIP.match(above)
            blocks.append(
                Block(
                    path=path,
                    index=len(blocks) + 1,
                    line=start + 1,
                    code="\n".join(lines[start + 1 : i]) + "\n",
                    skip=skip["reason"].strip() if skip else None,
                )
            )
        i += 1
    return blocks


BLOCKS = [block for path in DOCS for block in python_blocks(path)]


# ------------------------------------------------------------------------ the parser's power


def test_every_python_fence_is_found():
    """Each file's count of blocks equals its count of ```python fences (none missed, e.g.
    indented ones), and the docs have the blocks they are known to have."""
    for path in DOCS:
        fences = len(re.findall(r"```python", path.read_text()))
        assert fences == len(python_blocks(path)), f"{path.name}: a python fence was not parsed"
    per_file = {p.name: len(python_blocks(p)) for p in DOCS}
    assert per_file["README.md"] >= 1 and per_file["usage.md"] >= 9, per_file


def test_skip_markers(tmp_path):
    """A marker needs a reason and a ```python block right below it; skips stay at MAX_SKIPS."""
    for path in DOCS:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if MARKER.match(line):
                assert SKIP.match(line), f"{path.name}:{number}: malformed marker {line!r}"
                below = lines[number] if number < len(lines) else ""
                assert FENCE.match(below), f"{path.name}:{number}: no ```python block below"
    skipped = [block.id for block in BLOCKS if block.skip]
    assert len(skipped) <= MAX_SKIPS, f"skipped blocks: {skipped}"
    # power: the parser reads a marker's reason and refuses a marker without one
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- docs-test: skip (a long run) -->\n```python\nx = 1\n```\n")
    assert python_blocks(doc)[0].skip == "a long run"
    doc.write_text("<!-- docs-test: skip () -->\n```python\nx = 1\n```\n")
    assert python_blocks(doc)[0].skip is None


# ------------------------------------------------------------------------ running the blocks


@dataclass
class FileSession:
    """One file's namespace and how far its blocks have run."""

    module: types.ModuleType
    done: int = 0  # blocks 1..done have run (or been skipped)
    failed: str | None = None  # the id of the first block that raised


@pytest.fixture(scope="module")
def sessions():
    """One namespace per file, torn down at the end: modules removed, blocks unregistered."""
    before = set(sdf.registered_blocks())
    made: dict[Path, FileSession] = {}
    try:
        yield made
    finally:
        for session in made.values():
            sys.modules.pop(session.module.__name__, None)
        for name in set(sdf.registered_blocks()) - before:
            sdf.unregister_block(name)
        plt.close("all")


def _session(sessions: dict[Path, FileSession], path: Path) -> FileSession:
    if path not in sessions:
        name = "docs_" + re.sub(r"\W", "_", path.stem)
        module = types.ModuleType(name)
        sys.modules[name] = module
        sessions[path] = FileSession(module)
    return sessions[path]


def _execute(block: Block, module: types.ModuleType) -> None:
    # padded to the fence's line, so a traceback names the line of the markdown file
    source = "\n" * block.line + block.code
    code = compile(source, str(block.path), "exec", dont_inherit=True)  # as a user's file
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        exec(code, module.__dict__)
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
        plt.close("all")


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_docs_block_runs(block, sessions, tmp_path, monkeypatch):
    if block.skip:
        pytest.skip(f"docs-test skip marker: {block.skip}")
    monkeypatch.chdir(tmp_path)
    session = _session(sessions, block.path)
    mine = [b for b in BLOCKS if b.path == block.path]
    for earlier in mine[session.done : block.index - 1]:  # a test run alone: its setup
        if not earlier.skip:
            try:
                _execute(earlier, session.module)
            except Exception as error:
                session.failed = session.failed or earlier.id
                pytest.fail(f"{earlier.id}, which {block.id} runs after, raised {error!r}")
        session.done = earlier.index
    start, cpu = time.perf_counter(), time.process_time()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            _execute(block, session.module)
    except Exception:
        if session.failed:
            print(f"note: {session.failed} of the same namespace failed earlier")
        session.failed = session.failed or block.id
        raise
    finally:
        session.done = max(session.done, block.index)
    print(out.getvalue())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{block.id} (line {block.line}): {wall:.1f} s ({cpu:.1f} s of CPU)")
    CHECKS.get(block.id, lambda text: None)(out.getvalue())


# ------------------------------------------------------------------------ what the prose claims


LINE = re.compile(
    r"(?P<label>width \d+|SDE):\s+(?P<mean>-?[\d.]+) \+- (?P<se>[\d.]+) "
    r"\(sd (?P<sd>[\d.]+), (?P<count>\d+) samples\)"
)


def check_agreement(text: str) -> None:
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


CHECKS = {"README.md:1": check_agreement}
"""Checks of a block's printed output, by block id (the block's claim in the prose)."""


def test_agreement_check_has_power():
    """The check fails when the laws disagree: shifted means, other spreads, missing lines."""
    good = "  width 32: 0.2813 +- 0.0125 (sd 0.5572, 2000 samples)\n" + (
        "  SDE:      0.2744 +- 0.0121 (sd 0.5402, 1990 samples)\n"
    )
    check_agreement(good)
    for bad in (
        good.replace("0.2744", "0.2100"),  # means 4.0 standard errors apart
        good.replace("sd 0.5402", "sd 0.4800"),  # spreads 13 % apart
        good.replace("1990 samples", "1500 samples"),  # a quarter of the SDE paths stopped
        good.splitlines()[0],  # the SDE line is gone
    ):
        with pytest.raises(AssertionError):
            check_agreement(bad)
