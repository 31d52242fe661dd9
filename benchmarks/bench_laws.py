"""Law chain vs explicit network at initialisation: samples x layers per second, and cost vs n.

    python -m benchmarks.bench_laws [--widths 128 512 1024 4096] [--m 4] [--depth 8]
        [--law-samples 1000] [--explicit-budget 5e7] [--out benchmarks/results/laws.json]

For each width n it times `law_covariance_paths` and `explicit_covariance_paths` on the same
configuration (shaped attention + MLP layers), compile excluded (one warm-up call), and reports
samples x layers per second. The explicit network draws O(n^2) numbers per layer, so it runs with
fewer samples/layers at large n (`--explicit-budget` caps the Gaussian draws per timing). A second
table gives the law chain's cost per layer for an attention-only stack and a full layer as n grows
(attention-only should be flat in n). Prints markdown tables and writes JSON with the machine.
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

from sdeformer import ShapedConfig
from sdeformer.laws import law_covariance_paths
from sdeformer.model import explicit_covariance_paths, weights_per_layer


def _time(fn, repeats: int = 2) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def _v0(m: int):
    return 0.5 * jnp.eye(m) + 0.5 * jnp.ones((m, m))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512, 1024, 4096])
    parser.add_argument("--m", type=int, default=4)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--law-samples", type=int, default=1000)
    parser.add_argument("--explicit-budget", type=float, default=5e7, help="Gaussian draws")
    parser.add_argument("--out", default="benchmarks/results/laws.json")
    args = parser.parse_args(argv)

    config = ShapedConfig(tau0=1.0, gamma=0.5, heads=1)
    v0 = _v0(args.m)
    key = jr.key(0)
    rows = []
    for n in args.widths:
        law_s = _time(
            lambda n=n: law_covariance_paths(config, n, args.depth, v0, args.law_samples, key=key)
        )
        law_rate = args.law_samples * args.depth / law_s
        per_layer = weights_per_layer(config, n)
        exp_depth = max(1, min(args.depth, int(args.explicit_budget // per_layer)))
        exp_samples = max(
            1, min(args.law_samples, int(args.explicit_budget // (per_layer * exp_depth)))
        )
        exp_s = _time(
            lambda n=n, d=exp_depth, s=exp_samples: explicit_covariance_paths(
                config, n, d, v0, s, key=key
            ),
            repeats=1,
        )
        exp_rate = exp_samples * exp_depth / exp_s
        rows.append(
            dict(
                n=n,
                law_samples=args.law_samples,
                law_depth=args.depth,
                law_seconds=law_s,
                law_rate=law_rate,
                explicit_samples=exp_samples,
                explicit_depth=exp_depth,
                explicit_seconds=exp_s,
                explicit_rate=exp_rate,
                speedup=law_rate / exp_rate,
            )
        )
        print(f"n={n}: law {law_rate:.3g}/s, explicit {exp_rate:.3g}/s", flush=True)

    scaling = []
    for blocks in (("attention",), ("attention", "mlp")):
        cfg = config.replace(blocks=blocks)
        for n in args.widths:
            seconds = _time(
                lambda n=n, cfg=cfg: law_covariance_paths(
                    cfg, n, args.depth, v0, args.law_samples, key=key
                )
            )
            scaling.append(
                dict(
                    blocks=list(blocks),
                    n=n,
                    us_per_sample_layer=1e6 * seconds / (args.law_samples * args.depth),
                )
            )

    print(f"\nm = {args.m}, shaped attention + MLP layers (samples x layers per second)\n")
    print("| n | law | explicit | speedup | explicit run (samples x layers) |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['n']} | {r['law_rate']:.3g} | {r['explicit_rate']:.3g} | "
            f"{r['speedup']:.3g}x | {r['explicit_samples']} x {r['explicit_depth']} |"
        )
    print("\nLaw chain cost per sample per layer (microseconds)\n")
    print("| n | " + " | ".join("+".join(b) for b in (("attention",), ("attention", "mlp"))) + " |")
    print("|---:|---:|---:|")
    for n in args.widths:
        cells = [f"{s['us_per_sample_layer']:.3g}" for s in scaling if s["n"] == n]
        print(f"| {n} | " + " | ".join(cells) + " |")

    result = dict(
        machine=dict(
            platform=platform.platform(),
            processor=platform.processor(),
            cpu_count=os.cpu_count(),
            jax_version=jax.__version__,
            device=str(jax.devices()[0]),
            backend=jax.default_backend(),
        ),
        m=args.m,
        config=config.to_dict(),
        throughput=rows,
        law_cost=scaling,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
