"""The cost estimate of an edge study (`sdeformer train-edges`), measured before it runs.

For each (width, depth) of the profile and each kind asked for (default: shaped and
gpt2-preln, the cheapest and the dearest layer), one run of one lane is compiled and trained for
`--chunks` chunks of the profile's `eval_every` steps; the steady tokens/s (after the compiled
first chunk) and the compile + first-chunk time are recorded. The estimate is

    seconds = sum over (width, depth) of kinds x seeds x runs_per_cell x tokens_per_run / (tok/s)
              + compilations x compile time

with runs_per_cell = grid + probes (the upper bound: every run trains all its steps) and a
central value of 6 full runs per cell (runs above the first divergence are not trained, and a
diverging run stops early). Flops per token are `sdeformer.train.edge_study.flops_per_token`.

Run: `python -m benchmarks.train_edges_cost [--profile cpu]`. Prints a table and writes
`benchmarks/results/train_edges_cost_<profile>.json` with the machine, load and commit.
"""

from __future__ import annotations

import argparse

from sdeformer.train.data import make_tasks
from sdeformer.train.edge_study import EDGE_PROFILES, Cell, flops_per_token
from sdeformer.train.group import GroupTrainer

from ._common import command_of, load_average, machine, markdown_table, write_results

CENTRAL_RUNS_PER_CELL = 6


def measure(profile, kind: str, width: int, depth: int, chunks: int, tasks) -> dict:
    """Steady tokens/s and compile + first-chunk seconds of one one-lane run.

    Seeds 0, 1, ... are tried until one does not diverge before the timed chunks (a shaped
    model at d/n = 1 can start above the divergence limit: its initial token variance is
    heavy-tailed across seeds); the seeds skipped are recorded.
    """
    train_task, val_task = tasks
    spec = profile.model_spec(width, depth, train_task.vocab)
    cfg = profile.train_config()
    cfg = type(cfg)(**{**cfg.to_dict(), "steps": cfg.eval_every * (chunks + 1)})
    skipped = []
    for seed in range(profile.seeds):
        cell = Cell(kind, width, depth, seed)
        trainer = GroupTrainer(spec, kind, cfg, [0.001], seed, keys=cell.keys())
        state, timing = trainer.run(None, train_task, val_task)
        if timing["steady_steps"]:
            break
        skipped.append({"seed": seed, "diverged_at": int(state["div_at"][0])})
    else:
        raise RuntimeError(f"{kind} n={width} d={depth}: every seed diverged at lr 0.001")
    tps = trainer.tokens_per_step() * timing["steady_steps"] / timing["steady_s"]
    per_token = flops_per_token(width, depth, profile.seq_len, train_task.vocab)
    return {
        "kind": kind,
        "width": width,
        "depth": depth,
        "seed": seed,
        "seeds_diverged_before_timing": skipped,
        "tokens_per_s": tps,
        "gflops_per_s": tps * per_token / 1e9,
        "flops_per_token": per_token,
        "compile_and_first_chunk_s": timing["first_chunk_s"],
    }


def estimate(profile, rows: list[dict]) -> dict:
    """Seconds of the whole study: upper bound and central value (see the module docstring)."""
    tokens = profile.tokens_per_run()
    per_cell = profile.grid_count + profile.probes
    upper = central = compile_s = 0.0
    for width in profile.widths:
        for depth in profile.depths(width):
            mine = [r for r in rows if r["width"] == width and r["depth"] == depth]
            slowest = min(r["tokens_per_s"] for r in mine)
            run_s = tokens / slowest
            cells = len(profile.kinds) * profile.seeds
            upper += cells * per_cell * run_s
            central += cells * CENTRAL_RUNS_PER_CELL * run_s
            compile_s += len(profile.kinds) * max(r["compile_and_first_chunk_s"] for r in mine)
    return {
        "upper_bound_s": upper + compile_s,
        "central_s": central + compile_s,
        "compile_s": compile_s,
        "runs_per_cell_upper": per_cell,
        "runs_per_cell_central": CENTRAL_RUNS_PER_CELL,
        "tokens_per_run": tokens,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=tuple(EDGE_PROFILES), default="cpu")
    parser.add_argument("--kinds", default="shaped,gpt2-preln")
    parser.add_argument("--chunks", type=int, default=2, help="timed chunks per size")
    args = parser.parse_args(argv)
    profile = EDGE_PROFILES[args.profile]
    train_task, val_task, _ = make_tasks("stdlib", profile.seq_len, max_bytes=profile.max_bytes)
    load_before = load_average()
    rows = []
    for width in profile.widths:
        for depth in profile.depths(width):
            for kind in args.kinds.split(","):
                rows.append(
                    measure(profile, kind, width, depth, args.chunks, (train_task, val_task))
                )
                print(rows[-1], flush=True)
    result = {
        "command": command_of("train_edges_cost", argv),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "profile": profile.settings(),
        "rows": rows,
        "estimate": estimate(profile, rows),
    }
    table = markdown_table(
        ["kind", "width", "depth", "tokens/s", "GFLOP/s", "compile s"],
        [
            [r["kind"], r["width"], r["depth"], f"{r['tokens_per_s']:.0f}",
             f"{r['gflops_per_s']:.2f}", f"{r['compile_and_first_chunk_s']:.1f}"]
            for r in rows
        ],
    )  # fmt: skip
    print(table)
    est = result["estimate"]
    print(
        f"\nestimate: {est['central_s'] / 3600:.2f} h central ({est['runs_per_cell_central']} "
        f"full runs per cell), {est['upper_bound_s'] / 3600:.2f} h upper bound "
        f"({est['runs_per_cell_upper']}), compilation {est['compile_s']:.0f} s; "
        f"load {load_before}"
    )
    print(f"written to {write_results(f'train_edges_cost_{profile.name}', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
