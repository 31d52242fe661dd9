"""Tables of the committed CPU training study, read from its JSON, so the write-up cannot drift.

Run: `python -m benchmarks.train_study_report` (prints markdown). Reads
`docs/results/train_study_cpu.json` (the report of `sdeformer train-study --profile cpu`) and
`docs/results/train_study_cpu_runs.json` (one record per run); `--report` and `--runs` point
elsewhere. Only the standard library is used; nothing is trained.

It prints, as separate outcomes:

1. **Divergence** (rule 1 of the criterion alone): per (kind, depth, seed), the smallest
   learning rate of the grid whose run diverged, with the step, and the factor between Pre-LN's
   first-divergence lr and each other kind's, per seed.
2. **Loss quality** (rules 2 and 3): per (kind, depth), the criterion's reference loss (lowest
   median over seeds, among the runs that neither diverged nor spiked), and per seed why the
   runs between the largest stable lr and the first divergence failed (spike, or the margin
   with the loss's excess over the reference, in %).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ._markdown import summary_table

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "results" / "train_study_cpu.json"
RUNS = ROOT / "docs" / "results" / "train_study_cpu_runs.json"


def _lr(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"


def first_divergence(runs: list[dict]) -> dict[tuple[str, int, int], dict | None]:
    """(kind, depth, seed) -> the run with the smallest diverged lr, or None if none diverged."""
    out: dict[tuple[str, int, int], dict | None] = {}
    for run in sorted(runs, key=lambda r: r["lr"]):
        key = (run["kind"], run["depth"], run["seed"])
        out.setdefault(key, None)
        if run["diverged"] and out[key] is None:
            out[key] = run
    return out


def reference_losses(runs: list[dict], spike_factor: float = 1.5) -> dict[tuple[str, int], tuple]:
    """(kind, depth) -> (reference loss, its lr): the margin reference of the criterion.

    The lowest, over learning rates, of the median over seeds of the final validation loss of
    the runs that neither diverged nor spiked (`sdeformer.train.criterion.classify`).
    """
    by_lr: dict[tuple[str, int], dict[float, list[float]]] = {}
    for run in runs:
        if run["diverged"] or run["final_val_loss"] is None or run["spike_ratio"] > spike_factor:
            continue
        cell = by_lr.setdefault((run["kind"], run["depth"]), {})
        cell.setdefault(run["lr"], []).append(run["final_val_loss"])
    return {
        cell: min((statistics.median(v), lr) for lr, v in lrs.items())
        for cell, lrs in by_lr.items()
    }


def _source(summary: dict) -> str:
    profile = summary["settings"]["profile"]
    return (
        f"Source: `{REPORT.relative_to(ROOT)}` and `{RUNS.relative_to(ROOT)}` "
        f"(command `{summary['command']}`, profile `{profile['name']}`, "
        f"{summary['runs_done']}/{summary['runs_total']} runs, complete: {summary['complete']}; "
        f"width {profile['width']}, {profile['heads']} head(s), {profile['steps']} steps, "
        f"warm-up {profile['warmup']}, lr grid {', '.join(_lr(x) for x in profile['lrs'])}). "
        "The JSON records no commit."
    )


def _divergence(profile: dict, runs: list[dict], seeds: list[int]) -> list[str]:
    """Outcome 1: the smallest diverged lr per (kind, depth, seed), the factor to Pre-LN's."""
    by_id = {(r["kind"], r["depth"], r["seed"], r["lr"]): r for r in runs}
    first = first_divergence(runs)
    monotone = all(
        by_id[(k, d, s, lr)]["diverged"]
        for (k, d, s), run in first.items()
        if run is not None
        for lr in profile["lrs"]
        if lr > run["lr"]
    )
    parts = [
        "**Divergence alone** (rule 1: non-finite, or loss above 3 ln 256). Smallest diverged lr "
        "per seed (step of the divergence); every larger lr of the grid also diverged: "
        + ("yes." if monotone else "NO (check the runs)."),
        "",
    ]
    headers = ["depth", "kind"] + [f"seed {s} lr (step)" for s in seeds]
    headers += ["Pre-LN's first-divergence lr / this kind's, per seed"]
    rows = []
    for depth in profile["depths"]:
        for kind in profile["kinds"]:
            row = [str(depth), kind]
            ratios = []
            for seed in seeds:
                run = first[(kind, depth, seed)]
                row.append("none" if run is None else f"{_lr(run['lr'])} ({run['diverged_at']})")
                pre = first.get(("preln", depth, seed))
                if run is not None and pre is not None:
                    ratios.append(f"{pre['lr'] / run['lr']:.3g}")
                else:
                    ratios.append("-")
            row.append(", ".join(ratios))
            rows.append(row)
    return parts + ["\n".join(summary_table(headers, rows)), ""]


