"""Check that every benchmark summary table is rendered from a single JSON run.

    python -m benchmarks.check_summaries             # benchmarks/results and results/gpu-*
    python -m benchmarks.check_summaries DIR [DIR ...]

For every benchmark JSON of the summary found in a directory, its `summary(data)`:

1. reads nothing but the dict it is given (it is rendered with file access blocked);
2. renders the same text once every stored quotient is deleted from the JSON (keys naming a
   ratio, speed-up, fraction, `_over_`, the goals): each ratio it shows is computed from the
   measured numbers of that JSON, by `benchmarks._ratios.ratio`;
3. computed each such ratio from two numbers that are values of that JSON, measured at the
   same batch (the check records every `ratio` call);
4. names the JSON, the machine and the load it recorded.

Then the directory's README.md must be what `run_all` renders from these JSON files, and the
top-level README's block between the bench markers what it renders from benchmarks/results.
Prints each problem; exit status 1 when there is one, 0 otherwise.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import copy
import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from . import run_all
from ._common import DEFAULT_RESULTS, ROOT
from ._ratios import machine_text, recording

STORED_QUOTIENT = re.compile(r"ratio|speedup|fraction|_over_|^goals$")
"""Keys of a benchmark JSON that hold a quotient computed when the benchmark ran."""


def strip_quotients(data):
    """A copy of `data` without the keys matching `STORED_QUOTIENT` (at any depth)."""
    if isinstance(data, dict):
        return {
            k: strip_quotients(v) for k, v in data.items() if not STORED_QUOTIENT.search(str(k))
        }
    if isinstance(data, list):
        return [strip_quotients(v) for v in data]
    return copy.copy(data)


def leaves(data) -> set[float]:
    """Every number in `data` (at any depth)."""
    if isinstance(data, dict):
        return set().union(*(leaves(v) for v in data.values())) if data else set()
    if isinstance(data, list):
        return set().union(*(leaves(v) for v in data)) if data else set()
    if isinstance(data, bool):
        return set()
    return {float(data)} if isinstance(data, int | float) else set()


@contextlib.contextmanager
def no_files() -> Iterator[None]:
    """Make opening any file raise, so a summary can only use the dict it was given."""

    def refuse(*args, **kwargs):
        raise PermissionError(f"a summary opened a file: {args[0] if args else kwargs}")

    saved = builtins.open, io.open
    builtins.open = io.open = refuse
    try:
        yield
    finally:
        builtins.open, io.open = saved


def check_summary(name: str, summary, data: dict) -> list[str]:
    """The problems of `summary(data)`, the summary of `<name>.json` (empty when none)."""
    where = f"{name}.json"
    try:
        with no_files(), recording() as ratios:
            text = "\n".join(summary(copy.deepcopy(data)))
    except Exception as err:  # noqa: BLE001 - every failure is a problem to report
        return [f"{where}: the summary failed: {type(err).__name__}: {err}"]
    problems = []
    try:
        with no_files():
            stripped = "\n".join(summary(strip_quotients(data)))
    except Exception as err:  # noqa: BLE001
        stripped = f"failed: {type(err).__name__}: {err}"
    if stripped != text:
        problems.append(
            f"{where}: the summary changes when the JSON's stored quotients are deleted, so it "
            "shows a ratio it did not compute from the measured numbers"
        )
    numbers = leaves(data)
    for r in ratios:
        if r["num_batch"] != r["den_batch"]:
            problems.append(f"{where}: {r['what']}: batches {r['num_batch']} != {r['den_batch']}")
        for side in ("num", "den"):
            if float(r[side]) not in numbers:
                problems.append(f"{where}: {r['what']}: {side} {r[side]} is not a value of {where}")
    for needed, what in (
        (f"`{where}`", "its file name"),
        (machine_text(data.get("machine", {})), "its machine"),
    ):
        if needed not in text:
            problems.append(f"{where}: the summary does not name {what} ({needed})")
    if "load average" not in text:
        problems.append(f"{where}: the summary does not state the load it ran at")
    return problems


def check_directory(results: Path) -> list[str]:
    """The problems of the summaries of the JSON files in `results` and of its README.md."""
    problems = []
    found = run_all.read_results(results)
    for name, data in found.items():
        if data is not None:
            problems += [
                f"{results.name}/{p}"
                for p in check_summary(name, run_all.SCRIPTS[name].summary, data)
            ]
    record_path = results / "run_all.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    body = run_all.summary_markdown(record, results)
    readme = results / "README.md"
    if any(found.values()) and (
        not readme.exists() or readme.read_text() != run_all.summary_file(body)
    ):
        problems.append(
            f"{readme}: not the summary of its JSON files; rerun `python -m benchmarks.run_all "
            "--summary-only` (with SDEFORMER_BENCH_RESULTS set to that directory for a GPU one)"
        )
    top = ROOT / "README.md"
    if results.resolve() == DEFAULT_RESULTS.resolve() and top.exists():
        block = run_all.readme_block(top.read_text())
        if block is not None and block != body:
            problems.append(
                "README.md: its benchmark block is not the summary of benchmarks/results; "
                "rerun `python -m benchmarks.run_all --summary-only`"
            )
    return problems


def default_directories() -> list[Path]:
    return [DEFAULT_RESULTS, *sorted(p for p in DEFAULT_RESULTS.glob("gpu-*") if p.is_dir())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", type=Path, help="results directories (default: all)")
    args = parser.parse_args(argv)
    dirs = args.dirs or default_directories()
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        parser.error(f"not a directory: {', '.join(map(str, missing))}; give a results directory")
    problems = [p for d in dirs for p in check_directory(d)]
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s) in the summaries of {', '.join(map(str, dirs))}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
