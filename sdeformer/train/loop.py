"""The optax training loop: one jitted step, evaluation, logging and divergence detection.

The step is compiled once per run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .. import metrics
from .._linalg import gram
from .data import Batch, Task
from .lm import LanguageModel
from .shaping import ShapingSchedule

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")

MODEL_KINDS: dict[str, tuple[str, str]] = {
    "shaped": ("shaped", "fixed"),
    "shaped-recover": ("shaped", "recover"),
    "shaped-learn": ("shaped", "learn"),
    "preln": ("preln", "fixed"),
    "standard": ("shaped", "standard"),
}
"""Model kinds of the training comparisons: (architecture, shaping schedule)."""


def kind_spec(kind: str) -> tuple[str, str]:
    """(architecture, shaping schedule mode) of a model kind."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose from {tuple(MODEL_KINDS)}")
    return MODEL_KINDS[kind]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run.

    The learning rate warms up linearly from 0 to `lr` over `warmup` steps, then stays constant
    ("constant") or follows a cosine decay to `lr * final_lr_fraction` at `steps` ("cosine").
    `clip` is the global gradient-norm clipping threshold (None: no clipping). Weight decay
    (decoupled for AdamW, added to the gradient for SGD) applies to the weight matrices, the
    embedding and the readout, not to LayerNorm gains/biases or shaping scalars.

    Divergence: a NaN/Inf loss or gradient norm always stops the run; so does a training or
    validation loss above `divergence_factor * ln(vocab)` (that many times the loss of the
    uniform prediction; None: only NaN/Inf count), since with gradient clipping an unstable run
    often blows up to huge but finite losses.
    """

    steps: int = 200
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 1e-2
    schedule: str = "cosine"
    warmup: int = 20
    final_lr_fraction: float = 0.1
    clip: float | None = 1.0
    weight_decay: float = 0.0
    momentum: float = 0.9
    eval_every: int = 50
    eval_batch_size: int = 64
    log_every: int = 10
    divergence_factor: float | None = 3.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig: {name}={value!r}; pass an integer >= 1")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"TrainConfig: warmup={self.warmup!r}; pass an integer >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig: optimizer={self.optimizer!r}; choose from {OPTIMIZERS}")
        if self.schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig: schedule={self.schedule!r}; choose from {LR_SCHEDULES}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig: lr={self.lr!r}; pass a learning rate > 0")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"TrainConfig: clip={self.clip!r}; pass a threshold > 0 or None")
        if self.divergence_factor is not None and not self.divergence_factor > 1:
            raise ValueError(
                f"TrainConfig: divergence_factor={self.divergence_factor!r}; pass a number > 1 "
                "or None"
            )
        if self.weight_decay < 0 or not 0 <= self.final_lr_fraction <= 1:
            raise ValueError("TrainConfig: need weight_decay >= 0 and 0 <= final_lr_fraction <= 1")

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def learning_rate(self) -> optax.Schedule:
        """The learning-rate schedule (a function of the step count)."""
        if self.schedule == "cosine":
            return optax.warmup_cosine_decay_schedule(
                init_value=0.0,
                peak_value=self.lr,
                warmup_steps=self.warmup,
                decay_steps=max(self.steps, self.warmup + 1),
                end_value=self.lr * self.final_lr_fraction,
            )
        if self.warmup == 0:
            return optax.constant_schedule(self.lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, self.lr, self.warmup), optax.constant_schedule(self.lr)],
            [self.warmup],
        )


def decay_mask(params) -> object:
    """True for the leaves weight decay applies to.

    Matrices, embedding, readout; not LayerNorm gains and biases, learned positions or shaping
    scalars.
    """

    def rule(path, leaf) -> bool:
        names = jax.tree_util.keystr(path)
        return not any(s in names for s in ("ln_", "final_", "shaping", "positions"))

    return jax.tree_util.tree_map_with_path(rule, params)


def make_optimizer(cfg: TrainConfig, params) -> optax.GradientTransformation:
    """Gradient clipping (optional), then AdamW or SGD (with momentum) on `cfg.learning_rate()`."""
    lr = cfg.learning_rate()
    mask = decay_mask(params)
    parts = [] if cfg.clip is None else [optax.clip_by_global_norm(cfg.clip)]
    if cfg.optimizer == "adamw":
        parts.append(optax.adamw(lr, weight_decay=cfg.weight_decay, mask=mask))
    else:
        if cfg.weight_decay:
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask))
        parts.append(optax.sgd(lr, momentum=cfg.momentum or None))
    return optax.chain(*parts)


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


@dataclasses.dataclass
class TrainResult:
    """What one run produced.

    `diverged` runs stopped at the first non-finite loss or gradient norm (`diverged_at` is that
    step); their `final_val_loss` is None (never a NaN).
    """

    model: LanguageModel
    history: list[dict]
    evals: list[dict]
    final_train_loss: float | None
    final_val_loss: float | None
    final_token_correlation: float | None
    diverged: bool
    diverged_at: int | None
    divergence_reason: str | None
    steps_done: int
    seconds: float
    tokens_per_second: float
    traces: int
    final_shaping: dict | None

    def summary(self) -> dict:
        """JSON-ready dictionary without the model."""
        out = dataclasses.asdict(self)
        out.pop("model")
        return out


_TRACES = [0]
"""How many times the train step has been traced (compiled) in this process."""


@dataclasses.dataclass(frozen=True)
class _StepSpec:
    """The static part of a train step.

    The model's non-array part, the optimisation settings with a unit learning rate (the run's lr
    is a traced argument) and the shaping schedule. Runs that differ only in lr, weights, seed or
    data share one compiled step.
    """

    static: LanguageModel
    cfg: TrainConfig
    schedule: ShapingSchedule


def _effective_shaping(spec: _StepSpec, model: LanguageModel, step: Array):
    if model.arch != "shaped":
        return None
    return spec.schedule.apply(model.shaping, model.initial_shaping(), step, spec.cfg.steps)


def _spec_loss(spec: _StepSpec, params, step, batch):
    model = eqx.combine(params, spec.static)
    return batch_loss(model, batch, _effective_shaping(spec, model, step))


@functools.partial(jax.jit, static_argnums=0)
def _train_step(spec: _StepSpec, params, opt_state, step, lr, key, task):
    _TRACES[0] += 1  # runs only while tracing
    batch = task.sample(key, spec.cfg.batch_size)
    (loss, _), grads = jax.value_and_grad(_spec_loss, argnums=1, has_aux=True)(
        spec, params, step, batch
    )
    optimizer = make_optimizer(spec.cfg, params)
    # optax mixes Python floats with int32 step counts (e.g. `decay**count` in Adam's bias
    # correction), which strict dtype promotion refuses; allow it inside the optimiser only.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        # The optimiser runs at unit peak lr; every update of AdamW (weight decay included) and
        # of SGD with momentum is linear in the learning rate, so scaling by lr is exact.
        updates = jax.tree.map(lambda u: lr * u, updates)
        params = optax.apply_updates(params, updates)
    return params, opt_state, loss, optax.tree.norm(grads)


@functools.partial(jax.jit, static_argnums=0)
def _eval_step(spec: _StepSpec, params, step, batch):
    return _spec_loss(spec, params, step, batch)


class Trainer:
    """The jitted train and eval steps of one (model, config, schedule).

    The step is compiled at its first call and cached by its static part (`_StepSpec`): the
    step index, learning rate, PRNG key, weights and data are traced arguments, so later steps,
    and later runs that differ only in those, reuse the compiled step. `traces` counts the
    compilations since this trainer was made.
    """

    def __init__(
        self,
        model: LanguageModel,
        cfg: TrainConfig,
        schedule: ShapingSchedule | None = None,
    ):
        self.cfg = cfg
        self.schedule = ShapingSchedule() if schedule is None else schedule
        if model.arch != "shaped" and self.schedule.mode != "fixed":
            raise ValueError(
                f"shaping schedule {self.schedule.mode!r} needs the shaped architecture; the "
                f"{model.arch!r} model has no shaping scalars"
            )
        params, self.static = eqx.partition(model, eqx.is_inexact_array)
        self.spec = _StepSpec(self.static, dataclasses.replace(cfg, lr=1.0), self.schedule)
        self.optimizer = make_optimizer(self.spec.cfg, params)
        self.lr = jnp.asarray(cfg.lr, jnp.float32)
        self._traces_at_start = _TRACES[0]

    @property
    def traces(self) -> int:
        """How many times a step was compiled since this trainer was made."""
        return _TRACES[0] - self._traces_at_start

    def init(self, model: LanguageModel):
        """The trainable parameters of `model` and the optimiser state: (params, opt_state)."""
        params = eqx.filter(model, eqx.is_inexact_array)
        with jax.numpy_dtype_promotion("standard"):
            return params, self.optimizer.init(params)

    def step(self, params, opt_state, step: int, key: PRNGKeyArray, task: Task):
        """One optimisation step: (params, opt_state, loss, grad_norm), not synchronised.

        `task` is a pytree (its data array is an argument, its sizes are static), so the same
        compiled step serves every step and every batch.
        """
        step = jnp.asarray(step, jnp.int32)
        return _train_step(self.spec, params, opt_state, step, self.lr, key, task)

    def evaluate(self, params, step: int, batch: Batch) -> tuple[float, float]:
        """(validation loss, last layer's mean token correlation) on `batch` at `step`."""
        loss, corr = _eval_step(self.spec, params, jnp.asarray(step, jnp.int32), batch)
        return float(loss), float(corr)

    def effective_shaping(self, params, step: int) -> dict | None:
        """The means of the shaping scalars used at `step`, or None without shaping scalars."""
        model = eqx.combine(params, self.static)
        shaping = _effective_shaping(self.spec, model, jnp.asarray(step, jnp.int32))
        return None if shaping is None else shaping.means()


def _lr(lr_fn: optax.Schedule, step: int) -> float:
    with jax.numpy_dtype_promotion("standard"):
        return float(lr_fn(step))


def train(
    model: LanguageModel,
    train_task: Task,
    val_task: Task,
    cfg: TrainConfig,
    *,
    key: PRNGKeyArray,
    schedule: ShapingSchedule | None = None,
    callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train `model` on `train_task` for `cfg.steps` steps and evaluate on `val_task`.

    Every `cfg.log_every` steps a record {step, loss, grad_norm, lr} goes to `history`; every
    `cfg.eval_every` steps and at the end, {step, val_loss, token_correlation} (the mean
    off-diagonal token correlation of the last layer's covariance X X^T / n, averaged over the
    evaluation batch, `sdeformer.metrics.mean_correlation`) goes to `evals`. `callback` receives
    each record. A non-finite loss or gradient norm stops the run: it is returned with
    `diverged=True` and the step, never with NaNs in the numbers.
    """
    trainer = Trainer(model, cfg, schedule)
    params, opt_state = trainer.init(model)
    lr_fn = cfg.learning_rate()
    eval_batch = val_task.eval_batch(cfg.eval_batch_size)
    vocab = model.readout.shape[1]
    limit = math.inf if cfg.divergence_factor is None else cfg.divergence_factor * math.log(vocab)
    reason: list[str] = []

    def check(name: str, value: float) -> bool:
        if not math.isfinite(value):
            reason.append(f"non-finite {name} ({value})")
            return False
        if name.endswith("loss") and value > limit:
            reason.append(
                f"{name} {value:.4g} above {limit:.4g} = {cfg.divergence_factor} ln(vocab)"
            )
            return False
        return True

    history: list[dict] = []
    evals: list[dict] = []
    diverged_at = None
    last_loss = None
    started = time.perf_counter()
    step = 0

    def emit(record: dict, into: list[dict]) -> None:
        into.append(record)
        if callback is not None:
            callback(record)

    def run_eval(at: int) -> bool:
        val_loss, corr = trainer.evaluate(params, at, eval_batch)
        if not (check("validation loss", val_loss) and check("token correlation", corr)):
            return False
        emit({"step": at, "val_loss": val_loss, "token_correlation": corr}, evals)
        return True

    for step in range(cfg.steps):
        new_params, new_opt_state, loss, grad_norm = trainer.step(
            params, opt_state, step, jr.fold_in(key, step), train_task
        )
        loss, grad_norm = float(loss), float(grad_norm)
        if not (check("training loss", loss) and check("gradient norm", grad_norm)):
            diverged_at = step
            break
        params, opt_state, last_loss = new_params, new_opt_state, loss
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            record = {"step": step, "loss": loss, "grad_norm": grad_norm, "lr": _lr(lr_fn, step)}
            emit(record, history)
        if (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps and not run_eval(step + 1):
            diverged_at = step + 1
            break
    steps_done = cfg.steps if diverged_at is None else diverged_at
    if diverged_at is None and not run_eval(cfg.steps):
        diverged_at = cfg.steps
    seconds = time.perf_counter() - started
    diverged = diverged_at is not None
    final = evals[-1] if evals and not diverged else None
    tokens = steps_done * cfg.batch_size * train_task.seq_len
    return TrainResult(
        model=eqx.combine(params, trainer.static),
        history=history,
        evals=evals,
        final_train_loss=last_loss,
        final_val_loss=None if final is None else final["val_loss"],
        final_token_correlation=None if final is None else final["token_correlation"],
        diverged=diverged,
        diverged_at=diverged_at,
        divergence_reason=reason[0] if reason else None,
        steps_done=steps_done,
        seconds=seconds,
        tokens_per_second=tokens / max(seconds, 1e-9),
        traces=trainer.traces,
        final_shaping=trainer.effective_shaping(params, steps_done),
    )
