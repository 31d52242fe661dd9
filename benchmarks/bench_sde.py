"""Paths per second of `solve_sde` (diffrax Euler-Maruyama) against a plain O(m^3) batched Euler.

    python -m benchmarks.bench_sde                    # CPU-friendly defaults
    python -m benchmarks.bench_sde --paths 10000 --steps 1000 --tokens 2 4 8   # the full sizes

The opponent is `benchmarks._baseline.euler_paths`: the same Euler scheme written by hand with
`lax.scan` over steps, all paths in one (paths, m, m) array, one Cholesky per step and the O(m^3)
noise formula (the baseline of `bench_tokens`, which sweeps m much further). Both are timed at
the same paths and steps, compile excluded (ahead-of-time compiled, one untimed run each, then
three timed runs of each, alternating, best of each). The
cost exponent in m (seconds per path-step ~ m^p, log-log least squares over the sizes given) is
printed next to each solver. Prints a markdown table and writes benchmarks/results/sde.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.random as jr

import sdeformer as sf

from ._common import command_of, commit, fit_exponent, load_average, machine
from ._markdown import summary_table
from ._ratios import ratio_cell, run_line
from ._tokens import measure_sde_and_baseline

BOUND = 1e3


def measure_row(config, m: int, paths: int, steps: int, T: float) -> dict:
    """Both solvers at m tokens, `paths` paths of `steps` steps on [0, T], compile excluded:
    each compiled and run once untimed, then three runs of each, alternating (best of each)."""
    pair = measure_sde_and_baseline(
        config, m, paths, steps, T=T, bound=BOUND, memory_budget=None, key=jr.key(m)
    )
    d, b = pair["sde"], pair["baseline"]
    for res in (d, b):
        if res.get("status") != "ok":
            raise RuntimeError(f"m = {m}: {res.get('reason')}")
    return {
        "m": m,
        "paths": paths,
        "steps": steps,
        "repeat": d["repeat"],
        "diffrax_paths_per_s": paths / d["seconds"],
        "baseline_paths_per_s": paths / b["seconds"],
        "diffrax_path_steps_per_s": d["rate"],
        "baseline_path_steps_per_s": b["rate"],
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

    head = [
        "\n**Covariance SDE** (`bench_sde`: diffrax Euler vs the plain O(m^3) batched Euler of "
        "`benchmarks/_baseline.py`; p: cost exponent in m):",
        run_line(sde, "sde"),
    ]
    if not sde.get("commit"):
        # the solver's step changed speed (2x at m = 32) since rows were first recorded: rows
        # that cannot be tied to the code they timed are not shown
        return head + [
            "\nRows not shown: this JSON records no commit, so the solver it timed cannot be "
            "told (the SDE step has since become faster). Rerun `python -m benchmarks.bench_sde`."
        ]
    rows = [
        [r["m"], r["paths"], r["steps"], r["diffrax_paths_per_s"], r["baseline_paths_per_s"]]
        + [_time_ratio(r), r["diffrax_compile_s"]]
        for r in sde["rows"]
    ]
    return head + [
        "",
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
            rows,
        ),
    ]


def _time_ratio(r: dict):
    """diffrax time / baseline time at the same paths and steps (one run, alternating)."""
    return ratio_cell(
        r["baseline_paths_per_s"],
        r["diffrax_paths_per_s"],
        num_batch=(r["paths"], r["steps"]),
        den_batch=(r["paths"], r["steps"]),
        what=f"diffrax / baseline time at m = {r['m']}",
    )


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
        "commit": commit(),
        "command": command_of("bench_sde", argv),
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
