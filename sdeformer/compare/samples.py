"""Covariance samples of one source (finite networks, the law chain, the SDE) at common times.

Stopping rule, the same for every source: a path stops at the first time of the common grid (the
layer grid t = l / n of the finite network) where some |V_ab| exceeds the bound or V is
non-finite; from then on the stopped process V_(t ^ tau) holds the state at the exit (the state
that crossed the bound; the last valid state when the exit state is non-finite).

An SDE path that left the PSD cone (or that the solver failed on) is not a stopping event of the
SDE (docs/theory.md, the PSD cone): it is a discretisation failure of the Euler scheme. Such paths
are marked in `failed` and left out of every comparison from their failure time on; their
fraction is reported, and `compare_sources` refuses a comparison where it exceeds a threshold.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

FAILURE_REASONS = (1, 4)
"""`SDESolution.exit_reason` codes that are discretisation failures: left the PSD cone, solver
failure (see `sdeformer.EXIT_REASONS`). Crossing the bound (2) and non-finite (3) are events."""


@dataclasses.dataclass(frozen=True)
class CovarianceSamples:
    """Covariance samples of one source at common times.

    `vs`: (samples, k, m, m) covariances at times `ts` (k,); `alive`: (samples, k) True while the
    path has not stopped. After a path stops, `vs` holds its state at the exit (see the module
    docstring). `failed`: (samples, k) True from the time a path failed for numerical reasons
    (an SDE path that left the PSD cone); such paths are excluded in both comparison modes.
    """

    label: str
    ts: np.ndarray
    vs: np.ndarray
    alive: np.ndarray
    failed: np.ndarray | None = None

    def __repr__(self) -> str:
        samples, k, m, _ = self.vs.shape
        return (
            f"CovarianceSamples({self.label!r}: {samples} samples of {m} x {m} covariances at "
            f"{k} times in [{self.ts[0]:.4g}, {self.ts[-1]:.4g}], alive at the end "
            f"{self.alive[:, -1].mean():.2%}, failed {self.failed[:, -1].mean():.2%})"
        )

    def __post_init__(self):
        ts, vs, alive = np.asarray(self.ts), np.asarray(self.vs), np.asarray(self.alive, bool)
        if vs.ndim != 4 or vs.shape[-1] != vs.shape[-2] or vs.shape[1] != ts.shape[0]:
            raise ValueError(
                f"{self.label}: vs has shape {vs.shape} and ts {ts.shape}; need vs of shape "
                "(samples, len(ts), m, m)"
            )
        if alive.shape != vs.shape[:2]:
            raise ValueError(f"{self.label}: alive has shape {alive.shape}; need {vs.shape[:2]}")
        failed = (
            np.zeros(alive.shape, bool) if self.failed is None else np.asarray(self.failed, bool)
        )
        if failed.shape != alive.shape:
            raise ValueError(f"{self.label}: failed has shape {failed.shape}; need {alive.shape}")
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "vs", vs)
        object.__setattr__(self, "alive", alive)
        object.__setattr__(self, "failed", failed)

    def save(self, path):
        """Write these samples to one `.npz` file (see `sdeformer.results.save_arrays_module`)."""
        from ..results.arrays import save_arrays_module

        return save_arrays_module(path, self)

    @classmethod
    def load(cls, path) -> CovarianceSamples:
        """Read samples written by `save`."""
        from ..results.arrays import load_arrays_module

        return load_arrays_module(cls, path)

    def to_xarray(self):
        """An `xarray.Dataset` with dims (sample, time, token_a, token_b)."""
        from ..results.views import SAMPLES_DIMS, to_xarray

        return to_xarray(self, SAMPLES_DIMS, coords={"time": "ts"})

    def to_dataframe(self):
        """A long `pandas.DataFrame` of `vs`: one row per (sample, time, token_a, token_b)."""
        from ..results.views import SAMPLES_DIMS, to_dataframe

        return to_dataframe(self, field="vs", dims=SAMPLES_DIMS["vs"], coords={"time": "ts"})

    @property
    def num_samples(self) -> int:
        """The number of sample paths."""
        return self.vs.shape[0]

    @property
    def m(self) -> int:
        """The number of tokens m (V is m x m)."""
        return self.vs.shape[-1]

    @classmethod
    def from_paths(
        cls, label: str, paths, n: int, *, bound: float = math.inf, every: int = 1
    ) -> CovarianceSamples:
        """Finite-network (or law-chain) paths (samples, d+1, m, m) at layer times t = l / n.

        A path stops at the first layer where some |V_ab| exceeds `bound` or a value is
        non-finite, and holds its state at that layer afterwards (the last finite state if that
        one is non-finite). `every` keeps every `every`-th layer (the last layer is always kept).
        """
        paths = np.asarray(paths)
        if not np.issubdtype(paths.dtype, np.floating):
            paths = paths.astype(np.float64)
        layers = np.arange(paths.shape[1])
        keep = np.unique(np.concatenate([layers[::every], layers[-1:]]))
        finite = np.all(np.isfinite(paths), axis=(-2, -1))
        over = np.abs(np.where(np.isfinite(paths), paths, 0.0)).max(axis=(-2, -1)) > bound
        bad = ~finite | over
        alive = np.cumsum(bad, axis=1) == 0
        first_bad = np.where(alive.all(axis=1), paths.shape[1], np.argmin(alive, axis=1))
        exit_ok = np.take_along_axis(finite, np.minimum(first_bad, layers[-1])[:, None], 1)[:, 0]
        last = np.where(exit_ok, first_bad, np.maximum(first_bad - 1, 0))
        index = np.minimum(keep[None, :], last[:, None])
        stopped = np.take_along_axis(paths, index[:, :, None, None], axis=1)
        return cls(label, keep / n, stopped, alive[:, keep])

    @classmethod
    def from_solution(
        cls, label: str, solution, *, failure_reasons=FAILURE_REASONS
    ) -> CovarianceSamples:
        """SDE paths of an `SDESolution` saved on the comparison grid.

        After a path's exit its saved state is replaced by the exit state (`solution.v_exit`, where
        the solver records it and it is finite); paths whose exit reason is in `failure_reasons`
        are marked failed from their exit on.
        """
        ts = np.asarray(solution.ts, dtype=np.float64)
        vs = np.asarray(solution.vs)
        alive = np.asarray(solution.alive, bool)
        reason = np.asarray(solution.exit_reason)
        v_exit = getattr(solution, "v_exit", None)
        if v_exit is not None:
            v_exit = np.asarray(v_exit, dtype=vs.dtype)
            use = (reason != 0) & np.all(np.isfinite(v_exit), axis=(-2, -1))
            replace = ~alive & use[:, None]
            vs = np.where(replace[:, :, None, None], v_exit[:, None], vs)
        failed = ~alive & np.isin(reason, failure_reasons)[:, None]
        return cls(label, ts, vs, alive, failed)

    @classmethod
    def concatenate(cls, parts: list[CovarianceSamples], label: str | None = None):
        """The paths of several sources on the same times, one after the other."""
        return cls(
            label or parts[0].label,
            parts[0].ts,
            np.concatenate([p.vs for p in parts]),
            np.concatenate([p.alive for p in parts]),
            np.concatenate([p.failed for p in parts]),
        )

    def subset(self, index, label: str | None = None) -> CovarianceSamples:
        """The paths `index` (a slice, mask or integer array) as their own source."""
        return CovarianceSamples(
            label or self.label, self.ts, self.vs[index], self.alive[index], self.failed[index]
        )

    @property
    def stopped_fraction(self) -> np.ndarray:
        """Fraction of paths stopped at or before each time (k,), failed paths included."""
        return 1.0 - self.alive.mean(axis=0)

    @property
    def failed_fraction(self) -> np.ndarray:
        """Fraction of paths that failed numerically (PSD exits) by each time (k,)."""
        return self.failed.mean(axis=0)

    def usable(self, i: int, mode: str) -> np.ndarray:
        """Mask (samples,) of the paths compared at time index i in `mode`.

        Alive ones ("survival"), or every path that has not failed numerically ("stopped").
        """
        return self.alive[:, i] if mode == "survival" else ~self.failed[:, i]

    def index_of(self, t: float, *, rtol: float = 1e-6) -> int:
        """Index of time t in `ts` (a ValueError if this source has no sample at t)."""
        i = int(np.argmin(np.abs(self.ts - t)))
        if abs(self.ts[i] - t) > rtol * max(1.0, abs(t)):
            raise ValueError(
                f"{self.label} has no samples at t={t:.6g} (nearest {self.ts[i]:.6g}); "
                "sample both sources at common times"
            )
        return i
