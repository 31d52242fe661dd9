"""When can the SDE forecast be trusted? The SDE forecasts against the exact law chain.

    python -m benchmarks.design_calibration [--profile cpu|tiny] [--out DIR] [--report-only]

The registered plan (docs/design.md, "Calibration study", committed before the run):

- **Configurations**: `num_configs` random shaped configurations from one seed (`configs`):
  tau0 ~ U[0.5, 3], gamma ~ U[0.2, 0.9], c_plus ~ U[-1, 1], c_minus ~ U[-1.5, 0.5], heads in
  {1, 2, 4}, out_proj (Wo) True or False, blocks (attention, MLP) or attention alone (one in
  four), m ~ U{2..8} tokens, an equicorrelated input with rho0 ~ U[0, 0.8], and T = d / n
  cycling through {0.25, 0.5, 1, 2} (so each T has the same number of configurations).
- **Forecasts**: at each width n in `widths`, `design.forecast` by the exact law chain
  ("law", the reference) and by the finite-width SDE at n; the limit SDE ("sde") once per
  configuration (it does not depend on n). `samples` samples each, independent keys.
- **Statistics** (11 per forecast): q05, q50 and q95 of mean_rho, min_eig_rho and
  log_mean_var, p_collapse (mean_rho >= 0.9) and p_blowup (a |V_ab| above 1e3, or an SDE path
  leaving the PSD cone), all with the exits held at their state (never conditioned on
  survival).
- **Error** of a statistic: |SDE - law|; its Monte Carlo standard error `se` from the two
  forecasts' 95 % intervals ((upper - lower) / 3.92 each, added in quadrature).
- **Decision rule**: a configuration at width n *meets* the 0.02 goal for a method when every
  statistic's error is at most 0.02 + 1.96 se (not significantly above 0.02; a two-sided 95 %
  test per statistic, no multiplicity correction, which makes "fails" easier to reach); a cell
  (n, T) is *trusted* when every configuration in it meets the goal. `auto` (design/_auto.py)
  uses the trusted cells. The issue's goal: every configuration with n >= 128 and T <= 1.

Units (one per configuration and width) are written as they finish under `--out` (default
results/design_calibration) and a rerun resumes; `--report-only` summarises what is there.
The cpu profile writes docs/results/design_calibration.json (every unit, the summary,
provenance, command, machine, load) and docs/figures/design_calibration.png; other profiles
write both into `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import jax.random as jr
import numpy as np

from sdeformer import ShapedConfig, equicorrelated
from sdeformer.design import forecast
from sdeformer.results import ResultStore, provenance, write_json

from ._common import ROOT, load_average, machine
from ._markdown import summary_table

GOAL = 0.02
"""The issue's tolerance on every statistic."""
Z = 1.96
TIMES = (0.25, 0.5, 1.0, 2.0)
SDE_METHODS = ("sde", "finite-width-sde")


@dataclasses.dataclass(frozen=True)
class Profile:
    num_configs: int
    widths: tuple[int, ...]
    samples: int
    seed: int = 20261203


PROFILES = {
    "cpu": Profile(52, (32, 64, 128, 256), 2000),
    "tiny": Profile(4, (8, 16), 200),
}


def configs(profile: Profile) -> list[dict]:
    """The study's configurations: settings drawn from one seed (see the module docstring)."""
    rng = np.random.default_rng(profile.seed)
    out = []
    for i in range(profile.num_configs):
        blocks = ("attention",) if rng.random() < 0.25 else ("attention", "mlp")
        config = ShapedConfig(
            tau0=round(float(rng.uniform(0.5, 3.0)), 4),
            gamma=round(float(rng.uniform(0.2, 0.9)), 4),
            c_plus=round(float(rng.uniform(-1.0, 1.0)), 4),
            c_minus=round(float(rng.uniform(-1.5, 0.5)), 4),
            heads=int(rng.choice([1, 2, 4])),
            out_proj=bool(rng.random() < 0.5),
            blocks=blocks,
        )
        m = int(rng.integers(2, 9))
        rho0 = round(float(rng.uniform(0.0, 0.8)), 4)
        out.append({"id": i, "config": config, "m": m, "rho0": rho0, "T": TIMES[i % len(TIMES)]})
    return out


