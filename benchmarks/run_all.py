"""Run every benchmark and summarise the JSON they write in one markdown table (`make bench`).

    python -m benchmarks.run_all                 # CPU-friendly sizes (a few minutes on 2 cores)
    python -m benchmarks.run_all --profile gpu   # larger sizes for an accelerator
    python -m benchmarks.run_all --only laws sde # a subset; the summary uses every JSON present
    python -m benchmarks.run_all --summary-only  # rebuild the summary from the JSON files

Each benchmark script's `main(argv)` runs with the sizes of the profile and writes
`benchmarks/results/<name>.json` with the machine it ran on. This script then writes
`benchmarks/results/README.md` (the machine, the load during the run, the measured ceilings and
one table per benchmark) and copies the same summary into the top-level README between the
markers `<!-- bench:start -->` and `<!-- bench:end -->`. Every number in the summary is read
from the JSON files; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import jax

from . import bench_compare, bench_init, bench_laws, bench_sde, bench_tokens, bench_train
from ._common import DEFAULT_RESULTS, RESULTS, machine

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = RESULTS / "README.md"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

PROFILES: dict[str, dict[str, list[str]]] = {
    # CPU: small enough for a laptop or a 2-core CI machine.
    "cpu": {
        "init": ["--widths", "128", "512", "1024", "--samples", "4", "--depth", "16"],
        "laws": ["--widths", "128", "512", "1024", "--law-samples", "500", "--depth", "8"],
        "sde": ["--tokens", "2", "4", "8", "--paths", "1000", "--steps", "200"],
        "train": ["--quick"],
        "tokens": ["--profile", "cpu"],
        "compare": ["--tokens", "16", "64", "256", "--samples", "2000"],
    },
    # GPU: the same scripts at sizes where an accelerator is busy, each within the timeout that
    # benchmarks/gpu_all.sh gives it (one 10-minute command in all).
    "gpu": {
        "init": ["--widths", "1024", "4096", "8192", "--samples", "16", "--depth", "32"],
        "laws": [
            *("--widths", "1024", "4096", "16384", "--law-samples", "20000"),
            *("--m-sweep", "8", "32", "128", "256", "--repeats", "3"),
            *("--tokens-samples", "1024", "--explicit-samples", "64"),
        ],
        "sde": ["--tokens", "2", "8", "32", "--paths", "20000", "--steps", "200"],
        "train": ["--steps", "20", "--batch-size", "64"],
        "tokens": ["--profile", "gpu"],
        # compare_sources is NumPy on the host: m = 1024 x 2000 samples is hours of eigenvalues
        "compare": ["--tokens", "64", "256", "--samples", "2000"],
    },
}
SCRIPTS = {
    "init": bench_init,
    "laws": bench_laws,
    "sde": bench_sde,
    "train": bench_train,
    "tokens": bench_tokens,
    "compare": bench_compare,
}


def _out_flag(name: str) -> list[str]:
    """Absolute output path for the scripts that take --out (they default to a cwd path)."""
    return [] if name in ("init", "compare") else ["--out", str(RESULTS / f"{name}.json")]


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(names: list[str], profile: str) -> dict:
    """Run the benchmarks `names` with the sizes of `profile`; returns the run's record."""
    record = {"profile": profile, "load_before": _load(), "benchmarks": {}}
    for name in names:
        argv = PROFILES[profile][name] + _out_flag(name)
        print(f"\n=== bench_{name} {' '.join(argv)}", flush=True)
        started = time.perf_counter()
        try:
            SCRIPTS[name].main(argv)
            status = "ok"
        except Exception:  # one failing benchmark must not hide the others' results
            traceback.print_exc()
            status = "failed"
        record["benchmarks"][name] = {
            "argv": argv,
            "status": status,
            "seconds": round(time.perf_counter() - started, 1),
            "load_after": _load(),
        }
    record["load_after"] = _load()
    return record


# ------------------------------------------------------------------------------- the summary


def _read(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-2):
            return f"{x:.{digits}g}"
        return f"{x:.{digits}g}" if abs(x) < 10 else f"{x:,.0f}"
    return str(x)


