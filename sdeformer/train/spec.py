"""The settings of a training run: model kinds, `ModelSpec` (sizes), `TrainConfig` (optax).

The training engine (`sdeformer.train.group`) compiles one program per (`ModelSpec`, kind,
`TrainConfig` without its learning rate).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import optax

from ..config import ShapedConfig
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
    "shaped-ln": ("shaped-ln", "fixed"),
    "gpt2-preln": ("gpt2-preln", "fixed"),
    "postln": ("postln", "fixed"),
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


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Sizes and options of the language model of a run (the kind is chosen per run)."""

    width: int = 64
    depth: int = 4
    vocab: int = 256
    seq_len: int = 64
    positions: str = "sinusoidal"
    config: ShapedConfig = dataclasses.field(default_factory=ShapedConfig)
    recover_start: float = 0.0
    recover_end: float = 0.5

    def to_dict(self) -> dict:
        """The spec as a JSON-ready dict (its config included)."""
        out = dataclasses.asdict(self)
        out["config"] = self.config.to_dict()
        return out

    def build(self, kind: str, *, key) -> tuple[LanguageModel, ShapingSchedule]:
        """The model of kind `kind` initialised from `key`, and its shaping schedule."""
        arch, mode = kind_spec(kind)
        model = LanguageModel(
            arch,
            vocab=self.vocab,
            max_len=self.seq_len,
            width=self.width,
            depth=self.depth,
            config=self.config,
            positions=self.positions,
            key=key,
        )
        return model, ShapingSchedule(mode, self.recover_start, self.recover_end)