def statistics(fc) -> dict[str, dict]:
    """The 11 statistics of a forecast at depth d: {name: {value, lower, upper}}."""
    final = fc.final
    out = {}
    for feature, qs in final.features.items():
        for q, est in qs.items():
            out[f"{feature}:{q}"] = est
    out["p_collapse"] = final.p_collapse
    out["p_blowup"] = final.p_blowup
    return {k: {"value": e.value, "lower": e.lower, "upper": e.upper} for k, e in out.items()}


def _forecast(spec: dict, width: int, method: str, samples: int, key) -> dict:
    """One forecast's record; a forecast the tool refuses is recorded with its reason.

    (The forecast refuses, for instance, a sample whose token variance reached 0, where the
    correlations are undefined. The refusal is part of the result: its cell is not trusted.)
    """
    try:
        fc = forecast(
            spec["config"],
            equicorrelated(spec["m"], spec["rho0"]),
            width=width,
            T=spec["T"],
            num_samples=samples,
            key=key,
            method=method,
        )
    except ValueError as err:  # a refused forecast has no timing: its seconds are not counted
        return {"method": method, "width": width, "refused": str(err)}
    return {
        "method": method,
        "width": width,
        "depth": fc.depth,
        "seconds": fc.seconds,
        "num_steps": fc.num_steps,
        "p_left_psd_cone": fc.final.p_left_psd_cone,
        "statistics": statistics(fc),
    }


def run_unit(spec: dict, width: int | None, profile: Profile) -> dict:
    """The unit of (configuration, width): law and finite-width SDE; width None: the limit SDE.

    Keys: one per (configuration, width, method), folded from the profile's seed, so every
    forecast of the study is independent of every other.
    """
    base = jr.fold_in(jr.key(profile.seed), spec["id"])
    if width is None:
        # the limit SDE at T (any width with T n whole gives the same law: the smallest)
        key = jr.fold_in(jr.fold_in(base, 0), 2)
        return {"forecasts": [_forecast(spec, profile.widths[0], "sde", profile.samples, key)]}
    keys = jr.split(jr.fold_in(base, width), 2)
    return {
        "forecasts": [
            _forecast(spec, width, method, profile.samples, k)
            for method, k in zip(("law", "finite-width-sde"), keys, strict=True)
        ]
    }


def unit_name(spec: dict, width: int | None) -> str:
    return f"config{spec['id']:03d}_" + ("limit" if width is None else f"n{width}")


def errors(sde: dict, law: dict) -> dict[str, dict]:
    """{statistic: {error, se}} of one SDE forecast against the law chain's."""
    out = {}
    for name, a in sde["statistics"].items():
        b = law["statistics"][name]
        se = math.hypot((a["upper"] - a["lower"]) / (2 * Z), (b["upper"] - b["lower"]) / (2 * Z))
        out[name] = {"error": abs(a["value"] - b["value"]), "se": se}
    return out


def rows_of(specs: list[dict], units: dict, profile: Profile) -> list[dict]:
    """One row per (configuration, width, SDE method): its errors and whether it meets the goal."""
    rows = []
    for spec in specs:
        limit = units.get(unit_name(spec, None))
        for width in profile.widths:
            unit = units.get(unit_name(spec, width))
            if unit is None:
                continue
            by = {f["method"]: f for f in unit["forecasts"]}
            candidates = {"finite-width-sde": by["finite-width-sde"]}
            if limit is not None:
                candidates["sde"] = limit["forecasts"][0]
            for method, sde in candidates.items():
                row = {"config": spec["id"], "m": spec["m"], "T": spec["T"], "width": width}
                rows.append({**row, "method": method, **_compared(sde, by["law"])})
    return rows


