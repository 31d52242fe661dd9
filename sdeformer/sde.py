"""The limiting covariance SDE of a shaped Transformer stack, solved with diffrax (SPEC.md sec. 3).

    dV_t = b(V_t) dt + Sigma(V_t)^{1/2} dB_t,      V_0 = X_0 X_0^T / n,

with `b` and `Sigma` the sums of the limit terms of the blocks in `config.blocks` (one layer is
one pass through the pattern; a layer lasts 1/n of SDE time, so depth d is T = d / n).

The solver evolves the m(m+1)/2 upper-triangular entries of V (so V stays exactly symmetric)
with the noise factor `F` of the blocks (`F F^T = Sigma`, see `sdeformer.blocks._limit`): a
Brownian motion of dimension `CovarianceSDE.brownian_dim(m)`, general (non-commutative) noise.

Solvers (`solve_sde(solver=...)`):

- "euler" (default): Euler-Maruyama, the Ito solution; strong order 0.5, weak order 1.
- "heun", "spark", "general_shark": Stratonovich solvers of diffrax. The Ito SDE is converted
  first (drift b - 1/2 sum_k (D F_k) F_k, computed with `jax.jacfwd`), so they converge to the same
  law. With general noise they are strong order 0.5 like Euler (diffrax's docs: SPaRK and
  GeneralShARK reach 1.0 only for commutative noise); they cost 2-3 drift/diffusion evaluations
  per step, and the conversion differentiates an eigendecomposition, which is singular when V has
  repeated eigenvalues (then the path is reported as non-finite, never silent). "heun" and
  "spark" have embedded error estimates and run adaptively (`adaptive=True`) with a
  `VirtualBrownianTree`. Additive-noise solvers (ShARK, SRA1, SEA) do not fit this noise, and
  `ItoMilstein` needs commutative noise: they are not offered.

Fixed steps use `diffrax.UnsafeBrownianPath` (increments drawn per step; a `VirtualBrownianTree`
is 10-100x slower for fixed steps, diffrax issues 489 and 517).
"""

from __future__ import annotations

import math
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from ._linalg import symmetrize
from .blocks import MissingFaceError, block_types
from .config import ShapedConfig, check_width

EXIT_REASONS: dict[int, str] = {
    0: "survived",
    1: "left_psd_cone",
    2: "crossed_bound",
    3: "non_finite",
    4: "solver_failure",
}
"""Codes of `SDESolution.exit_reason`."""


def triu_vector(v: Float[Array, "*batch m m"]) -> Float[Array, "*batch p"]:
    """The m(m+1)/2 upper-triangular entries (row-major, a <= b) of symmetric matrices."""
    i, j = np.triu_indices(v.shape[-1])
    return v[..., i, j]


def triu_matrix(y: Float[Array, "*batch p"], m: int) -> Float[Array, "*batch m m"]:
    """Inverse of `triu_vector`: the symmetric matrix with these upper-triangular entries."""
    i, j = np.triu_indices(m)
    out = jnp.zeros((*y.shape[:-1], m, m), y.dtype)
    out = out.at[..., i, j].set(y)
    return out.at[..., j, i].set(y)


def _tokens(p: int) -> int:
    m = int(round((math.sqrt(8 * p + 1) - 1) / 2))
    assert m * (m + 1) // 2 == p
    return m


