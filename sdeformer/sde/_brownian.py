"""Counter-based Brownian increments for batches of covariance-SDE paths.

`PathBrownian` is a `diffrax.AbstractBrownianPath` whose increment over [t0, t1] is a pytree
{"lin": (batch, m, m), "mix": (batch, m, m)} of iid N(0, t1 - t0) entries (docs/theory.md
section 4, "Noise factor used by the solver"). Path i's numbers are a function of the solve's
key, i and (t0, t1) only, so batching never changes a path.
"""

from __future__ import annotations

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from diffrax._misc import force_bitcast_convert_type
from jax.extend.random import threefry2x32_p
from jaxtyping import Array

from .._bits import normals_from_words


class PathBrownian(diffrax.AbstractBrownianPath):
    """Brownian increments of a batch of paths, counter-based.

    The increment of path i on [t0, t1] is Threefry-2x32 of the counters (i, j) under a step key
    that hashes (t0, t1) with the solve's 64-bit key, turned into normals by the inverse error
    function (as `jax.random.normal`). It depends on the key, the path's index i and the step
    only, not on the batch it runs in, and costs one Threefry call per step for the whole batch
    (vmapping per-path keys cost 5x more).
    """

    pair: Array  # uint32 (2,): the solve's key
    path_ids: Array  # uint32 (batch,): global path indices
    shape: dict = eqx.field(static=True)
    t0: float | Array = 0.0
    t1: float | Array = math.inf
    levy_area: type = eqx.field(static=True, default=diffrax.BrownianIncrement)

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        """The increment over [t0, t1]: a dict of (batch, m, m) N(0, t1 - t0) arrays per name."""
        assert t1 is not None, "only increments are used"
        times = [force_bitcast_convert_type(t, jnp.int32).astype(jnp.uint32) for t in (t0, t1)]
        k0, k1 = threefry2x32_p.bind(self.pair[0], self.pair[1], *times)
        return self._scaled(self._normals(k0, k1), t1 - t0)

    def indexed_sum(self, first, count, dt):
        """The sum of `count` increments of a fine grid of step `dt`, from fine step `first` on.

        Fine step i's increment is N(0, dt) under a step key that hashes the integer i (not a
        time) with the solve's key: a solve whose steps cover k fine steps each sees the same
        Brownian path, at its own resolution, as one with one fine step per step. `first` and
        `count` are integers (JAX values; `count` may differ between calls without a
        recompile).
        """
        first = jnp.asarray(first, jnp.uint32)
        tag = jnp.uint32(_INDEXED)

        def add(s, total):
            k0, k1 = threefry2x32_p.bind(self.pair[0], self.pair[1], first + s, tag)
            return total + self._normals(k0, k1)

        dtype = self.shape[next(iter(self.shape))].dtype
        zero = jnp.zeros((self.path_ids.shape[0], self._count()), dtype)
        total = jax.lax.fori_loop(jnp.uint32(0), jnp.asarray(count, jnp.uint32), add, zero)
        return self._scaled(total, dt)

    def _count(self) -> int:
        return len(self.shape) * math.prod(self.shape[next(iter(self.shape))].shape)

    def _normals(self, k0, k1):
        """(batch, count) iid N(0, 1): Threefry-2x32 of (path id, j) under the step key."""
        dtype = self.shape[next(iter(self.shape))].dtype
        count = self._count()
        words = count * (2 if jnp.dtype(dtype) == jnp.float64 else 1)
        npairs = -(-words // 2)
        batch = self.path_ids.shape[0]
        x0 = jnp.broadcast_to(self.path_ids[:, None], (batch, npairs))
        x1 = jnp.broadcast_to(jnp.arange(npairs, dtype=jnp.uint32)[None], (batch, npairs))
        y0, y1 = threefry2x32_p.bind(k0, k1, x0, x1)
        bits = jnp.concatenate([y0, y1], axis=-1)[:, :words]
        return normals_from_words(bits, dtype)

    def _scaled(self, normal, dt):
        """The (batch, count) normals times sqrt(dt), as the dict of (batch, m, m) per name."""
        names = list(self.shape)
        dtype = self.shape[names[0]].dtype
        mshape = self.shape[names[0]].shape
        batch = self.path_ids.shape[0]
        draws = normal.reshape(batch, len(names), *mshape) * jnp.sqrt(jnp.asarray(dt, dtype))
        return {name: draws[:, i] for i, name in enumerate(names)}


_INDEXED = 0x1DE7
"""Second word of an indexed step key (`PathBrownian.indexed_sum`), apart from time keys."""
