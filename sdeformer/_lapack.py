"""Batched LAPACK calls (Cholesky, eigh, QR, triangular solves) that cannot deadlock on a CPU.

Every factorisation of the package goes through this module (a test checks that nothing else
calls `jnp.linalg.cholesky`, `eigh`, `eigvalsh`, `qr` or `solve_triangular`).

**Why.** jaxlib 0.10 on a CPU runs a batched LAPACK call (`potrf`, `syevd`, `geqrf`, `trsm`,
...) by splitting its batch into chunks over XLA's intra-op thread pool and *blocking* the
calling pool thread until the chunks are done (`ParallelBatchMap` in jaxlib's
`cpu/lapack_kernels.cc`; a batch is split when batch x cost_per_matrix >= 2e5 flops, with
cost_per_matrix = m^3 / 3 for Cholesky, 5 m^3 for eigh, ...). Inside a compiled loop
(`lax.while_loop`, `scan`, diffrax's solve) the loop body itself runs on pool threads, and
independent operations of the body run concurrently. When as many split LAPACK calls run at
once as the pool has threads (two on a 2-core machine: e.g. the Cholesky factorisations of V
and V + delta I of the SDE's PSD fallback), every pool thread waits for chunks that no free
thread can run: the program hangs forever at 0 % CPU and ignores signals. Minimal
reproduction (tests/test_lapack.py runs it in a subprocess): a `lax.fori_loop` whose body
takes two independent batched Cholesky factorisations of 125 indefinite 32 x 32 matrices.
The upstream change that stops splitting in open-source builds (jax commit 8599924, "Don't
try to parallelize LAPACK kernels in opensource builds", July 2026) is not in any jaxlib that
supports Python 3.11 (the newest is 0.10.2), so the package works around it.

**The workaround.** On a CPU each call is run in chunks that jaxlib does not split (chunk x
cost_per_matrix < 2e5 flops, `lax.map(..., batch_size=chunk)`), so no LAPACK call ever waits
on the pool, whatever runs beside it. A vmapped call merges its axis into the stack first
(`jax.custom_batching.custom_vmap`), so a call reached under any number of vmaps is chunked
too. On a GPU (cuSOLVER) the whole batch is one call, as before. The cost: jaxlib's
intra-call parallelism, which the same upstream change found to be no faster with OpenBLAS;
measured in benchmarks/bench_lapack.py. Forward-mode differentiation (`jax.jvp`, diffrax's
`ForwardMode`) goes through; reverse mode does not (custom_vmap has no transpose rule), and
nothing in the package differentiates a factorisation in reverse mode.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax.custom_batching import custom_vmap
from jaxtyping import Array, Float

LAPACK_MIN_WORK = 200_000
"""jaxlib's `kMinWorkPerTask` (flops): a batch of at least this much work is split over the
pool (`GetLapackBatchChunkSize` in jaxlib's `cpu/lapack_kernels.cc`)."""


def _splitting_backend() -> bool:
    """Whether batched LAPACK calls of the current default backend may be split (CPU only)."""
    return jax.default_backend() == "cpu"


def safe_chunk(cost_per_matrix: int) -> int:
    """The largest batch of one LAPACK call that jaxlib runs unsplit (at least 1).

    A batch of one is never split (jaxlib's chunk is at least ceil(batch / threads) = 1).
    """
    return max(1, (LAPACK_MIN_WORK - 1) // max(int(cost_per_matrix), 1))


def _stacked(fn, cost):
    """`fn` on stacks of operands (leading axis b), chunked below jaxlib's split size.

    `fn(*ops)` acts on one problem; `cost(*ops)` is jaxlib's flop estimate for one problem,
    from the operands' shapes. The result is a custom_vmap function whose vmap rule merges the
    vmapped axis into the stack (broadcasting unbatched operands) and calls itself again.
    """

    @custom_vmap
    def stack(*ops):
        batch = ops[0].shape[0]
        chunk = safe_chunk(cost(*(op[0] for op in ops)))
        if batch <= chunk or not _splitting_backend():
            return jax.vmap(fn)(*ops)
        return jax.lax.map(lambda args: fn(*args), ops, batch_size=chunk)

    @stack.def_vmap
    def _rule(axis_size, in_batched, *ops):
        # the vmapped axis is the leading one; the stack axis follows it
        ops = [
            op if batched else jnp.broadcast_to(op, (axis_size, *op.shape))
            for op, batched in zip(ops, in_batched, strict=True)
        ]
        flat = [op.reshape(-1, *op.shape[2:]) for op in ops]
        out = stack(*flat)
        lead = (axis_size, ops[0].shape[1])
        reshaped = jax.tree.map(lambda y: y.reshape(*lead, *y.shape[1:]), out)
        return reshaped, jax.tree.map(lambda _: True, out)

    return stack


def _batched(stack, *ops, core: int = 2):
    """Apply a stacked function to operands with any leading batch shape (the same for all)."""
    batch = ops[0].shape[: ops[0].ndim - core]
    size = math.prod(batch)
    flat = [op.reshape(size, *op.shape[op.ndim - core :]) for op in ops]
    out = stack(*flat)
    return jax.tree.map(lambda y: y.reshape(*batch, *y.shape[1:]), out)


_cholesky = _stacked(
    functools.partial(jax.lax.linalg.cholesky, symmetrize_input=False),
    lambda v: v.shape[-1] ** 3 // 3,
)
_eigh = _stacked(jnp.linalg.eigh, lambda v: 5 * v.shape[-1] ** 3)
_eigvalsh = _stacked(jnp.linalg.eigvalsh, lambda v: 5 * v.shape[-1] ** 3)


def _qr_cost(a):
    rows, cols = a.shape
    k = min(rows, cols)
    return 2 * rows * cols * k - (2 * k**3) // 3


_qr_r = _stacked(functools.partial(jnp.linalg.qr, mode="r"), _qr_cost)


def _trsm_cost(a, b):
    return b.shape[0] * b.shape[1] * b.shape[0]


_solve_lower = _stacked(functools.partial(jsl.solve_triangular, lower=True), _trsm_cost)
_solve_upper = _stacked(functools.partial(jsl.solve_triangular, lower=False), _trsm_cost)


@jax.custom_jvp
def _cholesky_jvp(v):
    return _cholesky(v)


@_cholesky_jvp.defjvp
def _cholesky_tangent(primals, tangents):
    """DL = L Phi(L^-1 dV L^-T), Phi: the lower triangle with half its diagonal (as jax's).

    Written out so that forward-mode derivatives never differentiate the custom_vmap function
    (whose jvp under a vmap with unbatched primals recursed without end).
    """
    (v,), (dv,) = primals, tangents
    low = _cholesky_jvp(v)
    y = _solve_lower(low, dv)  # L^-1 dV
    x = jnp.swapaxes(_solve_lower(low, jnp.swapaxes(y, -1, -2)), -1, -2)  # L^-1 dV L^-T
    phi = jnp.tril(x) - 0.5 * jnp.eye(v.shape[-1], dtype=v.dtype) * x
    return low, low @ phi


def cholesky(v: Float[Array, "*batch m m"]) -> Float[Array, "*batch m m"]:
    """Lower Cholesky factors of symmetric matrices (NaN where a factorisation fails).

    The input is read as symmetric (no symmetrising pass): pass `symmetrize(v)` if it may not be.
    Forward-mode differentiable (`jax.jvp`, also under `jax.vmap`).
    """
    return _batched(_cholesky_jvp, v)


def eigh(
    v: Float[Array, "*batch m m"],
) -> tuple[Float[Array, "*batch m"], Float[Array, "*batch m m"]]:
    """Eigenvalues (ascending) and eigenvectors (columns) of symmetric matrices."""
    return _batched(_eigh, v)


def eigvalsh(v: Float[Array, "*batch m m"]) -> Float[Array, "*batch m"]:
    """Eigenvalues (ascending) of symmetric matrices."""
    return _batched(_eigvalsh, v)


def qr_r(a: Float[Array, "*batch r c"]) -> Float[Array, "*batch k c"]:
    """The R factor of the QR decomposition (`jnp.linalg.qr(a, mode="r")`)."""
    return _batched(_qr_r, a)


def solve_triangular(
    a: Float[Array, "*batch m m"], b: Float[Array, "*batch m k"], *, lower: bool
) -> Float[Array, "*batch m k"]:
    """The solution x of a x = b for triangular a (`jax.scipy.linalg.solve_triangular`)."""
    return _batched(_solve_lower if lower else _solve_upper, a, b)
