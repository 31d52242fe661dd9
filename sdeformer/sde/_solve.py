"""`solve_sde`: batches of covariance-SDE paths in one `diffrax.diffeqsolve` each.

The state of one solve is a whole batch: {"v": (batch, m, m), "code": (batch,), "exit":
(batch,)}. One custom `diffrax.AbstractTerm` (`_CovarianceTerm`) gives the increment of a step:

1. the exit check of every path at the start of the step, sharing ONE factorisation of V with
   the noise: a finite Cholesky factor is the PSD test; only when some path's Cholesky fails
   (singular or indefinite V) does the batch pay for a second Cholesky of
   V + psd_tol tr(V)/m I (`lax.cond`), which decides "PSD up to that tolerance" and is then
   that path's factor (`sdeformer.sde.psd_factor_batch`);
2. `b(V) dt + noise(V, L, dW)` (`CovarianceSDE.noise`, O(m^3), docs/theory.md section 4) for the
   paths alive, 0 for the others: a path that failed a check is frozen at the state that failed
   it, its exit code and exit time written into the state.

Brownian increments are drawn per path from the path's own key folded with the step's times,
so a path does not depend on the batch it runs in (`sdeformer.sde._brownian.PathBrownian`).

Solvers: "euler" (Ito Euler-Maruyama; strong order 1/2, weak order 1) and "heun" (diffrax's
Heun on the Stratonovich form: drift + `CovarianceSDE.stratonovich_correction`, an O(m^3)
closed form for the Cholesky factor; with this non-commutative noise it is strong order 1/2
like Euler at twice the cost). SPaRK, GeneralShARK and adaptive steps were removed: with
general noise they too are strong order 1/2 only, adaptive steps need a `VirtualBrownianTree`
(10-100x slower per step, diffrax issues 489 and 517) and per-path step sizes, which a batched
state does not have, and none of them was tested. "exponential" (`sdeformer.sde._psd_scheme`):
V_next = L (expm(X) + Y_+) L^T from the Cholesky factor L of V, positive definite by
construction (no "left_psd_cone" exits), weak order 1 and strong order 1/2 like Euler, 1.8-2.6x
Euler's cost per step at m = 2..8 (benchmarks/bench_schemes.py).
"""

from __future__ import annotations

import math
import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._progress import FractionMeter, Progress
from ..config import ShapedConfig, check_covariance, check_width
from ._brownian import PathBrownian
from ._coefficients import CovarianceSDE, SDESolution, default_psd_tol, psd_factor_batch
from ._psd_scheme import exponential_increment

SOLVERS = ("euler", "heun", "exponential")
"""Solvers of `solve_sde`: Ito Euler-Maruyama, Stratonovich Heun and the positive-definite
exponential step (`sdeformer.sde._psd_scheme`)."""

_TRACES = [0]
"""How often the batch solver was traced (tests check that new T / bound / dt0 do not)."""

DEFAULT_MEMORY_BUDGET = 2**30
"""Bytes one batch may use on a CPU (on a GPU: half of the device's memory limit)."""


def _check(v, code, bound, psd_tol):
    """(new code, factor of the state to step from): exit checks of a batch, one factor."""
    m = v.shape[-1]
    live = code == 0
    # one pass over V for both checks: max |V_ab| is NaN where V has a NaN (the reduction
    # propagates NaN) and infinite where it has an infinity
    largest = jnp.max(jnp.abs(v), axis=(-2, -1))
    finite = jnp.isfinite(largest)
    over = finite & (largest > bound)
    eye = jnp.eye(m, dtype=v.dtype)
    safe = jnp.where((live & finite & ~over)[:, None, None], v, eye)
    factor, psd = psd_factor_batch(safe, psd_tol)
    checked = jnp.where(~finite, 3, jnp.where(over, 2, jnp.where(psd, 0, 1))).astype(v.dtype)
    return jnp.where(live, checked, code), safe, factor


