"""The settings and the planning of `bench_tokens`: the measures, the profiles (sizes, limits),
and which measure runs at which size given what the smaller sizes took."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import jax

if TYPE_CHECKING:
    from .bench_tokens import Profile

MEASURES = (
    "sde",
    "baseline",
    "matmul",
    "law_attention",
    "law_full",
    "explicit_attention",
    "explicit_full",
    "compare",
)
UNIT = {
    "sde": "path-steps",
    "baseline": "path-steps",
    "matmul": "matmuls",
    "law_attention": "sample-layers",
    "law_full": "sample-layers",
    "explicit_attention": "sample-layers",
    "explicit_full": "sample-layers",
    "compare": "comparisons",
}
MIN_EXPONENT = {
    "sde": 3.0,
    "baseline": 3.0,
    "matmul": 3.0,
    "law_attention": 3.0,
    "law_full": 3.0,
    "explicit_attention": 1.0,
    "explicit_full": 1.0,
    # compare_sources caps the pairs it compares, but every sample still costs O(m^2) for its
    # correlations and O(m^3) for the smallest eigenvalue: predict with at least m^2
    "compare": 2.0,
}
FIT_RANGE = (32, 256)


def sde_config():
    from sdeformer import ShapedConfig

    return ShapedConfig(tau0=1.0, gamma=0.4, c_minus=-1.0)


T_FINAL, BOUND = 0.5, 1e3
STEP_SCALE = 0.1
"""The SDE runs to T = min(T_FINAL, STEP_SCALE steps / m), so that m dt <= STEP_SCALE: an Euler
step of the Lin noise perturbs V by about sqrt(kappa m dt) relative to its smallest eigenvalue,
and with m dt of order 1 every path leaves the PSD cone within a few steps (both solvers would
then time their exit branch, not the SDE)."""


def t_final(m: int, steps: int) -> float:
    return min(T_FINAL, STEP_SCALE * steps / m)


# ------------------------------------------------------------------------------ planning


def default_units(measure: str, m: int, p: Profile) -> int:
    """Paths (SDE side) or samples (networks) for one run at m, from the profile's work."""
    if measure in ("sde", "baseline", "matmul"):
        paths = p.work / (10 * m**3 * p.steps)
        return int(min(max(paths, p.min_paths), p.max_paths))
    if measure == "compare":
        return p.compare_samples
    from sdeformer.finite import weights_per_layer

    n = max(p.width, m)
    config = network_config(measure)
    if measure.startswith("law"):
        cost = 10 * m**3 + 10 * m * n
    else:
        cost = 8 * m * n * n + 20 * weights_per_layer(config, n)
    samples = p.net_work / (p.depth * cost)
    most = p.max_samples if measure.startswith("law") else p.explicit_max_samples
    return int(min(max(samples, p.min_samples), most))


def units_per_run(measure: str, size: int, p: Profile) -> int:
    """The timed units one run of `size` (paths / samples) does."""
    if measure in ("sde", "baseline"):
        return size * p.steps
    if measure.startswith(("law", "explicit")):
        return size * p.depth
    return 1


def plan_measure(measure: str, m: int, size: int, history: list[tuple[int, dict]], p: Profile):
    """(size, None) to run `measure` at m with `size` paths/samples, or (None, reason)."""
    for m_prev, res in history:
        if res.get("status") != "ok":
            return None, f"not run: {res.get('status')} at m={m_prev} ({res.get('reason', '')})"
    if not history or measure == "matmul":
        return size, None
    m_last, last = history[-1]
    if last["seconds"] + last.get("compile_s", 0.0) > p.limit:
        return None, (
            f"m={m_last} took {last['seconds'] + last.get('compile_s', 0.0):.0f} s "
            f"> limit {p.limit:.0f} s"
        )
    exponent = MIN_EXPONENT[measure]
    if len(history) >= 2:
        (m0, r0), (m1, r1) = history[-2], history[-1]
        exponent = max(exponent, math.log(r1["cost"] / r0["cost"]) / math.log(m1 / m0))
    per_unit = last["cost"] * (m / m_last) ** exponent
    compile_s = last.get("compile_s", 0.0)

    def predicted(s):
        return per_unit * units_per_run(measure, s, p) + compile_s

    if predicted(size) <= p.limit:
        return size, None
    smallest = p.min_paths if measure in ("sde", "baseline") else p.min_samples
    if measure != "compare" and size > smallest:
        budget_units = (p.limit / 2 - compile_s) / per_unit
        shrunk = max(smallest, int(budget_units / max(units_per_run(measure, 1, p), 1)))
        if predicted(shrunk) <= p.limit:
            return min(shrunk, size), None
    return None, (
        f"predicted {predicted(size if measure == 'compare' else smallest):.0f} s > limit "
        f"{p.limit:.0f} s (m={m_last}: {last['cost']:.3g} s per unit, exponent {exponent:.2f})"
    )


def network_config(measure: str):
    config = sde_config()
    return config.replace(blocks=("attention",)) if measure.endswith("attention") else config


def plan_size(m: int, unit: dict | None, units: dict[int, dict], p: Profile) -> dict:
    """What to run at m given the results of the smaller sizes (see the module docstring)."""
    done = unit["measures"] if unit else {}
    plan: dict[str, dict] = {}
    for measure in MEASURES:
        if measure in done:
            plan[measure] = {"done": True}
            continue
        size = default_units(measure, m, p)
        if measure in ("baseline", "matmul"):  # the SDE's paths, so the ratio is like for like
            sde = plan.get("sde", {})
            if "size" in sde:
                size = sde["size"]
            elif done.get("sde", {}).get("status") == "ok":
                size = done["sde"]["size"]
        history = [
            (k, units[k]["measures"][measure])
            for k in sorted(units)
            if k < m and measure in units[k]["measures"]
        ]
        size, reason = plan_measure(measure, m, size, history, p)
        plan[measure] = {"size": size} if reason is None else {"skip": reason}
    return _same_batch(plan)


def _same_batch(plan: dict) -> dict:
    """The law chain and the explicit networks of a stack at one sample count (the smaller of
    the two planned), so that their speed-up compares like with like."""
    for kind in ("attention", "full"):
        law, explicit = plan[f"law_{kind}"], plan[f"explicit_{kind}"]
        if "size" in law and "size" in explicit:
            law["size"] = explicit["size"] = min(law["size"], explicit["size"])
    return plan


def memory_budget(p: Profile) -> float:
    """Bytes one SDE program may use: on an accelerator the library's default (half the device's
    memory), on the CPU `memory_fraction` of the available RAM."""
    if jax.default_backend() != "cpu":
        from sdeformer.sde import default_memory_budget

        return default_memory_budget()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable"):
                return p.memory_fraction * int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30
