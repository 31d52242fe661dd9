"""Cost in the number of tokens m: the SDE, an O(m^3) Euler baseline, law chain, networks, compare.

    python -m benchmarks.bench_tokens                   # CPU profile: m = 2, 4, ..., 256
    python -m benchmarks.bench_tokens --profile gpu     # m = 32, 128, 256, 512, 1024
    python -m benchmarks.bench_tokens --quick           # seconds: the test profile
    python -m benchmarks.bench_tokens --tokens 2 4 8 --fresh --out /tmp/tokens.json

At each m, in one run: `solve_sde` (Euler) path-steps/s, its compile time and peak memory (XLA's
estimate of the compiled program; the process's peak RSS on CPU, the device's peak bytes on an
accelerator); the same paths and steps through the plain O(m^3) batched Euler-Maruyama of
`benchmarks._baseline` (lax.scan, no diffrax), and their time ratio; the float32 rate of a batched
(m x m) @ (m x m) product measured now, with the SDE's fraction of it counting 10 m^3 flops per
path-step; law chain and explicit-network sample-layers/s (attention-only and attention + MLP,
width n = max(width, m)); the wall time of `sdeformer.compare.compare_sources` on two sources of
`--compare-samples` covariances each. The cost exponent in m (log-log least squares of seconds per
unit against m, over 32 <= m <= 256 and over every m) is written next to each measure.

Sizes: paths (and samples) shrink as m grows so one run does about `work` flops. A measure is
skipped at the next m when its prediction (cost per unit at the last m times (m'/m)^p, p at least
the expected exponent) exceeds the per-measure time limit even at the smallest size, when it
took longer than the limit, or (the SDE) when XLA's memory estimate exceeds the memory budget;
the reason is recorded. Each m runs in a fresh process on CPU (peak RSS per size; a timeout kills
it), and results are stored one unit per size (`sdeformer.results.ResultStore`) so an
interrupted run resumes where it stopped. Writes `tokens.json` and a log-log figure `tokens.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.random as jr

from ._common import RESULTS, fit_exponent, load_average, machine, markdown_table

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


@dataclasses.dataclass(frozen=True)
class Profile:
    tokens: tuple[int, ...]
    steps: int  # SDE steps per path
    work: float  # flops per SDE / baseline run (10 m^3 per path-step)
    min_paths: int
    max_paths: int
    width: int  # n of the law chain and the explicit networks (n = max(width, m))
    depth: int
    net_work: float  # modelled flops per law-chain / explicit run
    min_samples: int
    max_samples: int
    explicit_max_samples: int
    compare_samples: int
    matmul_flops: float
    limit: float  # seconds per measure and size
    budget: float  # seconds for the whole run: no new size starts after it
    memory_fraction: float = 0.4  # of the available RAM (CPU) for one SDE program


PROFILES = {
    "quick": Profile(
        tokens=(2, 3),
        steps=4,
        work=1e5,
        min_paths=2,
        max_paths=8,
        width=8,
        depth=2,
        net_work=1e5,
        min_samples=2,
        max_samples=4,
        explicit_max_samples=4,
        compare_samples=32,
        matmul_flops=1e5,
        limit=60,
        budget=300,
    ),
    "cpu": Profile(
        tokens=tuple(2**k for k in range(1, 9)),
        steps=50,
        work=1e10,
        min_paths=4,
        max_paths=1000,
        width=256,
        depth=8,
        net_work=1e10,
        min_samples=4,
        max_samples=512,
        explicit_max_samples=32,
        compare_samples=2000,
        matmul_flops=2e10,
        limit=90,
        budget=2400,
    ),
    "gpu": Profile(
        tokens=(32, 128, 256, 512, 1024),
        steps=100,
        work=1e13,
        min_paths=8,
        max_paths=20000,
        width=256,
        depth=16,
        net_work=2e12,
        min_samples=8,
        max_samples=4096,
        explicit_max_samples=512,
        compare_samples=2000,
        matmul_flops=1e12,
        limit=30,
        budget=240,
    ),
}


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


# ------------------------------------------------------------------------------ one size


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


def run_size(job: dict) -> dict:
    """Run the planned measures of one m (in this process); saves the unit after each."""
    from sdeformer.results import ResultStore

    from . import _tokens as tk

    p = Profile(**{**job["profile"], "tokens": tuple(job["profile"]["tokens"])})
    m, plan = job["m"], job["plan"]
    store = ResultStore(job["store"], "bench_tokens", job["store_config"])
    name = unit_name(m)
    unit = store.load(name) if store.has(name) else {"m": m, "measures": {}}
    unit["load_before"] = load_average()
    rss_start = tk.rss_peak_bytes()
    config = sde_config()
    key = jr.key(m)
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
            if measure in ("sde", "baseline"):
                pair = tk.measure_sde_and_baseline(
                    config,
                    m,
                    size,
                    p.steps,
                    T=t_final(m, p.steps),
                    bound=BOUND,
                    memory_budget=job["memory_budget"],
                    key=key,
                    with_sde=measure == "sde",
                    with_baseline=(
                        measure == "baseline"
                        or (
                            plan["baseline"].get("size") == size
                            and "baseline" not in unit["measures"]
                        )
                    ),
                )
                if measure == "sde" and "baseline" in pair:  # measured together, alternating
                    pair["baseline"]["size"] = plan["baseline"]["size"]
                    unit["measures"]["baseline"] = pair["baseline"]
                for res in pair.values():
                    res["T"] = t_final(m, p.steps)
                res = pair[measure]
                if measure == "sde":
                    res["rss_peak_bytes"] = tk.rss_peak_bytes()
                    res["rss_growth_bytes"] = res["rss_peak_bytes"] - rss_start
                    res["device_peak_bytes"] = tk.device_peak_bytes()
            elif measure == "matmul":
                res = tk.measure_matmul(m, size, flops=p.matmul_flops, key=jr.fold_in(key, 2))
            elif measure == "compare":
                res = tk.measure_compare(m, size, key=jr.fold_in(key, 3))
            elif measure.startswith("law_") and not plan[f"explicit_{kind}"].get("skip"):
                # The law chain and the explicit networks of this stack, timed together
                # (alternating, same load): the speed-up is a ratio of two times of one run.
                pair = tk.measure_law_and_explicit(
                    network_config(measure),
                    m,
                    max(p.width, m),
                    p.depth,
                    {"law": size, "explicit": plan[f"explicit_{kind}"]["size"]},
                    key=jr.fold_in(key, 4),
                )
                explicit = pair["explicit"]
                explicit.update(
                    n=max(p.width, m),
                    size=plan[f"explicit_{kind}"]["size"],
                    commit=job.get("commit"),
                )
                unit["measures"][f"explicit_{kind}"] = explicit
                res = pair["law"]
                res["n"] = max(p.width, m)
            else:
                method, _ = measure.split("_")
                res = tk.measure_network(
                    network_config(measure),
                    m,
                    max(p.width, m),
                    p.depth,
                    size,
                    method=method,
                    key=jr.fold_in(key, 4),
                )
                res["n"] = max(p.width, m)
            res["size"] = size
            res["commit"] = job.get("commit")
        except Exception as err:  # noqa: BLE001 - record and go on with the other measures
            res = {"status": "failed", "reason": f"{type(err).__name__}: {err}"[:500]}
        unit["measures"][measure] = res
        unit["load_after"] = load_average()
        store.save(name, unit)
    return unit


def unit_name(m: int) -> str:
    return f"m{m:05d}"


def _run_child(job: dict, timeout: float) -> str | None:
    """Run `run_size(job)` in a fresh Python; returns None or why it stopped early."""
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


def _complete(unit: dict | None) -> bool:
    return unit is not None and all(name in unit["measures"] for name in MEASURES)


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


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
    return plan


def assemble(units: dict[int, dict], p: Profile) -> dict:
    """Rows per m with the derived ratios, the fitted exponents and the issue's goals."""
    rows = []
    for m in sorted(units):
        ms = units[m]["measures"]

        def ok(name, ms=ms):
            res = ms.get(name)
            return res if res and res.get("status") == "ok" else None

        row = {
            "m": m,
            "load_before": units[m].get("load_before"),
            "load_after": units[m].get("load_after"),
            "measures": ms,
        }
        sde, base, mat = ok("sde"), ok("baseline"), ok("matmul")
        flops = 10.0 * m**3
        if sde and base:
            row["sde_over_baseline"] = sde["cost"] / base["cost"]
        if mat:
            for name, res in (("sde", sde), ("baseline", base)):
                if res:
                    row[f"{name}_fraction_of_matmul"] = flops * res["rate"] / (mat["gflops"] * 1e9)
        for kind in ("attention", "full"):
            law, exp = ok(f"law_{kind}"), ok(f"explicit_{kind}")
            if law and exp:
                row[f"law_speedup_{kind}"] = law["rate"] / exp["rate"]
        rows.append(row)
    exponents = {}
    for measure in MEASURES:
        pts = [
            (r["m"], r["measures"][measure]["cost"])
            for r in rows
            if r["measures"].get(measure, {}).get("status") == "ok"
        ]
        exponents[measure] = {
            "unit": UNIT[measure],
            "expected_at_least": MIN_EXPONENT[measure],
            f"m{FIT_RANGE[0]}_{FIT_RANGE[1]}": fit_exponent(pts, *FIT_RANGE),
            "all": fit_exponent(pts),
        }
    return {"rows": rows, "exponents": exponents, "goals": goals(rows, exponents)}


