"""Training throughput: tokens per second of one run (a group of one lane) for each model kind, at
two sizes, and of the study's group program (every learning rate of the grid trained at once,
`sdeformer.train.group`), on the default JAX device (CPU here; GPU when present).

Run: `python -m benchmarks.bench_train` (add `--quick` for a smoke run). Prints a markdown table
and writes `benchmarks/results/train.json` with the machine (platform, CPU count, jax device).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import jax.random as jr

from sdeformer.results import write_json
from sdeformer.train import MODEL_KINDS, LaneTrainer, ModelSpec, TrainConfig
from sdeformer.train.data import make_tasks
from sdeformer.train.group import GroupTrainer
from sdeformer.train.study import PROFILES

from ._common import machine
from ._markdown import columns, summary_table
from ._ratios import run_line

SIZES = {
    "small": dict(width=64, depth=4, seq_len=64),
    "medium": dict(width=128, depth=8, seq_len=128),
}


def bench(kind: str, size: dict, batch_size: int, steps: int, train_task) -> dict:
    """Tokens/s of one run (a group of one lane): a chunk of `steps` steps, compiled, then timed."""
    spec = ModelSpec(vocab=256, **size)
    model, schedule = spec.build(kind, key=jr.key(0))
    cfg = TrainConfig(steps=2 * steps, batch_size=batch_size, eval_every=steps)
    trainer = LaneTrainer(model, cfg, [cfg.lr], data_key=jr.key(0), schedule=schedule)
    _, timing = trainer.run(None, train_task, train_task)
    tokens = timing["steady_steps"] * batch_size * size["seq_len"]
    return {
        "kind": kind,
        **size,
        "batch_size": batch_size,
        "steps": timing["steady_steps"],
        "compile_and_first_step_s": timing["first_chunk_s"],
        "step_ms": 1e3 * timing["steady_s"] / timing["steady_steps"],
        "tokens_per_second": tokens / timing["steady_s"],
    }


def bench_group(kind: str, depth: int, profile, chunks: int, train_task) -> dict:
    """Tokens/s (all lanes) of the study's group program at `profile`'s sizes and lr grid."""
    cfg = dataclasses.replace(profile.train_config(), steps=profile.eval_every * (chunks + 1))
    spec = profile.model_spec(depth, 256)
    trainer = GroupTrainer(spec, kind, cfg, profile.lrs, 0)
    _, timing = trainer.run(None, train_task, train_task)
    tokens = trainer.lanes * trainer.tokens_per_step() * timing["steady_steps"]
    return {
        "kind": kind,
        "size": f"group:{profile.name}",
        "width": profile.width,
        "depth": depth,
        "seq_len": profile.seq_len,
        "batch_size": profile.batch_size,
        "lanes": trainer.lanes,
        "steps": timing["steady_steps"],
        "compile_and_first_step_s": timing["first_chunk_s"],
        "step_ms": 1e3 * timing["steady_s"] / timing["steady_steps"],
        "tokens_per_second": tokens / timing["steady_s"],
    }


def summary(train: dict) -> list[str]:
    """The `bench_train` table (compile time, step time and tokens/s per setting), from its JSON;
    printed by the benchmark and by `run_all`."""
    return [
        "\n**Training step** (`bench_train`, AdamW, byte-level LM):",
        run_line(train, "train") + "\n",
        *summary_table(
            ["size", "kind", "width", "depth", "seq", "batch", "compile s", "step ms", "tokens/s"],
            columns(
                train["rows"],
                ["size", "kind", "width", "depth", "seq_len", "batch_size"]
                + ["compile_and_first_step_s", "step_ms", "tokens_per_second"],
            ),
        ),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per setting")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="small size only, 5 steps")
    parser.add_argument("--out", default="benchmarks/results/train.json")
    args = parser.parse_args(argv)
    sizes = {"small": SIZES["small"]} if args.quick else SIZES
    steps = 5 if args.quick else args.steps
    info = machine()
    rows = []

    def record(row: dict, label: str) -> None:
        rows.append(row)
        print(f"{label}: {row['tokens_per_second']:.0f} tokens/s", flush=True)
        # after every setting: a run stopped by a timeout keeps what it measured
        write_json(Path(args.out), {"benchmark": "train", "machine": info, "rows": rows})

    for size_name, size in sizes.items():
        train_task, _, _ = make_tasks("stdlib", size["seq_len"], max_bytes=500_000)
        for kind in MODEL_KINDS:
            row = {"size": size_name, **bench(kind, size, args.batch_size, steps, train_task)}
            record(row, f"{size_name} {kind}")
    profile = PROFILES["tiny" if args.quick else "cpu"]
    study_task, _, _ = make_tasks("stdlib", profile.seq_len, max_bytes=500_000)
    for depth in profile.depths[-1:] if args.quick else profile.depths:
        for kind in MODEL_KINDS:
            row = bench_group(kind, depth, profile, 1 if args.quick else 2, study_task)
            record(row, f"group d{depth} {kind}")
    print(f"\nmachine: {info['platform']}, {info['cpu_count']} CPUs, {info['device']}")
    print("\n".join(summary({"rows": rows})))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
