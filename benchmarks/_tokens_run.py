"""One size m of `bench_tokens`: its planned measures run in this process (`run_size`) or in a
fresh Python (`run_isolated`), each result saved in the size's unit as soon as it is measured."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import jax.random as jr

from . import _tokens as tk
from ._common import load_average
from ._tokens_plan import BOUND, MEASURES, network_config, sde_config, t_final

if TYPE_CHECKING:
    from .bench_tokens import Profile


def unit_name(m: int) -> str:
    return f"m{m:05d}"


def complete(unit: dict | None) -> bool:
    """Whether `unit` holds a result (of any status) for every measure."""
    return unit is not None and all(name in unit["measures"] for name in MEASURES)


@dataclasses.dataclass
class _Size:
    """What the measures of one size share: the job, its profile, the unit being filled."""

    job: dict
    p: Profile
    unit: dict
    config: object
    key: object
    rss_start: int

    @property
    def m(self) -> int:
        return self.job["m"]

    @property
    def plan(self) -> dict:
        return self.job["plan"]


def _sde_side(measure: str, size: int, s: _Size) -> dict:
    """The SDE (with the baseline alongside when both run at `size`) or the baseline alone."""
    T = t_final(s.m, s.p.steps)
    pair = tk.measure_sde_and_baseline(
        s.config,
        s.m,
        size,
        s.p.steps,
        T=T,
        bound=BOUND,
        memory_budget=s.job["memory_budget"],
        key=s.key,
        with_sde=measure == "sde",
        with_baseline=(
            measure == "baseline"
            or (s.plan["baseline"].get("size") == size and "baseline" not in s.unit["measures"])
        ),
    )
    if measure == "sde" and "baseline" in pair:  # measured together, alternating
        pair["baseline"]["size"] = s.plan["baseline"]["size"]
        s.unit["measures"]["baseline"] = pair["baseline"]
    for res in pair.values():
        res["T"] = T
    res = pair[measure]
    if measure == "sde":
        res["rss_peak_bytes"] = tk.rss_peak_bytes()
        res["rss_growth_bytes"] = res["rss_peak_bytes"] - s.rss_start
        res["device_peak_bytes"] = tk.device_peak_bytes()
    return res


def _law_and_explicit(measure: str, size: int, s: _Size) -> dict:
    """The law chain and the explicit networks of this stack, timed together (alternating, same
    load): the speed-up is a ratio of two times of one run. Stores the explicit result."""
    kind = measure.split("_")[-1]
    n = max(s.p.width, s.m)
    explicit_size = s.plan[f"explicit_{kind}"]["size"]
    pair = tk.measure_law_and_explicit(
        network_config(measure),
        s.m,
        n,
        s.p.depth,
        {"law": size, "explicit": explicit_size},
        key=jr.fold_in(s.key, 4),
    )
    explicit = pair["explicit"]
    explicit.update(n=n, size=explicit_size, commit=s.job.get("commit"))
    s.unit["measures"][f"explicit_{kind}"] = explicit
    res = pair["law"]
    res["n"] = n
    return res


def _network(measure: str, size: int, s: _Size) -> dict:
    """The law chain or the explicit networks of one stack, alone."""
    method, _ = measure.split("_")
    n = max(s.p.width, s.m)
    res = tk.measure_network(
        network_config(measure), s.m, n, s.p.depth, size, method=method, key=jr.fold_in(s.key, 4)
    )
    res["n"] = n
    return res


def _measure(measure: str, size: int, s: _Size) -> dict:
    if measure in ("sde", "baseline"):
        return _sde_side(measure, size, s)
    if measure == "matmul":
        return tk.measure_matmul(s.m, size, flops=s.p.matmul_flops, key=jr.fold_in(s.key, 2))
    if measure == "compare":
        return tk.measure_compare(s.m, size, key=jr.fold_in(s.key, 3))
    kind = measure.split("_")[-1]
    if measure.startswith("law_") and not s.plan[f"explicit_{kind}"].get("skip"):
        return _law_and_explicit(measure, size, s)
    return _network(measure, size, s)


def run_size(job: dict, p: Profile) -> dict:
    """Run the planned measures of one m (in this process, `p` the job's profile); saves the
    unit after each."""
    from sdeformer.results import ResultStore

    m, plan = job["m"], job["plan"]
    store = ResultStore(job["store"], "bench_tokens", job["store_config"])
    name = unit_name(m)
    unit = store.load(name) if store.has(name) else {"m": m, "measures": {}}
    unit["load_before"] = load_average()
    size_state = _Size(job, p, unit, sde_config(), jr.key(m), tk.rss_peak_bytes())
    for measure in MEASURES:
        kind = measure.split("_")[-1]
        if measure.startswith("law_") and measure not in unit["measures"]:
            # measured again: its explicit partner too (a stored one came from another run)
            unit["measures"].pop(f"explicit_{kind}", None)
        if measure in unit["measures"]:
            continue
        step = plan[measure]
        if step.get("skip"):
            unit["measures"][measure] = {"status": "skipped", "reason": step["skip"]}
            continue
        size = step["size"]
        print(f"  m={m} {measure} ({size})", flush=True)
        try:
            res = _measure(measure, size, size_state)
            res["size"] = size
            res["commit"] = job.get("commit")
        except Exception as err:  # noqa: BLE001 - record and go on with the other measures
            res = {"status": "failed", "reason": f"{type(err).__name__}: {err}"[:500]}
        unit["measures"][measure] = res
        unit["load_after"] = load_average()
        store.save(name, unit)
    return unit


def _run_child(job: dict, timeout: float) -> str | None:
    """Run `run_size` of `job` in a fresh Python (`bench_tokens --child`); returns None or why
    it stopped early."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(job, handle)
        path = handle.name
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_tokens", "--child", path],
            cwd=Path(__file__).resolve().parents[1],
            timeout=timeout,
        )
        return None if done.returncode == 0 else f"the process exited with {done.returncode}"
    except subprocess.TimeoutExpired:
        return f"timeout: the size ran past {timeout:.0f} s and was stopped"
    finally:
        os.unlink(path)


def run_isolated(job: dict, store, p: Profile) -> dict:
    """`run_size` of `job` in a fresh Python (its own peak RSS, killed past a timeout); the unit as
    stored, with the measures the process did not finish marked (the first as timed out or
    failed, the others as not run)."""
    m, plan = job["m"], job["plan"]
    name = unit_name(m)
    planned = [k for k, s in plan.items() if "size" in s]
    why = _run_child(job, timeout=1.5 * p.limit * len(planned) + 120)
    unit = store.load(name) if store.has(name) else {"m": m, "measures": {}}
    if why:
        missing = [k for k in planned if k not in unit["measures"]]
        for i, measure in enumerate(missing):
            unit["measures"][measure] = (
                {"status": "timeout" if "timeout" in why else "failed", "reason": why}
                if i == 0
                else {"status": "skipped", "reason": "not run: " + why}
            )
        kept = {
            k: v
            for k, v in unit["measures"].items()
            if not v.get("reason", "").startswith("not run: ")
        }
        store.save(name, {**unit, "measures": kept})
    return unit
