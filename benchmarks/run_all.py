"""Run every benchmark and summarise the JSON they write in one markdown table (`make bench`).

    python -m benchmarks.run_all                 # CPU-friendly sizes (a few minutes on 2 cores)
    python -m benchmarks.run_all --profile gpu   # larger sizes for an accelerator
    python -m benchmarks.run_all --only laws sde # a subset; the summary uses every JSON present
    python -m benchmarks.run_all --summary-only  # rebuild the summary from the JSON files

Each benchmark script's `main(argv)` runs with the sizes of the profile and writes
`benchmarks/results/<name>.json` with the machine it ran on. This script then writes
`benchmarks/results/README.md` (one table per benchmark, each rendered from its own JSON with
the machine, load and commit that JSON recorded) and copies the same summary into the top-level
README between the markers `<!-- bench:start -->` and `<!-- bench:end -->`. Every number in
the summary is read from the JSON files; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import jax

from . import (
    bench_compare,
    bench_design,
    bench_init,
    bench_laws,
    bench_sde,
    bench_tokens,
    bench_train,
)
from ._common import DEFAULT_RESULTS, RESULTS, ROOT, command_of, commit, load_average, machine

SUMMARY = RESULTS / "README.md"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

PROFILES: dict[str, dict[str, list[str]]] = {
    # CPU: small enough for a laptop or a 2-core CI machine.
    "cpu": {
        "init": ["--widths", "128", "512", "1024", "--samples", "4", "--depth", "16"],
        "laws": ["--widths", "128", "512", "1024", "--law-samples", "500", "--depth", "8"],
        "sde": ["--tokens", "2", "4", "8", "--paths", "1000", "--steps", "200"],
        "train": ["--quick"],
        "tokens": ["--profile", "cpu"],
        "compare": ["--tokens", "16", "64", "256", "--samples", "2000"],
        "design": ["--profile", "cpu"],
    },
    # GPU: the same scripts at sizes where an accelerator is busy, each within the timeout that
    # benchmarks/gpu_all.sh gives it (one 10-minute command in all).
    "gpu": {
        "init": ["--widths", "1024", "4096", "8192", "--samples", "16", "--depth", "32"],
        "laws": [
            *("--widths", "1024", "4096", "16384", "--law-samples", "20000"),
            *("--m-sweep", "8", "32", "128", "256", "--repeats", "3"),
            *("--tokens-samples", "256", "--explicit-budget", "1e9"),
        ],
        "sde": ["--tokens", "2", "8", "32", "--paths", "20000", "--steps", "200"],
        "train": ["--steps", "20", "--batch-size", "64"],
        "tokens": ["--profile", "gpu"],
        # compare_sources is NumPy on the host: m = 1024 x 2000 samples is hours of eigenvalues
        "compare": ["--tokens", "64", "256", "--samples", "2000"],
        "design": ["--profile", "gpu"],
    },
}
SCRIPTS = {
    "init": bench_init,
    "laws": bench_laws,
    "sde": bench_sde,
    "train": bench_train,
    "tokens": bench_tokens,
    "compare": bench_compare,
    "design": bench_design,
}


def _out_flag(name: str) -> list[str]:
    """Absolute output path for the scripts that take --out (they default to a cwd path)."""
    return [] if name in ("init", "compare", "design") else ["--out", str(RESULTS / f"{name}.json")]


def run(names: list[str], profile: str) -> dict:
    """Run the benchmarks `names` with the sizes of `profile`; returns the run's record."""
    record = {"profile": profile, "load_before": load_average(), "benchmarks": {}}
    for name in names:
        argv = PROFILES[profile][name] + _out_flag(name)
        print(f"\n=== bench_{name} {' '.join(argv)}", flush=True)
        started = time.perf_counter()
        try:
            SCRIPTS[name].main(argv)
            status = "ok"
        except Exception:  # one failing benchmark must not hide the others' results
            traceback.print_exc()
            status = "failed"
        record["benchmarks"][name] = {
            "argv": argv,
            "status": status,
            "seconds": round(time.perf_counter() - started, 1),
            "load_after": load_average(),
        }
    record["load_after"] = load_average()
    return record


# ------------------------------------------------------------------------------- the summary


def read_results(results: Path = RESULTS) -> dict[str, dict | None]:
    """The JSON of each benchmark of the summary in the directory `results` (None if absent)."""
    found = {}
    for name in SECTIONS:
        path = results / f"{name}.json"
        found[name] = json.loads(path.read_text()) if path.exists() else None
    return found


SECTIONS = ("init", "laws", "sde", "tokens", "compare", "train")
"""The order of the benchmarks in the summary; each one's `summary(data)` renders its part."""


def summary_markdown(run_record: dict | None, results: Path = RESULTS) -> str:
    """The markdown summary of every benchmark JSON present in benchmarks/results.

    Each benchmark's table is rendered by its own `summary(data)` from its own JSON and names
    the machine, load and commit that JSON recorded: JSON files from different runs or machines
    sit side by side here, and nothing in one table is divided by a number of another.
    """
    found = read_results(results)
    if not any(found.values()):
        return "No benchmark results yet: run `make bench`."
    out = [
        "Each table below comes from one JSON file, measured in one run; the line under its "
        "title names the machine, the load and the commit that file recorded. Tables from "
        "different files may come from different runs and machines, so no number of one is "
        "compared with a number of another."
    ]
    for name in SECTIONS:
        if found[name]:
            out += SCRIPTS[name].summary(found[name])
    if run_record is not None:
        failed = [n for n, b in run_record["benchmarks"].items() if b["status"] != "ok"]
        if failed:
            out.append(
                f"\nFailed in the last run (older JSON shown if present): {', '.join(failed)}"
            )
    return "\n".join(out)


def summary_file(body: str) -> str:
    """The text of benchmarks/results/README.md around the summary `body`."""
    return (
        "# Benchmark results\n\nWritten by `python -m benchmarks.run_all` from the JSON files in "
        "this directory.\n\n" + body + "\n"
    )


def readme_block(text: str) -> str | None:
    """The part of the top-level README between the bench markers (None without markers)."""
    if START not in text or END not in text:
        return None
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n")


def write_summary(run_record: dict | None, *, save_record: bool = True) -> str:
    body = summary_markdown(run_record)
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(summary_file(body))
    if run_record is not None and save_record:
        (RESULTS / "run_all.json").write_text(json.dumps(run_record, indent=2) + "\n")
    if README.exists() and RESULTS == DEFAULT_RESULTS.resolve():
        text = README.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            _, tail = rest.split(END, 1)
            README.write_text(f"{head}{START}\n{body}\n{END}{tail}")
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=tuple(PROFILES), default="cpu")
    parser.add_argument("--only", nargs="+", choices=tuple(SCRIPTS), default=list(SCRIPTS))
    parser.add_argument(
        "--summary-only", action="store_true", help="rebuild the summary from the JSON files"
    )
    args = parser.parse_args(argv)
    jax.config.update("jax_numpy_dtype_promotion", "standard")
    if args.summary_only:
        previous = RESULTS / "run_all.json"
        record = json.loads(previous.read_text()) if previous.exists() else None
        print("\n" + write_summary(record, save_record=False))
        print(f"\nwrote {SUMMARY}")
        return 0
    record = run(args.only, args.profile)
    record.update(machine=machine(), commit=commit(), command=command_of("run_all", argv))
    print("\n" + write_summary(record))
    print(f"\nwrote {SUMMARY}")
    return 1 if any(b["status"] != "ok" for b in record["benchmarks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