class _CovarianceTerm(diffrax.AbstractTerm):
    """One step of a batch: exit checks, then drift dt + noise(dW) for the live paths.

    Bookkeeping increments are scaled by `weight` = 1 / (weight of the stage in the solver's
    final sum) so that Euler (one stage) and Heun (stages (y0, y0 + k1), weights 1/2, 1/2) both
    end with the exact exit code and exit time; for Heun a path also stops when its predictor
    stage fails a check.
    """

    sde: eqx.Module
    path: PathBrownian
    bound: Array
    psd_tol: Array
    stratonovich: bool = eqx.field(static=True)
    weight: float = eqx.field(static=True)
    exponential: bool = eqx.field(static=True, default=False)

    def vf(self, t, y, args):
        # diffrax inspects the shape of vf; the field itself is only used through vf_prod
        # (is_vf_expensive), so a real call would be a bug: NaN, never a silent wrong value
        return jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), y)

    def contr(self, t0, t1, **kwargs):
        return t1 - t0, self.path.evaluate(t0, t1)

    def prod(self, vf, control):
        raise NotImplementedError("the covariance term only provides vf_prod")

    def is_vf_expensive(self, t0, t1, y, args):
        return True  # Runge-Kutta solvers then combine increments (vf_prod), never fields

    def vf_prod(self, t, y, args, control):
        dt, dw = control
        v, code = y["v"], y["code"]
        new, safe, factor = _check(v, code, self.bound, self.psd_tol)
        alive = new == 0
        sde = self.sde
        drift = jax.vmap(sde.drift)(safe)
        if self.stratonovich:
            drift = drift + jax.vmap(sde.stratonovich_correction)(safe, factor)
        if self.exponential:  # V_next - V of the PD step (_psd_scheme), factor: Cholesky of V
            step = jax.vmap(lambda v_, l_, dw_: exponential_increment(sde, v_, l_, dt, dw_))
            inc = jnp.where(alive[:, None, None], step(safe, factor, dw), 0.0)
        else:
            noise = jax.vmap(sde.noise)(safe, factor, dw)
            inc = jnp.where(alive[:, None, None], drift * dt + noise, 0.0)
        newly = (code == 0) & ~alive
        t = jnp.asarray(t, v.dtype)
        return {
            "v": inc,
            "code": self.weight * (new - code),
            "exit": self.weight * jnp.where(newly, t, 0.0),
        }


@eqx.filter_jit
def _solve_batch(sde, v0, ts, t1, dt0, bound, psd_tol, pair, ids, solver, max_steps, progress):
    _TRACES[0] += 1
    m = v0.shape[-1]
    dtype = v0.dtype
    batch = ids.shape[0]
    zeros = jnp.zeros((batch,), dtype)
    y0 = {"v": jnp.broadcast_to(v0, (batch, m, m)), "code": zeros, "exit": zeros}
    path = PathBrownian(pair, ids, sde.brownian_shape(m, dtype))
    stratonovich = solver == "heun"
    weight = 2.0 if stratonovich else 1.0
    term = _CovarianceTerm(
        sde, path, bound, psd_tol, stratonovich, weight, exponential=solver == "exponential"
    )
    method = diffrax.Heun() if stratonovich else diffrax.Euler()
    saveat = diffrax.SaveAt(
        subs=[
            diffrax.SubSaveAt(ts=ts, fn=lambda t, y, args: y["v"]),
            diffrax.SubSaveAt(t1=True),
        ]
    )
    meter = FractionMeter() if progress else diffrax.NoProgressMeter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not marked as converging.*")
        sol = diffrax.diffeqsolve(
            term,
            method,
            jnp.zeros((), dtype),
            t1,
            dt0,
            y0,
            saveat=saveat,
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=max_steps,
            throw=False,
            adjoint=diffrax.ForwardMode(),
            progress_meter=meter,
        )
    saved, last = sol.ys
    last = jax.tree.map(lambda x: x[-1], last)
    # the state after the last step has not been checked yet
    code, _, _ = _check(last["v"], last["code"], bound, psd_tol)
    exit_at = jnp.where(last["code"] != 0, last["exit"], t1)
    failed = (sol.result != diffrax.RESULTS.successful) & (
        sol.result != diffrax.RESULTS.event_occurred
    )
    code = jnp.where((code == 0) & failed, 4.0, code)
    exit_at = jnp.where(failed & (last["code"] == 0), sol.ts[1][-1], exit_at)
    stopped = code != 0
    exit_time = jnp.where(stopped, exit_at, jnp.inf).astype(dtype)
    alive = ts[None, :] < exit_time[:, None]
    saved = jnp.swapaxes(saved, 0, 1)  # (batch, k, m, m)
    valid = alive & jnp.all(jnp.isfinite(saved), axis=(-2, -1))

    def fill(prev, inp):
        y, ok = inp
        y = jnp.where(ok[:, None, None], y, prev)
        return y, y

    _, filled = jax.lax.scan(fill, y0["v"], (jnp.swapaxes(saved, 0, 1), jnp.swapaxes(valid, 0, 1)))
    stats = {name: sol.stats[name] for name in ("num_steps", "num_accepted_steps", "max_steps")}
    return (
        jnp.swapaxes(filled, 0, 1),
        valid,
        exit_time,
        code.astype(jnp.int32),
        last["v"],
        stats,
    )