def goals(rows: list[dict], exponents: dict) -> dict:
    """The issue's goals, each with the measured value (None where not measured)."""
    at = {r["m"]: r for r in rows}

    def value(m, key):
        return at.get(m, {}).get(key)

    def measure(m, name):
        res = at.get(m, {}).get("measures", {}).get(name, {})
        return res.get("seconds") if res.get("status") == "ok" else None

    items = {
        "sde_over_baseline_m32 <= 1": (value(32, "sde_over_baseline"), lambda x: x <= 1.0),
        "sde_over_baseline_m128 <= 1": (value(128, "sde_over_baseline"), lambda x: x <= 1.0),
        "sde_exponent_m32_256 <= 3.3": (
            (exponents["sde"][f"m{FIT_RANGE[0]}_{FIT_RANGE[1]}"] or {}).get("exponent"),
            lambda x: x <= 3.3,
        ),
        "sde_fraction_of_matmul_m256 >= 0.5": (
            value(256, "sde_fraction_of_matmul"),
            lambda x: x >= 0.5,
        ),
        "law_speedup_attention_m64 >= 50": (value(64, "law_speedup_attention"), lambda x: x >= 50),
        "law_speedup_full_m64 >= 10": (value(64, "law_speedup_full"), lambda x: x >= 10),
        "compare_seconds_m256 <= 60": (measure(256, "compare"), lambda x: x <= 60),
    }
    return {
        name: {"value": val, "met": None if val is None else bool(test(val))}
        for name, (val, test) in items.items()
    }


