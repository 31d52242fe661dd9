"""The first run of a compiled sampler against its warm runs: why one timed run misleads.

    python -m benchmarks.bench_first_run [--tokens 32] [--width 64] [--depth 4] [--samples 16]
        [--out benchmarks/results/first_run.json]

Until the benchmarks ran one untimed warm-up call, `bench_tokens` timed an explicit network
alone with one run right after its ahead-of-time compilation (`_tokens.timed(..., repeat=1)`).
This script times, in one process and in the order `bench_tokens` used (law chain attention,
law chain attention + MLP, explicit attention, explicit attention + MLP), each program's first
run after compilation and then three more runs: the first run carries one-off costs that the
warm runs do not, and they need not be alike for two programs, so two single first runs can
order the programs wrongly. Writes the four times of every program with the machine and load.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.random as jr

from ._common import commit, covariance_paths, load_average, write_results
from ._tokens import initial_covariance, prepare
from ._tokens_plan import network_config


def first_and_warm(method: str, kind: str, m: int, n: int, depth: int, samples: int) -> dict:
    """Seconds of the first run after compilation and of three runs after it."""
    config, v0 = network_config(f"{method}_{kind}"), initial_covariance(m)

    def run(key):
        return covariance_paths(
            method, config, v0, width=n, depth=depth, num_samples=samples, key=key
        )[:, -1]

    program = prepare(run, jr.key(0))
    times = []
    for _ in range(4):
        start = time.perf_counter()
        jax.block_until_ready(program["run"](jr.key(0)))
        times.append(time.perf_counter() - start)
    return {
        "method": method,
        "blocks": kind,
        "samples": samples,
        "compile_s": program["compile_s"],
        "first_s": times[0],
        "warm_best_of_3_s": min(times[1:]),
        "times_s": times,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args(argv)
    load_before = load_average()
    rows = []
    for method in ("law", "explicit"):
        for kind in ("attention", "full"):
            rows.append(
                first_and_warm(method, kind, args.tokens, args.width, args.depth, args.samples)
            )
            r = rows[-1]
            print(
                f"{method} {kind}: first {r['first_s']:.4f} s, warm {r['warm_best_of_3_s']:.4f} s",
                flush=True,
            )
    data = {
        "commit": commit(),
        "command": " ".join(["python -m benchmarks.bench_first_run", *sys.argv[1:]]),
        "settings": vars(args),
        "load": {"before": load_before, "after": load_average()},
        "rows": rows,
    }
    write_results("first_run", data)
    return data


if __name__ == "__main__":
    jax.config.update("jax_numpy_dtype_promotion", "standard")
    main()