class CovarianceSDE(eqx.Module):
    """The covariance SDE of a stack of shaped blocks: the sum of the blocks' limit terms.

    `drift(V)` is b (m, m), `noise_covariance(V)` is Sigma (m, m, m, m) with
    `Sigma[a, b, c, d] = Cov(dV_ab, dV_cd) / dt`, `noise_factor(V)` a factor F (m, m, k) with
    `sum_j F[a, b, j] F[c, d, j] = Sigma[a, b, c, d]`, `diffusion_matrix(V)` the symmetric PSD
    square root of the covariance of the upper-triangular coordinates (p, p), p = m(m+1)/2.
    All are pure functions of one V (jit/vmap them). Raises `ValueError` at construction if a
    block of
    `config.blocks` has no limit.
    """

    config: ShapedConfig = eqx.field(static=True)
    brownian_dims_per_block: ClassVar[dict[str, str]] = {
        "attention": "p + m^2",
        "mlp": "p",
    }

    def __init__(self, config: ShapedConfig):
        probe = jnp.eye(2, dtype=jnp.float32)
        for cls in block_types(config.blocks):
            try:
                jax.eval_shape(lambda v, cls=cls: cls.drift(config, v), probe)
                jax.eval_shape(lambda v, cls=cls: cls.noise_covariance(config, v), probe)
            except MissingFaceError as err:
                raise ValueError(
                    f"CovarianceSDE: config.blocks={config.blocks!r} contains {cls.name!r}, which "
                    f"has no covariance SDE limit ({err}); only stacks of shaped 'attention' "
                    "(non-causal) and 'mlp' blocks have one"
                ) from err
        self.config = config

    def _blocks(self):
        return block_types(self.config.blocks)

    def drift(self, v: Float[Array, "m m"]) -> Float[Array, "m m"]:
        """b(V): the sum of the blocks' drifts."""
        return sum(cls.drift(self.config, v) for cls in self._blocks())

    def noise_covariance(self, v: Float[Array, "m m"]) -> Float[Array, "m m m m"]:
        """Sigma(V)_{ab,cd}: the sum of the blocks' noise covariances (per unit time)."""
        return sum(cls.noise_covariance(self.config, v) for cls in self._blocks())

    def noise_factor(self, v: Float[Array, "m m"]) -> Float[Array, "m m k"]:
        """F(V) (m, m, k): the blocks' factors side by side (independent Brownian motions)."""
        return jnp.concatenate([cls.noise_factor(self.config, v) for cls in self._blocks()], -1)

    def brownian_dim(self, m: int) -> int:
        """k, the dimension of the Brownian motion that drives `noise_factor` for m tokens."""
        return self.noise_factor(jnp.eye(m)).shape[-1]

    def pair_covariance(self, v: Float[Array, "m m"]) -> Float[Array, "p p"]:
        """Covariance per unit time of the upper-triangular coordinates of dV."""
        i, j = np.triu_indices(v.shape[-1])
        sigma = self.noise_covariance(v)
        return sigma[i, j][:, i, j]

    def diffusion_matrix(self, v: Float[Array, "m m"]) -> Float[Array, "p p"]:
        """The symmetric PSD square root of `pair_covariance(V)` (eigenvalues clipped at 0, so a
        PSD-singular Sigma gives a finite, exact root)."""
        w, u = jnp.linalg.eigh(symmetrize(self.pair_covariance(v)))
        return (u * jnp.sqrt(jnp.clip(w, 0.0))) @ u.T

    def diffusion(self, v: Float[Array, "m m"]) -> Float[Array, "p k"]:
        """The diffusion matrix the solver integrates: the factor F on the upper triangle."""
        i, j = np.triu_indices(v.shape[-1])
        return self.noise_factor(v)[i, j]

    def stratonovich_correction(self, y: Float[Array, " p"]) -> Float[Array, " p"]:
        """-1/2 sum_k (D G_k) G_k on the upper-triangular coordinates (G = `diffusion`): added to
        the Ito drift it gives the drift of the equivalent Stratonovich SDE."""
        m = _tokens(y.shape[-1])

        def g(z):
            return self.diffusion(triu_matrix(z, m))

        jac = jax.jacfwd(g)(y)  # (p, k, p)
        return -0.5 * jnp.einsum("ikj,jk->i", jac, g(y))


class SDESolution(eqx.Module):
    """Paths of the covariance SDE.

    - `ts` (k,): save times.
    - `vs` (paths, k, m, m): V at the save times; after a path stops (see `exit_reason`) its last
      valid saved state is repeated, so `vs` is never NaN. Use `alive` to mask.
    - `alive` (paths, k): True where the path had not stopped by that save time.
    - `exit_time` (paths,): the time at which the path stopped (end of the step on which the
      exit was detected), `inf` if it survived to T.
    - `exit_reason` (paths,): codes of `EXIT_REASONS` (0 survived, 1 left the PSD cone,
      2 crossed the bound, 3 non-finite, 4 solver failure such as max_steps).
    """

    ts: Float[Array, " k"]
    vs: Float[Array, "paths k m m"]
    alive: Bool[Array, "paths k"]
    exit_time: Float[Array, " paths"]
    exit_reason: Int[Array, " paths"]

    def summary(self) -> dict[str, int | float]:
        """Counts of each exit reason, the number of paths and the fraction that survived."""
        codes = np.asarray(self.exit_reason)
        out: dict[str, int | float] = {"paths": int(codes.size)}
        for code, name in EXIT_REASONS.items():
            out[name] = int((codes == code).sum())
        out["survival_fraction"] = out["survived"] / max(codes.size, 1)
        return out

    def final(self) -> tuple[Float[Array, "paths m m"], Bool[Array, " paths"]]:
        """(V at the last save time, mask of the paths alive there)."""
        return self.vs[:, -1], self.alive[:, -1]


