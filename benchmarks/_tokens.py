"""The measurements of `bench_tokens` at one token count m (one function per measure).

Every measure returns a dict with `status` "ok", the timed `seconds` of one run (compile
excluded), `units` (path-steps, sample-layers or comparisons done in that run), `rate`
(units / s), `cost` (s / unit, the quantity whose exponent in m is fitted) and `compile_s`.
"""

from __future__ import annotations

import inspect
import math
import resource
import time
import warnings

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ._baseline import euler_paths

FLOPS_PER_PATH_STEP = 10  # x m^3: the matrix products of the noise formula, done plainly


def rss_peak_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def device_peak_bytes() -> int | None:
    """Peak bytes in use on the default device (accelerators), None where not reported."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        return None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def compiled_bytes(compiled) -> int | None:
    """Bytes XLA assigns to a compiled program (temporaries + arguments + outputs)."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if stats is None:
        return None
    return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes)


def _ready(x):
    return jax.block_until_ready(x)


def prepare(fn, *args, memory_budget: float | None = None) -> dict:
    """Compile `jax.jit(fn)` for `args` ahead of time: `run` (a callable), `compile_s` and
    `memory_bytes` (XLA's estimate, None where unknown); or `skip` (why nothing may run).

    If `memory_budget` is given and XLA's estimate exceeds it, `skip` holds the reason. A
    function that cannot be traced as a whole (a Python loop with host callbacks, say) falls
    back to plain calls: the first call (compile + run) counts as compilation, `memory_bytes`
    is None and `note` says so.
    """
    start = time.perf_counter()
    try:
        compiled = jax.jit(fn).lower(*args).compile()
    except Exception as err:  # noqa: BLE001 - fall back to eager calls, say why
        reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        if "RESOURCE_EXHAUSTED" in reason or isinstance(err, MemoryError):
            return {"skip": f"compilation ran out of memory ({reason})"}
        first = time.perf_counter()
        _ready(fn(*args))
        return {
            "run": fn,
            "compile_s": time.perf_counter() - first,
            "memory_bytes": None,
            "note": f"not jittable as a whole ({reason}); timed as plain calls",
        }
    compile_s = time.perf_counter() - start
    memory = compiled_bytes(compiled)
    if memory_budget is not None and memory is not None and memory > memory_budget:
        return {
            "skip": f"XLA memory estimate {memory / 2**30:.2f} GiB exceeds the budget "
            f"{memory_budget / 2**30:.2f} GiB",
            "memory_bytes": memory,
            "compile_s": compile_s,
        }
    return {"run": compiled, "compile_s": compile_s, "memory_bytes": memory}


def run_once(program: dict, *args) -> None:
    """One timed run of a prepared program: keeps the best time and the last output."""
    t0 = time.perf_counter()
    out = _ready(program["run"](*args))
    seconds = time.perf_counter() - t0
    program["seconds"] = min(program.get("seconds", math.inf), seconds)
    program["output"] = out


def timed(fn, *args, repeat: int = 1, memory_budget: float | None = None) -> dict:
    """`prepare` then the best of `repeat` runs: `seconds`, `compile_s`, `memory_bytes`,
    `output` (or `skip`)."""
    program = prepare(fn, *args, memory_budget=memory_budget)
    if "skip" not in program:
        for _ in range(repeat):
            run_once(program, *args)
    return {k: v for k, v in program.items() if k != "run"}


def _rates(result: dict, units: float) -> dict:
    result["seconds"] = max(result["seconds"], 1e-9)  # a timer tick: never divide by zero
    out = {k: v for k, v in result.items() if k != "output"}
    out.update(status="ok", units=units, rate=units / result["seconds"])
    out["cost"] = result["seconds"] / units
    return out


def initial_covariance(m: int) -> jax.Array:
    """V0 = 0.7 I + 0.3 1 1^T (unit variances, correlations 0.3), positive definite for all m."""
    return (0.7 * jnp.eye(m) + 0.3 * jnp.ones((m, m))).astype(jnp.float32)


# ------------------------------------------------------------------------------ the SDE side


