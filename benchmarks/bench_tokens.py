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
import os
import time
from pathlib import Path

import jax

from ._common import RESULTS, command_of, load_average, machine
from ._tokens_plan import (
    BOUND,
    MEASURES,
    T_FINAL,
    memory_budget,
    plan_measure,
    plan_size,
    sde_config,
    units_per_run,
)
from ._tokens_report import assemble, details, figure, summary, write
from ._tokens_run import complete, run_isolated, run_size, unit_name

__all__ = ["MEASURES", "PROFILES", "main", "plan_measure", "summary", "units_per_run"]


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
        budget=190,
    ),
}


def job_profile(job: dict) -> Profile:
    """The profile of a job (JSON turned its tuple of sizes into a list)."""
    return Profile(**{**job["profile"], "tokens": tuple(job["profile"]["tokens"])})


def _parser() -> argparse.ArgumentParser:
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
    return parser


@dataclasses.dataclass
class _Run:
    """One run of the benchmark: its settings, where its units are stored, what it measured."""

    args: argparse.Namespace
    profile: str
    p: Profile
    out: Path
    info: dict
    commit: str | None
    store_dir: Path
    store_config: dict
    store: object = None
    isolate: bool = False
    started: float = 0.0
    load_before: list[float] | None = None
    units: dict = dataclasses.field(default_factory=dict)
    command: str = ""


def _settings(args) -> _Run:
    """The profile with the command line's changes, the output and store paths, the store's
    settings (a store made with other settings is not reused)."""
    from sdeformer.results import provenance

    profile = "quick" if args.quick else args.profile
    changes = {"tokens": tuple(args.tokens)} if args.tokens else {}
    changes.update({k: getattr(args, k) for k in ("limit", "budget") if getattr(args, k)})
    p = dataclasses.replace(PROFILES[profile], **changes)
    suffix = "" if profile == "cpu" else f"_{profile}"
    out = Path(args.out) if args.out else RESULTS / f"tokens{suffix}.json"
    info = machine()
    slug = "".join(c if c.isalnum() else "-" for c in info["device"]).strip("-").lower()
    store_dir = Path(args.store) if args.store else RESULTS / ".units" / f"tokens-{profile}-{slug}"
    fixed = {
        k: v for k, v in dataclasses.asdict(p).items() if k not in ("tokens", "limit", "budget")
    }
    commit = provenance()["git_commit"]
    store_config = {
        "profile": fixed,
        "config": sde_config().to_dict(),
        "T": T_FINAL,
        "bound": BOUND,
        "commit": commit,
        "jax": jax.__version__,
        "device": info["device"],
    }
    return _Run(args, profile, p, out, info, commit, store_dir, store_config)


def _open_store(run: _Run) -> None:
    """The store of the per-size units; with --redo, one of the same settings from another
    commit is kept (its results keep their own commit)."""
    from sdeformer.results import ResultsError, ResultStore, read_json

    manifest = run.store_dir / "manifest.json"
    if run.args.redo and manifest.exists() and not run.args.fresh:
        found = read_json(manifest).get("config", {})
        if {k: v for k, v in found.items() if k != "commit"} == {
            k: v for k, v in run.store_config.items() if k != "commit"
        }:
            run.store_config = found  # same settings; the stored results keep their own commit
    try:
        run.store = ResultStore(
            run.store_dir, "bench_tokens", run.store_config, overwrite=run.args.fresh
        )
    except ResultsError:
        print(f"{run.store_dir}: stored units are from other settings or code; measuring afresh")
        run.store = ResultStore(run.store_dir, "bench_tokens", run.store_config, overwrite=True)


def _measure_size(run: _Run, m: int) -> dict:
    """The unit of size m: stored, marked skipped once the run's budget is spent, or measured."""
    args, p, store = run.args, run.p, run.store
    name = unit_name(m)
    unit = store.load(name) if store.has(name) else None
    if unit and args.redo:
        unit["measures"] = {k: v for k, v in unit["measures"].items() if k not in args.redo}
        store.save(name, unit)
    if complete(unit):
        print(f"m={m}: reusing the stored unit", flush=True)
        return unit
    if time.perf_counter() - run.started > p.budget:
        unit = unit or {"m": m, "measures": {}}
        for measure in MEASURES:
            unit["measures"].setdefault(
                measure, {"status": "skipped", "reason": f"run budget of {p.budget:.0f} s spent"}
            )
        return unit
    plan = plan_size(m, unit, run.units, p)
    for measure in set(MEASURES) - set(args.measures or MEASURES):
        plan[measure] = {"skip": "not selected (--measures)"}
    job = {
        "m": m,
        "plan": plan,
        "profile": dataclasses.asdict(p),
        "store": str(run.store_dir),
        "store_config": run.store_config,
        "memory_budget": memory_budget(p),
        "commit": run.commit,
    }
    print(f"m={m}: {json.dumps(plan)}", flush=True)
    return run_isolated(job, store, p) if run.isolate else run_size(job, p)


def _data(run: _Run) -> dict:
    """The JSON of the run so far."""
    return {
        "benchmark": "tokens",
        "profile": run.profile,
        "machine": run.info,
        "settings": dataclasses.asdict(run.p),
        "config": sde_config().to_dict(),
        "T": T_FINAL,
        "bound": BOUND,
        "commit": run.commit,
        "command": run.command,
        "store_commit": run.store_config["commit"],
        "load": {"before": run.load_before, "now": load_average(), "cpu_count": os.cpu_count()},
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "XLA_FLAGS")},
        "seconds": time.perf_counter() - run.started,
        **assemble(run.units, run.p),
    }


def main(argv=None) -> dict | None:
    args = _parser().parse_args(argv)
    if args.child:
        job = json.loads(Path(args.child).read_text())
        run_size(job, job_profile(job))
        return None
    run = _settings(args)
    run.command = command_of("bench_tokens", argv)
    _open_store(run)
    p = run.p
    run.isolate = args.isolate == "yes" or (
        args.isolate == "auto" and jax.default_backend() == "cpu" and run.profile != "quick"
    )
    print(
        f"bench_tokens: profile {run.profile}, m = {list(p.tokens)}, limit {p.limit:.0f} s per "
        f"measure, budget {p.budget:.0f} s, "
        f"{'one process per size' if run.isolate else 'in process'}, units in {run.store_dir}",
        flush=True,
    )
    run.started = time.perf_counter()
    run.load_before = load_average()
    data: dict = {}
    for m in p.tokens:
        run.units[m] = _measure_size(run, m)
        data = _data(run)
        write(data, run.out)  # after every size: an interrupted run keeps what it measured
    if not args.no_figure:
        png = figure(data, run.out.with_suffix(".png"))
        data["figure"] = png.name if png else None
        write(data, run.out)
    print("\n".join(summary(data) + details(data)))
    print(f"\nload average before {run.load_before}, after {load_average()}; wrote {run.out}")
    return data


if __name__ == "__main__":
    jax.config.update("jax_numpy_dtype_promotion", "standard")
    main()