def _failures(runs_at: dict, lrs: list[float], top, stop, ref) -> str:
    """One seed's cell: stable up to `top`, and why each lr between it and the first divergence
    `stop` failed (`runs_at` maps lr to the run)."""
    notes = []
    for lr in lrs:
        run = runs_at[lr]
        if (top is not None and lr <= top) or run["diverged"]:
            continue
        if stop is not None and lr > stop["lr"]:
            continue
        if top is None and lr < (ref[1] if ref else 0):
            continue
        why = "+".join(run["unstable_reasons"])
        if "margin" in run["unstable_reasons"] and ref is not None:
            why += f" {100 * (run['final_val_loss'] / ref[0] - 1):+.1f} %"
        if "spike" in run["unstable_reasons"]:
            why += f" {run['spike_ratio']:.2f}x"
        notes.append(f"{_lr(lr)}: {why}")
    cell = f"stable to {_lr(top)}"
    return cell + ("; " + "; ".join(notes) if notes else "")


def _quality(summary: dict, profile: dict, runs: list[dict], seeds: list[int]) -> list[str]:
    """Outcome 2: the reference loss per (kind, depth) and why the runs past stability failed."""
    first = first_divergence(runs)
    refs = reference_losses(runs)
    cells = {(c["kind"], c["depth"]): c for c in summary["cells"]}
    parts = [
        "**Loss quality** (rules 2 and 3: 10-step-mean spike above 1.5x, or final validation "
        "loss more than 5 % above the reference). Reference: lowest median over seeds (runs "
        "that neither diverged nor spiked), at its lr. Per seed: the criterion's largest stable "
        "lr, then each lr between it and the first divergence with why it failed (margin: "
        "excess over the reference).",
        "",
    ]
    headers = ["depth", "kind", "reference (lr)"] + [f"seed {s}" for s in seeds]
    rows = []
    for depth in profile["depths"]:
        for kind in profile["kinds"]:
            ref = refs.get((kind, depth))
            row = [str(depth), kind, "-" if ref is None else f"{ref[0]:.3f} ({_lr(ref[1])})"]
            stable = cells[(kind, depth)]["largest_stable_lr"]["per_seed"]
            for seed in seeds:
                runs_at = {
                    r["lr"]: r
                    for r in runs
                    if (r["kind"], r["depth"], r["seed"]) == (kind, depth, seed)
                }
                stop = first[(kind, depth, seed)]
                row.append(_failures(runs_at, profile["lrs"], stable[str(seed)], stop, ref))
            rows.append(row)
    return parts + ["\n".join(summary_table(headers, rows))]


def report(summary: dict, runs: list[dict]) -> str:
    """The markdown of both outcomes (see the module docstring)."""
    profile = summary["settings"]["profile"]
    seeds = sorted({r["seed"] for r in runs})
    parts = [_source(summary), ""]
    parts += _divergence(profile, runs, seeds)
    parts += _quality(summary, profile, runs, seeds)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--runs", type=Path, default=RUNS)
    args = parser.parse_args(argv)
    summary = json.loads(args.report.read_text())
    runs = json.loads(args.runs.read_text())
    print(report(summary, runs))


if __name__ == "__main__":
    main()