def _table(headers: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def summary_markdown(run_record: dict | None) -> str:
    """The markdown summary of every benchmark JSON present in benchmarks/results."""
    init, laws, sde, train, tokens, comparison = (
        _read(n) for n in ("init", "laws", "sde", "train", "tokens", "compare")
    )
    out: list[str] = []
    ref = next((d for d in (init, laws, sde, train, tokens, comparison) if d), None)
    if ref is None:
        return "No benchmark results yet: run `make bench`."
    m = ref.get("machine", {})
    backend = m.get("backend") or m.get("jax_backend")
    device = "" if backend == "cpu" else f", {m.get('device_count', 1)} x {m.get('device')}"
    out.append(
        f"Machine: {m.get('cpu_model') or m.get('processor')}, {m.get('cpu_count')} CPU cores"
        f"{device}, {m.get('platform')}, jax {m.get('jax') or m.get('jax_version')} "
        f"(backend {backend})."
    )
    if backend == "cpu":
        out[-1] += (
            " No GPU was used for these numbers; `python -m benchmarks.run_all --profile gpu` "
            "runs the same scripts at GPU sizes."
        )
    if run_record is not None:
        out.append(
            f"\nProfile `{run_record['profile']}`; load average (1, 5, 15 min) before the run "
            f"{run_record['load_before']}, after {run_record['load_after']} (other jobs shared "
            "the machine when the load exceeds the core count)."
        )
    ceilings = (init or {}).get("ceilings")
    if ceilings:
        out.append("\n**Measured ceilings** (`benchmarks._common.ceilings`, float32):\n")
        precision = ceilings.get("matmul_precision", "default precision (not recorded)")
        default = ceilings.get("matmul_gflops_default_precision", "-")
        out += _table(
            [
                f"matmul GFLOP/s (1024^2), {precision}",
                "matmul GFLOP/s, default precision (TF32 on NVIDIA GPUs)",
                "normal draws / s",
            ],
            [[ceilings["matmul_gflops"], default, ceilings["normals_per_s"]]],
        )
    if init:
        out.append(
            "\n**Explicit networks at initialisation** (`bench_init`: shaped attention + MLP, "
            f"m = {init['settings']['tokens']}, depth {init['settings']['depth']}, "
            f"{init['settings']['samples']} samples):\n"
        )
        out += _table(
            ["n", "samples x layers / s", "normal draws / s", "fraction of normal ceiling"],
            [
                [
                    r["n"],
                    r["sample_layers_per_s"],
                    r["normals_per_s"],
                    r["fraction_of_normal_ceiling"],
                ]
                for r in init["throughput"]
            ],
        )
        if any(r["fraction_of_normal_ceiling"] > 1 for r in init["throughput"]):
            out.append(
                "\nFractions above 1: the networks draw normals faster than the ceiling kernel "
                "(one jitted call drawing 2^22 normals and summing them), so that kernel is a "
                "reference rate, not an upper bound, on this machine."
            )
        if init.get("width_exponent"):
            out.append(
                f"\nCost exponent in n (seconds per sample-layer ~ n^p): "
                f"p = {init['width_exponent']['exponent']:.2f}."
            )
        out.append(
            f"\nCompile time depth 1024 / depth 16: {init['compile_ratio']:.2f}; "
            f"memory depth 1024 / depth 16: {init['memory_ratio']:.2f} (flat in depth)."
        )
    if laws:
        from sdeformer.config import ShapedConfig
        from sdeformer.finite import weights_per_layer

        cfg = ShapedConfig.from_dict(laws["config"])
        rows = []
        for r in laws["throughput"]:
            # normal draws of the explicit networks, from this file alone (a fraction of the
            # normal ceiling would divide by bench_init's ceiling, another run)
            draws = r["explicit_rate"] * weights_per_layer(cfg, r["n"])
            rows.append([r["n"], r["law_rate"], r["explicit_rate"], r["speedup"], draws])
        out.append(
            f"\n**Exact law chain vs explicit networks** (`bench_laws`, m = {laws['m']}, "
            "samples x layers per second):\n"
        )
        out += _table(
            ["n", "law chain", "explicit", "speedup", "explicit: normal draws / s"],
            rows,
        )
    if sde:
        fits = sde.get("exponents") or {}

        def p(name):
            return f" (p = {fits[name]['exponent']:.2f})" if fits.get(name) else ""

        out.append(
            "\n**Covariance SDE** (`bench_sde`: diffrax Euler vs the plain O(m^3) batched Euler of "
            "`benchmarks/_baseline.py`; p: cost exponent in m):\n"
        )
        out += _table(
            [
                "m",
                "paths",
                "steps",
                f"diffrax paths/s{p('diffrax')}",
                f"O(m^3) Euler paths/s{p('baseline')}",
                "time ratio",
                "compile s",
            ],
            [
                [
                    r["m"],
                    r["paths"],
                    r["steps"],
                    r["diffrax_paths_per_s"],
                    r["baseline_paths_per_s"],
                    r["ratio_diffrax_over_baseline_time"],
                    r["diffrax_compile_s"],
                ]
                for r in sde["rows"]
            ],
        )
    if tokens:
        out += tokens_summary(tokens)
    if comparison:
        out.append(
            "\n**Comparison cost** (`bench_compare`: `compare_sources` on two Wishart sources, two "
            "times, sampling excluded):\n"
        )
        out += _table(
            ["m", "samples / source", "rows", "pairs compared / total", "seconds"],
            [
                [
                    r["m"],
                    r["num_samples"],
                    r["rows"],
                    f"{r['pairs_compared']} / {r['pairs_total']}",
                    r["seconds"],
                ]
                for r in comparison["rows"]
            ],
        )
    if train:
        out.append("\n**Training step** (`bench_train`, AdamW, byte-level LM):\n")
        out += _table(
            ["size", "kind", "width", "depth", "seq", "batch", "compile s", "step ms", "tokens/s"],
            [
                [
                    r["size"],
                    r["kind"],
                    r["width"],
                    r["depth"],
                    r["seq_len"],
                    r["batch_size"],
                    r["compile_and_first_step_s"],
                    r["step_ms"],
                    r["tokens_per_second"],
                ]
                for r in train["rows"]
            ],
        )
    if run_record is not None:
        failed = [n for n, b in run_record["benchmarks"].items() if b["status"] != "ok"]
        if failed:
            out.append(f"\nFailed in this run (older JSON shown if present): {', '.join(failed)}")
    return "\n".join(out)


def tokens_summary(data: dict) -> list[str]:
    """The `bench_tokens` part of the summary: costs per m, exponents, goals, load."""

    def rate(r, name, key="rate"):
        res = r["measures"].get(name, {})
        return res.get(key) if res.get("status") == "ok" else res.get("status", "-")

    def alive(r):
        got = [r["measures"].get(k, {}).get("survived") for k in ("sde", "baseline")]
        return " / ".join("-" if x is None else f"{x:.2f}" for x in got)

    load = data.get("load", {})
    s = data["settings"]
    out = [
        f"\n**Many tokens** (`bench_tokens`, profile `{data['profile']}`, "
        f"{s['steps']} SDE steps on [0, T], T = min(0.5, 0.1 steps / m), law chain / explicit "
        f"networks at n = max({s['width']}, m), "
        f"depth {s['depth']}, compare on {s['compare_samples']} samples per source; load average "
        f"{load.get('before')} before, {load.get('now')} after on {load.get('cpu_count')} cores"
        + (
            ": the machine was shared, so rates are low and noisy; ratios measured in the same "
            "run are the meaningful numbers"
            if load.get("before") and load["before"][0] > (load.get("cpu_count") or 1)
            else ""
        )
        + "):\n"
    ]
    rows = []
    for r in data["rows"]:
        sde = r["measures"].get("sde", {})
        per_path = (
            sde["memory_bytes"] / (sde["size"] * r["m"] ** 2)
            if sde.get("status") == "ok" and sde.get("memory_bytes")
            else None
        )
        rows.append(
            [
                r["m"],
                rate(r, "sde"),
                per_path,
                rate(r, "baseline"),
                r.get("sde_over_baseline"),
                alive(r),
                r.get("sde_fraction_of_matmul"),
                rate(r, "law_attention"),
                rate(r, "explicit_attention"),
                rate(r, "law_full"),
                rate(r, "explicit_full"),
                rate(r, "compare", "seconds"),
            ]
        )
    out += _table(
        [
            "m",
            "SDE path-steps/s",
            "SDE memory bytes / (paths m^2)",
            "O(m^3) Euler path-steps/s",
            "SDE / Euler time",
            "alive at T (SDE / Euler)",
            "SDE / matmul rate",
            "law att s-l/s",
            "explicit att s-l/s",
            "law full s-l/s",
            "explicit full s-l/s",
            "compare s",
        ],
        rows,
    )
    blas = (data.get("env") or {}).get("OPENBLAS_NUM_THREADS")
    if blas:
        out.append(
            f"\nRun with OPENBLAS_NUM_THREADS={blas}: on this shared machine the threaded LAPACK "
            "Cholesky inside jaxlib spins when the cores are busy (4 x 256 x 256 factors took "
            "488 ms threaded, 12 ms on one thread), which would time the load, not the solvers."
        )
    out.append("\nCost exponents p (seconds per unit ~ m^p):\n")
    fits = data["exponents"]
    out += _table(
        ["measure", "unit", "p, m = 32..256", "p, all m"],
        [
            [
                name,
                e["unit"],
                *[round(e[k]["exponent"], 2) if e.get(k) else None for k in ("m32_256", "all")],
            ]
            for name, e in sorted(
                fits.items(), key=lambda kv: list(bench_tokens.MEASURES).index(kv[0])
            )
        ],
    )
    out.append(
        "\nGoals of issue 12: "
        + "; ".join(
            f"{k}: {_fmt(g['value']) if g['value'] is not None else 'not measured'}"
            + ("" if g["met"] is None else (" (met)" if g["met"] else " (not met)"))
            for k, g in data["goals"].items()
        )
        + "."
    )
    skipped = [
        f"m={r['m']} {n}: {res.get('reason', '')}"
        for r in data["rows"]
        for n, res in r["measures"].items()
        if res.get("status") != "ok"
    ]
    if skipped:
        out.append(
            f"\n{len(skipped)} measurements skipped (reasons in tokens.json), first: {skipped[0]}."
        )
    if data.get("figure"):
        where = RESULTS.relative_to(ROOT) if RESULTS.is_relative_to(ROOT) else RESULTS
        out.append(f"\nFigure (log-log cost against m): `{where}/{data['figure']}`.")
    return out


def write_summary(run_record: dict | None, *, save_record: bool = True) -> str:
    body = summary_markdown(run_record)
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(
        "# Benchmark results\n\nWritten by `python -m benchmarks.run_all` from the JSON files in "
        "this directory.\n\n" + body + "\n"
    )
    if run_record is not None and save_record:
        (RESULTS / "run_all.json").write_text(json.dumps(run_record, indent=2) + "\n")
    if README.exists() and RESULTS == DEFAULT_RESULTS.resolve():
        text = README.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            _, tail = rest.split(END, 1)
            README.write_text(f"{head}{START}\n{body}\n{END}{tail}")
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=tuple(PROFILES), default="cpu")
    parser.add_argument("--only", nargs="+", choices=tuple(SCRIPTS), default=list(SCRIPTS))
    parser.add_argument(
        "--summary-only", action="store_true", help="rebuild the summary from the JSON files"
    )
    args = parser.parse_args(argv)
    jax.config.update("jax_numpy_dtype_promotion", "standard")
    if args.summary_only:
        previous = RESULTS / "run_all.json"
        record = json.loads(previous.read_text()) if previous.exists() else None
        print("\n" + write_summary(record, save_record=False))
        print(f"\nwrote {SUMMARY}")
        return 0
    record = run(args.only, args.profile)
    record["machine"] = machine()
    print("\n" + write_summary(record))
    print(f"\nwrote {SUMMARY}")
    return 1 if any(b["status"] != "ok" for b in record["benchmarks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
