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
import time

import numpy as np

from sdeformer import compare

from ._common import markdown_table, write_results


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
        start = time.perf_counter()
        result = compare.compare_sources(a, b, times=[0.5, 1.0], max_pairs=args.max_pairs)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "m": m,
                "num_samples": args.samples,
                "rows": len(result.rows),
                "pairs_compared": result.feature_set["pairs_compared"],
                "pairs_total": result.feature_set["pairs_total"],
                "seconds": seconds,
                "verdicts": result.verdict_counts(),
            }
        )
        print(
            f"m={m}: {len(result.rows)} rows in {seconds:.1f} s; {result.verdict_counts()}",
            flush=True,
        )
    print(
        markdown_table(
            ["m", "samples/source", "rows (2 times)", "pairs compared / total", "seconds"],
            [
                [
                    r["m"],
                    r["num_samples"],
                    r["rows"],
                    f"{r['pairs_compared']} / {r['pairs_total']}",
                    r["seconds"],
                ]
                for r in rows
            ],
        )
    )
    write_results("compare", {"rows": rows})
    return {"rows": rows}


if __name__ == "__main__":
    main()
