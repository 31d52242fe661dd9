"""`sdeformer train` and `sdeformer train-sweep`: shaped vs standard language models."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .. import plot
from ..results import ResultStore, write_json
from ..train.figures import run_figure
from ..train.group import GroupTrainer
from ..train.lr_sweep import best_lr, run_sweep, summarise
from ..train.spec import MODEL_KINDS
from ._training import (
    add_train_arguments,
    kind_list,
    lr_list,
    run_group_with_checkpoints,
    train_setup,
)
from .checkpoint import remove_checkpoint
from .common import add_run_arguments, markdown_table, positive_int, progress


def _add_train(sub) -> None:
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
    add_train_arguments(parser)
    add_run_arguments(parser, "results/train")
    parser.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    """Run `sdeformer train` with the parsed `args`; returns the exit status (0)."""
    spec, cfg, train_task, val_task, info = train_setup(args)
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
        type=kind_list,
        default=list(MODEL_KINDS),
        help=f"comma-separated model kinds (default: {','.join(MODEL_KINDS)})",
    )
    parser.add_argument(
        "--lrs",
        type=lr_list,
        default=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        help="comma-separated peak learning rates (default: 0.003,0.01,0.03,0.1,0.3,1)",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=1, help="seeds per setting: 0..k-1 (default: 1)"
    )
    add_train_arguments(parser)
    add_run_arguments(parser, "results/train_sweep")
    parser.set_defaults(func=train_sweep_command)


def train_sweep_command(args: argparse.Namespace) -> int:
    """Run `sdeformer train-sweep` with the parsed `args`; returns the exit status (0)."""
    spec, cfg, train_task, val_task, info = train_setup(args)
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
