"""Cost of the design tools: a forecast per method, a phase map and a tuning run.

    python -m benchmarks.bench_design [--profile cpu|gpu|tiny]

- **forecast**: m tokens, n = d, 1000 samples, by each method, first call (with compilation)
  and a second call with another key;
- **map**: a grid x grid phase map over (tau0 0.5..3, gamma 0.2..0.9) by the limit SDE, the
  issue's goal being 32 x 32 at m = 8 in at most 120 s on a 2-core CPU;
- **auto**: the method `forecast(method="auto")` picks, and its reason, at each forecast size
  above and at the profile's `auto_sizes` (m, n = d) with 1000 samples (no sampling: the choice
  alone; at GPU sizes m up to 256 and n up to 1024);
- **tune**: `tune(c_minus, mean_rho:mean = 0.3)` at m = 4, n = d = 32, 256 search paths, 1000
  law-chain samples for the certificate (goal: at most 60 s on a 2-core CPU).

Writes benchmarks/results/design.json (machine, load, provenance with the commit and command).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import jax.random as jr

from sdeformer import ShapedConfig, equicorrelated
from sdeformer.design import forecast, grid_axis, phase_map, tune
from sdeformer.results import provenance

from ._common import load_average, write_results
from ._markdown import summary_table


@dataclasses.dataclass(frozen=True)
class Profile:
    forecast_tokens: int
    forecast_width: int
    map_tokens: int
    map_grid: int
    map_paths: int
    map_width: int
    tune_samples: int
    certify_samples: int
    auto_sizes: tuple[tuple[int, int], ...] = ()


PROFILES = {
    "cpu": Profile(4, 64, 8, 32, 64, 64, 256, 1000, ((4, 64), (8, 64), (8, 128), (4, 256))),
    "gpu": Profile(
        64,
        256,
        32,
        32,
        256,
        256,
        1024,
        4000,
        ((32, 256), (64, 256), (128, 512), (256, 256), (256, 1024), (64, 1024)),
    ),  # fmt: skip
    "tiny": Profile(2, 8, 2, 3, 8, 8, 32, 64, ((2, 8),)),
}


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure_forecasts(p: Profile) -> list[dict]:
    """First and second call of a forecast by each method at (m, n = d)."""
    v0 = equicorrelated(p.forecast_tokens, 0.3)
    rows = []
    kwargs = dict(width=p.forecast_width, depth=p.forecast_width, num_samples=1000)
    for method in ("law", "explicit", "sde", "finite-width-sde"):
        times, first = [], None
        for seed in (0, 1):
            start = time.perf_counter()
            fc = forecast(ShapedConfig(), v0, key=jr.key(seed), method=method, **kwargs)
            times.append(time.perf_counter() - start)
            first = first or fc
        rows.append({"method": method, "m": p.forecast_tokens, "n": p.forecast_width,
                     "samples": 1000, "first_s": times[0], "second_s": times[1],
                     "p_blowup": first.final.p_blowup.value})  # fmt: skip
        print(f"forecast {method}: {times[0]:.1f} s first, {times[1]:.1f} s second", flush=True)
    return rows


def auto_choices(p: Profile) -> list[dict]:
    """`forecast(method="auto")`'s choice (method, reason) at each size, without sampling."""
    from sdeformer.design import choose_method

    sizes = [(p.forecast_tokens, p.forecast_width), *p.auto_sizes]
    rows = []
    for m, n in dict.fromkeys(sizes):
        choice = choose_method(ShapedConfig(), m, width=n, depth=n, num_samples=1000)
        rows.append({"m": m, "n": n, "d": n, "samples": 1000, **choice.to_dict()})
        print(f"auto at m={m}, n=d={n}: {choice.method} ({choice.reason})", flush=True)
    return rows


