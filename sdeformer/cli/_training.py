"""What the training commands (`train`, `train-sweep`, `train-study`) share.

The data, model and optimiser options, the list parsers of their flags, and the run of one group
of learning rates with checkpoints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..train.data import DATASETS, make_tasks
from ..train.group import GroupTrainer
from ..train.lm import POSITIONS
from ..train.spec import LR_SCHEDULES, MODEL_KINDS, OPTIMIZERS, ModelSpec, TrainConfig
from .checkpoint import load_checkpoint, save_checkpoint
from .common import add_config_arguments, config_from_args, positive_int

TRAIN_CONFIG_FIELDS = (
    "tau0", "gamma", "c_plus", "c_minus", "heads", "key_width", "key_ratio", "mlp_ratio",
    "out_proj",
)  # fmt: skip
"""The ShapedConfig fields the training commands have options for."""


def comma_list(text: str, convert, *, kind: str, valid, requirement: str) -> list:
    """The non-empty items of a comma-separated list, each converted with `convert`.

    An argparse error names the value: "pass comma-separated `kind`" when an item does not
    convert, "pass `requirement`" when the list is empty or an item fails `valid`.
    """
    try:
        values = [convert(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: pass comma-separated {kind}") from err
    if not values or not all(valid(v) for v in values):  # `v > 0` also refuses NaN
        raise argparse.ArgumentTypeError(f"{text!r}: pass {requirement}")
    return values


def lr_list(text: str) -> list[float]:
    """Comma-separated positive learning rates."""
    return comma_list(
        text, float, kind="numbers", valid=lambda v: v > 0, requirement="positive learning rates"
    )


def depth_list(text: str) -> list[int]:
    """Comma-separated depths >= 1."""
    return comma_list(text, int, kind="integers", valid=lambda v: v >= 1, requirement="depths >= 1")


def kind_list(text: str) -> list[str]:
    """Comma-separated model kinds of `MODEL_KINDS`."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for kind in kinds:
        if kind not in MODEL_KINDS:
            raise argparse.ArgumentTypeError(
                f"unknown model kind {kind!r}; choose from {','.join(MODEL_KINDS)}"
            )
    return kinds


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Data, model and optimiser options shared by `train` and `train-sweep`."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        choices=DATASETS,
        default="stdlib",
        help="stdlib: the Python standard library's sources as bytes (split by file); file: "
        "--text-file; copy, recall: synthetic tasks (default: stdlib)",
    )
    data.add_argument("--text-file", default=None, help="text file for --data file")
    data.add_argument(
        "--max-bytes",
        type=positive_int,
        default=2_000_000,
        help="size cap of the byte corpus (default: 2000000)",
    )
    data.add_argument(
        "--val-fraction", type=float, default=0.1, help="validation share (default: 0.1)"
    )
    data.add_argument(
        "--vocab", type=positive_int, default=None, help="vocabulary of the synthetic tasks"
    )
    model = parser.add_argument_group("language model")
    model.add_argument("--width", type=positive_int, default=64, help="width n (default: 64)")
    model.add_argument("--depth", type=positive_int, default=4, help="layers (default: 4)")
    model.add_argument(
        "--seq-len", type=positive_int, default=64, help="tokens per sequence (default: 64)"
    )
    model.add_argument(
        "--positions", choices=POSITIONS, default="sinusoidal", help="(default: sinusoidal)"
    )
    model.add_argument(
        "--recover-start",
        type=float,
        default=0.0,
        help="shaped-recover: fraction of the run where the annealing starts (default: 0)",
    )
    model.add_argument(
        "--recover-end",
        type=float,
        default=0.5,
        help="shaped-recover: fraction of the run where the model is standard (default: 0.5)",
    )
    add_config_arguments(
        parser,
        fields=TRAIN_CONFIG_FIELDS,
        group=model,
        help_prefix="shaped model: ",
        unset_booleans=True,
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", type=positive_int, default=250, help="(default: 250)")
    opt.add_argument("--batch-size", type=positive_int, default=16, help="(default: 16)")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="(default: adamw)")
    opt.add_argument("--schedule", choices=LR_SCHEDULES, default="cosine", help="(default: cosine)")
    opt.add_argument("--warmup", type=int, default=25, help="warm-up steps (default: 25)")
    opt.add_argument(
        "--clip", type=float, default=1.0, help="global gradient-norm clip, 0: none (default: 1)"
    )
    opt.add_argument("--weight-decay", type=float, default=0.0, help="(default: 0)")
    opt.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    opt.add_argument(
        "--eval-every", type=positive_int, default=50, help="steps between evaluations"
    )
    opt.add_argument(
        "--eval-batch-size", type=positive_int, default=64, help="validation sequences"
    )


def train_setup(args: argparse.Namespace):
    """(ModelSpec, TrainConfig, train task, val task, data summary) of the parsed options."""
    if args.float64:
        raise ValueError("--float64: training runs in float32 only; drop --float64")
    if args.steps % args.eval_every:
        raise ValueError(
            f"--steps {args.steps} is not a multiple of --eval-every {args.eval_every}; pass "
            "an --eval-every that divides --steps"
        )
    if not 0.0 <= args.recover_start < args.recover_end <= 1.0:  # also refuses NaN
        raise ValueError(
            f"--recover-start {args.recover_start} --recover-end {args.recover_end}: need "
            "0 <= start < end <= 1 (fractions of the run)"
        )
    config = config_from_args(args, TRAIN_CONFIG_FIELDS)
    train_task, val_task, info = make_tasks(
        args.data,
        args.seq_len,
        max_bytes=args.max_bytes,
        val_fraction=args.val_fraction,
        path=args.text_file,
        vocab=args.vocab,
    )
    spec = ModelSpec(
        width=args.width,
        depth=args.depth,
        vocab=train_task.vocab,
        seq_len=args.seq_len,
        positions=args.positions,
        config=config,
        recover_start=args.recover_start,
        recover_end=args.recover_end,
    )
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=getattr(args, "lr", 1e-2),
        schedule=args.schedule,
        warmup=args.warmup,
        clip=args.clip or None,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        eval_every=args.eval_every,
        eval_batch_size=args.eval_batch_size,
    )
    return spec, cfg, train_task, val_task, info


def run_group_with_checkpoints(
    trainer: GroupTrainer,
    train_task,
    val_task,
    directory: Path,
    *,
    every: int = 1,
    stop_after: int | None = None,
    progress: bool = False,
):
    """Train a group from its checkpoint in `directory`: (state, timing, resumed_at).

    Writes a checkpoint every `every` chunks (and when stopped by `stop_after` or Ctrl-C /
    SIGTERM). `progress`: report the training steps on stderr.
    """
    state = load_checkpoint(directory, trainer)
    resumed_at = None if state is None else int(state["step"])
    count = [0]
    latest = [state]

    def on_chunk(new_state, seconds):
        latest[0] = new_state
        count[0] += 1
        if count[0] % every == 0 and int(new_state["step"]) < trainer.cfg.steps:
            save_checkpoint(directory, trainer, new_state)

    try:
        state, timing = trainer.run(
            state,
            train_task,
            val_task,
            on_chunk=on_chunk,
            stop_after=stop_after,
            progress=progress,
        )
    except KeyboardInterrupt:
        if latest[0] is not None:
            save_checkpoint(directory, trainer, latest[0])
        raise
    if int(state["step"]) < trainer.cfg.steps and bool(state["alive"].any()):
        save_checkpoint(directory, trainer, state)
    return state, timing, resumed_at
