"""Weak order, PSD exits and cost of Euler-Maruyama vs the positive-definite exponential step.

    python -m benchmarks.bench_schemes                  # CPU-friendly defaults (4000 paths)
    python -m benchmarks.bench_schemes --paths 20000    # smaller Monte Carlo error

For each case (m, V0) every path is run by both schemes with 25, 50, 100, 200 and 400 steps on
[0, T], all driven by one Brownian path (`sdeformer.sde._coupled_paths`), so the differences between
step sizes have a small Monte Carlo error. Weak error of a scheme at step h for a test function f:
`E[f(V_h)] - E[f_ref]` with the per-path Richardson reference `f_ref = 2 f(V_{T/400}) -
f(V_{T/200})` of the same scheme (its bias is O(h_ref^2) for a weak-order-1 scheme with an error
expansion), standard error from the per-path differences. The slope is the least-squares slope of
log |error| against log h over h = T/25, T/50, T/100 ("undetermined" when an error is within 2
standard errors of 0). The two schemes' references must agree (same limit law): their difference
is printed with its standard error.

Test functions: f_v = mean off-diagonal V_ab, f_v2 = tr(V^2)/m, f_tr = 1/(1 + tr V/m),
f_rho = mean off-diagonal correlation, f_det = det of the correlation matrix. Weak errors are
taken over the paths on which no run (any scheme, any step size) left the cone, crossed the bound
or overflowed (the same paths for all runs; their number is printed): Euler continued past a PSD
exit has no meaningful law, and explosions make unbounded f meaningless.

Exits: paths whose smallest eigenvalue fell below -100 eps tr(V)/m at some step (the rule of
`solve_sde`), that crossed |V_ab| > 1e3, or went non-finite. Cost: microseconds per path-step of
each scheme alone (200 steps, compile excluded), including the exit check.

Prints markdown tables and writes benchmarks/results/schemes.json.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from benchmarks._common import markdown_table, write_results
from sdeformer.config import ShapedConfig
from sdeformer.sde import CovarianceSDE, coupled_run

STEPS = (25, 50, 100, 200, 400)
FIT = (25, 50, 100)
SCHEMES = ("euler", "exponential")


def equicorrelated(m: int, rho: float) -> np.ndarray:
    return (1 - rho) * np.eye(m) + rho * np.ones((m, m))


def test_functions(v: np.ndarray) -> dict[str, np.ndarray]:
    m = v.shape[-1]
    d = np.clip(np.diagonal(v, axis1=-2, axis2=-1), 1e-12, None)
    scale = np.sqrt(d[..., :, None] * d[..., None, :])
    corr = v / scale
    iu = np.triu_indices(m, 1)
    return {
        "f_v": v[..., iu[0], iu[1]].mean(-1),
        "f_v2": np.einsum("...ab,...ba->...", v, v) / m,
        "f_tr": 1.0 / (1.0 + np.trace(v, axis1=-2, axis2=-1) / m),
        "f_rho": corr[..., iu[0], iu[1]].mean(-1),
        "f_det": np.linalg.det(corr),
    }


def slope(hs, errs, ses):
    errs, ses = np.abs(np.asarray(errs)), np.asarray(ses)
    if np.any(errs <= 2 * ses):
        return None
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def run_case(name, config, v0, T, paths, key, batch):
    sde = CovarianceSDE(config)
    start = time.perf_counter()
    run = coupled_run(
        sde,
        jnp.asarray(v0, jnp.float32),
        T,
        STEPS,
        key=key,
        num_samples=paths,
        schemes=SCHEMES,
        batch_size=batch,
    )
    jax.block_until_ready(run.vs)
    seconds = time.perf_counter() - start
    out = {"case": name, "m": int(v0.shape[0]), "T": T, "paths": paths, "seconds": seconds}
    fvals = {
        s: [test_functions(np.asarray(run.vs[s][i], np.float64)) for i in range(len(STEPS))]
        for s in SCHEMES
    }
    # weak errors on the paths where no run of either scheme stopped or left the cone (the same
    # paths for every step size and scheme; Euler continued past a PSD exit is not a law)
    ok = np.ones(paths, bool)
    for s in SCHEMES:
        ok &= np.all(np.asarray(run.exit_code[s]) == 0, axis=0)
    used = int(ok.sum())
    out["paths_used_for_weak_errors"] = used
    fvals = {s: [{f: x[ok] for f, x in fv.items()} for fv in fvals[s]] for s in SCHEMES}
    refs = {}
    for s in SCHEMES:
        codes = np.asarray(run.exit_code[s])
        out[s] = {
            "exits": {
                str(n): {
                    "left_psd_cone": int((codes[i] == 1).sum()),
                    "crossed_bound": int((codes[i] == 2).sum()),
                    "non_finite": int((codes[i] == 3).sum()),
                }
                for i, n in enumerate(STEPS)
            },
            "weak": {},
        }
        i200, i400 = STEPS.index(200), STEPS.index(400)
        for f in fvals[s][0]:
            ref = 2 * fvals[s][i400][f] - fvals[s][i200][f]
            refs[(s, f)] = ref
            rows = {}
            for i, n in enumerate(STEPS[:3]):
                diff = fvals[s][i][f] - ref
                rows[str(n)] = {
                    "error": float(diff.mean()),
                    "se": float(diff.std() / np.sqrt(used)),
                }
            hs = [T / n for n in FIT]
            out[s]["weak"][f] = {
                "reference": float(ref.mean()),
                "errors": rows,
                "slope": slope(
                    hs, [rows[str(n)]["error"] for n in FIT], [rows[str(n)]["se"] for n in FIT]
                ),
            }
    euler, expo = np.asarray(run.exit_code["euler"]), np.asarray(run.exit_code["exponential"])
    out["euler_psd_exits_on_exploding_paths"] = {
        str(n): {
            "euler_left_psd_cone": int((euler[i] == 1).sum()),
            "of_which_exponential_exploded": int(((euler[i] == 1) & (expo[i] >= 2)).sum()),
        }
        for i, n in enumerate(STEPS)
    }
    out["reference_difference"] = {
        f: {
            "exponential_minus_euler": float(
                (refs[("exponential", f)] - refs[("euler", f)]).mean()
            ),
            "se": float((refs[("exponential", f)] - refs[("euler", f)]).std() / np.sqrt(used)),
        }
        for f in fvals["euler"][0]
    }
    return out


def cost(config, v0, paths, key):
    sde = CovarianceSDE(config)
    out = {}
    for s in SCHEMES:
        fn = lambda s=s: jax.block_until_ready(  # noqa: E731
            coupled_run(
                sde,
                jnp.asarray(v0, jnp.float32),
                1.0,
                (200,),
                key=key,
                num_samples=paths,
                schemes=(s,),
            ).vs
        )
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[s] = min(times) / (paths * 200) * 1e6
    out["ratio"] = out["exponential"] / out["euler"]
    return out


def print_weak_errors(results: list[dict], T: float, paths: int) -> None:
    """The weak errors and slopes of both schemes per case and test function."""
    rows = []
    for r in results:
        for s in SCHEMES:
            for f, w in r[s]["weak"].items():
                errs = [
                    f"{w['errors'][str(n)]['error']:+.2e} ({w['errors'][str(n)]['se']:.0e})"
                    for n in FIT
                ]
                slope_text = "undetermined" if w["slope"] is None else f"{w['slope']:.2f}"
                rows.append([r["case"], s, f, *errs, slope_text])
    print(
        "\nWeak error E f(V_h) - E f_ref (standard error), T = "
        f"{T}, {paths} paths, tau0 = 1, gamma = 0.4, c = (0, -1)\n"
    )
    print(markdown_table(["case", "scheme", "f", *[f"h = T/{n}" for n in FIT], "slope"], rows))
    used = ", ".join(f"{r['case']} {r['paths_used_for_weak_errors']}" for r in results)
    print(f"\nPaths used (no exit in any run): {used}")
    rows = [
        [r["case"], f, f"{d['exponential_minus_euler']:+.2e}", f"{d['se']:.1e}"]
        for r in results
        for f, d in r["reference_difference"].items()
    ]
    print("\nReferences: exponential minus Euler (both extrapolated to h = 0)\n")
    print(markdown_table(["case", "f", "difference", "se"], rows))


def print_exits(results: list[dict], paths: int) -> None:
    """Euler's PSD exits that explode under the exponential step, and the exits of both."""
    joint = [
        [
            r["case"],
            *[
                f"{d['of_which_exponential_exploded']} / {d['euler_left_psd_cone']}"
                for d in r["euler_psd_exits_on_exploding_paths"].values()
            ],
        ]
        for r in results
    ]
    print(
        "\nEuler paths that left the PSD cone: how many of them explode (cross the bound or "
        "overflow) under the exponential step driven by the same Brownian path\n"
    )
    print(markdown_table(["case", *[f"{n} steps" for n in STEPS]], joint))
    rows = []
    for r in results:
        for s in SCHEMES:
            ex = r[s]["exits"]
            rows.append(
                [
                    r["case"],
                    s,
                    *[
                        f"{ex[str(n)]['left_psd_cone']} / "
                        f"{ex[str(n)]['crossed_bound'] + ex[str(n)]['non_finite']}"
                        for n in STEPS
                    ],
                ]
            )
    print(f"\nExits of {paths} paths: left the PSD cone / crossed the bound or non-finite\n")
    print(markdown_table(["case", "scheme", *[f"{n} steps" for n in STEPS]], rows))