def solve(config, v0, T, num_samples: int, *, key, num_steps: int, **options):
    """`solve_sde` through the contract's API (`num_samples`, `batch_size`, `progress`), with a
    shim for the older API (`num_paths`): options the installed solver lacks are dropped."""
    from sdeformer.sde import solve_sde

    accepted = inspect.signature(solve_sde).parameters
    options = {k: v for k, v in options.items() if k in accepted}
    options.setdefault("save_times", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return solve_sde(
            config, v0, T=T, num_samples=num_samples, key=key, num_steps=num_steps, **options
        )


def measure_sde_and_baseline(
    config,
    m: int,
    paths: int,
    steps: int,
    *,
    T: float,
    bound: float,
    memory_budget: float,
    key,
    repeat: int = 3,
    with_sde: bool = True,
    with_baseline: bool = True,
) -> dict[str, dict]:
    """`solve_sde` (Euler) and the O(m^3) batched Euler of `benchmarks._baseline` at the same
    paths and steps: both compiled first, then `repeat` runs of each, alternating (so a
    change of the machine's load hits both alike), best time of each. The SDE's result adds
    its XLA memory estimate and survival fraction; skipped programs say why."""
    v0 = initial_covariance(m)

    def sde_run(key):
        sol = solve(config, v0, T, paths, key=key, num_steps=steps, progress=False)
        return sol.vs[:, -1], sol.alive[:, -1]

    def baseline_run(key):
        return euler_paths(config, v0, T, bound, key=key, num_paths=paths, num_steps=steps)

    programs = {}
    if with_sde:
        programs["sde"] = prepare(sde_run, key, memory_budget=memory_budget)
    if with_baseline:
        programs["baseline"] = prepare(baseline_run, key)
    live = {k: p for k, p in programs.items() if "skip" not in p}
    for _ in range(repeat):
        for program in live.values():
            run_once(program, key)
    out = {}
    for name, program in programs.items():
        if "skip" in program:
            out[name] = {"status": "skipped", "reason": program.pop("skip"), **program}
            continue
        res = _rates({k: v for k, v in program.items() if k != "run"}, paths * steps)
        res["survived"] = float(np.mean(np.asarray(program["output"][1])))
        res["repeat"] = repeat
        out[name] = res
    return out


def measure_matmul(m: int, batch: int, *, flops: float, key) -> dict:
    """float32 rate of a batched (m x m) @ (m x m) product, the SDE's building block.

    `batch` matrices of size m are multiplied `r` times in a `fori_loop` (by orthogonal
    matrices, so values stay bounded), r chosen so one run does about `flops` flops.
    """
    reps = int(min(max(1, flops // (2 * m**3 * batch)), 200))
    ka, kb = jr.split(key)
    q, _ = jnp.linalg.qr(jr.normal(ka, (batch, m, m), jnp.float32))
    x = jr.normal(kb, (batch, m, m), jnp.float32)

    def run(x, q):
        return jax.lax.fori_loop(0, reps, lambda _, y: y @ q, x)

    def run_default(x, q):  # a distinct function: its own compiled program
        return jax.lax.fori_loop(0, reps, lambda _, y: y @ q, x)

    # The reference is full float32 ("highest": on NVIDIA GPUs the default is TensorFloat-32,
    # about 3x faster than float32 and labelled apart); the default-precision rate beside it.
    with jax.default_matmul_precision("highest"):
        result = timed(run, x, q, repeat=5)
    default = timed(run_default, x, q, repeat=5)
    done = 2.0 * m**3 * batch * reps
    out = _rates(result, batch * reps)
    out.update(
        batch=batch,
        reps=reps,
        gflops=done / result["seconds"] / 1e9,
        precision="highest (full float32)",
        gflops_default_precision=done / default["seconds"] / 1e9,
    )
    return out


# ------------------------------------------------------------------- finite networks, compare


def measure_network(config, m: int, n: int, depth: int, samples: int, *, method: str, key):
    """Law chain (`method="law"`) or explicit networks: sample-layers/s at width n, depth d."""
    from sdeformer.finite import explicit_covariance_paths, law_covariance_paths

    sampler = law_covariance_paths if method == "law" else explicit_covariance_paths
    v0 = initial_covariance(m)

    def run(key):
        return sampler(config, n, depth, v0, samples, key=key)[:, -1]

    return _rates(timed(run, key), samples * depth)


def measure_law_and_explicit(
    config, m: int, n: int, depth: int, samples: dict[str, int], *, key, repeat: int = 3
) -> dict[str, dict]:
    """The law chain and the explicit networks of one stack, timed together, alternating.

    `samples` maps "law" and "explicit" to their sample counts. Both programs are compiled
    first, then `repeat` runs of each alternate (law, explicit, law, ...), best time of each,
    so that the speed-up law / explicit is a ratio of two times taken under the same load (two
    separate measures, possibly from runs hours apart, measured the load, not the samplers).
    """
    from sdeformer.finite import explicit_covariance_paths, law_covariance_paths

    programs = {}
    for method, count in samples.items():
        sampler = law_covariance_paths if method == "law" else explicit_covariance_paths
        v0 = initial_covariance(m)

        def run(key, sampler=sampler, count=count, v0=v0):
            return sampler(config, n, depth, v0, count, key=key)[:, -1]

        programs[method] = prepare(run, key)
    for _ in range(repeat):
        for program in programs.values():
            if "skip" not in program:
                run_once(program, key)
    out = {}
    for method, program in programs.items():
        if "skip" in program:
            out[method] = {"status": "skipped", "reason": program.pop("skip"), **program}
            continue
        res = _rates({k: v for k, v in program.items() if k != "run"}, samples[method] * depth)
        res["repeat"] = repeat
        out[method] = res
    return out


def wishart_samples(m: int, samples: int, *, dof: int, scale: float, key) -> np.ndarray:
    """`samples` covariances V = scale X X^T / dof, X (m, dof) iid N(0, 1): a cheap stand-in
    source of many-token covariances for timing the comparison (its cost does not depend on
    where the samples came from)."""
    chunk = max(1, min(samples, int(2**26 // (m * m))))

    @jax.jit
    def draw(k):
        x = jr.normal(k, (chunk, m, dof), jnp.float32)
        return (scale / dof) * jnp.einsum("sai,sbi->sab", x, x)

    parts = [np.asarray(draw(k)) for k in jr.split(key, -(-samples // chunk))]
    return np.concatenate(parts)[:samples]


def measure_compare(m: int, samples: int, *, key) -> dict:
    """Wall time of `sdeformer.compare.compare_sources` on two sources of `samples` each."""
    from sdeformer.compare import CovarianceSamples, compare_sources

    ka, kb = jr.split(key)
    dof = 16
    sources = []
    for label, k, scale in (("a", ka, 1.0), ("b", kb, 1.05)):
        vs = wishart_samples(m, samples, dof=dof, scale=scale, key=k)[:, None]
        sources.append(
            CovarianceSamples(label, np.array([1.0]), vs, np.ones((samples, 1), dtype=bool))
        )
    start = time.perf_counter()
    comparison = compare_sources(*sources)
    seconds = time.perf_counter() - start
    rows = len(getattr(comparison, "rows", ()))
    return {
        "status": "ok",
        "seconds": seconds,
        "compile_s": 0.0,
        "units": 1,
        "rate": 1.0 / seconds,
        "cost": seconds,
        "samples": samples,
        "rows": rows,
    }
