"""The training engine: runs that differ only in their learning rate, as lanes of one program.

The lanes start from the same weights and see the same batches; they are stacked along a leading
"lane" axis and trained together (`jax.vmap` over the lanes, `lax.scan` over a chunk of
`eval_every` steps), so one compilation per static setting (`StepSpec`: the model's non-array
part, the settings at unit learning rate, the shaping schedule) serves every learning rate, seed
and weight. A single run is a group of one lane. Batch t is drawn with `fold_in(data_key, t)`.

Divergence is the rule of `TrainConfig` (docs/training.md): a non-finite training loss or
gradient norm, or a training or validation loss above `divergence_factor * ln(vocab)`, stops a
lane: its weights and optimiser state are frozen from that step on (the other lanes go on), and
the step and the reason are recorded.

The whole state (weights, optimiser states, step, divergence bookkeeping, the loss and
evaluation records) is one pytree of arrays; `state_to_bytes` / `state_from_bytes` serialise it
with `eqx.tree_serialise_leaves`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import time
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .. import metrics
from .._linalg import gram
from .._progress import Progress
from .data import Batch, Task
from .lm import LanguageModel
from .shaping import ShapingSchedule
from .spec import TrainConfig, make_optimizer

REASONS = (
    None,
    "non-finite training loss",
    "training loss above the divergence limit",
    "non-finite gradient norm",
    "non-finite validation loss",
    "validation loss above the divergence limit",
)
"""Divergence reasons, by the code stored in the state (0: not diverged)."""


def batch_loss(
    model: LanguageModel, batch: Batch, shaping=None
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(masked mean next-token cross-entropy, mean token correlation of the last layer)."""
    inputs, targets, mask = batch
    logits, hidden = jax.vmap(lambda t: model(t, shaping))(inputs)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    loss = jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    corr = jnp.mean(metrics.mean_correlation(gram(hidden)))
    return loss, corr


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """The static part of a train step.

    The model's non-array part, the optimisation settings with a unit learning rate (the lane's
    lr is a traced argument) and the shaping schedule. Runs that differ only in lr, weights, seed
    or data share one compiled step.
    """

    static: LanguageModel
    cfg: TrainConfig
    schedule: ShapingSchedule

    def shaping(self, model: LanguageModel, step: Array):
        """The shaping scalars the model uses at `step` (None without shaping scalars)."""
        if model.shaping is None:
            return None
        return self.schedule.apply(model.shaping, model.initial_shaping(), step, self.cfg.steps)

    def loss(self, params, step: Array, batch: Batch):
        """`batch_loss` of the model with trainable parameters `params` at `step`."""
        model = eqx.combine(params, self.static)
        return batch_loss(model, batch, self.shaping(model, step))


@dataclasses.dataclass(frozen=True)
class _ChunkSpec:
    """Static part of the compiled chunk: step spec, number of steps per chunk."""

    step: StepSpec
    chunk: int


_TRACES = [0]
"""How many times the chunk program has been traced (compiled) in this process."""


def _lane_update(spec: _ChunkSpec, params, opt_state, lr, step, batch):
    (loss, _), grads = jax.value_and_grad(spec.step.loss, has_aux=True)(params, step, batch)
    optimizer = make_optimizer(spec.step.cfg, params)
    # optax mixes Python floats with int32 step counts (e.g. `decay**count` in Adam's bias
    # correction), which strict dtype promotion refuses; allow it inside the optimiser only.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        # The optimiser runs at unit peak lr; every update of AdamW (weight decay included) and
        # of SGD with momentum is linear in the learning rate, so scaling by lr is exact.
        updates = jax.tree.map(lambda u: lr * u, updates)
        params = optax.apply_updates(params, updates)
    return params, opt_state, loss, optax.tree.norm(grads)


def _select(mask, new, old):
    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)


@functools.partial(jax.jit, static_argnums=0)
def _chunk(spec: _ChunkSpec, state: dict, lrs, key, task, limit):
    """`spec.chunk` optimisation steps of every lane from `state["step"]`."""
    _TRACES[0] += 1  # runs only while tracing
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
def _evaluate(spec: _ChunkSpec, params, step, batch):
    return jax.vmap(lambda p: spec.step.loss(p, step, batch))(params)