def _compared(sde: dict, law: dict) -> dict:
    """The errors of one SDE forecast against the law chain's, or why there are none."""
    refused = [f"{f['method']}: {f['refused']}" for f in (sde, law) if "refused" in f]
    if refused:
        return {"refused": "; ".join(refused), "meets": False, "max_error": None}
    errs = errors(sde, law)
    worst = max(errs, key=lambda k: errs[k]["error"])
    return {
        "errors": errs,
        "max_error": errs[worst]["error"],
        "worst": worst,
        "meets": all(e["error"] <= GOAL + Z * e["se"] for e in errs.values()),
        "seconds": {"law": law["seconds"], sde["method"]: sde["seconds"]},
        "sde_p_left_psd_cone": sde["p_left_psd_cone"],
    }


def summarise(rows: list[dict], profile: Profile) -> list[dict]:
    """Per (method, T, n): configurations, how many meet the goal, the largest error."""
    cells = []
    for method in SDE_METHODS:
        for T in TIMES:
            for width in profile.widths:
                mine = [r for r in rows if (r["method"], r["T"], r["width"]) == (method, T, width)]
                if not mine:
                    continue
                compared = [r for r in mine if r["max_error"] is not None] or [{"max_error": None}]
                cells.append(
                    {
                        "method": method,
                        "T": T,
                        "width": width,
                        "configs": len(mine),
                        "meet": sum(r["meets"] for r in mine),
                        "refused": sum("refused" in r for r in mine),
                        "trusted": all(r["meets"] for r in mine),
                        **_spread(compared),
                    }
                )
    return cells


def _spread(rows: list[dict]) -> dict:
    """Largest and median max error, and the median se, over the compared rows (None: none)."""
    if rows[0]["max_error"] is None:
        return {"max_error": None, "median_max_error": None, "median_se": None}
    return {
        "max_error": max(r["max_error"] for r in rows),
        "median_max_error": float(np.median([r["max_error"] for r in rows])),
        "median_se": float(np.median([e["se"] for r in rows for e in r["errors"].values()])),
    }


def summary(data: dict) -> str:
    """The table of docs/design.md, rendered from one JSON run."""
    rows = [
        [
            c["method"],
            f"{c['T']:g}",
            str(c["width"]),
            f"{c['meet']}/{c['configs']}" + (f" ({c['refused']} refused)" if c["refused"] else ""),
            "yes" if c["trusted"] else "no",
            c["max_error"],
            c["median_max_error"],
            c["median_se"],
        ]
        for c in data["cells"]
    ]
    header = ["method", "T", "n", "meet 0.02", "trusted", "max error", "median max", "median se"]
    where = f"{data['machine']['cpu_model']}, load {data['load_average']}"
    return "\n".join(
        [f"Calibration ({where}, {data['provenance']['git_commit']}):", ""]
        + summary_table(header, rows)
    )


