"""Convergence of finite-width laws to the SDE: every width-sweep JSON of docs/results, regenerated.

    python -m benchmarks.convergence --profile cpu     # (make results) docs/results/width_sweep_*
    python -m benchmarks.convergence --profile gpu     # benchmarks/results/gpu-<device>/convergence
    python -m benchmarks.convergence --profile tiny --out DIR   # the tests

The plan (`PLAN`, `PROFILES`): T in {0.5, 1}; the limit SDE and the finite-width SDE
(`width=n`); attention-only stacks and attention + MLP stacks (the configuration of
docs/theory.md section 4, "Measured"); R independent replications per (T, variant, stack, width).
A unit is one (sweep, replication, width): `num_samples` law-chain networks (depth round(T n))
and `num_samples` SDE paths, compared on `rho_0_1` at t = T with stopped paths held at their exit
state and the exit indicator beside (`compare.width_distances`: neither side conditioned on
survival). Keys: unit id = 10^6 sweep index + 10^4 replication + n (`unit_id`), finite key
`fold_in(fold_in(key(seed), id), 0)`, SDE key `fold_in(..., 1)`, so no key is shared between
sweeps, replications or widths. Units run by width (smallest first), then sweep, then replication;
each sweep's JSON is rewritten after every unit (commit, command, machine and load average of each
unit recorded) and a rerun skips the units it holds (same settings), so an interrupted run
resumes. Fits (`sdeformer.compare.term_fits`): the theory's form and a free exponent, pooled
and per replication (`benchmarks/_convergence_report.py`).

Cost (measured, pilot of 17:36 UTC on this 2-core CPU at load about 1): the law chain costs about
10 us per sample-layer attention-only and 12-24 us with the MLP; Euler SDE steps about 0.6 us per
path-step (m = 2), and each new (width, depth) compiles for 4-8 s. The cpu profile (2000 samples
per side, 8 replications, attention-only widths 16 .. 1024, MLP widths 16 .. 256, 1000 Euler
steps) is 9.8e7 attention sample-layers (about 16 min), 2.4e7 MLP sample-layers (about 6 min),
7.7e8 SDE path-steps (about 7 min) and about 40 compilations (about 4 min): about 33 min at
load 1, an hour or more at the load of 6 to 9 this shared machine shows when its neighbours are
busy. Units of the largest widths come last (attention-only n = 1024 is half of the law-chain
cost), so a run that is stopped loses only those.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from benchmarks import _convergence_report as report
from benchmarks._common import ROOT, load_average, machine

V0 = ((1.0, -0.2), (-0.2, 1.0))
BASE = {
    "tau0": 1.5,
    "gamma": 0.5,
    "heads": 4,
    "out_proj": True,
    "mlp_ratio": 2.0,
    "c_plus": 0.5,
    "c_minus": -2.0,
}
"""The configuration of docs/theory.md section 4, "Measured" (c_plus + c_minus = -1.5)."""
STACKS = {"attn": ("attention",), "mlp": ("attention", "mlp")}
VARIANTS = ("limit", "finite")
TS = (0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of one profile: widths per stack, replications, samples, SDE steps."""

    widths: dict
    replications: int
    num_samples: int
    num_steps: int
    out: str
    budget_s: float | None = None


