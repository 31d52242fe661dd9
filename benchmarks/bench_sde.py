"""Paths per second of `solve_sde` (diffrax Euler-Maruyama) against a plain O(m^3) batched Euler.

    python -m benchmarks.bench_sde                    # CPU-friendly defaults
    python -m benchmarks.bench_sde --paths 10000 --steps 1000 --tokens 2 4 8   # the full sizes

The opponent is `benchmarks._baseline.euler_paths`: the same Euler scheme written by hand with
`lax.scan` over steps, all paths in one (paths, m, m) array, one Cholesky per step and the O(m^3)
noise formula (the baseline of `bench_tokens`, which sweeps m much further). Both are timed at
the same paths and steps, compile excluded (ahead-of-time compiled, then one timed run). The
cost exponent in m (seconds per path-step ~ m^p, log-log least squares over the sizes given) is
printed next to each solver. Prints a markdown table and writes benchmarks/results/sde.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.random as jr

import sdeformer as sf

from ._baseline import euler_paths
from ._common import fit_exponent, load_average, machine
from ._markdown import columns, summary_table
from ._tokens import initial_covariance, solve, timed

BOUND = 1e3


def measure_row(config, m: int, paths: int, steps: int, T: float) -> dict:
    """Both solvers at m tokens, `paths` paths of `steps` steps on [0, T], compile excluded."""
    v0 = initial_covariance(m)
    key = jr.key(m)

    def diffrax_run(key):
        sol = solve(config, v0, T, paths, key=key, num_steps=steps)
        return sol.vs[:, -1]

    def baseline_run(key):
        return euler_paths(config, v0, T, BOUND, key=key, num_paths=paths, num_steps=steps)

    d = timed(diffrax_run, key)
    b = timed(baseline_run, key)
    path_steps = paths * steps
    return {
        "m": m,
        "paths": paths,
        "steps": steps,
        "diffrax_paths_per_s": paths / d["seconds"],
        "baseline_paths_per_s": paths / b["seconds"],
        "diffrax_path_steps_per_s": path_steps / d["seconds"],
        "baseline_path_steps_per_s": path_steps / b["seconds"],
        "ratio_diffrax_over_baseline_time": d["seconds"] / b["seconds"],
        "diffrax_compile_s": d["compile_s"],
        "baseline_compile_s": b["compile_s"],
        "diffrax_memory_bytes": d["memory_bytes"],
        "baseline_memory_bytes": b["memory_bytes"],
    }


def summary(sde: dict) -> list[str]:
    """The `bench_sde` table (paths/s of both solvers, cost exponents in m), from its JSON;
    printed by the benchmark and by `run_all`."""
    fits = sde.get("exponents") or {}

    def p(name):
        return f" (p = {fits[name]['exponent']:.2f})" if fits.get(name) else ""

    return [
        "\n**Covariance SDE** (`bench_sde`: diffrax Euler vs the plain O(m^3) batched Euler of "
        "`benchmarks/_baseline.py`; p: cost exponent in m):\n",
        *summary_table(
            [
                "m",
                "paths",
                "steps",
                f"diffrax paths/s{p('diffrax')}",
                f"O(m^3) Euler paths/s{p('baseline')}",
                "time ratio",
                "compile s",
            ],
            columns(
                sde["rows"],
                [
                    "m",
                    "paths",
                    "steps",
                    "diffrax_paths_per_s",
                    "baseline_paths_per_s",
                    "ratio_diffrax_over_baseline_time",
                    "diffrax_compile_s",
                ],
            ),
        ),
    ]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--paths", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--T", type=float, default=1.0)
    parser.add_argument("--out", default="benchmarks/results/sde.json")
    args = parser.parse_args(argv)
    config = sf.ShapedConfig(tau0=1.0, gamma=0.4, c_minus=-1.0)
    load_before = load_average()
    rows = [measure_row(config, m, args.paths, args.steps, args.T) for m in args.tokens]
    exponents = {
        name: fit_exponent([(r["m"], 1.0 / r[f"{name}_path_steps_per_s"]) for r in rows])
        for name in ("diffrax", "baseline")
    }
    from sdeformer.results import write_json

    data = {
        "benchmark": "sde",
        "machine": machine(),
        "config": config.to_dict(),
        "baseline": "benchmarks._baseline.euler_paths (O(m^3) batched Euler, lax.scan)",
        "load": {"before": load_before, "after": load_average()},
        "exponents": exponents,
        "rows": rows,
    }
    print("\n".join(summary(data)))
    out = write_json(Path(args.out), data)
    print(f"\nwrote {out}")
    return data


if __name__ == "__main__":
    jax.config.update("jax_numpy_dtype_promotion", "standard")
    main()
