"""The report of an edge study: divergence edges, loss quality and the registered decision rule.

Per (kind, width, depth), from the runs of `sdeformer train-edges`:

- `seeds_diverged_at_initialisation`: seeds whose runs stop at step 0 (the loss at
  initialisation is already above the divergence limit: a property of the initial weights,
  which the design forecast predicts, not of the learning rate).
- `divergence_edge_lr`: the largest tested lr at which no seed diverged, i.e. the smallest over
  seeds of each seed's edge `lo` (`sdeformer.train.edges.Bracket`), with every seed's bracket
  (`per_seed`). A seed that diverged at the smallest lr makes it None with `below_grid: true`; a
  seed with no divergence is a lower bound (`censored: "above"`).
- `best_loss`: per grid lr, the final validation losses of the seeds that did not diverge; the
  best lr is the lowest median over seeds among the lrs where every seed finished. Mean, min,
  max and 95 % Student-t half-width over seeds there.
- `margin_lr`: for margins 2, 5 and 10 %, the largest grid lr whose median final loss is within
  (1 + margin) x the best median, every seed finished (the secondary endpoint's sensitivity).
- `vs_shaped`: per seed, log2(edge / shaped's edge) (0.5 = one sqrt(2) step) and the best-loss
  difference (per seed, the lowest final loss over the grid of each kind; negative is better
  than shaped).

The decision rule (`claim`) is the one registered in docs/training.md before the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from .criterion import mean_interval
from .edge_study import Cell, EdgeProfile
from .edges import bracket, locate_edge, runs_by_lr

MARGINS = (0.02, 0.05, 0.10)
"""Loss margins of the secondary endpoint's sensitivity analysis."""

COMPARATORS = ("standard", "gpt2-preln")
"""The models the registered claim compares shaped against."""


def cell_complete(profile: EdgeProfile, cell: Cell, by_id: dict) -> bool:
    """Whether every run the cell needs is saved (the runner's own order of decisions)."""

    def lookup(lr: float, role: str) -> bool | None:
        record = by_id.get(cell.unit_id(lr))
        return None if record is None else bool(record["diverged"])

    return locate_edge(profile.grid, profile.edge_factor, lookup)[1]


def _seed_edges(mine: dict[int, list[dict]]) -> dict[int, dict]:
    out = {}
    for seed, runs in sorted(mine.items()):
        edge = bracket(runs_by_lr(runs)).to_dict()
        edge["diverged_at_initialisation"] = any(
            r["diverged"] and r["diverged_at"] == 0 for r in runs
        )
        out[seed] = edge
    return out


def _edge_summary(per_seed: dict[int, dict]) -> dict:
    los = [e["lo"] for e in per_seed.values()]
    below = any(lo is None for lo in los)
    return {
        "divergence_edge_lr": None if below or not los else min(los),
        "below_grid": below,
        "lower_bound": any(e["censored"] == "above" for e in per_seed.values()),
        "seeds_diverged_at_initialisation": sum(
            e["diverged_at_initialisation"] for e in per_seed.values()
        ),
        "per_seed": {str(s): e for s, e in per_seed.items()},
    }


def _loss_table(mine: dict[int, list[dict]], grid: Sequence[float]) -> dict[float, dict]:
    """{grid lr: {seed: final val loss or None (diverged / unfinished)}} over the trained lrs."""
    table: dict[float, dict] = {}
    for seed, runs in mine.items():
        for r in runs:
            if r["role"] == "grid" and float(r["lr"]) in grid:
                loss = None if r["diverged"] else r["final_val_loss"]
                table.setdefault(float(r["lr"]), {})[seed] = loss
    return table


