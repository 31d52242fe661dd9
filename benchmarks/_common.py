"""Shared benchmark plumbing: machine description, ceilings, timing, table and JSON output."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr

from sdeformer.cli.common import markdown_table as markdown_table

ROOT = Path(__file__).resolve().parents[1]
"""The checkout the benchmarks run from."""
DEFAULT_RESULTS = Path(__file__).parent / "results"
RESULTS = Path(os.environ.get("SDEFORMER_BENCH_RESULTS") or DEFAULT_RESULTS).resolve()
"""Where the benchmarks write their JSON: benchmarks/results, or $SDEFORMER_BENCH_RESULTS (the
GPU script writes each device's results to their own directory)."""


def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The machine the numbers were measured on."""
    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
    }


def best_time(fn, *, repeat: int = 3) -> float:
    """Best wall time of `fn()` (which must block until its result is ready) over `repeat` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def ceilings(size: int = 1024, draws: int = 2**22) -> dict:
    """The machine's own float32 matmul GFLOP/s (full precision) and normal draws per second.

    The draws are summed inside the jitted function, so the rate is that of generating normals,
    not of writing a large buffer to memory (which is slower than the networks' own draws).
    """
    a = jr.normal(jr.key(0), (size, size))
    # full float32 ("highest"; a GPU's default float32 product is TensorFloat-32), and the
    # default precision's rate beside it (the same on a CPU)
    with jax.default_matmul_precision("highest"):
        matmul = jax.jit(lambda x: x @ x)
        matmul(a).block_until_ready()
        t = best_time(lambda: matmul(a).block_until_ready())
    fast = jax.jit(lambda x: x @ x + 0.0)  # a distinct program at the default precision
    fast(a).block_until_ready()
    t_default = best_time(lambda: fast(a).block_until_ready())
    normal = jax.jit(lambda k: jr.normal(k, (draws,)).sum())
    normal(jr.key(1)).block_until_ready()
    s = best_time(lambda: normal(jr.key(1)).block_until_ready())
    return {
        "matmul_gflops": 2 * size**3 / t / 1e9,
        "matmul_precision": "highest (full float32)",
        "matmul_gflops_default_precision": 2 * size**3 / t_default / 1e9,
        "normals_per_s": draws / s,
    }


def write_results(name: str, data: dict) -> Path:
    """Write benchmarks/results/<name>.json (atomically) with the machine and the commit."""
    from sdeformer.results import write_json

    payload = {"benchmark": name, "machine": machine(), "commit": commit(), **data}
    path = write_json(RESULTS / f"{name}.json", payload)
    print(f"\nwrote {path}")
    return path


def float32_array(x) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def fit_exponent(points, lo: float | None = None, hi: float | None = None) -> dict | None:
    """p of cost ~ C size^p: least squares of log cost on log size over lo <= size <= hi.

    `points` are (size, cost) pairs; returns {"exponent", "points", "range"} or None when fewer
    than two distinct sizes fall in the range.
    """
    import numpy as np

    sel = [
        (s, c)
        for s, c in points
        if (lo is None or s >= lo) and (hi is None or s <= hi) and c and c > 0
    ]
    if len({s for s, _ in sel}) < 2:
        return None
    x = np.log([s for s, _ in sel])
    y = np.log([c for _, c in sel])
    slope = float(np.polyfit(x, y, 1)[0])
    return {
        "exponent": slope,
        "points": len(sel),
        "range": [min(s for s, _ in sel), max(s for s, _ in sel)],
    }


def covariance_paths(method: str, config, v0, *, width: int, depth: int, num_samples: int, key):
    """Covariance paths of the law chain (`method="law"`) or of explicit networks ("explicit"),
    every size passed by keyword: the one call site of the samplers in the benchmarks."""
    from sdeformer.finite import explicit_covariance_paths, law_covariance_paths

    sampler = law_covariance_paths if method == "law" else explicit_covariance_paths
    return sampler(config, v0, width=width, depth=depth, num_samples=num_samples, key=key)


def command_of(module: str, argv: list[str] | None) -> str:
    """The command line of `python -m benchmarks.<module>` with `argv` (default: this process's)."""
    return " ".join(["python -m benchmarks." + module, *(sys.argv[1:] if argv is None else argv)])


def commit() -> str | None:
    """The git commit of the checkout the benchmark runs from (with "+dirty" when changed)."""
    from sdeformer.results import provenance

    return provenance().get("git_commit")
