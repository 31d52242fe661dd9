"""Paths per second of `solve_sde` (diffrax Euler-Maruyama) against a bare `lax.scan` baseline.

    python -m benchmarks.bench_sde                    # CPU-friendly defaults
    python -m benchmarks.bench_sde --paths 10000 --steps 1000 --tokens 2 4 8   # the full sizes

Prints a markdown table and writes benchmarks/results/sde.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr

import sdeformer as sf
from sdeformer.sde import exit_code, triu_matrix, triu_vector


def baseline(config, v0, T, num_paths, num_steps, key, bound=1e3):
    """Minimal Euler-Maruyama on the upper triangle with masking of exited paths."""
    sde = sf.CovarianceSDE(config)
    m = v0.shape[-1]
    k = sde.brownian_dim(m)
    dt = T / num_steps
    psd_tol = 100 * float(jnp.finfo(v0.dtype).eps)

    @jax.jit
    def run(key):
        def one(path_key):
            def step(carry, step_key):
                y, alive = carry
                v = triu_matrix(y, m)
                dw = jr.normal(step_key, (k,), y.dtype) * jnp.sqrt(dt)
                y_new = y + triu_vector(sde.drift(v)) * dt + sde.diffusion(v) @ dw
                ok = alive & (exit_code(triu_matrix(y_new, m), bound, psd_tol) == 0)
                return (jnp.where(ok, y_new, y), ok), None

            (y, alive), _ = jax.lax.scan(
                step, (triu_vector(v0), jnp.array(True)), jr.split(path_key, num_steps)
            )
            return triu_matrix(y, m), alive

        return jax.vmap(one)(jr.split(key, num_paths))

    return run(key)


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return out, first, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--paths", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--T", type=float, default=1.0)
    parser.add_argument("--out", default="benchmarks/results/sde.json")
    args = parser.parse_args(argv)
    config = sf.ShapedConfig(tau0=1.0, gamma=0.4, c_minus=-1.0)
    rows = []
    for m in args.tokens:
        v0 = 0.7 * jnp.eye(m) + 0.3
        key = jr.key(m)
        sol, d_first, d_run = timed(
            lambda v0=v0, key=key: (
                sf.solve_sde(
                    config, v0, args.T, args.paths, key=key, num_steps=args.steps, save_times=2
                ).vs
            )
        )
        _, b_first, b_run = timed(
            lambda v0=v0, key=key: baseline(config, v0, args.T, args.paths, args.steps, key)
        )
        rows.append(
            {
                "m": m,
                "paths": args.paths,
                "steps": args.steps,
                "diffrax_paths_per_s": args.paths / d_run,
                "baseline_paths_per_s": args.paths / b_run,
                "ratio_diffrax_over_baseline_time": d_run / b_run,
                "diffrax_compile_s": d_first - d_run,
                "baseline_compile_s": b_first - b_run,
            }
        )
    print("| m | paths | steps | diffrax paths/s | scan paths/s | time ratio | compile (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['m']} | {r['paths']} | {r['steps']} | {r['diffrax_paths_per_s']:.0f} | "
            f"{r['baseline_paths_per_s']:.0f} | {r['ratio_diffrax_over_baseline_time']:.2f} | "
            f"{r['diffrax_compile_s']:.1f} / {r['baseline_compile_s']:.1f} |"
        )
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"machine": machine, "config": config.to_dict(), "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