def _loss_summary(mine: dict[int, list[dict]], grid: Sequence[float]) -> dict:
    seeds = sorted(mine)
    table = _loss_table(mine, grid)
    medians = {
        lr: float(np.median([row[s] for s in seeds]))
        for lr, row in table.items()
        if all(row.get(s) is not None for s in seeds)
    }
    per_seed_best = {
        str(s): min((row[s] for row in table.values() if row.get(s) is not None), default=None)
        for s in seeds
    }
    if not medians:
        return {"best_lr": None, "best_loss": None, "per_seed_best": per_seed_best, "margin_lr": {}}
    best_lr = min(medians, key=medians.get)
    margin_lr = {
        f"{m:g}": max(lr for lr, med in medians.items() if med <= (1 + m) * medians[best_lr])
        for m in MARGINS
    }
    return {
        "best_lr": best_lr,
        "best_loss": mean_interval([table[best_lr][s] for s in seeds]),
        "per_seed_at_best_lr": {str(s): table[best_lr][s] for s in seeds},
        "per_seed_best": per_seed_best,
        "median_loss_by_lr": {f"{lr:g}": v for lr, v in sorted(medians.items())},
        "margin_lr": margin_lr,
    }


def _grouped(runs: Iterable[dict], cells: Sequence[Cell], profile: EdgeProfile):
    by_id = {r["id"]: r for r in runs}
    groups: dict[tuple, dict[int, list[dict]]] = {}
    done = 0
    for cell in cells:
        if not cell_complete(profile, cell, by_id):
            continue
        done += 1
        mine = [r for r in by_id.values() if r.get("cell") == cell.id]
        groups.setdefault((cell.kind, cell.width, cell.depth), {})[cell.seed] = mine
    return groups, done


def _log2_ratio(a: dict, b: dict) -> float | None:
    if a["lo"] is None or b["lo"] is None:
        return None
    return math.log2(a["lo"] / b["lo"])


def _vs_shaped(rows: list[dict]) -> list[dict]:
    shaped = {(r["width"], r["depth"]): r for r in rows if r["kind"] == "shaped"}
    out = []
    for r in rows:
        ref = shaped.get((r["width"], r["depth"]))
        if ref is None or r["kind"] == "shaped":
            continue
        seeds = sorted(set(r["per_seed"]) & set(ref["per_seed"]), key=int)
        edge = {s: _log2_ratio(r["per_seed"][s], ref["per_seed"][s]) for s in seeds}
        loss = {}
        for s in seeds:
            mine, theirs = r["loss"]["per_seed_best"].get(s), ref["loss"]["per_seed_best"].get(s)
            loss[s] = None if mine is None or theirs is None else mine - theirs
        out.append(
            {
                "kind": r["kind"],
                "width": r["width"],
                "depth": r["depth"],
                "log2_edge_ratio_per_seed": edge,
                "best_loss_difference_per_seed": loss,
                "best_loss_difference": mean_interval(list(loss.values())),
            }
        )
    return out


def claim_decision(vs_shaped: list[dict], widths: Sequence[int], ratios_depths: dict) -> dict:
    """The registered rule (docs/training.md): per comparator and (width, depth), then overall.

    Against a comparator at a (width, depth): "shaped larger" if shaped's edge is at least one
    sqrt(2) step larger (log2 ratio <= -0.5 from the comparator's side) in every seed, "shaped
    smaller" if it is at least one step smaller in every seed, else "no difference shown". The
    claim **holds** if shaped is larger against both comparators at every (width, depth) of the
    largest width; it is **contradicted** if shaped is smaller against a comparator at any
    depth of the largest width; otherwise it is **not supported**.
    """
    verdicts = []
    for row in vs_shaped:
        if row["kind"] not in COMPARATORS:
            continue
        ratios = list(row["log2_edge_ratio_per_seed"].values())
        known = [x for x in ratios if x is not None]
        if known and len(known) == len(ratios) and all(x <= -0.5 for x in known):
            verdict = "shaped larger"
        elif known and len(known) == len(ratios) and all(x >= 0.5 for x in known):
            verdict = "shaped smaller"
        else:
            verdict = "no difference shown"
        verdicts.append({k: row[k] for k in ("kind", "width", "depth")} | {"verdict": verdict})
    top = max(widths) if widths else None
    mine = [v for v in verdicts if v["width"] == top]
    needed = len(COMPARATORS) * len(ratios_depths.get(top, ()))
    if any(v["verdict"] == "shaped smaller" for v in mine):
        overall = "contradicted"
    elif len(mine) == needed and needed and all(v["verdict"] == "shaped larger" for v in mine):
        overall = "holds"
    else:
        overall = "not supported"
    return {"per_comparator": verdicts, "overall": overall, "decided_at_width": top}


