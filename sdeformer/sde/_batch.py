"""The compiled solver of one batch of covariance-SDE paths: one `diffrax.diffeqsolve`.

The state is the whole batch, {"v": (batch, m, m), "code": (batch,), "exit": (batch,)}, and one
custom `diffrax.AbstractTerm` (`_CovarianceTerm`) gives the increment of a step: the exit checks
of every path (one Cholesky factorisation shared with the noise), then drift dt + noise(dW) for
the live paths. `sdeformer.sde._solve.solve_sde` (its docstring has the rules) splits the paths
into batches and calls `solve_batch` once per batch.
"""

from __future__ import annotations

import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._progress import FractionMeter
from ._brownian import PathBrownian
from ._coefficients import psd_factor_batch
from ._psd_scheme import exponential_increment


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
    substeps: Array | None = None  # fine Brownian steps per step (`indexed_sum`), or None

    def vf(self, t, y, args):
        # diffrax inspects the shape of vf; the field itself is only used through vf_prod
        # (is_vf_expensive), so a real call would be a bug: NaN, never a silent wrong value
        return jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), y)

    def contr(self, t0, t1, **kwargs):
        if self.substeps is not None:  # drawn in vf_prod, at the step index of the state
            return t1 - t0, None
        return t1 - t0, self.path.evaluate(t0, t1)

    def prod(self, vf, control):
        raise NotImplementedError("the covariance term only provides vf_prod")

    def is_vf_expensive(self, t0, t1, y, args):
        return True  # Runge-Kutta solvers then combine increments (vf_prod), never fields

    def vf_prod(self, t, y, args, control):
        dt, dw = control
        if self.substeps is not None:  # Euler only (solve_sde): y["step"] counts the steps
            first = jnp.round(y["step"]).astype(jnp.uint32) * self.substeps.astype(jnp.uint32)
            fine_dt = dt / self.substeps.astype(y["v"].dtype)
            dw = self.path.indexed_sum(first, self.substeps, fine_dt)
        v, code = y["v"], y["code"]
        new, safe, factor = _check(v, code, self.bound, self.psd_tol)
        alive = new == 0
        # per path: the SDE's leaves (its `values`, if any) have the batch as leading axis
        sde = self.sde
        drift = jax.vmap(lambda s, v_: s.drift(v_))(sde, safe)
        if self.stratonovich:
            correction = jax.vmap(lambda s, v_, l_: s.stratonovich_correction(v_, l_))
            drift = drift + correction(sde, safe, factor)
        if self.exponential:  # V_next - V of the PD step (_psd_scheme), factor: Cholesky of V
            step = jax.vmap(lambda s, v_, l_, dw_: exponential_increment(s, v_, l_, dt, dw_))
            inc = jnp.where(alive[:, None, None], step(sde, safe, factor, dw), 0.0)
        else:
            noise = jax.vmap(lambda s, v_, l_, dw_: s.noise(v_, l_, dw_))(sde, safe, factor, dw)
            inc = jnp.where(alive[:, None, None], drift * dt + noise, 0.0)
        newly = (code == 0) & ~alive
        t = jnp.asarray(t, v.dtype)
        out = {
            "v": inc,
            "code": self.weight * (new - code),
            "exit": self.weight * jnp.where(newly, t, 0.0),
        }
        return out if self.substeps is None else {**out, "step": jnp.ones((), v.dtype)}


@eqx.filter_jit
def solve_batch(
    sde, v0, ts, t1, dt0, bound, psd_tol, pair, ids, solver, max_steps, progress, substeps=None
):
    """(vs, valid, exit_time, exit code, exit state, stats) of the paths `ids` of one batch.

    `sde`'s array leaves (its per-path `values`, if any) have the batch as leading axis.
    `substeps`: None (each step's increment keyed by its times), or an integer JAX value k:
    Euler step s sums the fine increments k s .. k s + k - 1 (`PathBrownian.indexed_sum`).
    """
    m = v0.shape[-1]
    dtype = v0.dtype
    batch = ids.shape[0]
    zeros = jnp.zeros((batch,), dtype)
    y0 = {"v": jnp.broadcast_to(v0, (batch, m, m)), "code": zeros, "exit": zeros}
    if substeps is not None:
        y0["step"] = jnp.zeros((), dtype)
    path = PathBrownian(pair, ids, sde.brownian_shape(m, dtype))
    stratonovich = solver == "heun"
    weight = 2.0 if stratonovich else 1.0
    term = _CovarianceTerm(
        sde, path, bound, psd_tol, stratonovich, weight, solver == "exponential", substeps
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
    # a save time between two steps interpolates them: its state is clean only when the step
    # that ends after it was checked before the exit (else it mixes in the state that failed)
    after = jnp.ceil(ts / dt0 - 1e-3) * dt0
    clean = valid & (after[None, :] < exit_time[:, None])
    stats = {name: sol.stats[name] for name in ("num_steps", "num_accepted_steps", "max_steps")}
    filled = _hold_last_clean(y0["v"], saved, clean)
    return filled, valid, exit_time, code.astype(jnp.int32), last["v"], stats


def _hold_last_clean(start, saved, clean):
    """`saved` (batch, k, m, m), each state that is not `clean` replaced by the last clean one.

    Before the first clean state, `start` (the initial state) takes its place.
    """

    def fill(prev, inp):
        y, ok = inp
        y = jnp.where(ok[:, None, None], y, prev)
        return y, y

    _, filled = jax.lax.scan(fill, start, (jnp.swapaxes(saved, 0, 1), jnp.swapaxes(clean, 0, 1)))
    return jnp.swapaxes(filled, 0, 1)
