"""The report of `bench_tokens`: rows per m with their ratios, the cost exponents, the goals,
the summary table (printed by the benchmark and by `run_all`) and the log-log figure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._common import fit_exponent
from ._markdown import format_number, summary_table
from ._ratios import ratio_cell, run_line
from ._tokens_plan import FIT_RANGE, MEASURES, MIN_EXPONENT, UNIT

if TYPE_CHECKING:
    from .bench_tokens import Profile


def _ok(ms: dict, name: str) -> dict | None:
    res = ms.get(name)
    return res if res and res.get("status") == "ok" else None


def derived(m: int, ms: dict) -> dict:
    """The ratios of one size m, from its measures alone, each between two numbers measured at
    the same batch (`ratio_cell`: the two batches instead of a quotient where they differ)."""
    out: dict = {}
    sde, base, mat = _ok(ms, "sde"), _ok(ms, "baseline"), _ok(ms, "matmul")
    if sde and base:
        out["sde_over_baseline"] = ratio_cell(
            sde["cost"],
            base["cost"],
            num_batch=sde["size"],
            den_batch=base["size"],
            what=f"SDE / Euler time at m = {m}",
        )
    if mat:
        for name, res in (("sde", sde), ("baseline", base)):
            if res:
                # 10 m^3 flops per path-step against the matmul rate at the same batch
                frac = ratio_cell(
                    res["rate"],
                    mat["gflops"],
                    num_batch=res["size"],
                    den_batch=mat["size"],
                    what=f"{name} / matmul at m = {m}",
                )
                scale = 10.0 * m**3 / 1e9
                out[f"{name}_fraction_of_matmul"] = (
                    frac * scale if isinstance(frac, float) else frac
                )
    for kind in ("attention", "full"):
        law, exp = _ok(ms, f"law_{kind}"), _ok(ms, f"explicit_{kind}")
        if law and exp:
            out[f"law_speedup_{kind}"] = ratio_cell(
                law["rate"],
                exp["rate"],
                num_batch=law["size"],
                den_batch=exp["size"],
                what=f"law / explicit {kind} at m = {m}",
            )
    return out


def assemble(units: dict[int, dict], p: Profile) -> dict:
    """Rows per m with the derived ratios, the fitted exponents and the issue's goals."""
    rows = []
    for m in sorted(units):
        ms = units[m]["measures"]
        row = {
            "m": m,
            "load_before": units[m].get("load_before"),
            "load_after": units[m].get("load_after"),
            "measures": ms,
            **derived(m, ms),
        }
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
        name: {
            "value": val,
            "met": None if val is None or isinstance(val, str) else bool(test(val)),
        }
        for name, (val, test) in items.items()
    }


# ------------------------------------------------------------------------------ the summary


def _summary_header(data: dict) -> str:
    load = data.get("load", {})
    s = data["settings"]
    return (
        f"\n**Many tokens** (`bench_tokens`, profile `{data['profile']}`, "
        f"{s['steps']} SDE steps on [0, T], T = min(0.5, 0.1 steps / m), law chain / explicit "
        f"networks at n = max({s['width']}, m), "
        f"depth {s['depth']}, compare on {s['compare_samples']} samples per source"
        + (
            f"; load above the {load.get('cpu_count')} cores: the machine was shared, so rates are "
            "low and noisy; ratios measured in the same run, at the same batch, are the "
            "meaningful numbers"
            if load.get("before") and load["before"][0] > (load.get("cpu_count") or 1)
            else ""
        )
        + "):"
    )


def _summary_row(r: dict) -> list:
    def rate(name, key="rate"):
        res = r["measures"].get(name, {})
        return res.get(key) if res.get("status") == "ok" else res.get("status", "-")

    got = [r["measures"].get(k, {}).get("survived") for k in ("sde", "baseline")]
    alive = " / ".join("-" if x is None else f"{x:.2f}" for x in got)
    sde = r["measures"].get("sde", {})
    per_path = (
        sde["memory_bytes"] / (sde["size"] * r["m"] ** 2)
        if sde.get("status") == "ok" and sde.get("memory_bytes")
        else None
    )
    ratios = derived(r["m"], r["measures"])
    return [
        r["m"],
        rate("sde"),
        per_path,
        rate("baseline"),
        ratios.get("sde_over_baseline"),
        alive,
        ratios.get("sde_fraction_of_matmul"),
        rate("law_attention"),
        rate("explicit_attention"),
        ratios.get("law_speedup_attention"),
        rate("law_full"),
        rate("explicit_full"),
        ratios.get("law_speedup_full"),
        rate("compare", "seconds"),
    ]


