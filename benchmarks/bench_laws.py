"""Law chain vs explicit network at initialisation: sample-layers per second, speed-ups, cost in m.

    python -m benchmarks.bench_laws [--tokens 64] [--tokens-width 256] [--tokens-depth 16]
        [--tokens-samples 256] [--explicit-samples 8] [--m-sweep 2 4 8 16 32 64 128 256]
        [--widths 128 512 1024 4096] [--m 4] [--depth 8] [--law-samples 1000]
        [--explicit-budget 5e7] [--out benchmarks/results/laws.json]

Three parts, each timed with compilation excluded (one warm-up call), best of a few runs:

1. Many tokens (issue 12): at m = --tokens, n = --tokens-width and depth --tokens-depth, the
   law chain and the explicit network on the same configuration, in the same run, for an
   attention-only stack and for shaped attention + MLP layers: sample-layers per second and the
   speed-up law / explicit (goals: >= 50x attention-only, >= 10x attention + MLP). Both the wall
   time and the process CPU time (all threads) are reported: on a machine loaded by other jobs
   the CPU-time ratio is the steadier of the two.
2. Cost in m: the law chain's microseconds per sample-layer for m in --m-sweep at width
   n = max(--tokens-width, m), with the exponent b of a least-squares fit t ~ m^b over m >= 32
   (the O(m^3) regime) and over all m.
3. Widths: law chain vs explicit network for n in --widths at m = --m (shaped attention + MLP),
   and the law chain's cost per layer for attention-only and full layers as n grows
   (attention-only is flat in n).

Prints markdown tables and writes JSON with the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from sdeformer import ShapedConfig
from sdeformer.cli.common import markdown_table
from sdeformer.finite import explicit_covariance_paths, law_covariance_paths, weights_per_layer

from ._markdown import summary_table

GOALS = {"attention": 50.0, "attention+mlp": 10.0}
"""Speed-up goals law / explicit at m = 64, n = 256 (issue 12)."""


def _once(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call of fn(), waited for."""
    start, start_cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.perf_counter() - start, time.process_time() - start_cpu


def _time(fn, repeats: int = 2) -> tuple[float, float]:
    """(best wall seconds, best process CPU seconds) of fn() after one warm-up call."""
    jax.block_until_ready(fn())  # compile (first call only) and warm up
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def _v0(m: int):
    return 0.5 * jnp.eye(m) + 0.5 * jnp.ones((m, m))


def _name(blocks) -> str:
    return "+".join(blocks)


def tokens_part(config, m, n, depth, law_samples, explicit_samples, repeats) -> list[dict]:
    """Law chain vs explicit network at m tokens, width n, for both stacks, in the same run."""
    v0, key = _v0(m), jr.key(0)
    rows = []
    for blocks in (("attention",), ("attention", "mlp")):
        cfg = config.replace(blocks=blocks)
        law = partial(
            law_covariance_paths, cfg, v0, width=n, depth=depth, num_samples=law_samples, key=key
        )
        explicit = partial(
            explicit_covariance_paths,
            cfg,
            v0,
            width=n,
            depth=depth,
            num_samples=explicit_samples,
            key=key,
        )
        jax.block_until_ready(law())  # compile and warm up both
        jax.block_until_ready(explicit())
        # Interleaved (law, explicit, law, explicit, ...) so that both see the same load.
        law_wall = law_cpu = exp_wall = exp_cpu = float("inf")
        for _ in range(repeats):
            wall, cpu = _once(law)
            law_wall, law_cpu = min(law_wall, wall), min(law_cpu, cpu)
            wall, cpu = _once(explicit)
            exp_wall, exp_cpu = min(exp_wall, wall), min(exp_cpu, cpu)
        law_layers, exp_layers = law_samples * depth, explicit_samples * depth
        row = dict(
            blocks=_name(blocks),
            m=m,
            n=n,
            depth=depth,
            law_samples=law_samples,
            explicit_samples=explicit_samples,
            law_rate=law_layers / law_wall,
            explicit_rate=exp_layers / exp_wall,
            law_cpu_us=1e6 * law_cpu / law_layers,
            explicit_cpu_us=1e6 * exp_cpu / exp_layers,
        )
        row["speedup"] = row["law_rate"] / row["explicit_rate"]
        row["speedup_cpu"] = row["explicit_cpu_us"] / row["law_cpu_us"]
        row["goal"] = GOALS[row["blocks"]]
        rows.append(row)
        print(
            f"m={m} n={n} {row['blocks']}: law {row['law_rate']:.4g}/s, explicit "
            f"{row['explicit_rate']:.4g}/s, speed-up {row['speedup']:.3g}x (CPU time "
            f"{row['speedup_cpu']:.3g}x)",
            flush=True,
        )
    return rows