def measure_map(p: Profile) -> dict:
    """One grid x grid map by the limit SDE (one solve per row of cells)."""
    pm, seconds = _timed(
        lambda: phase_map(
            ShapedConfig(),
            equicorrelated(p.map_tokens, 0.3),
            x=grid_axis("tau0", 0.5, 3.0, p.map_grid),
            y=grid_axis("gamma", 0.2, 0.9, p.map_grid),
            width=p.map_width,
            depth=p.map_width,
            num_samples=p.map_paths,
            key=jr.key(0),
        )  # fmt: skip
    )
    print(f"map {p.map_grid}x{p.map_grid}, m={p.map_tokens}: {seconds:.1f} s", flush=True)
    return {"grid": p.map_grid, "m": p.map_tokens, "n": p.map_width, "d": p.map_width,
            "paths_per_cell": p.map_paths, "sde_num_steps": pm.num_steps, "seconds": seconds,
            "p_blowup_max": float(pm.p_blowup.max()),
            "p_left_psd_cone_max": float(pm.p_left_psd_cone.max())}  # fmt: skip


def measure_tune(p: Profile) -> dict:
    """`tune` of c_minus for mean_rho:mean = 0.3 at m = 4, n = d = 32, with its certificate."""
    result, seconds = _timed(
        lambda: tune(
            ShapedConfig(),
            equicorrelated(4, 0.3),
            params=["c_minus"],
            statistic="mean_rho:mean",
            target=0.3,
            width=32,
            depth=32,
            key=jr.key(0),
            ranges={"c_minus": (-3.0, 0.0)},
            num_samples=p.tune_samples,
            certify_samples=p.certify_samples,
        )  # fmt: skip
    )
    cert = dict(result.certificate)
    print(f"tune: {seconds:.1f} s, c_minus={result.tuned['c_minus']:.4g}", flush=True)
    return {"seconds": seconds, "tuned": result.tuned, "sde_value": result.sde_value,
            "evaluations": len(result.history), "converged": result.converged,
            "search_samples": p.tune_samples, "certify_samples": p.certify_samples,
            "certificate": cert}  # fmt: skip


def summary(data: dict) -> list[str]:
    """The `bench_design` table, from its JSON."""
    rows = [[f"forecast {r['method']} (m={r['m']}, n=d={r['n']}, {r['samples']} samples)",
             f"{r['first_s']:.1f} / {r['second_s']:.1f}"] for r in data["forecasts"]]  # fmt: skip
    rows += [[f"auto at m={r['m']}, n=d={r['n']}: {r['method']}", "-"]
             for r in data.get("auto", [])]  # fmt: skip
    mp, tn = data["map"], data["tune"]
    rows.append([f"map {mp['grid']}x{mp['grid']} (m={mp['m']}, n=d={mp['n']}, "
                 f"{mp['paths_per_cell']} paths/cell, {mp['sde_num_steps']} steps)",
                 f"{mp['seconds']:.1f}"])  # fmt: skip
    rows.append([f"tune c_minus (m=4, n=d=32, {tn['search_samples']} paths, "
                 f"{tn['evaluations']} evaluations, {tn['certify_samples']} certificate samples)",
                 f"{tn['seconds']:.1f}"])  # fmt: skip
    return ["\n**Design tools** (`bench_design`; seconds, first / second call):\n",
            *summary_table(["what", "seconds"], rows)]  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    args = parser.parse_args(argv)
    p = PROFILES[args.profile]
    data = {"profile": args.profile, "settings": dataclasses.asdict(p),
            "load_average_start": load_average()}  # fmt: skip
    data["forecasts"] = measure_forecasts(p)
    data["auto"] = auto_choices(p)
    data["map"] = measure_map(p)
    data["tune"] = measure_tune(p)
    data["load_average_end"] = load_average()
    data["provenance"] = {
        **provenance(),
        "command": " ".join(["python", "-m", "benchmarks.bench_design", *sys.argv[1:]]),
    }
    print("\n".join(summary(data)))
    write_results("design" if args.profile != "tiny" else "design_tiny", data)
    return data


if __name__ == "__main__":
    main()
