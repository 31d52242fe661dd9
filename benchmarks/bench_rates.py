"""Simulation study of the width-rate fit: coverage and bias of the fitted slope, known truths.

    python -m benchmarks.bench_rates [--replications 1000] [--samples 2000]
        [--widths 2 3 4 6 8 12 16 32]

Synthetic sweeps (`sdeformer.compare.simulate`): the "SDE" sample is N(0, 1), the width-n sample
N(delta_n, 1) with delta_n chosen so that the distance is an exact power law n^slope. For each
statistic (the unbiased squared energy distance, power 2; the signed difference of means), true
slope (-1/2, -1, and 0: no convergence) and design (independent SDE samples per width, or one
shared by every width), `replications` sweeps are fitted with `compare.fit_power_law` (through the
same error model as `sdeformer sweep-width`). Reported: the fraction of fits that are determined,
the coverage of their 95 % intervals (target 90-99 %), the mean bias of the slope and the mean
standard error (target |bias| < se / 4).

Writes benchmarks/results/rates.json and the coverage table in docs/_rates_section.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sdeformer.compare import simulate

from ._common import write_results

DOCS = Path(__file__).resolve().parents[1] / "docs" / "_rates_section.md"


def section(results: list[dict], settings: dict, seconds: float) -> str:
    ok = [
        r
        for r in results
        if 0.90 <= r["coverage95"] <= 0.99 and r["bias_over_se"] < 0.25 and r["determined"] > 0.9
    ]
    return f"""### Coverage of the fitted rates (simulation study)

`benchmarks/bench_rates.py` fits {settings["replications"]} synthetic width sweeps per row
(widths {settings["widths"]}, {settings["num_samples"]} samples per source) whose distance is an
exact power law with the slope in the "true slope" column (0: no convergence, a fixed offset),
through the same estimators and error model as `sdeformer sweep-width`: the unbiased U-statistic
of the squared energy distance (power 2, variance modelled as a function of the fitted mean, never
of the noisy value) and the signed difference of means (power 1), fitted on the linear scale by
generalised least squares. "SDE sample" says whether each width has its own SDE sample (the
default of `sweep-width`) or all widths share one (`--shared-sde`; the jackknife covariance
through the shared sample enters the fit). Targets: 95 % intervals cover the truth in 90-99 % of
the determined fits, and |mean bias| < mean se / 4. {len(ok)} of {len(results)} rows meet both.

{simulate.coverage_table(results)}

("determined": fits with a slope; the others say "undetermined", for example when no width's
distance differs from 0. Coverage +- its binomial standard error. Run time {seconds:.0f} s.)
"""


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--widths", type=int, nargs="+", default=[2, 3, 4, 6, 8, 12, 16, 32])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    if args.replications < 200:
        parser.error("--replications: the study needs at least 200")
    settings = {
        "replications": args.replications,
        "num_samples": args.samples,
        "widths": args.widths,
        "seed": args.seed,
    }
    started = time.perf_counter()
    results = []
    index = 0
    for statistic in simulate.STATISTICS:
        for truth in simulate.TRUTHS:
            for reuse in (False, True):
                tick = time.perf_counter()
                result = simulate.run_study(
                    widths=args.widths,
                    slope=truth,
                    statistic=statistic,
                    reuse=reuse,
                    replications=args.replications,
                    num_samples=args.samples,
                    seed=args.seed + index,
                )
                result["seconds"] = time.perf_counter() - tick
                results.append(result)
                index += 1
                print(simulate.coverage_table([result]).splitlines()[-1], flush=True)
    seconds = time.perf_counter() - started
    print("\n" + simulate.coverage_table(results))
    write_results("rates", {"settings": settings, "results": results, "seconds": seconds})
    args.docs.write_text(section(results, settings, seconds))
    print(f"wrote {args.docs}")
    return {"results": results}


if __name__ == "__main__":
    main()
