"""Storage, fits and tables of `benchmarks.convergence`: one JSON per sweep, one summary.

A sweep's JSON holds its settings, its units (one row per (replication, width), each with the
commit, machine and load average it ran with) and, once written by `SweepStore.finish`, the fits
of the widths every replication has reached (`sdeformer.compare.term_fits.summarise_sweep`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sdeformer.compare.term_fits import summarise_sweep
from sdeformer.results import provenance, read_json, write_json

QUANTITIES = {"mean": ("mean_diff", "mean_se", 1), "energy": ("energy2", "energy2_se", 2)}
"""Fitted quantity -> (row key of the estimate, of its standard error, power)."""


class SweepStore:
    """The JSON file of one sweep: the units done so far, rewritten after each new one."""

    def __init__(self, path: Path, settings: dict, command: str):
        self.path, self.settings, self.command = Path(path), settings, command
        self.units: dict[str, dict] = {}
        self.info = provenance()  # the commit this process runs, read once at its start
        if self.path.exists():
            old = read_json(self.path)
            if old.get("settings") != settings:
                raise SystemExit(
                    f"{self.path} holds units of other settings; move it away (or delete it) "
                    "to start this sweep afresh"
                )
            self.units = old.get("units", {})

    @staticmethod
    def _key(rep: int, n: int) -> str:
        return f"rep={rep}/n={n}"

    def has(self, rep: int, n: int) -> bool:
        """True when the unit (rep, n) is stored."""
        return self._key(rep, n) in self.units

    def add(self, row: dict, *, load, machine: dict) -> None:
        """Store one unit's row with its commit, machine and load average; rewrite the file."""
        self.units[self._key(row["rep"], row["n"])] = {
            **row,
            "commit": self.info["git_commit"],
            "load_average": load,
            "machine": machine,
        }
        self._write(self.info, summary=None)

    def _write(self, info: dict, summary) -> None:
        commits = sorted({u["commit"] or "unknown" for u in self.units.values()})
        write_json(
            self.path,
            {
                "command": self.command,
                "commit": commits[-1] if len(commits) == 1 else commits,
                "provenance": info,
                "machines": _distinct(u["machine"] for u in self.units.values()),
                "settings": self.settings,
                "units": self.units,
                "summary": summary,
            },
        )

    def finish(self, replications: int, widths_by_stack: dict) -> dict:
        """Fit the widths that every replication reached; write and return the summary."""
        widths = [
            n
            for n in widths_by_stack[self.settings["stack"]]
            if all(self.has(r, n) for r in range(replications))
        ]
        summary = summarise(self.settings, self.units, widths, replications)
        self._write(self.info, summary)
        return summary


def _distinct(items) -> list:
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def expected(settings: dict) -> dict:
    """The theory's expectation for a sweep (docs/theory.md section 4)."""
    config = settings["config"]
    mlp = "mlp" in config["blocks"]
    a_zero = not mlp or config["c_plus"] + config["c_minus"] == 0
    if settings["variant"] == "finite":
        return {"form": "b/n + c/n^1.5", "leading_slope": -1.0, "a_zero": None}
    return {"form": "a/n^0.5 + b/n", "leading_slope": -1.0 if a_zero else -0.5, "a_zero": a_zero}


def summarise(settings: dict, units: dict, widths: list[int], replications: int) -> dict:
    """Fits of the stored units at `widths` (all replications), or why there are none."""
    out = {"widths": widths, "replications": replications, "expected": expected(settings)}
    if len(widths) < 3:
        out["status"] = f"{len(widths)} widths reached by every replication; need >= 3 to fit"
        return out
    rows = [[units[f"rep={r}/n={n}"] for n in widths] for r in range(replications)]

    def matrix(key):
        return np.array([[row[key] for row in rep] for rep in rows], dtype=np.float64)

    for name, (value, se, power) in QUANTITIES.items():
        form = settings["variant"] if power == 1 else None
        out[name] = summarise_sweep(widths, matrix(value), matrix(se), form=form, power=power)
    out["exits"] = {
        "finite": matrix("exited_finite").mean(0).tolist(),
        "sde": matrix("exited_sde").mean(0).tolist(),
        "diff": matrix("exit_diff").mean(0).tolist(),
        "diff_between_se": (matrix("exit_diff").std(0, ddof=1) / math.sqrt(replications)).tolist(),
    }
    out["status"] = "fitted"
    return out


def write_summary(path: Path, summaries: dict, command: str) -> Path:
    """convergence.json: every sweep's summary, with the commit, command and machine."""
    info = provenance()
    return write_json(
        path,
        {
            "command": command,
            "commit": info["git_commit"],
            "provenance": info,
            "sweeps": summaries,
        },
    )


def _fmt(x, digits=3):
    return (
        "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}g}"
    )


def _slope_cells(block: dict) -> list[str]:
    pooled, between = block["free"]["pooled"], block["free"]["slope_between"]
    if pooled["status"] != "determined":
        cell = f"undetermined ({pooled['reason'][:40]})"
    else:
        lo, hi = pooled["interval95"]
        cell = f"{pooled['slope']:.2f} +- {pooled['slope_se']:.2f} [{lo:.2f}, {hi:.2f}]"
    if between["mean"] is None:
        spread = f"- ({between['replications']} determined)"
    else:
        lo, hi = between["interval95"]
        spread = (
            f"{between['mean']:.2f} +- {between['se']:.2f} [{lo:.2f}, {hi:.2f}] "
            f"({between['replications']} reps)"
        )
    return [cell, spread]


def _coef_cells(block: dict) -> list[str]:
    theory = block["theory"]
    pooled, cells = theory["pooled"], []
    for j, p in enumerate(pooled["powers"]):
        b = theory["coef_between"][j]
        lo, hi = b["interval95"] if b["interval95"] else (math.nan, math.nan)
        cells.append(
            f"n^-{p:g}: {pooled['coef'][j]:+.3g} +- {pooled['se'][j]:.2g} "
            f"(reps [{lo:+.3g}, {hi:+.3g}])"
        )
    cells.append(_fmt(pooled["chi2_dof"], 2))
    return cells


def table(summaries: dict) -> str:
    """A markdown table: free slopes (pooled and between replications) and theory coefficients."""
    lines = [
        "| sweep | widths | mean slope (pooled fit) | mean slope (replications) | "
        "energy slope (pooled) | term 1 | term 2 | chi2/dof | exits finite / SDE (largest n) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        if s.get("status") != "fitted":
            lines.append(f"| {name} | {s['widths']} | {s.get('status')} |||||||")
            continue
        mean, energy = s["mean"], s["energy"]
        exits = s["exits"]
        cells = [
            name,
            f"{s['widths'][0]}..{s['widths'][-1]}",
            *_slope_cells(mean),
            _slope_cells(energy)[0],
            *_coef_cells(mean),
            f"{exits['finite'][-1]:.3f} / {exits['sde'][-1]:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