def print_costs(costs: dict) -> None:
    rows = [
        [k, f"{c['euler']:.1f}", f"{c['exponential']:.1f}", f"{c['ratio']:.2f}"]
        for k, c in costs.items()
    ]
    print("\nCost per path-step (microseconds, vmapped on this backend, exit check included)\n")
    print(markdown_table(["m", "euler", "exponential", "ratio"], rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--T", type=float, default=1.0)
    parser.add_argument("--cost-paths", type=int, default=1000)
    args = parser.parse_args(argv)
    config = ShapedConfig(tau0=1.0, gamma=0.4, c_plus=0.0, c_minus=-1.0)
    cases = [
        ("m2_rho0.5", equicorrelated(2, 0.5)),
        ("m4_rho0.5", equicorrelated(4, 0.5)),
        ("m4_rho0.98", equicorrelated(4, 0.98)),
    ]
    key = jr.key(20261126)
    results = []
    for i, (name, v0) in enumerate(cases):
        res = run_case(name, config, v0, args.T, args.paths, jr.fold_in(key, i), args.batch)
        results.append(res)
        print(f"{name}: {res['seconds']:.0f} s", flush=True)
    costs = {f"m{m}": cost(config, equicorrelated(m, 0.5), args.cost_paths, key) for m in (2, 4, 8)}
    print_weak_errors(results, args.T, args.paths)
    print_exits(results, args.paths)
    print_costs(costs)
    write_results(
        "schemes",
        {
            "config": config.to_dict(),
            "steps": list(STEPS),
            "cases": results,
            "cost_us_per_path_step": costs,
        },
    )


if __name__ == "__main__":
    main()