# ------------------------------------------------------------------------------ output


def _cell(res: dict | None, key: str = "rate", scale: float = 1.0):
    if not res:
        return "-"
    if res.get("status") != "ok":
        return res.get("status", "-")
    return res.get(key) * scale if res.get(key) is not None else "-"


def tables(data: dict) -> str:
    """The per-m table, the exponent table, the goals and the skip reasons, as markdown."""
    rows = []
    notes = []
    for r in data["rows"]:
        ms = r["measures"]
        sde = ms.get("sde", {})
        mem = sde.get("memory_bytes") or sde.get("device_peak_bytes")
        rows.append(
            [
                r["m"],
                f"{sde.get('size', ms.get('baseline', {}).get('size', '-'))} x "
                f"{data['settings']['steps']}",
                _cell(sde),
                _cell(ms.get("baseline")),
                r.get("sde_over_baseline", "-"),
                r.get("sde_fraction_of_matmul", "-"),
                mem / 2**20 if mem else "-",
                _cell(sde, "rss_peak_bytes", 2**-20),
                _cell(ms.get("law_attention")),
                _cell(ms.get("explicit_attention")),
                _cell(ms.get("law_full")),
                _cell(ms.get("explicit_full")),
                _cell(ms.get("compare"), "seconds"),
            ]
        )
        for name, res in ms.items():
            if res.get("status") != "ok":
                notes.append(f"- m={r['m']} {name}: {res.get('status')}: {res.get('reason', '')}")
    out = [
        markdown_table(
            [
                "m",
                "paths x steps",
                "SDE path-steps/s",
                "O(m^3) Euler path-steps/s",
                "SDE / Euler time",
                "SDE / matmul rate",
                "SDE XLA MiB",
                "SDE process peak RSS MiB",
                "law att s-l/s",
                "explicit att s-l/s",
                "law full s-l/s",
                "explicit full s-l/s",
                "compare s",
            ],
            rows,
        )
    ]
    lo, hi = FIT_RANGE
    out.append("\nCost exponent in m (seconds per unit ~ m^p, log-log least squares):\n")
    out.append(
        markdown_table(
            ["measure", "unit", f"p (m = {lo}..{hi})", "p (all m)", "expected"],
            [
                [
                    name,
                    e["unit"],
                    _exponent(e[f"m{lo}_{hi}"]),
                    _exponent(e["all"]),
                    "3"
                    if name == "matmul"
                    else "-"
                    if e["expected_at_least"] is None
                    else f">= {e['expected_at_least']:g}",
                ]
                for name, e in data["exponents"].items()
            ],
        )
    )
    out.append("\nGoals of issue 12 (None: not measured in this run):\n")
    out.append(
        markdown_table(
            ["goal", "value", "met"],
            [
                [k, "-" if g["value"] is None else g["value"], g["met"]]
                for k, g in data["goals"].items()
            ],
        )
    )
    if notes:
        out.append("\nNot measured:\n" + "\n".join(notes))
    return "\n".join(out)


