"""The empirical NTK of a scalar-output model: Gram matrix of per-input parameter gradients.

`K[i, j] = <grad_theta f(x_i), grad_theta f(x_j)>` summed over the trainable arrays
(`partition_params`).
Three strategies, all jit-compiled and exact (they differ in memory and cost only):

- "jacobian": all per-input gradients at once (`vmap(grad)`), `K = J J^T`; memory N * P.
- "blocked": the inputs in blocks of `block` rows; for each pair of blocks the two blocks of
  gradients are recomputed and contracted, memory 2 * block * P, cost N^2 / block gradients.
- "implicit": never holds more than `block` gradients: row i of K is `J (J^T e_i) = J g_i`,
  evaluated by forward-mode jvps of every input along `g_i` (neural-tangents' "implicit" idea).

"auto" picks "jacobian" when N * P numbers fit in `memory_bytes`, else "blocked".
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import _lapack

STRATEGIES = ("auto", "jacobian", "blocked", "implicit")


def partition_params(model):
    """(params, rest): the trainable arrays and everything else (`eqx.partition`).

    The parameters are `model.trainable_spec()` when the model defines it, else every inexact
    array of the model.
    """
    spec = model.trainable_spec() if hasattr(model, "trainable_spec") else eqx.is_inexact_array
    return eqx.partition(model, spec)


def parameter_count(model) -> int:
    """Number of trainable scalars of a model."""
    return sum(leaf.size for leaf in jax.tree.leaves(partition_params(model)[0]))


def _flat_grads(params, static, xs):
    """(len(xs), P): per-input gradients, flattened and concatenated over the parameters."""

    def f(p, x):
        return eqx.combine(p, static)(x)

    grads = jax.vmap(jax.grad(f), in_axes=(None, 0))(params, xs)
    leaves = jax.tree.leaves(grads)
    return jnp.concatenate([leaf.reshape(xs.shape[0], -1) for leaf in leaves], axis=1)


@eqx.filter_jit
def _ntk_jacobian(model, xs):
    params, static = partition_params(model)
    jac = _flat_grads(params, static, xs)
    return jac @ jac.T


def _pad_blocks(xs, block):
    num_inputs = xs.shape[0]
    nb = -(-num_inputs // block)
    pad = nb * block - num_inputs
    if pad:
        xs = jnp.concatenate([xs, jnp.repeat(xs[-1:], pad, axis=0)], axis=0)
    return xs.reshape(nb, block, *xs.shape[1:])


@eqx.filter_jit
def _ntk_blocked(model, xs, block: int):
    params, static = partition_params(model)
    num_inputs = xs.shape[0]
    blocks = _pad_blocks(xs, block)

    def row(xa):
        ga = _flat_grads(params, static, xa)
        return jax.lax.map(lambda xb: ga @ _flat_grads(params, static, xb).T, blocks)

    k = jax.lax.map(row, blocks)  # (nb, nb, block, block)
    nb = blocks.shape[0]
    k = k.transpose(0, 2, 1, 3).reshape(nb * block, nb * block)
    return k[:num_inputs, :num_inputs]


@eqx.filter_jit
def _ntk_implicit(model, xs, block: int):
    params, static = partition_params(model)

    def f(p, x):
        return eqx.combine(p, static)(x)

    def row(xi):
        g = jax.grad(f)(params, xi)
        return jax.vmap(lambda x: jax.jvp(lambda p: f(p, x), (params,), (g,))[1])(xs)

    return jax.lax.map(row, xs, batch_size=block)


def empirical_ntk(
    model: eqx.Module,
    xs: Float[Array, "N tokens d"],
    *,
    strategy: str = "auto",
    block: int = 16,
    memory_bytes: int = 256 * 2**20,
) -> Float[Array, "N N"]:
    """The empirical NTK Gram matrix (N, N) of a scalar-output model over N inputs.

    Args:
        model: an Equinox module mapping one input to a scalar; its inexact arrays are the
            parameters.
        xs: the inputs, stacked on a leading axis.
        strategy: "auto", "jacobian", "blocked" or "implicit" (see the module docstring).
        block: inputs per block for "blocked" and "implicit".
        memory_bytes: the Jacobian size above which "auto" stops using "jacobian".
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is unknown; choose one of {STRATEGIES}")
    if not isinstance(block, int) or isinstance(block, bool) or block < 1:
        raise ValueError(f"block={block!r} is invalid; pass an integer >= 1")
    block = min(block, xs.shape[0])
    if strategy == "auto":
        size = xs.shape[0] * parameter_count(model) * xs.dtype.itemsize
        strategy = "jacobian" if size <= memory_bytes else "blocked"
    if strategy == "jacobian":
        return _ntk_jacobian(model, xs)
    if strategy == "blocked":
        return _ntk_blocked(model, xs, block)
    return _ntk_implicit(model, xs, block)


def min_eigenvalue(k: Float[Array, "N N"]) -> Float[Array, ""]:
    """The smallest eigenvalue of a symmetric matrix (the kernel is symmetrised first)."""
    return _lapack.eigvalsh(0.5 * (k + k.T))[0]


def relative_change(k: Float[Array, "N N"], k0: Float[Array, "N N"]) -> Float[Array, ""]:
    """||K - K0||_F / ||K0||_F: how far the kernel moved (during training, or from a reference)."""
    return jnp.linalg.norm(k - k0) / jnp.linalg.norm(k0)


def relative_frobenius_error(a, b) -> float:
    """||a - b||_F / ||b||_F as a Python float."""
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
