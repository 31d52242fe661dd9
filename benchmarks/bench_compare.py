"""Cost of the comparison layer at many tokens (sampling excluded).

    python -m benchmarks.bench_compare [--tokens 16 64 256] [--samples 2000] [--max-pairs 2048]

Two synthetic sources of Wishart covariances (m tokens, `samples` each, two times) are compared
with `compare.compare_sources` at its defaults: every pair up to `max_pairs` (else a seeded random
subset), every log variance, the four summary features, KS with `scipy.stats.kstwo` noise, W1 with
a 200-round permutation noise level, at two times. The time is that of the comparison alone (the
issue's target: <= 60 s at m = 256 with 2000 samples per source). Writes
benchmarks/results/compare.json.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from sdeformer import compare

from ._common import command_of, write_results
from ._markdown import summary_table
from ._ratios import run_line


def wishart_source(label: str, seed: int, num_samples: int, m: int, times: int = 2):
    """Wishart(2m)/2m covariances (num_samples, times, m, m), float32, drawn in chunks."""
    rng = np.random.default_rng(seed)
    vs = np.empty((num_samples, times, m, m), np.float32)
    step = max(1, 2**25 // (2 * m * m))
    for start in range(0, num_samples, step):
        g = rng.standard_normal((min(step, num_samples - start), times, m, 2 * m), np.float32)
        vs[start : start + step] = g @ np.swapaxes(g, -1, -2) / (2 * m)
    alive = np.ones((num_samples, times), bool)
    return compare.CovarianceSamples(label, np.linspace(0.5, 1.0, times), vs, alive)


def summary(comparison: dict) -> list[str]:
    """The `bench_compare` table (seconds of `compare_sources` per m), from its JSON; printed by
    the benchmark and by `run_all`."""
    return [
        "\n**Comparison cost** (`bench_compare`: `compare_sources` on two Wishart sources, two "
        "times, sampling excluded):",
        run_line(comparison, "compare") + "\n",
        *summary_table(
            ["m", "samples / source", "rows", "pairs compared / total", "seconds"],
            [
                [
                    r["m"],
                    r["num_samples"],
                    r["rows"],
                    f"{r['pairs_compared']} / {r['pairs_total']}",
                    r["seconds"],
                ]
                for r in comparison["rows"]
            ],
        ),
    ]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--max-pairs", type=int, default=compare.MAX_PAIRS)
    args = parser.parse_args(argv)
    rows = []
    for m in args.tokens:
        a = wishart_source("a", 1, args.samples, m)
        b = wishart_source("b", 2, args.samples, m)
        start, cpu = time.perf_counter(), time.process_time()
        result = compare.compare_sources(a, b, times=[0.5, 1.0], max_pairs=args.max_pairs)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        rows.append(
            {
                "m": m,
                "num_samples": args.samples,
                "rows": len(result.rows),
                "pairs_compared": result.feature_set["pairs_compared"],
                "pairs_total": result.feature_set["pairs_total"],
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "verdicts": result.verdict_counts(),
            }
        )
        print(
            f"m={m}: {len(result.rows)} rows in {seconds:.1f} s ({cpu_seconds:.1f} s CPU); "
            f"{result.verdict_counts()}",
            flush=True,
        )
    print("\n".join(summary({"rows": rows})))
    threads = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    command = command_of("bench_compare", argv)
    write_results(
        "compare", {"command": command, "rows": rows, "threads": threads, "load_average": load}
    )
    return {"rows": rows}


if __name__ == "__main__":
    main()