PROFILES = {
    "cpu": Profile(
        widths={"attn": (16, 32, 64, 128, 256, 512, 1024), "mlp": (16, 32, 64, 128, 256)},
        replications=8,
        num_samples=2000,
        num_steps=1000,
        out="docs/results",
    ),
    "gpu": Profile(
        widths={
            "attn": (16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
            "mlp": (16, 32, 64, 128, 256, 512, 1024),
        },
        replications=8,
        num_samples=20000,
        num_steps=1000,
        out="benchmarks/results/gpu/convergence",
        budget_s=50.0,
    ),
    "tiny": Profile(
        widths={"attn": (4, 8, 16), "mlp": (4, 8, 16)},
        replications=2,
        num_samples=300,
        num_steps=40,
        out="results/convergence_tiny",
    ),
}
BOUND = 1e3
SEED = 0


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One sweep: (T, SDE variant, stack), its index (for keys) and file name."""

    index: int
    T: float
    variant: str
    stack: str

    @property
    def name(self) -> str:
        """File stem, e.g. width_sweep_limit_attn_T05."""
        t = "05" if self.T == 0.5 else f"{self.T:g}"
        return f"width_sweep_{self.variant}_{self.stack}_T{t}"


PLAN = tuple(
    Sweep(i, T, variant, stack)
    for i, (T, variant, stack) in enumerate((T, v, s) for T in TS for v in VARIANTS for s in STACKS)
)
"""The eight sweeps, with the index that enters every key of the sweep."""


def unit_id(sweep: Sweep, rep: int, n: int) -> int:
    """The integer folded into the root key for (sweep, replication, width): all distinct."""
    if not (0 <= rep < 100 and 0 < n < 10**4):
        raise ValueError(f"replication {rep} and width {n}: need rep < 100 and n < 10^4")
    return 10**6 * sweep.index + 10**4 * rep + n


def config_of(stack: str):
    """The ShapedConfig of a stack ("attn" or "mlp")."""
    from sdeformer.config import ShapedConfig

    return ShapedConfig(blocks=STACKS[stack], **BASE)


def sweep_settings(sweep: Sweep, profile: Profile) -> dict:
    """Everything that fixes a sweep's units (a stored unit is reused only under equal settings)."""
    return {
        "T": sweep.T,
        "variant": sweep.variant,
        "stack": sweep.stack,
        "sweep_index": sweep.index,
        "config": config_of(sweep.stack).to_dict(),
        "v0": [list(r) for r in V0],
        "feature": "rho_0_1",
        "num_samples": profile.num_samples,
        "num_steps": profile.num_steps,
        "solver": "euler",
        "bound": BOUND,
        "seed": SEED,
        "method": "law",
        "keys": "fold_in(fold_in(key(seed), 10^6 sweep + 10^4 rep + n), 0 finite / 1 SDE)",
        "conditioning": "exit held as a state; exit indicator compared beside",
    }


def run_unit(sweep: Sweep, rep: int, n: int, profile: Profile) -> dict:
    """One (sweep, replication, width): the two samples and their distances (a JSON row)."""
    import jax.numpy as jnp
    import jax.random as jr

    from sdeformer import compare

    config, v0 = config_of(sweep.stack), jnp.asarray(V0, jnp.float32)
    depth = compare.depth_for(sweep.T, n)
    t = depth / n
    key = jr.fold_in(jr.key(SEED), unit_id(sweep, rep, n))
    started = time.perf_counter()
    finite = compare.finite_source(
        config,
        v0,
        width=n,
        T=sweep.T,
        num_samples=profile.num_samples,
        key=jr.fold_in(key, 0),
        bound=BOUND,
        every=depth,
    )
    t_finite = time.perf_counter() - started
    sde, solution = compare.sde_source(
        config,
        v0,
        times=[t],
        num_samples=profile.num_samples,
        key=jr.fold_in(key, 1),
        num_steps=profile.num_steps,
        bound=BOUND,
        width=n if sweep.variant == "finite" else None,
    )
    t_sde = time.perf_counter() - started - t_finite
    row = compare.public_row(compare.width_distances(finite, sde, time=t, seed=rep))
    exits = compare.exit_summary(solution)
    return {
        "n": n,
        "rep": rep,
        "depth": depth,
        "unit_id": unit_id(sweep, rep, n),
        **row,
        "sde_failed_fraction": float(sde.failed_fraction[-1]),
        "sde_exits": exits,
        "seconds_finite": t_finite,
        "seconds_sde": t_sde,
    }


def units(profile: Profile, only=None):
    """(sweep, rep, n) in run order: by width, then sweep, then replication."""
    widths = sorted({n for ws in profile.widths.values() for n in ws})
    for n in widths:
        for sweep in PLAN:
            if only and sweep.name not in only:
                continue
            if n not in profile.widths[sweep.stack]:
                continue
            for rep in range(profile.replications):
                yield sweep, rep, n


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.convergence", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--out", default=None, help="output folder (default: the profile's)")
    parser.add_argument(
        "--only", default=None, help="comma-separated sweep names (default: all eight)"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no new unit after this many seconds (default: the profile's; none for cpu)",
    )
    parser.add_argument(
        "--summary-only", action="store_true", help="refit and rewrite from the stored units"
    )
    args = parser.parse_args(argv)
    names = {s.name for s in PLAN}
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= names:
        parser.error(
            f"--only {args.only!r}: unknown {sorted(only - names)}; choose from {sorted(names)}"
        )
    if args.budget_s is not None and not args.budget_s > 0:
        parser.error(f"--budget-s {args.budget_s}: pass a number of seconds > 0")
    return args, only


def _default_out(name: str, profile: Profile) -> Path:
    """The profile's folder; the gpu profile writes under $SDEFORMER_BENCH_RESULTS (gpu_all.sh)."""
    results = os.environ.get("SDEFORMER_BENCH_RESULTS")
    if name == "gpu" and results:
        return Path(results) / "convergence"
    return ROOT / profile.out


def command_line(argv) -> str:
    """The command as recorded in every JSON."""
    return " ".join(["python -m benchmarks.convergence", *argv])


def main(argv=None) -> int:
    """Run (or resume) the plan of a profile; writes one JSON per sweep and convergence.json."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args, only = _parse(argv)
    profile = PROFILES[args.profile]
    out = Path(args.out or _default_out(args.profile, profile))
    budget = args.budget_s if args.budget_s is not None else profile.budget_s
    command = command_line(argv)
    stores = {
        s.name: report.SweepStore(out / f"{s.name}.json", sweep_settings(s, profile), command)
        for s in PLAN
        if not only or s.name in only
    }
    started = time.perf_counter()
    todo = [] if args.summary_only else list(units(profile, only))
    done = 0
    for sweep, rep, n in todo:
        store = stores[sweep.name]
        if store.has(rep, n):
            continue
        if budget is not None and time.perf_counter() - started > budget:
            print(f"convergence: budget of {budget:.0f} s spent; {done} units run, rerun to resume")
            break
        load = load_average()
        row = run_unit(sweep, rep, n, profile)
        store.add(row, load=load, machine=machine())
        done += 1
        print(
            f"{sweep.name} rep {rep} n {n}: mean diff {row['mean_diff']:+.4f} "
            f"+- {row['mean_se']:.4f}, exits {row['exited_finite']:.3f} / {row['exited_sde']:.3f}, "
            f"{row['seconds_finite']:.1f} + {row['seconds_sde']:.1f} s, load {load}",
            flush=True,
        )
    summaries = {
        name: store.finish(profile.replications, profile.widths) for name, store in stores.items()
    }
    path = report.write_summary(out / "convergence.json", summaries, command)
    print(report.table(summaries))
    print(f"wrote {path} ({done} units this call, {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
