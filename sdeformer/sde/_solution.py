"""The paths of a covariance-SDE solve (`SDESolution`) and the exit codes of a path."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .. import _lapack
from .._linalg import symmetrize
from ..results import SOLUTION_DIMS, load_arrays_module, save_arrays_module, to_xarray

EXIT_REASONS: dict[int, str] = {
    0: "survived",
    1: "left_psd_cone",
    2: "crossed_bound",
    3: "non_finite",
    4: "solver_failure",
}
"""Codes of `SDESolution.exit_reason`."""


class SDESolution(eqx.Module):
    """Paths of the covariance SDE.

    - `ts` (k,): save times.
    - `vs` (samples, k, m, m): V at the save times; after a path stops (see `exit_reason`) its
      last valid saved state is repeated, so `vs` is never NaN. Use `alive` to mask. A save
      time inside the step on which the path stopped (between two steps: an interpolation
      with the state that failed its check) also holds the last valid state before it.
    - `alive` (samples, k): True where the path had not stopped by that save time.
    - `exit_time` (samples,): the time at which the path stopped (end of the step on which the
      exit happened), `inf` if it survived to T.
    - `exit_reason` (samples,): codes of `EXIT_REASONS` (0 survived, 1 left the PSD cone,
      2 crossed the bound, 3 non-finite, 4 solver failure such as max_steps).
    - `v_exit` (samples, m, m): the state at the exit (the state that failed the check: it may
      be outside the cone, beyond the bound or non-finite), or at T for survivors.
    - `stats`: diffrax's statistics (`num_steps` per path, ...) and the batching
      (`batch_size`, `num_batches`).
    """

    ts: Float[Array, " k"]
    vs: Float[Array, "paths k m m"]
    alive: Bool[Array, "paths k"]
    exit_time: Float[Array, " paths"]
    exit_reason: Int[Array, " paths"]
    v_exit: Float[Array, "paths m m"] | None = None
    stats: dict = eqx.field(default_factory=dict)

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

    def save(self, path):
        """Write the solution to one `.npz` file (see `sdeformer.results.save_arrays_module`)."""
        return save_arrays_module(path, self)

    @classmethod
    def load(cls, path) -> SDESolution:
        """Read a solution written by `save`."""
        return load_arrays_module(cls, path)

    def to_xarray(self):
        """An `xarray.Dataset` with dims (sample, time, token_a, token_b)."""
        return to_xarray(self, SOLUTION_DIMS, coords={"time": "ts"})


# Its public home: `save` writes the class name into the file, and files name it by the
# package (sdeformer.sde.SDESolution) whatever private module defines it.
SDESolution.__module__ = "sdeformer.sde"


def exit_code(v: Float[Array, "m m"], bound: float, psd_tol: float) -> Int[Array, ""]:
    """0 if V is finite, within the bound and PSD, else the code of the first failed check.

    PSD: smallest eigenvalue >= -psd_tol * tr(V)/m. Codes: 3 non-finite, 2 max |V_ab| > bound,
    1 not PSD. (Reference form with an eigendecomposition; the solver uses the Cholesky test
    instead.)
    """
    finite = jnp.all(jnp.isfinite(v))
    safe = jnp.where(finite, v, 0.0)
    over = jnp.max(jnp.abs(safe)) > bound
    scale = jnp.maximum(jnp.trace(safe) / v.shape[-1], jnp.finfo(v.dtype).tiny)
    smallest = _lapack.eigvalsh(symmetrize(safe))[0]
    outside = smallest < -psd_tol * scale
    return jnp.where(~finite, 3, jnp.where(over, 2, jnp.where(outside, 1, 0))).astype(jnp.int32)