_STRATONOVICH = {
    "heun": diffrax.Heun,
    "spark": diffrax.SPaRK,
    "general_shark": diffrax.GeneralShARK,
}
_SOLVERS = ("euler", *_STRATONOVICH)
_ADAPTIVE = ("heun", "spark")


def exit_code(v: Float[Array, "m m"], bound: float, psd_tol: float) -> Int[Array, ""]:
    """0 if V is finite, within the bound and PSD (smallest eigenvalue >= -psd_tol * tr(V)/m),
    else the code of the first failed check: 3 non-finite, 2 max |V_ab| > bound, 1 not PSD."""
    finite = jnp.all(jnp.isfinite(v))
    safe = jnp.where(finite, v, 0.0)
    over = jnp.max(jnp.abs(safe)) > bound
    scale = jnp.maximum(jnp.trace(safe) / v.shape[-1], jnp.finfo(v.dtype).tiny)
    smallest = jnp.linalg.eigvalsh(symmetrize(safe))[0]
    outside = smallest < -psd_tol * scale
    return jnp.where(~finite, 3, jnp.where(over, 2, jnp.where(outside, 1, 0))).astype(jnp.int32)


def solve_sde(
    config: ShapedConfig,
    v0: ArrayLike,
    T: float,
    num_paths: int,
    *,
    key: PRNGKeyArray,
    save_times: int | ArrayLike | None = None,
    num_steps: int | None = 1000,
    dt0: float | None = None,
    solver: str = "euler",
    adaptive: bool = False,
    rtol: float = 1e-2,
    atol: float = 1e-3,
    bound: float = 1e3,
    psd_tol: float | None = None,
    max_steps: int | None = None,
    dtype=None,
) -> SDESolution:
    """Solve the covariance SDE of `config` from `v0` on [0, T] for `num_paths` independent paths.

    Arguments:
    - `v0`: (m, m) symmetric PSD initial covariance; `T`: final time (depth d = T n).
    - `save_times`: None (11 equally spaced times), an int k (k equally spaced times in [0, T]),
      or an array of times in [0, T].
    - `num_steps` or `dt0`: fixed step size T / num_steps (or dt0); with `adaptive=True`, `dt0`
      (default T / num_steps) is the initial step and a `PIDController(rtol, atol)` adapts it.
    - `solver`: "euler" (Ito Euler-Maruyama), or a Stratonovich solver "heun", "spark",
      "general_shark" applied to the converted SDE (see the module docstring).
    - `bound`: a path stops when some |V_ab| exceeds it; `psd_tol`: it stops when the smallest
      eigenvalue of V drops below -psd_tol tr(V)/m (default 100 eps of the dtype); it also stops
      when V is non-finite. See `SDESolution`.
    - `dtype`: float32 (default, or v0's dtype) or float64 (needs `jax_enable_x64`).

    Paths are vmapped over independent Brownian motions (keys split from `key`); the same key
    gives the same paths.
    """
    if solver not in _SOLVERS:
        raise ValueError(f"solve_sde: solver={solver!r} is unknown; choose from {_SOLVERS}")
    if adaptive and solver not in _ADAPTIVE:
        raise ValueError(
            f"solve_sde: solver={solver!r} has no embedded error estimate, so adaptive=True is "
            f"not possible; use one of {_ADAPTIVE} or adaptive=False"
        )
    num_paths = check_width(num_paths, name="num_paths")
    T = float(T)
    if not (math.isfinite(T) and T > 0):
        raise ValueError(f"solve_sde: T={T!r} is invalid; pass a final time T > 0")
    if dt0 is None:
        if num_steps is None:
            raise ValueError("solve_sde: pass num_steps or dt0")
        dt0 = T / check_width(num_steps, name="num_steps")
    dt0 = float(dt0)
    if not dt0 > 0:
        raise ValueError(f"solve_sde: dt0={dt0!r} is invalid; pass a step > 0")
    v0 = jnp.asarray(v0)
    if dtype is None:
        dtype = v0.dtype if jnp.issubdtype(v0.dtype, jnp.floating) else jnp.float32
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "solve_sde: dtype=float64 needs jax_enable_x64 (use `with "
            "jax.enable_x64(True):` around the call)"
        )
    from .model import check_covariance

    v0 = check_covariance(v0).astype(dtype)
    if save_times is None:
        save_times = 11
    if isinstance(save_times, int | np.integer):
        ts = np.linspace(0.0, T, check_width(int(save_times), minimum=1, name="save_times"))
    else:
        ts = np.asarray(save_times, dtype=np.float64).reshape(-1)
        if ts.size == 0 or ts.min() < 0 or ts.max() > T or np.any(np.diff(ts) < 0):
            raise ValueError("solve_sde: save_times must be non-decreasing times in [0, T]")
    if psd_tol is None:
        psd_tol = 100 * float(jnp.finfo(dtype).eps)
    if not float(bound) > 0:  # also refuses NaN, which would never stop a path
        raise ValueError(f"solve_sde: bound={bound!r} is invalid; pass a bound > 0 (inf: none)")
    if not (math.isfinite(float(psd_tol)) and float(psd_tol) >= 0):
        raise ValueError(f"solve_sde: psd_tol={psd_tol!r} is invalid; pass a finite value >= 0")
    if max_steps is None:
        max_steps = int(math.ceil(T / dt0)) + 2 if not adaptive else 64 * int(math.ceil(T / dt0))
    return _solve(
        CovarianceSDE(config),
        v0,
        jnp.asarray(ts, dtype),
        T,
        num_paths,
        key,
        dt0,
        solver,
        adaptive,
        rtol,
        atol,
        float(bound),
        float(psd_tol),
        max_steps,
    )


