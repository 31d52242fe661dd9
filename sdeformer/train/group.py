"""Train one model kind at one depth and one seed for a whole grid of learning rates at once.

The runs of a group differ only in their learning rate: they start from the same weights (one
initialisation key per (depth, seed)), see the same batches (one data key per seed), and are
stacked along a leading "lane" axis and trained by one compiled program (`jax.vmap` over the
lanes, `lax.scan` over a chunk of steps). One compilation per (kind, depth) serves every learning
rate and seed.

Divergence is the rule of `TrainConfig` (docs/training.md): a non-finite training loss or
gradient norm, or a training or validation loss above `divergence_factor * ln(vocab)`, stops a
lane: its weights and optimiser state are frozen from that step on (the other lanes go on), and
the step and the reason are recorded.

The whole state of a group (weights, optimiser states, step, divergence bookkeeping, the loss and
evaluation records) is one pytree of arrays; `state_to_bytes` / `state_from_bytes` serialise it
with `eqx.tree_serialise_leaves`. The data position and the random state are functions of the
step (batch t is drawn with `fold_in(data_key, t)`), so a group resumed from a checkpoint runs
the same compiled chunks on the same inputs as an uninterrupted one and ends with bitwise equal
weights on the same machine (tested).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import time
import zlib
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .._progress import Progress
from .data import Task
from .loop import TrainConfig, _spec_loss, _StepSpec, kind_spec, make_optimizer
from .sweep import ModelSpec

REASONS = (
    None,
    "non-finite training loss",
    "training loss above the divergence limit",
    "non-finite gradient norm",
    "non-finite validation loss",
    "validation loss above the divergence limit",
)
"""Divergence reasons, by the code stored in the group state (0: not diverged)."""


def stable_hash(text: str) -> int:
    """A 31-bit hash of a string that is the same on every run and machine (crc32)."""
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def init_key(depth: int, seed: int, base: int = 0) -> jax.Array:
    """Initialisation key of every run at (depth, seed), shared by the kinds and learning rates.

    Runs are thus paired (common random numbers); the key is folded from a stable id, not an
    index.
    """
    return jr.fold_in(jr.key(base), stable_hash(f"init:d{depth}:s{seed}"))


def data_key(seed: int, base: int = 0) -> jax.Array:
    """Data key of every run with `seed` (batch t is drawn with `fold_in(data_key, t)`)."""
    return jr.fold_in(jr.key(base), stable_hash(f"data:s{seed}"))


def group_id(kind: str, depth: int, seed: int) -> str:
    """Stable id of a group (kind, depth, seed), e.g. `shaped_d16_s0`."""
    kind_spec(kind)
    return f"{kind}_d{depth}_s{seed}"


def run_id(kind: str, depth: int, lr: float, seed: int) -> str:
    """Stable id of one run, e.g. `shaped_d16_lr=0.1_s0` (a `ResultStore` unit name)."""
    return f"{kind}_d{depth}_lr={float(lr):.6g}_s{seed}"


@dataclasses.dataclass(frozen=True)
class _GroupSpec:
    """Static part of the compiled chunk: step spec, number of steps per chunk."""

    step: _StepSpec
    chunk: int


def _lane_update(spec: _GroupSpec, params, opt_state, lr, step, batch):
    (loss, _), grads = jax.value_and_grad(_spec_loss, argnums=1, has_aux=True)(
        spec.step, params, step, batch
    )
    optimizer = make_optimizer(spec.step.cfg, params)
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: lr * u, updates)  # exact: see loop._train_step
        params = optax.apply_updates(params, updates)
    return params, opt_state, loss, optax.tree.norm(grads)


def _select(mask, new, old):
    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)


@functools.partial(jax.jit, static_argnums=0)
def _chunk(spec: _GroupSpec, state: dict, lrs, key, task, limit):
    """`spec.chunk` optimisation steps of every lane from `state["step"]`."""
    batch_size = spec.step.cfg.batch_size

    def one(carry, step):
        params, opt_state, alive, div_at, reason = carry
        batch = task.sample(jr.fold_in(key, step), batch_size)
        new_params, new_opt, loss, gnorm = jax.vmap(
            lambda p, o, lr: _lane_update(spec, p, o, lr, step, batch)
        )(params, opt_state, lrs)
        code = jnp.where(
            ~jnp.isfinite(loss),
            1,
            jnp.where(loss > limit, 2, jnp.where(~jnp.isfinite(gnorm), 3, 0)),
        )
        ok = alive & (code == 0)
        newly = alive & (code != 0)
        params = _select(ok, new_params, params)
        opt_state = _select(ok, new_opt, opt_state)
        div_at = jnp.where(newly, step, div_at)
        reason = jnp.where(newly, code, reason)
        return (params, opt_state, ok, div_at, reason), (loss, gnorm)

    start = state["step"]
    steps = start + jnp.arange(spec.chunk, dtype=jnp.int32)
    carry = (state["params"], state["opt_state"], state["alive"], state["div_at"], state["reason"])
    (params, opt_state, alive, div_at, reason), (losses, gnorms) = jax.lax.scan(one, carry, steps)
    out = dict(state)
    out.update(params=params, opt_state=opt_state, alive=alive, div_at=div_at, reason=reason)
    out["losses"] = jax.lax.dynamic_update_slice(state["losses"], losses, (start, 0))
    out["grad_norms"] = jax.lax.dynamic_update_slice(state["grad_norms"], gnorms, (start, 0))
    out["step"] = start + spec.chunk
    return out


@functools.partial(jax.jit, static_argnums=0)
def _evaluate(spec: _GroupSpec, params, step, batch):
    return jax.vmap(lambda p: _spec_loss(spec.step, p, step, batch))(params)


class GroupTrainer:
    """Trains the runs (kind, depth, seed, lr) for every lr of `lrs` together (see module doc).

    `cfg.steps` must be a multiple of `cfg.eval_every`, which is also the chunk of steps run by
    one call of the compiled program; the validation loss and the last layer's mean token
    correlation are evaluated at step 0 (initialisation), after every chunk, and at the end.
    """

    def __init__(
        self,
        spec: ModelSpec,
        kind: str,
        cfg: TrainConfig,
        lrs: Sequence[float],
        seed: int,
        *,
        base_seed: int = 0,
    ):
        if cfg.steps % cfg.eval_every:
            raise ValueError(
                f"steps={cfg.steps} is not a multiple of eval_every={cfg.eval_every}; "
                "choose eval_every dividing steps"
            )
        if not lrs:
            raise ValueError("lrs is empty; pass at least one learning rate")
        self.spec, self.kind, self.cfg, self.seed = spec, kind, cfg, seed
        self.lrs = tuple(float(lr) for lr in lrs)
        self.id = group_id(kind, spec.depth, seed)
        model, schedule = spec.build(kind, key=init_key(spec.depth, seed, base_seed))
        self.model = model
        params, self.static = eqx.partition(model, eqx.is_inexact_array)
        step_spec = _StepSpec(self.static, dataclasses.replace(cfg, lr=1.0), schedule)
        self.gspec = _GroupSpec(step_spec, cfg.eval_every)
        self.optimizer = make_optimizer(step_spec.cfg, params)
        self.data_key = data_key(seed, base_seed)
        vocab = model.readout.shape[1]
        factor = cfg.divergence_factor
        self.limit = math.inf if factor is None else factor * math.log(vocab)

    @property
    def lanes(self) -> int:
        """The number of lanes: one per learning rate."""
        return len(self.lrs)

    def init_state(self) -> dict:
        """The state at step 0 (every lane at the same initial weights)."""
        lanes = self.lanes
        params = eqx.filter(self.model, eqx.is_inexact_array)
        with jax.numpy_dtype_promotion("standard"):
            opt_state = self.optimizer.init(params)

        def stack(x):
            return jnp.broadcast_to(x, (lanes,) + jnp.shape(x)) if eqx.is_array(x) else x

        evals = self.cfg.steps // self.cfg.eval_every + 1
        nan = functools.partial(jnp.full, fill_value=jnp.nan, dtype=jnp.float32)
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": jax.tree.map(stack, params),
            "opt_state": jax.tree.map(stack, opt_state),
            "alive": jnp.ones((lanes,), bool),
            "div_at": jnp.full((lanes,), -1, jnp.int32),
            "reason": jnp.zeros((lanes,), jnp.int32),
            "losses": nan((self.cfg.steps, lanes)),
            "grad_norms": nan((self.cfg.steps, lanes)),
            "val_loss": nan((evals, lanes)),
            "token_correlation": nan((evals, lanes)),
        }

    def _eval(self, state: dict, eval_batch) -> dict:
        step = state["step"]
        loss, corr = _evaluate(self.gspec, state["params"], step, eval_batch)
        index = int(step) // self.cfg.eval_every
        alive = state["alive"]
        code = jnp.where(~jnp.isfinite(loss), 4, jnp.where(loss > self.limit, 5, 0))
        newly = alive & (code != 0)
        out = dict(state)
        out["val_loss"] = state["val_loss"].at[index].set(jnp.where(alive, loss, jnp.nan))
        out["token_correlation"] = (
            state["token_correlation"].at[index].set(jnp.where(alive, corr, jnp.nan))
        )
        out["alive"] = alive & (code == 0)
        out["div_at"] = jnp.where(newly, step, state["div_at"])
        out["reason"] = jnp.where(newly, code, state["reason"])
        return out

    def run(
        self,
        state: dict | None,
        train_task: Task,
        val_task: Task,
        *,
        on_chunk: Callable[[dict, float], None] | None = None,
        stop_after: int | None = None,
        progress: bool = False,
    ) -> tuple[dict, dict]:
        """Train from `state` (None: from step 0) to `cfg.steps`; (state, timing).

        `on_chunk(state, seconds)` is called after each chunk (for checkpoints and progress).
        `stop_after` stops once that many steps are done (to test interruption). `timing` has
        the wall seconds of the first chunk (compilation included) and of the others.
        `progress=True` reports the steps done and steps/s on stderr, with a heartbeat while a
        chunk runs (sdeformer._progress).
        """
        if state is None:
            state = self._eval(self.init_state(), val_task.eval_batch(self.cfg.eval_batch_size))
        eval_batch = val_task.eval_batch(self.cfg.eval_batch_size)
        lrs = jnp.asarray(self.lrs, jnp.float32)
        limit = jnp.asarray(self.limit, jnp.float32)
        timing = {"first_chunk_s": None, "steady_s": 0.0, "steady_steps": 0}
        what = f"training {self.id}"
        start = int(state["step"])
        with Progress(what, self.cfg.steps, "steps", enabled=progress, start=start) as bar:
            while int(state["step"]) < self.cfg.steps:
                if stop_after is not None and int(state["step"]) >= stop_after:
                    break
                if not bool(jnp.any(state["alive"])):
                    break  # every lane diverged: nothing left to train
                started = time.perf_counter()
                with bar.inside(f"training chunk of {self.gspec.chunk} steps"):
                    state = _chunk(self.gspec, state, lrs, self.data_key, train_task, limit)
                    state = self._eval(state, eval_batch)
                    jax.block_until_ready(state["losses"])
                bar.advance_to(int(state["step"]))
                seconds = time.perf_counter() - started
                if timing["first_chunk_s"] is None:
                    timing["first_chunk_s"] = seconds
                else:
                    timing["steady_s"] += seconds
                    timing["steady_steps"] += self.gspec.chunk
                if on_chunk is not None:
                    on_chunk(state, seconds)
        return state, timing

    def tokens_per_step(self) -> int:
        """Training tokens one step of one lane processes."""
        return self.cfg.batch_size * self.spec.seq_len

    def results(self, state: dict, timing: dict | None = None, block: int = 10) -> list[dict]:
        """One JSON-ready record per lane (learning rate).

        Losses of diverged steps are dropped (never NaN): `loss_blocks` are the means of the
        training loss over consecutive blocks of `block` steps, up to the divergence; `evals` are
        (step, val_loss, token_correlation) before it.
        """
        host = jax.tree.map(np.asarray, {k: state[k] for k in state if k not in ("params",)})
        tps = None
        if timing and timing.get("steady_steps"):
            tps = self.lanes * self.tokens_per_step() * timing["steady_steps"] / timing["steady_s"]
        out = []
        every = self.cfg.eval_every
        for lane, lr in enumerate(self.lrs):
            div_at = int(host["div_at"][lane])
            diverged = div_at >= 0
            done = div_at if diverged else int(host["step"])
            losses = host["losses"][:done, lane]
            nblocks = len(losses) // block
            blocks = losses[: nblocks * block].reshape(nblocks, block).mean(axis=1)
            evals = []
            for i, (v, c) in enumerate(
                zip(host["val_loss"][:, lane], host["token_correlation"][:, lane], strict=True)
            ):
                if np.isfinite(v) and np.isfinite(c):
                    evals.append(
                        {"step": i * every, "val_loss": float(v), "token_correlation": float(c)}
                    )
            finished = not diverged and int(host["step"]) >= self.cfg.steps
            final = (
                evals[-1] if finished and evals and evals[-1]["step"] == self.cfg.steps else None
            )
            out.append(
                {
                    "kind": self.kind,
                    "depth": self.spec.depth,
                    "lr": lr,
                    "seed": self.seed,
                    "id": run_id(self.kind, self.spec.depth, lr, self.seed),
                    "steps": self.cfg.steps,
                    "steps_done": done,
                    "diverged": diverged,
                    "diverged_at": div_at if diverged else None,
                    "divergence_reason": REASONS[int(host["reason"][lane])],
                    "final_val_loss": None if final is None else final["val_loss"],
                    "init_token_correlation": evals[0]["token_correlation"] if evals else None,
                    "final_token_correlation": None
                    if final is None
                    else final["token_correlation"],
                    "final_train_loss": float(blocks[-1]) if len(blocks) else None,
                    "loss_blocks": [float(x) for x in blocks],
                    "loss_block": block,
                    "evals": evals,
                    "tokens_per_second": tps,
                    "group_tokens_per_second": tps,
                    "lanes": self.lanes,
                    "compile_and_first_chunk_s": None if not timing else timing["first_chunk_s"],
                }
            )
        return out


def state_to_bytes(state: dict) -> bytes:
    """The group state serialised with `eqx.tree_serialise_leaves` (no file I/O here)."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state)
    return buffer.getvalue()


def state_from_bytes(data: bytes, like: dict) -> dict:
    """Inverse of `state_to_bytes`; `like` is a state of the same group (e.g. `init_state()`)."""
    return eqx.tree_deserialise_leaves(io.BytesIO(data), like)
