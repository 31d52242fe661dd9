"""Cost of running batched LAPACK calls in unsplit chunks (`sdeformer._lapack`) on a CPU.

    python -m benchmarks.bench_lapack

jaxlib 0.10 splits a large batched LAPACK call over the CPU thread pool and blocks a pool thread
until it is done, which deadlocks when two such calls run side by side in a compiled loop
(docs/usage.md, "Known problems"). `sdeformer._lapack` runs each call in chunks that jaxlib
does not split. This benchmark measures what that costs, in one process, interleaved:

- `cholesky`: one batched Cholesky factorisation of b positive definite m x m matrices, chunked
  vs one plain call (`jax.lax.linalg.cholesky`); a single call cannot deadlock, so the plain
  call is safe to time here;
- `solve_sde`: `solve_sde` at a stable step (no path leaves the cone, so each step takes one
  factorisation and the plain solver cannot deadlock either), with the chunked factorisation
  vs the plain one (`_lapack._splitting_backend` patched to False, which turns chunking off).

Each pair is timed alternately, best of `--repeat` after compilation. Prints a markdown table
and writes benchmarks/results/lapack.json with the machine, load, commit and command.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr

from benchmarks._common import load_average, markdown_table, write_results
from sdeformer import _lapack
from sdeformer.config import ShapedConfig
from sdeformer.results import provenance
from sdeformer.sde import solve_sde

CHOLESKY_CASES = [(4, 12000), (8, 4000), (32, 1000), (64, 256), (128, 64)]
SDE_CASES = [(4, 8000, 400), (8, 2000, 800), (32, 64, 1600)]  # m, paths, steps (stable)


def _pd_stack(m: int, b: int):
    a = jr.normal(jr.key(m), (b, m, m))
    return a @ jnp.swapaxes(a, -1, -2) / m + jnp.eye(m)


def _alternate(fns: dict, repeat: int) -> dict:
    """Best wall time of each zero-argument blocking function, run in turns."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _cholesky_row(m: int, b: int, repeat: int) -> dict:
    v = _pd_stack(m, b)
    chunked = jax.jit(_lapack.cholesky)
    plain = jax.jit(lambda x: jax.lax.linalg.cholesky(x, symmetrize_input=False))
    chunked(v).block_until_ready(), plain(v).block_until_ready()
    t = _alternate(
        {
            "chunked": lambda: chunked(v).block_until_ready(),
            "plain": lambda: plain(v).block_until_ready(),
        },
        repeat,
    )
    chunk = _lapack.safe_chunk(m**3 // 3)
    return {"m": m, "batch": b, "chunk": min(chunk, b), **t, "ratio": t["chunked"] / t["plain"]}


def _sde_row(m: int, paths: int, steps: int, repeat: int) -> dict:
    config = ShapedConfig(tau0=1.0, gamma=0.4, c_minus=-1.0)
    v0 = 0.7 * jnp.eye(m) + 0.3

    def run(chunk: bool):
        original = _lapack._splitting_backend
        _lapack._splitting_backend = (lambda: True) if chunk else (lambda: False)
        try:
            sol = solve_sde(
                config, v0, T=1.0, num_samples=paths, key=jr.key(0), num_steps=steps, save_times=2
            )
            sol.vs.block_until_ready()
            return int((sol.exit_reason == 1).sum())
        finally:
            _lapack._splitting_backend = original

    left = {"chunked": run(True), "plain": run(False)}  # compiles both programs
    t = _alternate({"chunked": lambda: run(True), "plain": lambda: run(False)}, repeat)
    return {
        "m": m,
        "paths": paths,
        "steps": steps,
        "left_psd_cone": left,
        **t,
        "ratio": t["chunked"] / t["plain"],
    }


def print_pairs(title: str, rows: list[dict], keys: tuple[str, ...], digits: int) -> None:
    """A table of chunked vs plain seconds: the case's `keys`, both times, their ratio."""
    print(f"\n{title}\n")
    print(
        markdown_table(
            [*keys, "chunked s", "plain s", "chunked / plain"],
            [
                [r[k] for k in keys]
                + [f"{r['chunked']:.{digits}f}", f"{r['plain']:.{digits}f}", f"{r['ratio']:.2f}"]
                for r in rows
            ],
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    load_before = load_average()
    chol = [_cholesky_row(m, b, args.repeat) for m, b in CHOLESKY_CASES]
    title = f"One batched Cholesky factorisation (seconds, best of {args.repeat} )"
    print_pairs(title, chol, ("m", "batch", "chunk"), 5)
    sde = [_sde_row(m, p, s, max(2, args.repeat // 2)) for m, p, s in SDE_CASES]
    print_pairs("solve_sde at a stable step, Euler (seconds)", sde, ("m", "paths", "steps"), 3)
    write_results(
        "lapack",
        {
            "provenance": provenance(),
            "command": "python -m benchmarks.bench_lapack " + " ".join(sys.argv[1:]),
            "load_average": {"before": load_before, "after": load_average()},
            "cholesky": chol,
            "solve_sde": sde,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