@eqx.filter_jit
def _solve(
    sde, v0, ts, T, num_paths, key, dt0, solver, adaptive, rtol, atol, bound, psd_tol, max_steps
):
    m = v0.shape[-1]
    dtype = v0.dtype
    k = sde.brownian_dim(m)
    ito = solver == "euler"

    def drift(t, y, args):
        b = triu_vector(sde.drift(triu_matrix(y, m)))
        return b if ito else b + sde.stratonovich_correction(y)

    def diffusion(t, y, args):
        return sde.diffusion(triu_matrix(y, m))

    def stop(t, y, args, **kwargs):
        return exit_code(triu_matrix(y, m), bound, psd_tol) != 0

    if solver == "euler":
        method = diffrax.Euler()
    else:
        method = _STRATONOVICH[solver]()
    levy = diffrax.SpaceTimeLevyArea if solver in ("spark", "general_shark") else None
    t0 = jnp.zeros((), dtype)
    t1 = jnp.asarray(T, dtype)
    saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts), diffrax.SubSaveAt(t1=True)])
    if adaptive:
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
    else:
        controller = diffrax.ConstantStepSize()

    def one_path(path_key):
        if adaptive:
            bm = diffrax.VirtualBrownianTree(
                t0,
                t1,
                tol=dt0 / 64,
                shape=jax.ShapeDtypeStruct((k,), dtype),
                key=path_key,
                levy_area=levy or diffrax.BrownianIncrement,
            )
        else:
            bm = diffrax.UnsafeBrownianPath(
                shape=jax.ShapeDtypeStruct((k,), dtype),
                key=path_key,
                levy_area=levy or diffrax.BrownianIncrement,
            )
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        sol = diffrax.diffeqsolve(
            terms,
            method,
            t0,
            t1,
            jnp.asarray(dt0, dtype),
            triu_vector(v0),
            saveat=saveat,
            stepsize_controller=controller,
            event=diffrax.Event(stop),
            max_steps=max_steps,
            throw=False,
            adjoint=diffrax.ForwardMode(),
        )
        saved, last = sol.ys
        t_end = sol.ts[1][-1]
        code = exit_code(triu_matrix(last[-1], m), bound, psd_tol)
        failed = (sol.result != diffrax.RESULTS.successful) & (
            sol.result != diffrax.RESULTS.event_occurred
        )
        code = jnp.where(code == 0, jnp.where(failed, 4, 0), code)
        stopped = code != 0
        exit_time = jnp.where(stopped, t_end, jnp.inf).astype(dtype)
        alive = (ts < exit_time) | ~stopped
        # keep the last valid state after the exit (never NaN / inf)
        valid = alive & jnp.all(jnp.isfinite(saved), axis=-1)

        def fill(prev, inp):
            y, ok = inp
            y = jnp.where(ok, y, prev)
            return y, y

        _, filled = jax.lax.scan(fill, triu_vector(v0), (saved, valid))
        return triu_matrix(filled, m), valid, exit_time, code

    vs, alive, exit_time, reason = jax.vmap(one_path)(jr.split(key, num_paths))
    return SDESolution(ts=ts, vs=vs, alive=alive, exit_time=exit_time, exit_reason=reason)
