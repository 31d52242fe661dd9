"""Coverage of the convergence fits with the real design (sdeformer.compare.simulate_design).

    python -m benchmarks.convergence_coverage [--studies 200]

Writes benchmarks/results/convergence_coverage.json (commit, command, machine, load) and prints
the table of docs/theory.md section 10.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks._common import RESULTS, load_average, machine
from sdeformer.compare import simulate_design
from sdeformer.results import provenance, write_json


def main(argv=None) -> int:
    """Run the study for every truth and write its JSON."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.convergence_coverage")
    parser.add_argument("--studies", type=int, default=200, help="simulated sweeps per truth")
    parser.add_argument("--out", default=str(RESULTS / "convergence_coverage.json"))
    args = parser.parse_args(argv)
    if args.studies < 20:
        parser.error(f"--studies {args.studies}: pass at least 20 (coverage needs many studies)")
    load, started = load_average(), time.perf_counter()
    rows = simulate_design.coverage_rows(studies=args.studies)
    info = provenance()
    path = write_json(
        args.out,
        {
            "command": " ".join(["python -m benchmarks.convergence_coverage", *argv]),
            "commit": info["git_commit"],
            "provenance": info,
            "machine": machine(),
            "load_average": load,
            "seconds": time.perf_counter() - started,
            "rows": rows,
        },
    )
    print(simulate_design.design_table(rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
