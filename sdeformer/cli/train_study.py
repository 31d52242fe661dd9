"""`sdeformer train-study`: whether shaping keeps training stable at large learning rates.

Is training stable at larger learning rates with shaping, at depth?

Kinds x depths x learning rates x seeds (profiles in `sdeformer.train.study`), one result unit
per run, checkpoints inside each group, the stability criterion of `sdeformer.train.criterion`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .. import plot
from ..results import ResultStore, write_json
from ..train import criterion, figures
from ..train.criterion import study_table, summarise_study
from ..train.data import make_tasks
from ..train.group import GroupTrainer
from ..train.study import PROFILES, groups
from ._training import depth_list, kind_list, lr_list
from ._training import run_group_with_checkpoints as run_group_with_checkpoints
from .checkpoint import remove_checkpoint
from .common import non_negative_int, positive_int, progress


def _add_train_study(sub) -> None:
    parser = sub.add_parser(
        "train-study",
        help="training stability: largest stable lr of shaped vs standard models across depth",
        description=(
            "Train every (model kind, depth, learning rate, seed) of a profile and report, per "
            "kind and depth, the largest stable learning rate (criterion fixed in "
            "docs/training.md), the best validation loss with a seed interval, the last "
            "layer's token correlation at init and at the end, and tokens/s. Each run is saved "
            "as it finishes and each group of runs is checkpointed while it trains: rerun the "
            "same command to resume."
        ),
    )
    parser.add_argument("--profile", choices=tuple(PROFILES), default="cpu", help="(default: cpu)")
    parser.add_argument("--kinds", type=kind_list, default=None, help="override the kinds")
    parser.add_argument("--depths", type=depth_list, default=None, help="override the depths")
    parser.add_argument("--lrs", type=lr_list, default=None, help="override the lr grid")
    parser.add_argument("--seeds", type=positive_int, default=None, help="override the seeds")
    parser.add_argument("--steps", type=positive_int, default=None, help="override the steps")
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=2,
        help="chunks (of eval-every steps) between checkpoints (default: 2)",
    )
    parser.add_argument(
        "--max-groups",
        type=non_negative_int,
        default=None,
        help="stop after training this many groups (the rest resume on the next call; 0: only "
        "write the report of the runs done)",
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    parser.add_argument("--out", default=None, help="output directory (default: results/...)")
    parser.add_argument("--overwrite", action="store_true", help="discard saved results")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=train_study_command)


def study_profile(args: argparse.Namespace):
    """The `StudyProfile` named by `--profile`, with the fields the other flags override."""
    profile = PROFILES[args.profile]
    changes = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in (
            ("kinds", args.kinds),
            ("depths", args.depths),
            ("lrs", args.lrs),
            ("seeds", args.seeds),
            ("steps", args.steps),
        )
        if value is not None
    }
    return profile.replace(**changes) if changes else profile


def train_study_command(args: argparse.Namespace) -> int:
    """Run `sdeformer train-study` with the parsed `args`; returns the exit status (0)."""
    profile = study_profile(args)
    out = Path(args.out or f"results/train_study_{profile.name}")
    train_task, val_task, info = make_tasks("stdlib", profile.seq_len, max_bytes=profile.max_bytes)
    settings = {"profile": profile.settings(), "data": info, "first_seed": args.seed}
    store = ResultStore(out, "train-study", settings, overwrite=args.overwrite)
    all_groups = list(groups(profile, args.seed))
    started = time.perf_counter()
    _train_groups(args, profile, all_groups, store, train_task, val_task, out / "checkpoints")
    elapsed = time.perf_counter() - started
    runs = list(store.load_all().values())
    total = len(all_groups) * len(profile.lrs)
    summary = summarise_study(runs)
    complete = len(runs) == total
    label = "" if complete else f" (PARTIAL: {len(runs)}/{total} runs)"
    fig1 = plot.save_figure(
        figures.stability_figure(
            summary["cells"], title=f"Largest stable lr, profile {profile.name}{label}"
        ),
        out / "train_study_stability.png",
    )
    fig2 = plot.save_figure(
        figures.loss_vs_lr_figure(
            summary["lr_rows"], title=f"Final validation loss, profile {profile.name}{label}"
        ),
        out / "train_study_loss.png",
    )
    report = {
        "command": "train-study",
        "settings": settings,
        "complete": complete,
        "runs_done": len(runs),
        "runs_total": total,
        "seconds_this_call": elapsed,
        "criterion": criterion_text(),
        "cells": summary["cells"],
        "lr_rows": summary["lr_rows"],
        "vs_shaped": summary["vs_shaped"],
        "unstable_runs": [
            {k: r[k] for k in ("id", "unstable_reasons", "spike_ratio", "final_val_loss")}
            for r in summary["runs"]
            if r["unstable"]
        ],
        "figures": [str(fig1), str(fig2)],
    }
    report_path = write_json(out / "train_study.json", report)
    table = study_table(summary["cells"])
    (out / "train_study.md").write_text(table + "\n")
    if args.json:
        print(json.dumps(report))
        return 0
    print(table)
    print(f"\n{len(runs)}/{total} runs done{label}; {elapsed:.0f} s this call")
    print(f"results written to {report_path}, {fig1}, {fig2}")
    return 0


def _train_groups(args, profile, all_groups, store, train_task, val_task, ckpt_dir) -> None:
    """Train every group whose runs are not in the store yet (at most --max-groups of them)."""
    cfg = profile.train_config()
    trained = 0
    with progress(len(all_groups), "train-study", args.no_progress, "groups") as bar:
        for group in all_groups:
            names = group.run_ids(profile.lrs)
            if all(store.has(name) for name in names):
                bar.update(1)
                continue
            if args.max_groups is not None and trained >= args.max_groups:
                break
            bar.set_postfix_str(group.id)
            spec = profile.model_spec(group.depth, train_task.vocab)
            trainer = GroupTrainer(spec, group.kind, cfg, profile.lrs, group.seed)
            state, timing, resumed = run_group_with_checkpoints(
                trainer, train_task, val_task, ckpt_dir, every=args.checkpoint_every,
                progress=not args.no_progress,
            )  # fmt: skip
            for name, result in zip(names, trainer.results(state, timing), strict=True):
                result["resumed_at_step"] = resumed
                store.save(name, result)
            remove_checkpoint(ckpt_dir, trainer)
            trained += 1
            bar.update(1)


def criterion_text() -> str:
    """The stability criterion of `sdeformer.train.criterion` in words, for the report."""
    return (
        "unstable if diverged (non-finite, or loss above 3 ln(vocab)); or a 10-step mean of the "
        f"training loss above {criterion.SPIKE_FACTOR} x the lowest earlier 10-step mean; or a "
        f"final validation loss above (1 + {criterion.MARGIN}) x the best of its kind and depth "
        "(lowest over lrs of the median over seeds, among runs passing the first two)"
    )
