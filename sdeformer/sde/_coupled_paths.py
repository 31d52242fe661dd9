"""Paths of the covariance SDE at several step sizes driven by one Brownian path (coupling).

For strong and weak convergence checks: every path draws the Brownian increments of the finest
grid (`max(steps)` steps on [0, T], iid N(0, T/fine) entries of the matrix increments
`sde.brownian_shape`, {"lin", "mix"}), and a run with `n` steps uses their sums over blocks of
`fine / n` fine steps, so all step sizes and all schemes see the same Brownian path. Increments are
generated block by block (one block per step of the coarsest grid), so memory stays O(fine /
min(steps)) per path whatever the number of steps.

Schemes: "euler" (Euler-Maruyama, `psd_scheme.euler_step`), "exponential"
(`psd_scheme.exponential_step`) and "heun" (`heun_step`, the Stratonovich Heun of `solve_sde`).
After every step the state is checked like `solve_sde` does:
non-finite (code 3), some |V_ab| above `bound` (code 2), smallest eigenvalue below
`-psd_tol tr(V)/m` (code 1, left the PSD cone). The first exit is recorded. A path that left the
cone continues (Euler's noise then uses the clipped eigendecomposition root, so E[f(V_T)] is that
of Euler continued); a path that crossed the bound stops there, and a non-finite step is not
taken (the path keeps its last finite state).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .. import _lapack
from .._linalg import symmetrize
from ._psd_scheme import euler_step, exponential_step

SCHEMES = ("euler", "exponential", "heun")


class CoupledRun(eqx.Module):
    """Final states of coupled runs, with the step and reason of each path's first exit.

    `vs[scheme][i]` (paths, m, m) is V_T with `steps[i]` steps; `exit_step[scheme][i]` (paths,)
    the 1-based step of the first exit (0: none) and `exit_code[scheme][i]` its code (0 none,
    1 left the PSD cone, 2 crossed the bound, 3 non-finite).
    """

    steps: tuple[int, ...] = eqx.field(static=True)
    vs: dict[str, Float[Array, "levels paths m m"]]
    exit_step: dict[str, Int[Array, "levels paths"]]
    exit_code: dict[str, Int[Array, "levels paths"]]


def _code(v, psd_tol, bound):
    finite = jnp.all(jnp.isfinite(v))
    safe = jnp.where(finite, v, 0.0)
    over = jnp.max(jnp.abs(safe)) > bound
    scale = jnp.maximum(jnp.trace(safe) / v.shape[-1], jnp.finfo(v.dtype).tiny)
    outside = _lapack.eigvalsh(symmetrize(safe))[0] < -psd_tol * scale
    code = jnp.where(~finite, 3, jnp.where(over, 2, jnp.where(outside, 1, 0)))
    return code.astype(jnp.int32)


def _scheme(name, sde):
    if name == "euler":
        return (lambda v: v), (lambda s, dt, dw: euler_step(sde, s, dt, dw)), (lambda s: s)
    if name == "exponential":
        return (
            (lambda v: _lapack.cholesky(symmetrize(v))),
            (lambda s, dt, dw: exponential_step(sde, s, dt, dw)),
            (lambda s: s @ s.T),
        )
    if name == "heun":
        return (lambda v: v), (lambda s, dt, dw: heun_step(sde, s, dt, dw)), (lambda s: s)
    raise ValueError(f"coupled_paths: scheme {name!r} is unknown; choose from {SCHEMES}")


def heun_step(sde, v: Float[Array, "m m"], dt, dw: dict[str, Array]) -> Float[Array, "m m"]:
    """Heun on the Stratonovich form, as `solve_sde(solver="heun")` takes it.

    diffrax's Heun on the increment
    `k(V) = (b + CovarianceSDE.stratonovich_correction)(V) dt + noise(V, L, dw)`:
    `V + (k(V) + k(V + k(V))) / 2`.
    """

    def k(u):
        factor = sde.factor(u)
        drift = sde.drift(u) + sde.stratonovich_correction(u, factor)
        return symmetrize(drift * dt + sde.noise(u, factor, dw))

    k1 = k(v)
    return symmetrize(v + 0.5 * (k1 + k(v + k1)))


def coupled_run(
    sde,
    v0: Float[Array, "m m"],
    T: float,
    steps: tuple[int, ...],
    *,
    key: PRNGKeyArray,
    num_samples: int,
    schemes: tuple[str, ...] = ("euler", "exponential"),
    psd_tol: float | None = None,
    bound: float = 1e3,
    batch_size: int | None = None,
) -> CoupledRun:
    """Run `schemes` with each number of steps in `steps` on [0, T], on one Brownian path per path.

    All runs of a path are driven by the same Brownian path (see the module docstring). Every
    entry of `steps` must divide `max(steps)` and be a multiple of `min(steps)`. Paths are
    processed `batch_size` at a time (default all); path i uses the key `jr.fold_in(key, i)`, so
    batching does not change them.
    """
    steps = tuple(int(s) for s in steps)
    n0, fine = min(steps), max(steps)
    if any(fine % s or s % n0 for s in steps) or n0 < 1:
        raise ValueError(
            f"coupled_run: steps={steps} must be multiples of min(steps) that divide max(steps)"
        )
    v0 = jnp.asarray(v0)
    if psd_tol is None:
        psd_tol = 100 * float(jnp.finfo(v0.dtype).eps)
    batch_size = num_samples if batch_size is None else int(batch_size)
    outs = []
    for start in range(0, num_samples, batch_size):
        idx = jnp.arange(start, min(start + batch_size, num_samples))
        out = _run(sde, v0, float(T), steps, key, idx, schemes, float(psd_tol), float(bound))
        outs.append(jax.block_until_ready(out))  # one batch at a time on the device
    vs, ex, codes = jax.tree.map(lambda *a: jnp.concatenate(a, axis=1), *outs)
    return CoupledRun(steps=steps, vs=vs, exit_step=ex, exit_code=codes)


@eqx.filter_jit
def _run(sde, v0, T, steps, key, idx, schemes, psd_tol, bound):
    m, dtype = v0.shape[-1], v0.dtype
    n0, fine = min(steps), max(steps)
    per_block = fine // n0
    scale = math.sqrt(T / fine)
    fns = {name: _scheme(name, sde) for name in schemes}
    names = list(sde.brownian_shape(m, dtype))

    def one_path(i):
        path_key = jr.fold_in(key, i)
        zero = jnp.zeros((), jnp.int32)
        init = {
            name: [(fns[name][0](v0), zero, zero, jnp.zeros((), bool)) for _ in steps]
            for name in schemes
        }

        def block(carry, j):
            dw = jr.normal(jr.fold_in(path_key, j), (per_block, len(names), m, m), dtype) * scale
            new = {}
            for name in schemes:
                _, step, value = fns[name]
                new[name] = []
                for level, n in enumerate(steps):
                    sub = n // n0
                    inc = dw.reshape(sub, per_block // sub, len(names), m, m).sum(1)
                    dt = jnp.asarray(T / n, dtype)

                    def inner(state, x, step=step, value=value, sub=sub, dt=dt):
                        s, ex, code, stopped = state
                        k, d = x
                        nxt = step(s, dt, dict(zip(names, d, strict=True)))
                        c = jnp.where(stopped, 0, _code(value(nxt), psd_tol, bound))
                        # a path that crossed the bound stops; a non-finite step is not taken
                        ok = (c != 3) & ~stopped
                        s = jax.tree.map(lambda a, b: jnp.where(ok, a, b), nxt, s)
                        first = (ex == 0) & (c != 0)
                        ex = jnp.where(first, j * sub + k + 1, ex)
                        code = jnp.where(first, c, code)
                        return (s, ex, code, stopped | (c >= 2)), None

                    state, _ = jax.lax.scan(inner, carry[name][level], (jnp.arange(sub), inc))
                    new[name].append(state)
            return new, None

        final, _ = jax.lax.scan(block, init, jnp.arange(n0))
        vs = {n: jnp.stack([fns[n][2](s) for s, *_ in final[n]]) for n in schemes}
        ex = {n: jnp.stack([e for _, e, *_ in final[n]]) for n in schemes}
        codes = {n: jnp.stack([c for _, _, c, _ in final[n]]) for n in schemes}
        return vs, ex, codes

    vs, ex, codes = jax.vmap(one_path, out_axes=1)(idx)
    return vs, ex, codes