def edge_report(profile: EdgeProfile, runs: Iterable[dict], cells: Sequence[Cell]) -> dict:
    """The JSON-ready report (see the module docstring)."""
    groups, done = _grouped(runs, cells, profile)
    rows = []
    for (kind, width, depth), mine in sorted(groups.items(), key=lambda kv: kv[0][1:] + kv[0][:1]):
        row = {"kind": kind, "width": width, "depth": depth, "T": depth / width}
        row["seeds_done"] = sorted(mine)
        row.update(_edge_summary(_seed_edges(mine)))
        row["loss"] = _loss_summary(mine, profile.grid)
        rows.append(row)
    vs = _vs_shaped(rows)
    depths = {w: profile.depths(w) for w in profile.widths}
    complete = done == len(cells)
    return {
        "complete": complete,
        "cells_done": done,
        "cells_total": len(cells),
        "runs_done": sum(len(r) for g in groups.values() for r in g.values()),
        "edges": rows,
        "vs_shaped": vs,
        "claim": claim_decision(vs, profile.widths, depths) if complete else None,
        "wall_s_of_runs": float(sum(r.get("wall_s") or 0.0 for r in _all(groups))),
        "tokens_trained": int(sum(r.get("tokens_trained") or 0 for r in _all(groups))),
    }


def _all(groups):
    for g in groups.values():
        for runs in g.values():
            yield from runs


def _lr(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def report_table(report: dict) -> str:
    """A markdown table: the divergence edge and the best loss per (width, depth, kind)."""
    lines = [
        "| width | depth | kind | divergence edge lr (all seeds) | per-seed brackets [lo, hi) "
        "| best lr | best loss (mean +- 95 % t) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["edges"]:
        edge = "below grid" if r["below_grid"] else _lr(r["divergence_edge_lr"])
        if r["lower_bound"]:
            edge += " (>= : a seed never diverged)"
        brackets = ", ".join(f"[{_lr(e['lo'])}, {_lr(e['hi'])})" for e in r["per_seed"].values())
        best = r["loss"]["best_loss"]
        loss = "-" if best is None else f"{best['mean']:.3f} +- {best['ci95'] or 0:.3f}"
        lines.append(
            f"| {r['width']} | {r['depth']} | {r['kind']} | {edge} | {brackets} | "
            f"{_lr(r['loss']['best_lr'])} | {loss} |"
        )
    return "\n".join(lines)


def save_edge_figures(report: dict, out) -> list:
    """Write the edge-against-depth figure (one panel per width) into `out`; the paths."""
    from .. import plot
    from .figures import edge_figure

    title = "Divergence edge" + ("" if report["complete"] else " (PARTIAL)")
    return [plot.save_figure(edge_figure(report["edges"], title=title), out / "train_edges.png")]


def vs_shaped_table(report: dict) -> str:
    """Markdown: per (width, depth, kind) the per-seed log2 edge ratios against shaped."""
    lines = [
        "| width | depth | kind | log2(edge / shaped's edge) per seed | best-loss difference "
        "(mean +- 95 % t) |",
        "|---|---|---|---|---|",
    ]
    for r in report["vs_shaped"]:
        ratios = ", ".join(
            "-" if x is None else f"{x:+.1f}" for x in r["log2_edge_ratio_per_seed"].values()
        )
        d = r["best_loss_difference"]
        diff = "-" if d is None else f"{d['mean']:+.3f} +- {d['ci95'] or 0:.3f}"
        lines.append(f"| {r['width']} | {r['depth']} | {r['kind']} | {ratios} | {diff} |")
    return "\n".join(lines)


def claim_table(report: dict) -> str:
    """Markdown: the registered rule's verdict per comparator and (width, depth), then overall."""
    claim = report.get("claim")
    if claim is None:
        return "(the study is not complete: no verdict)"
    lines = ["| width | depth | comparator | verdict |", "|---|---|---|---|"]
    for v in claim["per_comparator"]:
        lines.append(f"| {v['width']} | {v['depth']} | {v['kind']} | {v['verdict']} |")
    lines.append(f"\nOverall (decided at width {claim['decided_at_width']}): {claim['overall']}")
    return "\n".join(lines)