def _exponent(fit: dict | None) -> str:
    if not fit or fit.get("exponent") is None:
        return "-"
    return f"{fit['exponent']:.2f} ({fit['points']} sizes)"


def figure(data: dict, path: Path) -> Path | None:
    """A small log-log plot of seconds per unit against m, one line per measure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for measure in MEASURES:
        pts = [
            (r["m"], r["measures"][measure]["cost"])
            for r in data["rows"]
            if r["measures"].get(measure, {}).get("status") == "ok"
        ]
        if not pts:
            continue
        fit = data["exponents"][measure]["all"]
        label = measure + (f" (p={fit['exponent']:.2f})" if fit and fit["exponent"] else "")
        ms, cost = zip(*pts, strict=True)
        ax.loglog(ms, cost, "o-", ms=3, lw=1, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens m")
    ax.set_ylabel("seconds per unit")
    ax.set_title(f"bench_tokens ({data['profile']}, {data['machine']['device']})", fontsize=9)
    ax.legend(fontsize=6, loc="upper left")
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write(data: dict, out: Path) -> None:
    from sdeformer.results import write_json

    write_json(out, data)


# ------------------------------------------------------------------------------ main


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=tuple(PROFILES), default="cpu")
    parser.add_argument("--quick", action="store_true", help="the test profile (= --profile quick)")
    parser.add_argument("--tokens", type=int, nargs="+", help="override the profile's sizes")
    parser.add_argument("--limit", type=float, help="seconds per measure and size")
    parser.add_argument("--budget", type=float, help="seconds for the run (no new size after)")
    parser.add_argument(
        "--out", help="JSON path (default benchmarks/results/tokens[_profile].json)"
    )
    parser.add_argument("--store", help="directory of the per-size units (resumable)")
    parser.add_argument("--fresh", action="store_true", help="discard stored units, measure again")
    parser.add_argument(
        "--redo",
        nargs="+",
        choices=MEASURES,
        default=[],
        help="measure these again at every size and keep the other stored results, even if "
        "they were measured by another commit (each result records its commit)",
    )
    parser.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto")
    parser.add_argument(
        "--measures", nargs="+", choices=MEASURES, help="measure only these (default: all)"
    )
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_size(json.loads(Path(args.child).read_text()))
        return None
    from sdeformer.results import ResultsError, ResultStore

    profile = "quick" if args.quick else args.profile
    p = PROFILES[profile]
    changes = {"tokens": tuple(args.tokens)} if args.tokens else {}
    changes.update({k: getattr(args, k) for k in ("limit", "budget") if getattr(args, k)})
    p = dataclasses.replace(p, **changes)
    suffix = "" if profile == "cpu" else f"_{profile}"
    out = Path(args.out) if args.out else RESULTS / f"tokens{suffix}.json"
    info = machine()
    slug = "".join(c if c.isalnum() else "-" for c in info["device"]).strip("-").lower()
    store_dir = Path(args.store) if args.store else RESULTS / ".units" / f"tokens-{profile}-{slug}"
    fixed = {
        k: v for k, v in dataclasses.asdict(p).items() if k not in ("tokens", "limit", "budget")
    }
    store_config = {
        "profile": fixed,
        "config": sde_config().to_dict(),
        "T": T_FINAL,
        "bound": BOUND,
        "commit": _git_commit(),
        "jax": jax.__version__,
        "device": info["device"],
    }
    manifest = store_dir / "manifest.json"
    if args.redo and manifest.exists() and not args.fresh:
        from sdeformer.results import read_json

        found = read_json(manifest).get("config", {})
        if {k: v for k, v in found.items() if k != "commit"} == {
            k: v for k, v in store_config.items() if k != "commit"
        }:
            store_config = found  # same settings; the stored results keep their own commit
    try:
        store = ResultStore(store_dir, "bench_tokens", store_config, overwrite=args.fresh)
    except ResultsError:
        print(f"{store_dir}: stored units are from other settings or code; measuring afresh")
        store = ResultStore(store_dir, "bench_tokens", store_config, overwrite=True)
    isolate = args.isolate == "yes" or (
        args.isolate == "auto" and jax.default_backend() == "cpu" and profile != "quick"
    )
    print(
        f"bench_tokens: profile {profile}, m = {list(p.tokens)}, limit {p.limit:.0f} s per "
        f"measure, budget {p.budget:.0f} s, {'one process per size' if isolate else 'in process'}"
        f", units in {store_dir}",
        flush=True,
    )
    started = time.perf_counter()
    load_before = load_average()
    units: dict[int, dict] = {}
    data: dict = {}
    for m in p.tokens:
        name = unit_name(m)
        unit = store.load(name) if store.has(name) else None
        if unit and args.redo:
            unit["measures"] = {k: v for k, v in unit["measures"].items() if k not in args.redo}
            store.save(name, unit)
        if not _complete(unit):
            if time.perf_counter() - started > p.budget:
                unit = unit or {"m": m, "measures": {}}
                for measure in MEASURES:
                    unit["measures"].setdefault(
                        measure,
                        {"status": "skipped", "reason": f"run budget of {p.budget:.0f} s spent"},
                    )
            else:
                plan = plan_size(m, unit, units, p)
                for measure in set(MEASURES) - set(args.measures or MEASURES):
                    plan[measure] = {"skip": "not selected (--measures)"}
                job = {
                    "m": m,
                    "plan": plan,
                    "profile": dataclasses.asdict(p),
                    "store": str(store_dir),
                    "store_config": store_config,
                    "memory_budget": memory_budget(p),
                    "commit": _git_commit(),
                }
                print(f"m={m}: {json.dumps(plan)}", flush=True)
                if isolate:
                    planned = [k for k, s in plan.items() if "size" in s]
                    why = _run_child(job, timeout=1.5 * p.limit * len(planned) + 120)
                    unit = store.load(name) if store.has(name) else {"m": m, "measures": {}}
                    if why:
                        missing = [k for k in planned if k not in unit["measures"]]
                        for i, measure in enumerate(missing):
                            unit["measures"][measure] = (
                                {
                                    "status": "timeout" if "timeout" in why else "failed",
                                    "reason": why,
                                }
                                if i == 0
                                else {"status": "skipped", "reason": "not run: " + why}
                            )
                        store.save(
                            name,
                            {
                                **unit,
                                "measures": {
                                    k: v
                                    for k, v in unit["measures"].items()
                                    if not v.get("reason", "").startswith("not run: ")
                                },
                            },
                        )
                else:
                    unit = run_size(job)
        else:
            print(f"m={m}: reusing the stored unit", flush=True)
        units[m] = unit
        data = {
            "benchmark": "tokens",
            "profile": profile,
            "machine": info,
            "settings": dataclasses.asdict(p),
            "config": sde_config().to_dict(),
            "T": T_FINAL,
            "bound": BOUND,
            "commit": _git_commit(),
            "store_commit": store_config["commit"],
            "load": {"before": load_before, "now": load_average(), "cpu_count": os.cpu_count()},
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "XLA_FLAGS")},
            "seconds": time.perf_counter() - started,
            **assemble(units, p),
        }
        write(data, out)  # after every size: an interrupted run keeps what it measured
    if not args.no_figure:
        png = figure(data, out.with_suffix(".png"))
        data["figure"] = png.name if png else None
        write(data, out)
    print("\n" + tables(data))
    print(f"\nload average before {load_before}, after {load_average()}; wrote {out}")
    return data


if __name__ == "__main__":
    jax.config.update("jax_numpy_dtype_promotion", "standard")
    main()