def figure(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, method in zip(axes, SDE_METHODS, strict=True):
        for T in TIMES:
            cells = [c for c in data["cells"] if c["method"] == method and c["T"] == T]
            if cells:
                ns = [c["width"] for c in cells]
                ax.plot(ns, [c["max_error"] for c in cells], "o-", label=f"T = {T:g}, max")
                ax.plot(ns, [c["median_max_error"] for c in cells], ":", color="grey")
        ax.axhline(GOAL, color="k", lw=0.8, ls="--", label="goal 0.02")
        ax.set(xscale="log", yscale="log", xlabel="width n", title=method)
        ax.set_xticks(data["settings"]["widths"], [str(n) for n in data["settings"]["widths"]])
    axes[0].set_ylabel("largest |SDE - law| over the 11 statistics")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"SDE forecast against the exact law chain ({data['settings']['samples']} samples each; "
        "dotted: median over configurations)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fitted_costs(units: dict, specs: list[dict], samples: int, widths) -> dict:
    """Per method, seconds = a + b * work by least squares over the run's forecasts (a, b >= 0).

    work = N d m^2 for the law chain, N * steps * m^2 for the SDEs (`design._auto`).
    """
    points: dict[str, list] = {}
    for spec in specs:
        m = spec["m"]
        done = (units.get(unit_name(spec, w)) for w in (None, *widths))
        for f in (f for unit in done if unit for f in unit["forecasts"] if "refused" not in f):
            steps = f["depth"] if f["method"] == "law" else f["num_steps"]
            points.setdefault(f["method"], []).append((samples * steps * m**2, f))
    costs = {}
    for method, pts in points.items():
        work = np.array([w for w, _ in pts], dtype=float)
        seconds = np.array([f["seconds"] for _, f in pts])
        a, b = np.linalg.lstsq(np.stack([np.ones_like(work), work], 1), seconds, rcond=None)[0]
        if a < 0 or b < 0:  # refit the one non-negative coefficient
            a, b = (0.0, float(work @ seconds / (work @ work))) if a < 0 else (seconds.mean(), 0.0)
        costs[method] = {"a": float(a), "b": float(b), "forecasts": len(pts)}
    return costs


def package_table(data: dict, units: dict, specs: list[dict]) -> dict:
    """The summary `design/_auto.py` reads: cells, the calibrated family, measured costs."""
    return {
        "source": "docs/results/design_calibration.json",
        "commit": data["provenance"]["git_commit"],
        "command": data["command"],
        "goal": GOAL,
        "family": {
            "m_min": min(s["m"] for s in specs),
            "m_max": max(s["m"] for s in specs),
            "blocks": sorted({s["config"].blocks for s in specs}),
        },
        "cells": data["cells"],
        "costs": {
            data["machine"]["backend"]: fitted_costs(
                units, specs, data["settings"]["samples"], data["settings"]["widths"]
            )
        },
    }


def _units_todo(specs, profile):
    for spec in specs:
        yield spec, None
        for width in profile.widths:
            yield spec, width


def run(profile: Profile, out: Path, *, report_only: bool = False) -> dict:
    specs = configs(profile)
    settings = {**dataclasses.asdict(profile), "goal": GOAL, "z": Z, "times": TIMES}
    store = ResultStore(out, "design_calibration", settings)
    todo = list(_units_todo(specs, profile))
    started = time.perf_counter()
    done_now = 0
    for i, (spec, width) in enumerate(todo):
        name = unit_name(spec, width)
        if store.has(name) or report_only:
            continue
        unit = run_unit(spec, width, profile)
        store.save(name, unit)
        done_now += 1
        spent = time.perf_counter() - started
        left = sum(not store.has(unit_name(s, w)) for s, w in todo)
        seconds = sum(f.get("seconds", 0.0) for f in unit["forecasts"])
        print(
            f"[{i + 1}/{len(todo)}] {name}: {seconds:.1f} s"
            f" (this run: {done_now} units in {spent:.0f} s, {left} left)",
            flush=True,
        )
    units = {name: store.load(name) for name in store.names()}
    rows = rows_of(specs, units, profile)
    return (
        units,
        specs,
        {
            "provenance": store.manifest["provenance"],  # of the run that computed the units
            "resumes": store.manifest.get("resumes", []),
            "settings": settings,
            "configs": [
                {**{k: v for k, v in s.items() if k != "config"}, "config": s["config"].to_dict()}
                for s in specs
            ],
            "units_done": len(units),
            "units_total": len(todo),
            "rows": rows,
            "cells": summarise(rows, profile),
        },
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="where to write the result JSON")
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    out = args.out or ROOT / "results" / f"design_calibration_{args.profile}"
    units, specs, data = run(profile, out, report_only=args.report_only)
    data = {
        "benchmark": "design_calibration",
        "machine": machine(),
        "load_average": load_average(),
        "report_provenance": provenance(),
        "command": " ".join(
            ["python -m benchmarks.design_calibration", *(sys.argv[1:] if argv is None else argv)]
        ),
        **data,
    }
    # the registered profile's results go to the docs; a smaller profile's stay in --out
    docs = args.profile == "cpu"
    path = args.json or (ROOT / "docs" / "results" if docs else out) / "design_calibration.json"
    path = write_json(path, data)
    fig = args.figure or (ROOT / "docs" / "figures" if docs else out) / "design_calibration.png"
    figure(data, fig)
    if docs and data["units_done"] == data["units_total"]:
        table = ROOT / "sdeformer" / "design" / "calibration.json"
        write_json(table, package_table(data, units, specs))
        print(f"wrote {table} (the table method='auto' reads)")
    print(summary(data))
    print(f"\nwrote {path} and {fig} ({data['units_done']}/{data['units_total']} units)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
