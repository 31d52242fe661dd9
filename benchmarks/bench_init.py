"""Foundation benchmarks: compile time vs depth, memory vs depth, init Monte Carlo throughput.

    python -m benchmarks.bench_init [--widths 128 512 1024] [--samples 8] [--depth 32]

Goals: compile time of the jitted stack at depth 1024 within 1.5x of depth 16; peak memory of
the init Monte Carlo flat in depth; throughput in samples x layers per second, with the
machine's own float32 matmul and normal-draw rates measured in the same run beside it (reference
rates of other kernels at other sizes: shown, not divided into the networks' rates).
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from sdeformer import ShapedConfig, ShapedTransformer
from sdeformer.finite import weights_per_layer
from sdeformer.finite._explicit import _explicit_paths
from sdeformer.rank_collapse import equicorrelated

from ._common import (
    best_time,
    ceilings,
    command_of,
    commit,
    fit_exponent,
    load_average,
    markdown_table,
    write_results,
)
from ._markdown import columns, format_number, summary_table
from ._ratios import ratio_cell, run_line


def compile_seconds(config: ShapedConfig, n: int, depth: int, m: int) -> float:
    """Best of three fresh trace + compile times of the jitted forward pass."""
    model = ShapedTransformer(config, n, depth, key=jr.key(0))
    x = jnp.ones((m, n))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        eqx.filter_jit(lambda model, x: model(x)).lower(model, x).compile()
        times.append(time.perf_counter() - start)
    return min(times)


def init_mc_memory(config: ShapedConfig, n: int, depth: int, m: int, samples: int) -> int:
    """Bytes XLA assigns to the init Monte Carlo program (temporaries + arguments + outputs)."""
    lowered = _explicit_paths.lower(
        config, n, depth, equicorrelated(m, 0.3), samples, jr.key(0), samples
    )
    stats = lowered.compile().memory_analysis()
    return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes)


def throughput(config: ShapedConfig, n: int, depth: int, m: int, samples: int) -> dict:
    v0 = equicorrelated(m, 0.3)

    def run():
        _explicit_paths(config, n, depth, v0, samples, jr.key(1), samples).block_until_ready()

    run()
    seconds = best_time(run, repeat=2)
    draws = weights_per_layer(config, n) * depth * samples
    return {
        "n": n,
        "seconds": seconds,
        "sample_layers_per_s": samples * depth / seconds,
        "normals_per_s": draws / seconds,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=4)
    args = parser.parse_args(argv)
    config = ShapedConfig()
    m = args.tokens

    load_before = load_average()
    machine_ceilings = ceilings()
    compile_rows = [
        {"depth": d, "compile_s": compile_seconds(config, 64, d, m)} for d in (16, 1024)
    ]
    compile_ratio = compile_rows[1]["compile_s"] / compile_rows[0]["compile_s"]
    memory_rows = [
        {"depth": d, "bytes": init_mc_memory(config, 256, d, m, args.samples)} for d in (16, 1024)
    ]
    memory_ratio = memory_rows[1]["bytes"] / memory_rows[0]["bytes"]
    speed_rows = [throughput(config, n, args.depth, m, args.samples) for n in args.widths]
    # cost exponent in n: seconds per sample-layer ~ n^p (O(n^2) weights drawn per layer)
    width_fit = fit_exponent([(r["n"], 1.0 / r["sample_layers_per_s"]) for r in speed_rows])

    print("\nCompile time of the jitted stack (n = 64):")
    print(
        markdown_table(["depth", "compile s"], [[r["depth"], r["compile_s"]] for r in compile_rows])
    )
    print(f"ratio depth 1024 / depth 16: {compile_ratio:.2f} (goal <= 1.5)")
    print(f"\nInit Monte Carlo memory (n = 256, {args.samples} samples, XLA buffer assignment):")
    print(markdown_table(["depth", "MiB"], [[r["depth"], r["bytes"] / 2**20] for r in memory_rows]))
    print(f"ratio depth 1024 / depth 16: {memory_ratio:.2f} (goal: flat, about 1)")
    data = {
        "commit": commit(),
        "load": {"before": load_before, "after": load_average()},
        "settings": vars(args),
        "ceilings": machine_ceilings,
        "compile": compile_rows,
        "compile_ratio": compile_ratio,
        "memory": memory_rows,
        "memory_ratio": memory_ratio,
        "throughput": speed_rows,
        "width_exponent": width_fit,
    }
    print("\n".join(summary(data)))
    write_results("init", {"command": command_of("bench_init", argv), **data})
    return data


def ceilings_summary(ceilings: dict) -> list[str]:
    """The summary's table of the machine's ceilings measured by `bench_init`."""
    precision = ceilings.get("matmul_precision", "default precision (not recorded)")
    default = ceilings.get("matmul_gflops_default_precision", "-")
    return [
        "\n**Measured ceilings** (`benchmarks._common.ceilings`, float32):\n",
        *summary_table(
            [
                f"matmul GFLOP/s (1024^2), {precision}",
                "matmul GFLOP/s, default precision (TF32 on NVIDIA GPUs)",
                "normal draws / s",
            ],
            [[ceilings["matmul_gflops"], default, ceilings["normals_per_s"]]],
        ),
    ]


def _depth_ratio(rows: list[dict], key: str, batch, what: str):
    """The value at depth 1024 over the value at depth 16 (both measured in this run)."""
    at = {r["depth"]: r[key] for r in rows}
    return ratio_cell(at.get(1024), at.get(16), num_batch=batch, den_batch=batch, what=what)


def summary(init: dict) -> list[str]:
    """The `bench_init` part of the summary (ceilings, throughput, compile and memory against
    depth), from its JSON alone; printed by the benchmark and by `run_all`."""
    settings = init["settings"]
    out = [
        "\n**Explicit networks at initialisation** (`bench_init`: shaped attention + MLP, "
        f"m = {settings['tokens']}, depth {settings['depth']}, {settings['samples']} samples):",
        run_line(init, "init"),
    ]
    out += ceilings_summary(init["ceilings"]) if init.get("ceilings") else []
    out.append("\nThroughput (same run):\n")
    out += summary_table(
        ["n", "samples x layers / s", "normal draws / s"],
        columns(init["throughput"], ["n", "sample_layers_per_s", "normals_per_s"]),
    )
    if init.get("width_exponent"):
        out.append(
            f"\nCost exponent in n (seconds per sample-layer ~ n^p): "
            f"p = {init['width_exponent']['exponent']:.2f}."
        )
    compile_ratio = _depth_ratio(init["compile"], "compile_s", None, "compile time")
    memory_ratio = _depth_ratio(init["memory"], "bytes", settings["samples"], "memory")
    out.append(
        f"\nCompile time depth 1024 / depth 16: {format_number(compile_ratio)}; "
        f"memory depth 1024 / depth 16: {format_number(memory_ratio)} (flat in depth)."
    )
    return out


if __name__ == "__main__":
    jax.config.update("jax_numpy_dtype_promotion", "standard")
    main()
