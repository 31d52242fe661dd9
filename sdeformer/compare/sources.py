"""Sources of covariance samples on one grid with one stopping rule: finite networks and the SDE.

Finite networks (explicit or the exact law chain) at width n, and the SDE saved at the same layer
times t = l / n.

Both stop where some |V_ab| exceeds `bound` (or V is non-finite) and hold the state at the exit
(`samples.CovarianceSamples`; for the SDE the solver's exit state `v_exit` where it records one).
The networks check the bound at every layer; the SDE solver at every step, a finer grid. An SDE
path that crosses between two layer times counts as stopped from the next layer time on, which is
the network's rule unless the path came back below the bound within one layer (negligible for a
bound far above the typical |V_ab|). The SDE's PSD-cone exits are counted as discretisation
failures, apart from the events (`CovarianceSamples.failed`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .._convention import depth_for as depth_for
from .._convention import follows_convention, resolve_depth
from .rows import z_score
from .samples import CovarianceSamples


@follows_convention
def finite_source(
    config,
    v0,
    *,
    width: int,
    T: float | None = None,
    depth: int | None = None,
    num_samples: int,
    key,
    method: str = "law",
    bound: float = 1e3,
    every: int = 1,
    label: str | None = None,
    memory_budget: int = 2**30,
    devices: int | None = None,
    progress: bool = False,
) -> CovarianceSamples:
    """Covariance samples of finite networks of `width` n and `depth` d (or d = round(T n)) at init.

    `method`: "law" (the exact covariance chain, fast) or "explicit" (networks with all their
    weights). Times are layer times l / n (every `every`-th layer and the last); paths stop where
    some |V_ab| exceeds `bound`. When all layers of all samples would exceed `memory_budget`
    bytes (many tokens), the samples are drawn in equal chunks (keys folded with the chunk index)
    and only the kept layers are stored.

    `devices=k` draws with `sdeformer.sharding.sharded_covariance_paths` over the first k
    devices: sample i of a chunk uses key `jr.split(chunk key, chunk size)[i]`, so the result is
    the same for every k (the chunks depend on `memory_budget`, not on k). `devices=None` (the
    default) calls the unsharded sampler, whose per-sample keys differ: another valid sample of
    the same law.

    `progress=True` reports the sample-layers done and their rate on stderr, with a heartbeat
    while a chunk runs (sdeformer._progress).
    """
    import jax
    import jax.random as jr

    from .._progress import Progress
    from ..finite import sample_covariance_paths

    n, depth = resolve_depth(width, depth, T)
    label = label or f"{method} n={n}"
    m = int(np.shape(v0)[-1])
    per_sample = (depth + 1) * m * m * 4

    def sample(count, chunk_key):
        sizes = dict(width=n, depth=depth, num_samples=count, key=chunk_key, method=method)
        if devices is None:
            return sample_covariance_paths(config, v0, **sizes)
        from ..sharding import gather, sharded_covariance_paths

        return gather(sharded_covariance_paths(config, v0, **sizes, devices=devices))

    def draw(count, chunk_key):
        if not progress:
            return sample(count, chunk_key)
        with bar.inside(f"{label}: {count} samples x {depth} layers", count * depth):
            return jax.block_until_ready(sample(count, chunk_key))

    what = f"{label} ({method} chain)" if method == "law" else f"{label} (networks)"
    with Progress(what, num_samples * depth, "layers", enabled=progress) as bar:
        if num_samples * per_sample <= memory_budget:
            paths = draw(num_samples, key)
            return CovarianceSamples.from_paths(label, paths, n, bound=bound, every=every)
        chunk = max(1, memory_budget // per_sample)
        parts = []
        for c, start in enumerate(range(0, num_samples, chunk)):
            keep = min(chunk, num_samples - start)
            # Unsharded: a full chunk, trimmed (the historical keys); sharded: exactly `keep`.
            paths = draw(chunk if devices is None else keep, jr.fold_in(key, c))
            parts.append(
                CovarianceSamples.from_paths(label, paths[:keep], n, bound=bound, every=every)
            )
    return CovarianceSamples.concatenate(parts)


@follows_convention
def sde_source(
    config,
    v0,
    *,
    times,
    num_samples: int,
    key,
    num_steps: int = 1000,
    bound: float = 1e3,
    solver: str = "euler",
    width: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    label: str | None = None,
):
    """SDE paths saved at `times` (the layer times of a finite source), as `CovarianceSamples`.

    `width=n` solves the finite-width SDE (`CovarianceSDE(config, width=n)`, exact finite-width
    drifts where known, docs/theory.md) instead of the limit. Paths stop on the bound (and on
    non-finite values); a path that leaves the PSD cone is a discretisation failure (marked in
    `failed`, see `samples`). Returns `(samples, solution)`; the solution keeps the exit reasons
    and times.
    """
    from ..sde import solve_sde

    times = np.asarray(times, dtype=np.float64)
    solution = solve_sde(
        config,
        v0,
        T=float(times.max()),
        num_samples=num_samples,
        key=key,
        save_times=times,
        num_steps=num_steps,
        bound=bound,
        solver=solver,
        width=width,
        batch_size=batch_size,
        progress=progress,
    )
    if label is None:
        label = "SDE" if width is None else f"SDE (width {width})"
    return CovarianceSamples.from_solution(label, solution), solution


def exit_summary(solution) -> dict:
    """Exit counts of an `SDESolution`, with the PSD exits (discretisation failures) apart."""
    summary = dict(solution.summary())
    total = max(int(summary.get("paths", 0)), 1)
    failures = summary.get("left_psd_cone", 0) + summary.get("solver_failure", 0)
    summary["discretisation_failures"] = int(failures)
    summary["discretisation_failure_fraction"] = failures / total
    return summary


@follows_convention
def coefficient_table(config, v, *, width: int, num_samples: int, key) -> list[dict]:
    """One-step drift and noise of finite networks at V = `v` and width n beside the SDE's.

    Rows for every upper-triangular entry (a, b): the Monte Carlo estimates of n E[dV_ab] and
    n Var[dV_ab] with standard errors (`sdeformer.one_step_moments`, explicit networks of one
    layer) and the SDE's drift b_ab(V) and Sigma_{ab,ab}(V), with the z-scores of the gaps
    (None, "undetermined", where a standard error is 0 or non-finite).
    """
    from ..finite import one_step_moments
    from ..sde import CovarianceSDE

    sde = CovarianceSDE(config)
    est = one_step_moments(config, v, width=width, num_samples=num_samples, key=key)
    v = jnp.asarray(v, dtype=est.drift.dtype)
    drift, noise = np.asarray(sde.drift(v)), np.asarray(sde.noise_covariance(v))
    rows = []
    m = drift.shape[-1]

    def z(value, se):
        out = float(z_score(value, se))
        return out if math.isfinite(out) else None

    for a in range(m):
        for b in range(a, m):
            d_est, d_se = float(est.drift[a, b]), float(est.drift_se[a, b])
            s_est, s_se = float(est.noise[a, b, a, b]), float(est.noise_se[a, b, a, b])
            rows.append(
                {
                    "entry": f"{a}_{b}",
                    "drift_finite": d_est,
                    "drift_finite_se": d_se,
                    "drift_sde": float(drift[a, b]),
                    "drift_z": z(d_est - float(drift[a, b]), d_se),
                    "noise_finite": s_est,
                    "noise_finite_se": s_se,
                    "noise_sde": float(noise[a, b, a, b]),
                    "noise_z": z(s_est - float(noise[a, b, a, b]), s_se),
                }
            )
    return rows
