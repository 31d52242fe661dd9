"""`sdeformer train-edges`: the divergence edge of each model kind, located to within sqrt(2).

For every (kind, width, depth, seed) of a profile (`sdeformer.train.edge_study`): the coarse
learning-rate grid in ascending order until the first divergence, then probes that bisect the
edge (`sdeformer.train.edges`). Every run is saved as it finishes (`--out/units/*.json`) and
checkpointed while it trains; rerunning the same command resumes. The report
(`train_edges.json`, its table and figures) is written by `sdeformer.train.edge_report`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..results import ResultStore, provenance, write_json
from ..train.data import make_tasks
from ..train.edge_report import edge_report, report_table, save_edge_figures
from ..train.edge_study import EDGE_PROFILES, Cell, EdgeProfile, planned_flops
from ..train.edges import locate_edge
from ..train.group import GroupTrainer
from ._training import kind_list
from ._training import run_group_with_checkpoints as run_group_with_checkpoints
from .checkpoint import remove_checkpoint
from .common import non_negative_int, positive_int, progress


def _add_train_edges(sub) -> None:
    parser = sub.add_parser(
        "train-edges",
        help="training stability: each model kind's divergence edge (largest lr without "
        "divergence) per width, depth and seed, located to within sqrt(2)",
        description=(
            "Train the coarse learning-rate grid of each (kind, width, depth, seed) of a "
            "profile in ascending order until the first divergence, then bisect the edge to "
            "within the profile's factor. Report per (kind, width, depth): the largest lr at "
            "which no seed diverged, the per-seed edges, the best loss with intervals and "
            "paired differences against shaped (docs/training.md, the second study). Each run "
            "is saved as it finishes: rerun the same command to resume."
        ),
    )
    parser.add_argument(
        "--profile", choices=tuple(EDGE_PROFILES), default="cpu", help="(default: cpu)"
    )
    parser.add_argument("--kinds", type=kind_list, default=None, help="override the kinds")
    parser.add_argument("--seeds", type=positive_int, default=None, help="override the seeds")
    parser.add_argument("--steps", type=positive_int, default=None, help="override the steps")
    parser.add_argument(
        "--max-runs",
        type=non_negative_int,
        default=None,
        help="stop after training this many runs (the rest resume on the next call; 0: only "
        "write the report of the runs done)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=2,
        help="chunks (of eval-every steps) between checkpoints (default: 2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    parser.add_argument("--out", default=None, help="output directory (default: results/...)")
    parser.add_argument("--overwrite", action="store_true", help="discard saved results")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=train_edges_command)


def edge_profile(args: argparse.Namespace) -> EdgeProfile:
    """The profile named by `--profile`, with the fields the other flags override."""
    profile = EDGE_PROFILES[args.profile]
    changes = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in (("kinds", args.kinds), ("seeds", args.seeds), ("steps", args.steps))
        if value is not None
    }
    if "steps" in changes and changes["steps"] % profile.eval_every:
        raise ValueError(
            f"--steps {changes['steps']} is not a multiple of the profile's eval_every="
            f"{profile.eval_every}; pass a multiple of {profile.eval_every}"
        )
    return profile.replace(**changes) if changes else profile


def train_edges_command(args: argparse.Namespace) -> int:
    """Run `sdeformer train-edges` with the parsed `args`; returns the exit status (0)."""
    profile = edge_profile(args)
    out = Path(args.out or f"results/train_edges_{profile.name}")
    train_task, val_task, info = make_tasks("stdlib", profile.seq_len, max_bytes=profile.max_bytes)
    settings = {"profile": profile.settings(), "data": info, "first_seed": args.seed}
    store = ResultStore(out, "train-edges", settings, overwrite=args.overwrite)
    cells = list(profile.cells(args.seed))
    started = time.perf_counter()
    runner = _CellRunner(args, profile, store, (train_task, val_task), out / "checkpoints")
    with progress(len(cells), "train-edges", args.no_progress, "cells") as bar:
        for cell in cells:
            bar.set_postfix_str(cell.id)
            if not runner.run(cell):
                break
            bar.update(1)
    elapsed = time.perf_counter() - started
    runs = list(store.load_all().values())
    report = edge_report(profile, runs, cells)
    report.update(
        command="train-edges",
        provenance=provenance(),
        settings=settings,
        seconds_this_call=elapsed,
        runs_trained_this_call=runner.trained,
        planned_flops_upper_bound=planned_flops(profile, train_task.vocab),
    )
    report["figures"] = [str(p) for p in save_edge_figures(report, out)]
    path = write_json(out / "train_edges.json", report)
    table = report_table(report)
    (out / "train_edges.md").write_text(table + "\n")
    if args.json:
        print(json.dumps(report))
        return 0
    print(table)
    label = "complete" if report["complete"] else "PARTIAL"
    print(
        f"\n{report['cells_done']}/{report['cells_total']} cells done ({label}); "
        f"{runner.trained} runs trained and {runner.reused} reused this call, {elapsed:.0f} s"
    )
    print(f"results written to {path}")
    return 0


class _CellRunner:
    """Trains the grid and the probes of one cell, reusing saved runs; counts runs."""

    def __init__(self, args, profile: EdgeProfile, store: ResultStore, tasks, ckpt_dir: Path):
        self.args, self.profile, self.store = args, profile, store
        self.tasks, self.ckpt_dir = tasks, ckpt_dir
        self.trained = self.reused = 0

    def _budget_left(self) -> bool:
        return self.args.max_runs is None or self.trained < self.args.max_runs

    def _run(self, cell: Cell, lr: float, role: str) -> dict | None:
        name = cell.unit_id(lr)
        if self.store.has(name):
            self.reused += 1
            return self.store.load(name)
        if not self._budget_left():
            return None
        train_task, val_task = self.tasks
        spec = self.profile.model_spec(cell.width, cell.depth, train_task.vocab)
        trainer = GroupTrainer(
            spec, cell.kind, self.profile.train_config(), [lr], cell.seed, keys=cell.keys()
        )
        trainer.id = name  # the checkpoint file is per run
        state, timing, resumed = run_group_with_checkpoints(
            trainer, train_task, val_task, self.ckpt_dir, every=self.args.checkpoint_every,
            progress=not self.args.no_progress,
        )  # fmt: skip
        (record,) = trainer.results(state, timing)
        record.update(
            id=name,
            cell=cell.id,
            width=cell.width,
            role=role,
            resumed_at_step=resumed,
            wall_s=timing["total_s"],
            tokens_trained=record["steps_done"] * trainer.tokens_per_step(),
        )
        self.store.save(name, record)
        remove_checkpoint(self.ckpt_dir, trainer)
        self.trained += 1
        return record

    def run(self, cell: Cell) -> bool:
        """Train what the cell still needs; False when `--max-runs` stopped it."""

        def one(lr: float, role: str) -> bool | None:
            record = self._run(cell, lr, role)
            return None if record is None else bool(record["diverged"])

        return locate_edge(self.profile.grid, self.profile.edge_factor, one)[1]