class LaneTrainer:
    """Trains `model` once per learning rate of `lrs`, as the lanes of one program.

    `cfg.steps` must be a multiple of `cfg.eval_every`, which is also the chunk of steps run by
    one call of the compiled program; the validation loss and the last layer's mean token
    correlation are evaluated at step 0 (initialisation), after every chunk, and at the end.
    Batch t is drawn from `train_task` with `fold_in(data_key, t)`. `step_spec` is the static
    part of the step (`StepSpec`); `traces` counts the compilations of the chunk program since
    this trainer was made.
    """

    def __init__(
        self,
        model: LanguageModel,
        cfg: TrainConfig,
        lrs: Sequence[float],
        *,
        data_key: PRNGKeyArray,
        schedule: ShapingSchedule | None = None,
        name: str = "run",
    ):
        if cfg.steps % cfg.eval_every:
            raise ValueError(
                f"steps={cfg.steps} is not a multiple of eval_every={cfg.eval_every}; "
                "choose eval_every dividing steps"
            )
        if not lrs:
            raise ValueError("lrs is empty; pass at least one learning rate")
        schedule = ShapingSchedule() if schedule is None else schedule
        if model.shaping is None and schedule.mode != "fixed":
            raise ValueError(
                f"shaping schedule {schedule.mode!r} needs the shaped architecture; the "
                f"{model.arch!r} model has no shaping scalars"
            )
        self.cfg, self.name, self.data_key = cfg, name, data_key
        self.lrs = tuple(float(lr) for lr in lrs)
        self.model = model
        params, self.static = eqx.partition(model, eqx.is_inexact_array)
        self.step_spec = StepSpec(self.static, dataclasses.replace(cfg, lr=1.0), schedule)
        step_spec = self.step_spec
        self.gspec = _ChunkSpec(step_spec, cfg.eval_every)
        self.optimizer = make_optimizer(step_spec.cfg, params)
        vocab = model.readout.shape[1]
        factor = cfg.divergence_factor
        self.limit = math.inf if factor is None else factor * math.log(vocab)
        self._traces_at_start = _TRACES[0]

    @property
    def lanes(self) -> int:
        """The number of lanes: one per learning rate."""
        return len(self.lrs)

    @property
    def traces(self) -> int:
        """How many times the chunk program was compiled since this trainer was made."""
        return _TRACES[0] - self._traces_at_start

    def tokens_per_step(self) -> int:
        """Training tokens one step of one lane processes."""
        return self.cfg.batch_size * self.model.max_len

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
        the wall seconds of the first chunk (compilation included), of the others, and of all.
        `progress=True` reports the steps done and steps/s on stderr, with a heartbeat while a
        chunk runs (sdeformer._progress).
        """
        started_all = time.perf_counter()
        eval_batch = val_task.eval_batch(self.cfg.eval_batch_size)
        if state is None:
            state = self._eval(self.init_state(), eval_batch)
        lrs = jnp.asarray(self.lrs, jnp.float32)
        limit = jnp.asarray(self.limit, jnp.float32)
        timing = {"first_chunk_s": None, "steady_s": 0.0, "steady_steps": 0, "total_s": 0.0}
        start = int(state["step"])
        with Progress(
            f"training {self.name}", self.cfg.steps, "steps", enabled=progress, start=start
        ) as bar:
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
        timing["total_s"] = time.perf_counter() - started_all
        return state, timing

    def lane_model(self, state: dict, lane: int) -> LanguageModel:
        """The model of lane `lane` in `state`."""
        params = jax.tree.map(lambda x: x[lane], state["params"])
        return eqx.combine(params, self.static)


def state_to_bytes(state: dict) -> bytes:
    """The state serialised with `eqx.tree_serialise_leaves` (no file I/O here)."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state)
    return buffer.getvalue()


def state_from_bytes(data: bytes, like: dict) -> dict:
    """Inverse of `state_to_bytes`; `like` is a state of the same trainer (e.g. `init_state()`)."""
    return eqx.tree_deserialise_leaves(io.BytesIO(data), like)