SUMMARY_HEADERS = [
    "m",
    "SDE path-steps/s",
    "SDE memory bytes / (paths m^2)",
    "O(m^3) Euler path-steps/s",
    "SDE / Euler time",
    "alive at T (SDE / Euler)",
    "SDE / matmul rate",
    "law att s-l/s",
    "explicit att s-l/s",
    "law / explicit att",
    "law full s-l/s",
    "explicit full s-l/s",
    "law / explicit full",
    "compare s",
]


def _exponent_lines(data: dict) -> list[str]:
    fits = data["exponents"]
    return [
        "\nCost exponents p (seconds per unit ~ m^p):\n",
        *summary_table(
            ["measure", "unit", "p, m = 32..256", "p, all m"],
            [
                [
                    name,
                    e["unit"],
                    *[round(e[k]["exponent"], 2) if e.get(k) else None for k in ("m32_256", "all")],
                ]
                for name, e in sorted(fits.items(), key=lambda kv: list(MEASURES).index(kv[0]))
            ],
        ),
    ]


def _goals_line(data: dict) -> str:
    """The goals, recomputed from the measures of this JSON (not from its stored ratios)."""
    rows = [{**r, **derived(r["m"], r["measures"])} for r in data["rows"]]
    return (
        "\nGoals of issue 12: "
        + "; ".join(
            f"{k}: {format_number(g['value']) if g['value'] is not None else 'not measured'}"
            + ("" if g["met"] is None else (" (met)" if g["met"] else " (not met)"))
            for k, g in goals(rows, data["exponents"]).items()
        )
        + "."
    )


def not_measured(data: dict) -> list[str]:
    """ "m=<m> <measure>: <reason>" for every measure whose status is not ok."""
    return [
        f"m={r['m']} {n}: {res.get('reason', '')}"
        for r in data["rows"]
        for n, res in r["measures"].items()
        if res.get("status") != "ok"
    ]


def summary(data: dict) -> list[str]:
    """The `bench_tokens` part of the summary: costs per m, exponents, goals, load; printed by
    the benchmark and by `run_all`."""
    out = [_summary_header(data), run_line(data, "tokens") + "\n"]
    out += summary_table(SUMMARY_HEADERS, [_summary_row(r) for r in data["rows"]])
    if any(
        isinstance(v, str) for r in data["rows"] for v in derived(r["m"], r["measures"]).values()
    ):
        out.append(
            '\n"unequal batch a / b": the two sides of that ratio ran at a and b paths or '
            "samples (an older version of the plan), so no ratio is shown; the benchmark now "
            "runs the law chain and the explicit networks of a stack at one sample count."
        )
    precisions = {
        r["measures"]["matmul"].get("precision", "not recorded (the default: TF32 on NVIDIA GPUs)")
        for r in data["rows"]
        if r["measures"].get("matmul", {}).get("status") == "ok"
    }
    if precisions:
        out.append(
            "\nSDE / matmul rate: against the batched matmul at the same batch, precision "
            + ", ".join(sorted(precisions))
            + "."
        )
    blas = (data.get("env") or {}).get("OPENBLAS_NUM_THREADS")
    if blas:
        out.append(
            f"\nRun with OPENBLAS_NUM_THREADS={blas}: on a shared machine the threaded LAPACK "
            "Cholesky inside jaxlib spins when the cores are busy, which would time the load, "
            "not the solvers."
        )
    out += _exponent_lines(data)
    out.append(_goals_line(data))
    skipped = not_measured(data)
    if skipped:
        out.append(
            f"\n{len(skipped)} measurements skipped (reasons in tokens.json), first: {skipped[0]}."
        )
    if data.get("figure"):
        out.append(f"\nFigure (log-log cost against m): `{data['figure']}`, beside `tokens.json`.")
    return out


def details(data: dict) -> list[str]:
    """What the benchmark prints besides the summary: the sizes and memory of the SDE per m,
    and the reason of every measure not measured."""
    rows = []
    for r in data["rows"]:
        ms = r["measures"]
        sde = ms.get("sde", {})
        mem = sde.get("memory_bytes") or sde.get("device_peak_bytes")
        rss = sde.get("rss_peak_bytes") if sde.get("status") == "ok" else sde.get("status")
        rows.append(
            [
                r["m"],
                f"{sde.get('size', ms.get('baseline', {}).get('size', '-'))} x "
                f"{data['settings']['steps']}",
                mem / 2**20 if mem else None,
                rss / 2**20 if isinstance(rss, int | float) else rss,
            ]
        )
    out = ["\nSDE sizes and memory per m:\n"]
    out += summary_table(["m", "paths x steps", "SDE XLA MiB", "SDE process peak RSS MiB"], rows)
    notes = not_measured(data)
    if notes:
        out.append("\nNot measured:\n" + "\n".join(f"- {n}" for n in notes))
    return out


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
