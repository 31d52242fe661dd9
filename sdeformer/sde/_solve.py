"""`solve_sde`: batches of covariance-SDE paths in one `diffrax.diffeqsolve` each.

The state of one solve is a whole batch: {"v": (batch, m, m), "code": (batch,), "exit":
(batch,)}. One custom `diffrax.AbstractTerm` (`_CovarianceTerm`, in `_batch.py`) gives the
increment of a step:

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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import ArrayLike, PRNGKeyArray

from .._convention import check_T, follows_convention
from .._progress import Progress
from ..config import ShapedConfig, check_covariance, check_values, check_width
from ._batch import solve_batch
from ._coefficients import CovarianceSDE, default_psd_tol
from ._solution import SDESolution

SOLVERS = ("euler", "heun", "exponential")
"""Solvers of `solve_sde`: Ito Euler-Maruyama, Stratonovich Heun and the positive-definite
exponential step (`sdeformer.sde._psd_scheme`)."""

DEFAULT_MEMORY_BUDGET = 2**30
"""Bytes one batch may use on a CPU (on a GPU: half of the device's memory limit)."""


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


def _path_values(config, values, brownian_ids, num_samples: int, dtype):
    """(values as `(num_samples,)` arrays or None, Brownian id of each path), checked."""
    if brownian_ids is None:
        ids = np.arange(num_samples, dtype=np.uint32)
    else:
        raw = np.asarray(brownian_ids)
        if (
            raw.shape != (num_samples,)
            or not np.issubdtype(raw.dtype, np.integer)
            or (raw.size and raw.min() < 0)
        ):
            raise ValueError(
                f"solve_sde: brownian_ids has shape {raw.shape} and dtype {raw.dtype}; pass "
                f"({num_samples},) non-negative integers, one Brownian path id per path"
            )
        ids = raw.astype(np.uint32)
    if not values:
        return None, ids
    concrete = {k: v for k, v in values.items() if not isinstance(v, jax.core.Tracer)}
    check_values(config, concrete)  # the rules of ShapedConfig, naming the bad value
    out = {}
    for name, value in values.items():
        array = jnp.asarray(value, dtype)
        if array.ndim == 0:
            array = jnp.broadcast_to(array, (num_samples,))
        if array.shape != (num_samples,):
            raise ValueError(
                f"solve_sde: values[{name!r}] has shape {array.shape}; pass a scalar or one "
                f"value per path, shape ({num_samples},)"
            )
        out[name] = array
    return out, ids


@follows_convention
def solve_sde(
    config: ShapedConfig,
    v0: ArrayLike,
    *,
    T: float | ArrayLike,
    num_samples: int | None = None,
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
    values: dict | None = None,
    brownian_ids: ArrayLike | None = None,
    brownian_steps: int | None = None,
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
    - `values`: {field: value} for some of `tau0`, `gamma`, `c_plus`, `c_minus`
      (`sdeformer.config.TRACEABLE_FIELDS`), each a scalar or one value per path
      (`(num_samples,)`), replacing `config`'s field as a JAX value: one compiled solver then
      serves every value (phase maps: many parameter points in one call), and the paths are
      differentiable in them (`jax.jvp`; pathwise derivatives with the Brownian paths held
      fixed). Concrete values are checked by the rules of `ShapedConfig`.
    - `brownian_ids`: `(num_samples,)` non-negative integers, the Brownian path each path
      draws (default `arange(num_samples)`): paths with the same id and key see the same
      Brownian increments (common random numbers across parameter points).
    - `brownian_steps`: None, or a multiple of `num_steps` (Euler only): the Brownian path is
      drawn on a grid of this many steps, keyed by the fine step's index, and each Euler step
      sums its `brownian_steps / num_steps` increments; solves with the same key and
      `brownian_steps` then share their Brownian paths whatever their `num_steps` (common
      random numbers across step counts), and a new `num_steps` does not recompile.

    T, dt0, bound and psd_tol are passed to the compiled solver as values: new values do not
    recompile (the number of save times, of paths per batch and the bucket of max_steps do).
    Path i is a function of (key, i) only: the same key gives the same paths, and the first k
    paths of a run with more samples or another batch size are the same.
    """
    by_dt0 = dt0 is not None
    num_samples, steps, dt0, T_value = _check_run(num_samples, solver, T, num_steps, dt0)
    v0, dtype = _initial_state(v0, solver, dtype)
    m = v0.shape[-1]
    ts = _save_grid(save_times, T, T_value, dtype)
    psd_tol, max_steps = _check_limits(bound, psd_tol, max_steps, steps, m, dtype)
    sde = _covariance_sde(config, width, solver, m, dtype)
    if batch_size is None:
        batch_size = _fitting_batch(m, len(ts), num_samples, dtype, solver, memory_budget)
    batches = _Batches.cut(sde, values, brownian_ids, num_samples, batch_size, dtype)
    scalars = tuple(_value(x, dtype) for x in (T, dt0, bound, psd_tol))
    run = (v0, jnp.asarray(ts), *scalars, jr.bits(key, (2,), jnp.uint32))
    substeps = _substeps(brownian_steps, steps, solver, by_dt0)
    parts = batches.solve(run, solver, max_steps, progress, substeps)
    return _solution(jnp.asarray(ts), parts, num_samples, batches.batch_size)


def _check_run(num_samples, solver: str, T, num_steps, dt0):
    """(num_samples, steps, dt0, T as a float or None when traced), checked."""
    if num_samples is None:
        raise ValueError("solve_sde: pass num_samples, the number of paths")
    if solver not in SOLVERS:
        raise ValueError(
            f"solve_sde: solver={solver!r} is unknown; choose from {SOLVERS} (spark, "
            "general_shark and adaptive steps were removed: see sdeformer.sde._solve)"
        )
    num_samples = check_width(num_samples, name="num_samples")
    check_T(T)  # refuses T <= 0, warns when T looks like a depth
    T_value = _concrete(T)
    if dt0 is None:
        if num_steps is None:
            raise ValueError("solve_sde: pass num_steps or dt0")
        steps = check_width(num_steps, name="num_steps")
        dt0 = T_value / steps if T_value is not None else jnp.asarray(T) / steps
        return num_samples, steps, dt0, T_value
    dt_value = _concrete(dt0)
    if dt_value is not None and not dt_value > 0:
        raise ValueError(f"solve_sde: dt0={dt0!r} is invalid; pass a step > 0")
    if T_value is None or dt_value is None:
        raise ValueError("solve_sde: with a traced T or dt0 pass num_steps, not dt0")
    return num_samples, int(math.ceil(T_value / dt_value - 1e-9)), dt0, T_value


def _substeps(brownian_steps, steps: int, solver: str, by_dt0: bool):
    """Fine Brownian steps per step (an int32 value: no recompile), or None, checked."""
    if brownian_steps is None:
        return None
    fine = check_width(brownian_steps, name="brownian_steps")
    if solver != "euler" or by_dt0 or fine % steps:
        raise ValueError(
            f"solve_sde: brownian_steps={brownian_steps!r} needs solver='euler', num_steps (not "
            f"dt0) and a multiple of num_steps={steps}; pass e.g. brownian_steps={steps}"
        )
    return np.asarray(fine // steps, np.int32)


def _initial_state(v0, solver: str, dtype):
    """(v0 checked, exactly symmetric and in the run's dtype, that dtype)."""
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
    return 0.5 * (v0 + v0.T), dtype  # exactly symmetric: the steps keep it so


def _save_grid(save_times, T, T_value, dtype):
    """The save times: k equally spaced in [0, T] (default 11), or the given ones, checked."""
    if save_times is None:
        save_times = 11
    if isinstance(save_times, int | np.integer):
        k = check_width(int(save_times), minimum=1, name="save_times")
        if T_value is not None:  # host-side: no device dispatch for small solves
            return np.linspace(0.0, T_value, k).astype(dtype)
        return jnp.linspace(0.0, 1.0, k, dtype=dtype) * jnp.asarray(T, dtype)
    ts = np.asarray(save_times, dtype=np.float64).reshape(-1)
    upper = T_value if T_value is not None else np.inf
    if ts.size == 0 or ts.min() < 0 or ts.max() > upper or np.any(np.diff(ts) < 0):
        raise ValueError("solve_sde: save_times must be non-decreasing times in [0, T]")
    return ts.astype(dtype)


def _covariance_sde(config: ShapedConfig, width, solver: str, m: int, dtype) -> CovarianceSDE:
    """The SDE to solve, `CovarianceSDE(config, width=width)`.

    Heun on a causal stack with attention noise needs the autodiff Stratonovich correction,
    which refuses a large m: it is built here, before anything runs.
    """
    sde = CovarianceSDE(config, width=width)
    if solver == "heun" and sde.has_attention_noise and config.causal:
        sde.stratonovich_correction_autodiff(jnp.eye(m, dtype=dtype))
    return sde


def _value(x, dtype):
    """A concrete number as a NumPy scalar of `dtype`, a traced one as a JAX value."""
    return np.asarray(x, dtype) if _concrete(x) is not None else jnp.asarray(x, dtype)


def _check_limits(bound, psd_tol, max_steps, steps: int, m: int, dtype):
    """(psd_tol, max_steps), their defaults filled in, with bound and psd_tol checked.

    psd_tol defaults to 100 m eps of the dtype; max_steps to the power of two above the steps
    (buckets: fewer recompiles).
    """
    psd_tol = default_psd_tol(m, dtype) if psd_tol is None else psd_tol
    bound_value = _concrete(bound)
    if bound_value is not None and not bound_value > 0:  # also refuses NaN
        raise ValueError(f"solve_sde: bound={bound!r} is invalid; pass a bound > 0 (inf: none)")
    if not (math.isfinite(float(psd_tol)) and float(psd_tol) >= 0):
        raise ValueError(f"solve_sde: psd_tol={psd_tol!r} is invalid; pass a finite value >= 0")
    if max_steps is None:
        max_steps = 2 ** max(4, math.ceil(math.log2(steps + 2)))
    return psd_tol, max_steps


def _fitting_batch(m, num_saves, num_samples, dtype, solver, memory_budget) -> int:
    """The most paths per batch that fit the memory budget (`sde_memory_estimate`)."""
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
    return max(1, min(num_samples, (budget - 2**16) // max(per_path, 1)))


class _Batches(NamedTuple):
    """The paths of a run cut into batches (padded by wrapping around to whole batches)."""

    sde: CovarianceSDE
    values: dict | None  # per padded path
    ids: np.ndarray  # Brownian id per padded path
    batch_size: int
    num_samples: int

    @classmethod
    def cut(cls, sde, values, brownian_ids, num_samples: int, batch_size: int, dtype):
        """The batches of `num_samples` paths, `batch_size` (at most `num_samples`) each."""
        values, ids = _path_values(sde.config, values, brownian_ids, num_samples, dtype)
        batch_size = min(check_width(batch_size, name="batch_size"), num_samples)
        num_batches = -(-num_samples // batch_size)
        padded = np.arange(num_batches * batch_size) % num_samples  # the last batch wraps
        if values is not None:
            values = {k: v[padded] for k, v in values.items()}
        return cls(sde, values, ids[padded], batch_size, num_samples)

    def sde_of(self, rows: slice) -> CovarianceSDE:
        """The SDE of one batch: `sde` with the batch's rows of the per-path `values`."""
        if self.values is None:
            return self.sde
        sde = self.sde
        return CovarianceSDE(sde.config, sde.width, {k: v[rows] for k, v in self.values.items()})

    def solve(self, run: tuple, solver: str, max_steps: int, progress: bool, substeps) -> list:
        """`solve_batch` on every batch, with a progress bar (waited for when it shows)."""
        v0, ts, T, dt0, bound, psd_tol, pair = run
        num_batches = len(self.ids) // self.batch_size
        parts = []
        with Progress("SDE paths", self.num_samples, "paths", enabled=progress) as bar:
            for i in range(num_batches):
                size = min(self.batch_size, self.num_samples - i * self.batch_size)
                rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
                with bar.inside(f"SDE batch {i + 1}/{num_batches} ({size} paths)", size):
                    part = solve_batch(
                        self.sde_of(rows), v0, ts, T, dt0, bound, psd_tol, pair,
                        self.ids[rows], solver, max_steps, progress, substeps,
                    )  # fmt: skip
                    if progress and not isinstance(part[0], jax.core.Tracer):
                        jax.block_until_ready(part)  # its progress is reported while it runs
                parts.append(part)
        return parts


def _solution(ts, parts: list, num_samples: int, batch_size: int) -> SDESolution:
    """One `SDESolution` from the batches' outputs (the padding dropped)."""
    if len(parts) == 1:
        vs, alive, exit_time, reason, v_exit, stats = parts[0]
    else:
        vs, alive, exit_time, reason, v_exit = (
            jnp.concatenate([p[j] for p in parts])[:num_samples] for j in range(5)
        )
        stats = parts[0][5]
    stats = dict(stats, batch_size=batch_size, num_batches=len(parts))
    return SDESolution(
        ts=ts, vs=vs, alive=alive, exit_time=exit_time, exit_reason=reason, v_exit=v_exit,
        stats=stats,
    )  # fmt: skip