def sde_memory_estimate(
    m: int,
    num_save_times: int = 11,
    batch_size: int = 1,
    *,
    dtype=jnp.float32,
    solver: str = "euler",
) -> int:
    """Bytes one batch of `solve_sde` allocates.

    About (2 k + w) m^2 numbers per path, k save times (the save buffer and the output) and w
    m x m work arrays (state, step, factor, Brownian increments, products; w = 14 for Euler, 24
    for Heun, 32 for the exponential step, the last not calibrated), plus O(k + m) per path and
    64 KiB for the program. Calibrated on XLA's memory analysis of the compiled batch solver
    (checked within 2x in the tests).
    """
    m = check_width(m, minimum=2, name="m")
    k = check_width(num_save_times, minimum=1, name="num_save_times")
    batch = check_width(batch_size, name="batch_size")
    work = {"heun": 24, "exponential": 32}.get(solver, 14)
    itemsize = jnp.dtype(dtype).itemsize
    per_path = itemsize * ((2 * k + work) * m * m + 8 * (k + m))
    return int(batch * per_path + 2**16)


def default_memory_budget() -> int:
    """Bytes a batch may use.

    Half of the first device's memory limit where JAX reports one (GPU), else
    `DEFAULT_MEMORY_BUDGET`.
    """
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory stats
        stats = {}
    limit = stats.get("bytes_limit")
    return int(limit // 2) if limit else DEFAULT_MEMORY_BUDGET


def _concrete(x):
    """A Python float of x, or None under tracing."""
    try:
        return float(x)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


def solve_sde(
    config: ShapedConfig,
    v0: ArrayLike,
    T: float | ArrayLike,
    num_samples: int | None = None,
    *,
    key: PRNGKeyArray,
    width: int | None = None,
    save_times: int | ArrayLike | None = None,
    num_steps: int | None = 1000,
    dt0: float | ArrayLike | None = None,
    solver: str = "euler",
    bound: float | ArrayLike = 1e3,
    psd_tol: float | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
    dtype=None,
):
    """Solve the covariance SDE of `config` from `v0` on [0, T] for `num_samples` paths.

    Arguments:
    - `v0`: (m, m) symmetric PSD initial covariance; `T`: final time (depth d = T n).
    - `width`: None (the limit SDE) or n (each block's exact finite-width drift where known,
      `CovarianceSDE(config, width=n)`).
    - `save_times`: None (11 equally spaced times), an int k (k equally spaced times in [0, T]),
      or an array of times in [0, T].
    - `num_steps` or `dt0`: fixed step size T / num_steps (or dt0).
    - `solver`: "euler" (Ito Euler-Maruyama), "heun" (Stratonovich Heun on the converted
      SDE; see `sdeformer.sde._solve`) or "exponential" (`sdeformer.sde._psd_scheme`: positive
      definite by construction, weak order 1, strong order 1/2; V0 must be positive definite).
    - `bound`: a path stops when some |V_ab| exceeds it; it also stops when V leaves the PSD
      cone (neither V nor V + psd_tol tr(V)/m I has a Cholesky factor; default psd_tol
      100 m eps of the dtype, above the rounding of a Cholesky factorisation) or is
      non-finite. See `SDESolution` (`v_exit` is the state at exit).
    - `batch_size`: paths per `diffeqsolve` (None: as many as fit `memory_budget` bytes by
      `sde_memory_estimate`; default budget `default_memory_budget()`). A `ValueError` names
      the size when even one path does not fit. Batching does not change the paths.
    - `progress`: report the paths done and their rate on stderr, within batches too, with a
      heartbeat while a batch runs (sdeformer._progress); each batch is then waited for.
    - `dtype`: float32 (default, or v0's dtype) or float64 (needs `jax_enable_x64`).

    T, dt0, bound and psd_tol are passed to the compiled solver as values: new values do not
    recompile (the number of save times, of paths per batch and the bucket of max_steps do).
    Path i is a function of (key, i) only: the same key gives the same paths, and the first k
    paths of a run with more samples or another batch size are the same.
    """
    if num_samples is None:
        raise ValueError("solve_sde: pass num_samples, the number of paths")
    if solver not in SOLVERS:
        raise ValueError(
            f"solve_sde: solver={solver!r} is unknown; choose from {SOLVERS} (spark, "
            "general_shark and adaptive steps were removed: see sdeformer.sde._solve)"
        )
    num_samples = check_width(num_samples, name="num_samples")
    T_value = _concrete(T)
    if T_value is not None and not (math.isfinite(T_value) and T_value > 0):
        raise ValueError(f"solve_sde: T={T!r} is invalid; pass a final time T > 0")
    if dt0 is None:
        if num_steps is None:
            raise ValueError("solve_sde: pass num_steps or dt0")
        steps = check_width(num_steps, name="num_steps")
        dt0 = T_value / steps if T_value is not None else jnp.asarray(T) / steps
    else:
        dt_value = _concrete(dt0)
        if dt_value is not None and not dt_value > 0:
            raise ValueError(f"solve_sde: dt0={dt0!r} is invalid; pass a step > 0")
        if T_value is None or dt_value is None:
            raise ValueError("solve_sde: with a traced T or dt0 pass num_steps, not dt0")
        steps = int(math.ceil(T_value / dt_value - 1e-9))
    # host-side value checks on the caller's matrix, before any traced operation, so that they
    # also run under jax.eval_shape (the command line checks its inputs that way)
    host = None if isinstance(v0, jax.core.Tracer) else np.asarray(v0)
    v0 = check_covariance(v0)
    if solver == "exponential" and host is not None:
        try:
            np.linalg.cholesky(host.astype(np.float64))
        except np.linalg.LinAlgError:
            raise ValueError(
                "solve_sde: solver='exponential' needs a positive definite v0 (it steps the "
                "Cholesky factor); v0 is singular: pass v0 + eps * I or use solver='euler'"
            ) from None
    if dtype is None:
        dtype = v0.dtype if jnp.issubdtype(v0.dtype, jnp.floating) else jnp.float32
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "solve_sde: dtype=float64 needs jax_enable_x64 (use `with "
            "jax.enable_x64(True):` around the call)"
        )
    v0 = v0.astype(dtype)
    v0 = 0.5 * (v0 + v0.T)  # exactly symmetric: the steps keep it so (symmetric increments)
    m = v0.shape[-1]
    if save_times is None:
        save_times = 11
    if isinstance(save_times, int | np.integer):
        k = check_width(int(save_times), minimum=1, name="save_times")
        if T_value is not None:  # host-side: no device dispatch for small solves
            ts = np.linspace(0.0, T_value, k).astype(dtype)
        else:
            ts = jnp.linspace(0.0, 1.0, k, dtype=dtype) * jnp.asarray(T, dtype)
    else:
        ts_np = np.asarray(save_times, dtype=np.float64).reshape(-1)
        upper = T_value if T_value is not None else np.inf
        if ts_np.size == 0 or ts_np.min() < 0 or ts_np.max() > upper or np.any(np.diff(ts_np) < 0):
            raise ValueError("solve_sde: save_times must be non-decreasing times in [0, T]")
        ts = ts_np.astype(dtype)
    if psd_tol is None:
        psd_tol = default_psd_tol(m, dtype)
    bound_value = _concrete(bound)
    if bound_value is not None and not bound_value > 0:  # also refuses NaN
        raise ValueError(f"solve_sde: bound={bound!r} is invalid; pass a bound > 0 (inf: none)")
    if not (math.isfinite(float(psd_tol)) and float(psd_tol) >= 0):
        raise ValueError(f"solve_sde: psd_tol={psd_tol!r} is invalid; pass a finite value >= 0")
    if max_steps is None:
        max_steps = 2 ** max(4, math.ceil(math.log2(steps + 2)))  # buckets: fewer recompiles
    sde = CovarianceSDE(config, width=width)
    if solver == "heun" and sde.mix_coefficient and config.causal:
        sde.stratonovich_correction_autodiff(jnp.eye(m, dtype=dtype))  # refuses large m
    num_saves = int(ts.shape[0])
    ts = jnp.asarray(ts)
    if batch_size is None:
        budget = default_memory_budget() if memory_budget is None else int(memory_budget)
        one = sde_memory_estimate(m, num_saves, 1, dtype=dtype, solver=solver)
        if one > budget:
            raise ValueError(
                f"solve_sde: one path at m = {m} tokens with {num_saves} save times needs about "
                f"{one / 2**20:.1f} MiB (sde_memory_estimate), more than the memory budget of "
                f"{budget / 2**20:.1f} MiB; save fewer times (save_times=...), use float32, or "
                "raise memory_budget=..."
            )
        per_path = sde_memory_estimate(m, num_saves, 2, dtype=dtype, solver=solver) - one
        batch_size = max(1, min(num_samples, (budget - 2**16) // max(per_path, 1)))
    batch_size = min(check_width(batch_size, name="batch_size"), num_samples)
    pair = jr.bits(key, (2,), jnp.uint32)
    num_batches = -(-num_samples // batch_size)
    ids = np.arange(num_batches * batch_size, dtype=np.uint32) % np.uint32(num_samples)
    args = (
        *(
            np.asarray(x, dtype) if _concrete(x) is not None else jnp.asarray(x, dtype)
            for x in (T, dt0, bound, psd_tol)
        ),
    )
    parts = []
    with Progress("SDE paths", num_samples, "paths", enabled=progress) as bar:
        for i in range(num_batches):
            size = min(batch_size, num_samples - i * batch_size)
            with bar.inside(f"SDE batch {i + 1}/{num_batches} ({size} paths)", size):
                part = _solve_batch(
                    sde,
                    v0,
                    ts,
                    *args,
                    pair,
                    ids[i * batch_size : (i + 1) * batch_size],
                    solver,
                    max_steps,
                    progress,
                )
                if progress and not isinstance(part[0], jax.core.Tracer):  # wait: its progress
                    jax.block_until_ready(part)
            parts.append(part)
    if num_batches == 1:
        vs, alive, exit_time, reason, v_exit, stats = parts[0]
    else:
        vs, alive, exit_time, reason, v_exit = (
            jnp.concatenate([p[j] for p in parts])[:num_samples] for j in range(5)
        )
        stats = parts[0][5]
    stats = dict(stats, batch_size=batch_size, num_batches=num_batches)
    return SDESolution(
        ts=ts,
        vs=vs,
        alive=alive,
        exit_time=exit_time,
        exit_reason=reason,
        v_exit=v_exit,
        stats=stats,
    )
