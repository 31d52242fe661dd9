"""`sdeformer train` and `sdeformer train-sweep`: shaped vs standard language models."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..config import ShapedConfig
from .common import (
    CONFIG_HELP,
    add_run_arguments,
    markdown_table,
    positive_int,
    progress,
)

# --------------------------------------------------------------------------- train, train-sweep

_TRAIN_CONFIG_FIELDS = (
    "tau0", "gamma", "c_plus", "c_minus", "heads", "key_width", "key_ratio", "mlp_ratio",
    "out_proj",
)  # fmt: skip


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Data, model and optimiser options shared by `train` and `train-sweep`."""
    from ..train.data import DATASETS
    from ..train.lm import POSITIONS
    from ..train.spec import LR_SCHEDULES, OPTIMIZERS

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
    defaults = ShapedConfig()
    for name in _TRAIN_CONFIG_FIELDS:
        flag = "--" + name.replace("_", "-")
        help_text = f"shaped model: {CONFIG_HELP[name]} (default: {getattr(defaults, name)})"
        if name == "out_proj":
            model.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif name in ("heads", "key_width"):
            model.add_argument(flag, type=int, default=getattr(defaults, name), help=help_text)
        else:
            model.add_argument(flag, type=float, default=getattr(defaults, name), help=help_text)
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


def _train_setup(args: argparse.Namespace):
    """(ModelSpec, TrainConfig, train task, val task, data summary) of the parsed options."""
    from ..train.data import make_tasks
    from ..train.loop import TrainConfig
    from ..train.sweep import ModelSpec

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
    values = {name: getattr(args, name) for name in _TRAIN_CONFIG_FIELDS}
    if values["out_proj"] is None:
        values["out_proj"] = False
    config = ShapedConfig(**values)
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


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: pass comma-separated numbers") from err
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: pass positive learning rates")
    return values


def _kind_list(text: str) -> list[str]:
    from ..train.loop import MODEL_KINDS

    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for kind in kinds:
        if kind not in MODEL_KINDS:
            raise argparse.ArgumentTypeError(
                f"unknown model kind {kind!r}; choose from {','.join(MODEL_KINDS)}"
            )
    return kinds


