"""Full-batch gradient descent on the squared loss, with the NTK and the weights tracked."""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from .empirical import empirical_ntk, partition_params, relative_change


def squared_loss(model, xs: Float[Array, "N tokens d"], ys: Float[Array, " N"]) -> Array:
    """L = (1 / 2N) sum_i (f(x_i) - y_i)^2."""
    return 0.5 * jnp.mean((jax.vmap(model)(xs) - ys) ** 2)


def _flat(model) -> Array:
    leaves = jax.tree.leaves(partition_params(model)[0])
    return jnp.concatenate([leaf.ravel() for leaf in leaves])


@eqx.filter_jit
def _segment(params, static, opt_state, xs, ys, lr, length: int):
    optim = optax.sgd(lr)

    def step(carry, _):
        p, state = carry
        loss, grads = jax.value_and_grad(lambda q: squared_loss(eqx.combine(q, static), xs, ys))(p)
        updates, state = optim.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), None, length=length)
    return params, opt_state, losses


def train_gd(
    model,
    xs: Float[Array, "N tokens d"],
    ys: Float[Array, " N"],
    *,
    steps: int = 300,
    lr: float | None = None,
    lr_factor: float = 1.0,
    checkpoints: int = 4,
    ntk_strategy: str = "auto",
) -> dict[str, Any]:
    """Full-batch GD (optax.sgd) on `squared_loss`, tracking the NTK and the weights.

    The step size is `lr` if given, else `lr_factor * N / lambda_max(K_0)`: in the kernel regime the
    residual evolves as r <- (I - lr K / N) r, so lr_factor < 2 is stable and lr_factor = 1 removes
    the top eigendirection in one step. Training runs in `checkpoints` equal segments (the number of
    steps is rounded up to a multiple of it); at the end of each the NTK is recomputed.

    Returns a dict: "model" (trained), "losses" (steps + 1 values, the first at initialisation),
    "lr", "lambda_min_0", "lambda_max_0" (of K_0), "predicted_rate" (the kernel-regime loss
    contraction per step on the slowest direction, (1 - lr lambda_min / N)^2), "checkpoint_steps",
    "ntk_change" (||K_t - K_0||_F / ||K_0||_F at each checkpoint), "weight_change"
    (||theta_T - theta_0|| / ||theta_0||) and "steps".
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} is invalid; pass an integer >= 1")
    if not isinstance(checkpoints, int) or not 1 <= checkpoints <= steps:
        raise ValueError(f"checkpoints={checkpoints!r} is invalid; pass an integer in [1, steps]")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r} is invalid; pass a finite step size > 0 or None (auto)")
    if not (math.isfinite(lr_factor) and 0 < lr_factor < 2):
        raise ValueError(
            f"lr_factor={lr_factor!r} is invalid; the auto step size needs 0 < lr_factor < 2"
        )
    num_inputs = xs.shape[0]  # N
    k0 = empirical_ntk(model, xs, strategy=ntk_strategy)
    eig = np.linalg.eigvalsh(np.asarray(0.5 * (k0 + k0.T), dtype=np.float64))
    lam_min, lam_max = float(eig[0]), float(eig[-1])
    if lr is None:
        lr = lr_factor * num_inputs / lam_max
    predicted = (1.0 - lr * max(lam_min, 0.0) / num_inputs) ** 2
    seg = -(-steps // checkpoints)
    params, static = partition_params(model)
    theta0 = _flat(model)
    opt_state = optax.sgd(lr).init(params)
    lr_arr = jnp.asarray(lr, xs.dtype)
    losses, ntk_change, at = [], [], []
    for c in range(checkpoints):
        params, opt_state, seg_losses = _segment(params, static, opt_state, xs, ys, lr_arr, seg)
        losses.append(np.asarray(seg_losses))
        trained = eqx.combine(params, static)
        ntk_change.append(
            float(relative_change(empirical_ntk(trained, xs, strategy=ntk_strategy), k0))
        )
        at.append((c + 1) * seg)
    trained = eqx.combine(params, static)
    final = float(squared_loss(trained, xs, ys))
    curve = np.concatenate([*losses, [final]]).astype(np.float64)
    if not np.all(np.isfinite(curve)):
        raise FloatingPointError(
            f"gradient descent diverged (lr={lr:.3g}); pass a smaller lr or lr_factor"
        )
    theta = _flat(trained)
    return {
        "model": trained,
        "losses": curve,
        "lr": float(lr),
        "lambda_min_0": lam_min,
        "lambda_max_0": lam_max,
        "predicted_rate": float(predicted),
        "checkpoint_steps": at,
        "ntk_change": ntk_change,
        "weight_change": float(jnp.linalg.norm(theta - theta0) / jnp.linalg.norm(theta0)),
        "steps": seg * checkpoints,
    }


def fit_linear_rate(losses, *, floor: float = 1e-10, tail: float = 0.5) -> dict[str, Any]:
    """Fit log(loss) = a + b t by least squares: the linear (geometric) rate of convergence.

    Only steps with loss > floor * loss_0 count (below that float rounding dominates), and of those
    the last `tail` fraction (the asymptotic rate, after the fast directions are gone). Returns
    "slope" b with its standard error "slope_se" (from the regression residuals), "rate" = exp(b)
    (loss contraction per step), "start" and "stop" (the window) and "points"; slope, slope_se
    and rate are None when fewer than 3 points are left (the loss hit the floor at once).
    """
    losses = np.asarray(losses, dtype=np.float64)
    if not 0 < tail <= 1:
        raise ValueError(f"tail={tail!r} is invalid; pass a fraction in (0, 1]")
    above = np.nonzero(losses > floor * losses[0])[0]
    stop = int(above[-1]) + 1 if above.size else 1
    start = min(int(stop * (1 - tail)), max(stop - 3, 0))
    t = np.arange(start, stop, dtype=np.float64)
    if t.size < 3:
        return {
            "slope": None,
            "slope_se": None,
            "rate": None,
            "start": start,
            "stop": stop,
            "points": int(t.size),
        }
    y = np.log(losses[start:stop])
    design = np.stack([np.ones_like(t), t], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    cov = (resid @ resid / (t.size - 2)) * np.linalg.inv(design.T @ design)
    return {
        "slope": float(coef[1]),
        "slope_se": float(math.sqrt(cov[1, 1])),
        "rate": float(math.exp(coef[1])),
        "start": start,
        "stop": stop,
        "points": int(t.size),
    }
