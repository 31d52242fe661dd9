"""`train`: one model trained by the engine as a group of one lane; `TrainResult`, one lane's.

`TrainResult` is what a run (one lane of a group) produced.

The step is compiled once per static setting (`sdeformer.train.engine.StepSpec`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from .data import Task
from .engine import REASONS, LaneTrainer
from .lm import LanguageModel
from .shaping import ShapingSchedule
from .spec import MODEL_KINDS as MODEL_KINDS
from .spec import TrainConfig
from .spec import kind_spec as kind_spec


@dataclasses.dataclass
class TrainResult:
    """What one run (one lane) produced.

    `history` has {step, loss, grad_norm, lr} every `log_every` steps and at the last step;
    `evals` has {step, val_loss, token_correlation} every `eval_every` steps. `diverged` runs
    stopped at `diverged_at` (`divergence_reason`, one of `REASONS`); their `final_val_loss` is
    None (never a NaN). `seconds` and `tokens_per_second` are those of the whole group (the
    training tokens of every lane trained with this one, per second; one lane: this run's).
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


def lane_records(trainer: LaneTrainer, host: dict, lane: int) -> tuple[list[dict], list[dict]]:
    """(history, evals) of lane `lane` (see `TrainResult`), from a state on the host.

    Steps at and after a divergence are left out, and the evaluation at step 0.
    """
    cfg = trainer.cfg
    div_at, code = int(host["div_at"][lane]), int(host["reason"][lane])
    done = div_at if div_at >= 0 else int(host["step"])
    lr_fn = dataclasses.replace(cfg, lr=trainer.lrs[lane]).learning_rate()
    history = []
    with jax.numpy_dtype_promotion("standard"):
        for step in range(done):
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                history.append(
                    {
                        "step": step,
                        "loss": float(host["losses"][step, lane]),
                        "grad_norm": float(host["grad_norms"][step, lane]),
                        "lr": float(lr_fn(step)),
                    }
                )
    evals = []
    for i in range(1, len(host["val_loss"])):
        step = i * cfg.eval_every
        # the evaluation at the step where a training step diverged came before that step
        kept = div_at < 0 or step < div_at or (step == div_at and code <= 3)
        v, c = float(host["val_loss"][i, lane]), float(host["token_correlation"][i, lane])
        if kept and math.isfinite(v) and math.isfinite(c):
            evals.append({"step": step, "val_loss": v, "token_correlation": c})
    return history, evals


def lane_results(trainer: LaneTrainer, state: dict, seconds: float) -> list[TrainResult]:
    """One `TrainResult` per lane of `state`; `seconds`: the wall time of the run."""
    host = jax.tree.map(np.asarray, {k: state[k] for k in state if k != "params"})
    out = []
    for lane in range(trainer.lanes):
        history, evals = lane_records(trainer, host, lane)
        div_at = int(host["div_at"][lane])
        diverged = div_at >= 0
        done = div_at if diverged else int(host["step"])
        final = evals[-1] if evals and not diverged and done == trainer.cfg.steps else None
        model = trainer.lane_model(state, lane)
        shaping = trainer.step_spec.shaping(model, jnp.asarray(done, jnp.int32))
        tokens = trainer.lanes * done * trainer.tokens_per_step()
        out.append(
            TrainResult(
                model=model,
                history=history,
                evals=evals,
                final_train_loss=float(host["losses"][done - 1, lane]) if done else None,
                final_val_loss=None if final is None else final["val_loss"],
                final_token_correlation=None if final is None else final["token_correlation"],
                diverged=diverged,
                diverged_at=div_at if diverged else None,
                divergence_reason=REASONS[int(host["reason"][lane])],
                steps_done=done,
                seconds=seconds,
                tokens_per_second=tokens / max(seconds, 1e-9),
                traces=trainer.traces,
                final_shaping=None if shaping is None else shaping.means(),
            )
        )
    return out


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

    A group of one lane (`LaneTrainer` with the learning rate `cfg.lr`; batch t is drawn with
    `fold_in(key, t)`); `cfg.steps` must be a multiple of `cfg.eval_every`. Every `cfg.log_every`
    steps a record {step, loss, grad_norm, lr} goes to `history`; every `cfg.eval_every` steps,
    {step, val_loss, token_correlation} (the mean off-diagonal token correlation of the last
    layer's covariance X X^T / n, averaged over the evaluation batch,
    `sdeformer.metrics.mean_correlation`) goes to `evals`. `callback` receives each record, after
    the chunk of `cfg.eval_every` steps it belongs to. A non-finite loss or gradient norm (or a
    loss above the divergence limit) stops the run: it is returned with `diverged=True` and the
    step, never with NaNs in the numbers.
    """
    trainer = LaneTrainer(model, cfg, [cfg.lr], data_key=key, schedule=schedule)
    emitted = [0, 0]

    def on_chunk(state: dict, seconds: float) -> None:
        host = jax.tree.map(np.asarray, {k: state[k] for k in state if k != "params"})
        history, evals = lane_records(trainer, host, 0)
        for i, records in enumerate((history, evals)):
            for record in records[emitted[i] :]:
                callback(record)
            emitted[i] = len(records)

    state, timing = trainer.run(
        None, train_task, val_task, on_chunk=None if callback is None else on_chunk
    )
    return lane_results(trainer, state, timing["total_s"])[0]