def _add_train(sub) -> None:
    from ..train.loop import MODEL_KINDS

    parser = sub.add_parser(
        "train",
        help="train one causal language model (shaped or Pre-LN) and report its losses",
        description=(
            "Train one causal language model with optax and log the training loss, gradient "
            "norm, validation loss and the last layer's token correlation. Model kinds: "
            + ", ".join(MODEL_KINDS)
            + " (shaped-recover anneals the shaping away, shaped-learn trains it; see "
            "docs/training.md). A run whose loss turns NaN/Inf (or exceeds 3 ln(vocab)) stops "
            "and is reported as diverged. A checkpoint is written every --checkpoint-every "
            "evaluations (and on Ctrl-C): rerun the same command to resume mid-run. Writes "
            "train.json and the figure train.png."
        ),
    )
    parser.add_argument("--kind", choices=tuple(MODEL_KINDS), default="shaped")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (default: 0.01)")
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=1,
        help="evaluations (--eval-every steps) between checkpoints (default: 1)",
    )
    parser.add_argument(
        "--stop-after",
        type=positive_int,
        default=None,
        help="stop after this many steps, writing a checkpoint (rerun to resume)",
    )
    _add_train_arguments(parser)
    add_run_arguments(parser, "results/train")
    parser.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    """Run `sdeformer train` with the parsed `args`; returns the exit status (0)."""
    from .. import plot
    from ..results import ResultStore, write_json
    from ..train.figures import run_figure
    from ..train.group import GroupTrainer
    from .checkpoint import remove_checkpoint
    from .train_study import run_group_with_checkpoints

    spec, cfg, train_task, val_task, info = _train_setup(args)
    settings = {
        "kind": args.kind,
        "model": spec.to_dict(),
        "train": cfg.to_dict(),
        "data": info,
        "seed": args.seed,
    }
    out = Path(args.out)
    store = ResultStore(out, "train", settings, overwrite=args.overwrite)
    if store.has("run"):
        result = store.load("run")
    else:
        trainer = GroupTrainer(spec, args.kind, cfg, [cfg.lr], args.seed)
        with progress(1, f"train {args.kind}", args.no_progress) as bar:
            state, timing, resumed = run_group_with_checkpoints(
                trainer,
                train_task,
                val_task,
                out / "checkpoints",
                every=args.checkpoint_every,
                stop_after=args.stop_after,
                progress=not args.no_progress,
            )
            bar.update(1)
        if int(state["step"]) < cfg.steps and bool(state["alive"].any()):
            print(
                f"stopped at step {int(state['step'])} (--stop-after); checkpoint written to "
                f"{out / 'checkpoints'}: rerun the same command to resume"
            )
            return 0
        result = trainer.results(state, timing)[0]
        result["resumed_at_step"] = resumed
        store.save("run", result)
        remove_checkpoint(out / "checkpoints", trainer)
    figure = plot.save_figure(
        run_figure(result, title=f"{args.kind}, lr={cfg.lr:g}"), out / "train.png"
    )
    report = {"command": "train", "settings": settings, "result": result, "figure": str(figure)}
    report_path = write_json(out / "train.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    block = result["loss_block"]
    rows = []
    for e in result["evals"]:
        done = e["step"] // block
        train_loss = (
            result["loss_blocks"][done - 1] if 0 < done <= len(result["loss_blocks"]) else ""
        )
        rows.append([e["step"], train_loss, e["val_loss"], e["token_correlation"]])
    print(
        markdown_table(
            ["step", "train loss (last 10 steps)", "val loss", "token corr (last layer)"], rows
        )
    )
    status = f"DIVERGED at step {result['diverged_at']}" if result["diverged"] else "finished"
    reason = f" ({result['divergence_reason']})" if result["diverged"] else ""
    tps = result["tokens_per_second"]
    print(
        f"\n{args.kind}, lr={cfg.lr:g}: {status}{reason}; final val loss "
        f"{result['final_val_loss']}; "
        + ("" if tps is None else f"{tps:.0f} tokens/s; ")
        + f"data {info['source']}"
    )
    print(f"results written to {report_path} and {figure}")
    return 0


def _add_train_sweep(sub) -> None:
    from ..train.loop import MODEL_KINDS

    parser = sub.add_parser(
        "train-sweep",
        help="learning-rate sweep: final validation loss of shaped vs Pre-LN Transformers",
        description=(
            "Train every (model kind, learning rate, seed) and compare the final validation "
            "losses; each finished run is saved at once, so an interrupted sweep resumes. "
            "Writes a JSON report and a figure of validation loss against learning rate."
        ),
    )
    parser.add_argument(
        "--kinds",
        type=_kind_list,
        default=list(MODEL_KINDS),
        help=f"comma-separated model kinds (default: {','.join(MODEL_KINDS)})",
    )
    parser.add_argument(
        "--lrs",
        type=_float_list,
        default=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        help="comma-separated peak learning rates (default: 0.003,0.01,0.03,0.1,0.3,1)",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=1, help="seeds per setting: 0..k-1 (default: 1)"
    )
    _add_train_arguments(parser)
    add_run_arguments(parser, "results/train_sweep")
    parser.set_defaults(func=train_sweep_command)


def train_sweep_command(args: argparse.Namespace) -> int:
    """Run `sdeformer train-sweep` with the parsed `args`; returns the exit status (0)."""
    from .. import plot
    from ..results import ResultStore, write_json
    from ..train.sweep import best_lr, run_sweep, summarise

    spec, cfg, train_task, val_task, info = _train_setup(args)
    seeds = [args.seed + i for i in range(args.seeds)]
    settings = {
        "kinds": args.kinds,
        "lrs": args.lrs,
        "seeds": seeds,
        "model": spec.to_dict(),
        "train": cfg.to_dict(),
        "data": info,
    }
    out = Path(args.out)
    store = ResultStore(out, "train-sweep", settings, overwrite=args.overwrite)
    total = len(args.kinds) * len(args.lrs) * len(seeds)
    started = time.perf_counter()
    with progress(total, "train-sweep", args.no_progress) as bar:

        def on_run(name, result, cached):
            bar.set_postfix_str(name)
            bar.update(1)

        results = run_sweep(
            spec,
            cfg,
            train_task,
            val_task,
            kinds=args.kinds,
            lrs=args.lrs,
            seeds=seeds,
            store=store,
            on_run=on_run,
        )
    elapsed = time.perf_counter() - started
    rows = summarise(results)
    figure = plot.save_figure(plot.train_sweep_figure(rows), out / "train_sweep.png")
    best = best_lr(rows)
    report = {
        "command": "train-sweep",
        "settings": settings,
        "seconds": elapsed,
        "rows": rows,
        "best_lr": best,
        "figure": str(figure),
    }
    report_path = write_json(out / "train_sweep.json", report)
    if args.json:
        print(json.dumps(report))
        return 0

    def show(value):
        return "diverged" if value is None else value

    table = [
        [
            r["kind"],
            r["lr"],
            show(r["val_loss_mean"]),
            show(r["val_loss_min"]),
            show(r["val_loss_max"]),
            f"{r['diverged']}/{r['seeds']}",
            show(r["token_correlation"]),
        ]
        for r in rows
    ]
    print(
        markdown_table(["model", "lr", "val loss", "min", "max", "diverged", "token corr"], table)
    )
    for kind, value in best.items():
        print(
            f"best lr for {kind}: "
            + (
                "none (all diverged)"
                if value is None
                else f"{value[0]:g} (val loss {value[1]:.4g})"
            )
        )
    print(f"\n{total} runs ({info['source']}, {cfg.steps} steps each): {elapsed:.1f} s")
    print(f"results written to {report_path} and {figure}")
    return 0