def fit_exponent(ms, seconds, m_min: int = 1) -> float | None:
    """Least-squares slope of log(seconds) against log(m) over m >= m_min (None if < 2 points)."""
    pts = [(math.log(m), math.log(s)) for m, s in zip(ms, seconds, strict=True) if m >= m_min]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def m_part(config, ms, n_min, depth, repeats) -> dict:
    """Law chain cost per sample-layer against m, with fitted exponents."""
    rows = []
    for blocks in (("attention",), ("attention", "mlp")):
        cfg = config.replace(blocks=blocks)
        for m in ms:
            n = max(n_min, m)
            samples = int(min(256, max(8, 2**22 // m**3)))
            v0 = _v0(m)
            wall, cpu = _time(
                lambda cfg=cfg, n=n, v0=v0, samples=samples: law_covariance_paths(
                    cfg, v0, width=n, depth=depth, num_samples=samples, key=jr.key(0)
                ),
                repeats,
            )
            rows.append(
                dict(
                    blocks=_name(blocks),
                    m=m,
                    n=n,
                    samples=samples,
                    depth=depth,
                    us_per_sample_layer=1e6 * wall / (samples * depth),
                    cpu_us_per_sample_layer=1e6 * cpu / (samples * depth),
                )
            )
            print(f"{_name(blocks)} m={m}: {rows[-1]['us_per_sample_layer']:.4g} us", flush=True)
    fits = {}
    for blocks in ("attention", "attention+mlp"):
        sel = [r for r in rows if r["blocks"] == blocks]
        ms_b = [r["m"] for r in sel]
        fits[blocks] = dict(
            exponent_m_ge_32=fit_exponent(ms_b, [r["us_per_sample_layer"] for r in sel], 32),
            exponent_all=fit_exponent(ms_b, [r["us_per_sample_layer"] for r in sel]),
            cpu_exponent_m_ge_32=fit_exponent(
                ms_b, [r["cpu_us_per_sample_layer"] for r in sel], 32
            ),
        )
    return dict(rows=rows, fits=fits)


def widths_part(config, widths, m, depth, law_samples, explicit_budget) -> tuple[list, list]:
    v0, key = _v0(m), jr.key(0)
    rows = []
    for n in widths:
        law_s, _ = _time(
            lambda n=n: law_covariance_paths(
                config, v0, width=n, depth=depth, num_samples=law_samples, key=key
            )
        )
        law_rate = law_samples * depth / law_s
        per_layer = weights_per_layer(config, n)
        exp_depth = max(1, min(depth, int(explicit_budget // per_layer)))
        exp_samples = max(1, min(law_samples, int(explicit_budget // (per_layer * exp_depth))))
        exp_s, _ = _time(
            lambda n=n, d=exp_depth, s=exp_samples: explicit_covariance_paths(
                config, v0, width=n, depth=d, num_samples=s, key=key
            ),
            repeats=1,
        )
        exp_rate = exp_samples * exp_depth / exp_s
        rows.append(
            dict(
                n=n,
                law_samples=law_samples,
                law_depth=depth,
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
        for n in widths:
            seconds, _ = _time(
                lambda n=n, cfg=cfg: law_covariance_paths(
                    cfg, v0, width=n, depth=depth, num_samples=law_samples, key=key
                )
            )
            scaling.append(
                dict(
                    blocks=list(blocks),
                    n=n,
                    us_per_sample_layer=1e6 * seconds / (law_samples * depth),
                )
            )
    return rows, scaling


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--tokens-width", type=int, default=256)
    parser.add_argument("--tokens-depth", type=int, default=16)
    parser.add_argument("--tokens-samples", type=int, default=256)
    parser.add_argument("--explicit-samples", type=int, default=8)
    parser.add_argument("--m-sweep", type=int, nargs="*", default=[2, 4, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--m-depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timings (m = 64)")
    parser.add_argument("--widths", type=int, nargs="*", default=[128, 512, 1024, 4096])
    parser.add_argument("--m", type=int, default=4)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--law-samples", type=int, default=1000)
    parser.add_argument("--explicit-budget", type=float, default=5e7, help="Gaussian draws")
    parser.add_argument("--out", default="benchmarks/results/laws.json")
    return parser


def print_tokens_table(tokens: list[dict], args, load: dict) -> None:
    """The speed-ups law / explicit at many tokens, against the goals."""
    print(
        f"\nLaw chain vs explicit network at m = {args.tokens}, n = {args.tokens_width}, depth "
        f"{args.tokens_depth} (sample-layers per second, same run; load average "
        f"{load['before']} before, {load['after']} after)\n"
    )
    print(
        markdown_table(
            ["blocks", "law /s", "explicit /s", "speed-up (wall)", "speed-up (CPU)", "goal", "met"],
            [
                [
                    r["blocks"],
                    r["law_rate"],
                    r["explicit_rate"],
                    f"{r['speedup']:.3g}x",
                    f"{r['speedup_cpu']:.3g}x",
                    f">= {r['goal']:g}x",
                    "yes" if min(r["speedup"], r["speedup_cpu"]) >= r["goal"] else "no",
                ]
                for r in tokens
            ],
        )
    )


def print_cost_in_m(by_m: dict, args) -> None:
    """The law chain's cost per sample-layer against m, and the fitted exponents."""
    print(f"\nLaw chain cost per sample-layer against m (n = max({args.tokens_width}, m))\n")
    table = []
    for m in args.m_sweep:
        cells = [r for r in by_m["rows"] if r["m"] == m]  # attention, attention+mlp
        table.append(
            [m, *[r["us_per_sample_layer"] for r in cells]]
            + [r["cpu_us_per_sample_layer"] for r in cells]
        )
    print(
        markdown_table(
            ["m", "attention (us)", "attention+mlp (us)", "attention (CPU us)", "a+mlp (CPU us)"],
            table,
        )
    )
    for blocks, fit in by_m["fits"].items():
        b32, ball, bcpu = fit["exponent_m_ge_32"], fit["exponent_all"], fit["cpu_exponent_m_ge_32"]
        print(
            f"{blocks}: t ~ m^{b32:.2f} for m >= 32 (m^{ball:.2f} over all m; CPU time "
            f"m^{bcpu:.2f} for m >= 32)"
            if None not in (b32, ball, bcpu)
            else f"{blocks}: too few sizes for a fit"
        )


def print_law_cost(scaling: list[dict], widths: list[int]) -> None:
    print("\nLaw chain cost per sample per layer (microseconds)\n")
    print(
        markdown_table(
            ["n", "attention", "attention+mlp"],
            [[n, *[s["us_per_sample_layer"] for s in scaling if s["n"] == n]] for n in widths],
        )
    )


def summary(laws: dict) -> list[str]:
    """The `bench_laws` part of the summary (law chain vs explicit networks across widths), from
    its JSON; printed by the benchmark and by `run_all`."""
    cfg = ShapedConfig.from_dict(laws["config"])
    rows = []
    for r in laws["throughput"]:
        # normal draws of the explicit networks, from this file alone (a fraction of the
        # normal ceiling would divide by bench_init's ceiling, another run)
        draws = r["explicit_rate"] * weights_per_layer(cfg, r["n"])
        rows.append([r["n"], r["law_rate"], r["explicit_rate"], r["speedup"], draws])
    return [
        f"\n**Exact law chain vs explicit networks** (`bench_laws`, m = {laws['m']}, "
        "samples x layers per second):\n",
        *summary_table(
            ["n", "law chain", "explicit", "speedup", "explicit: normal draws / s"], rows
        ),
    ]


def _machine() -> dict:
    return dict(
        platform=platform.platform(),
        processor=platform.processor(),
        cpu_count=os.cpu_count(),
        jax_version=jax.__version__,
        device=str(jax.devices()[0]),
        backend=jax.default_backend(),
    )


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    config = ShapedConfig(tau0=1.0, gamma=0.5, heads=1)
    load_before = _load()
    tokens = tokens_part(
        config,
        args.tokens,
        args.tokens_width,
        args.tokens_depth,
        args.tokens_samples,
        args.explicit_samples,
        args.repeats,
    )
    by_m = m_part(config, args.m_sweep, args.tokens_width, args.m_depth, min(args.repeats, 3))
    rows, scaling = widths_part(
        config, args.widths, args.m, args.depth, args.law_samples, args.explicit_budget
    )
    result = dict(
        machine=_machine(),
        load_average=dict(before=load_before, after=_load()),
        m=args.m,
        config=config.to_dict(),
        tokens=tokens,
        cost_vs_m=by_m,
        throughput=rows,
        law_cost=scaling,
    )
    print_tokens_table(tokens, args, result["load_average"])
    print_cost_in_m(by_m, args)
    print("\n".join(summary(result)))
    print_law_cost(scaling, args.widths)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
