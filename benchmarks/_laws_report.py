"""The report of `bench_laws`: the tables it prints and its part of the benchmark summary,
rendered from its JSON alone (speed-ups only between the two methods at one batch)."""

from __future__ import annotations

from sdeformer import ShapedConfig
from sdeformer.cli.common import markdown_table
from sdeformer.finite import weights_per_layer

from ._markdown import summary_table
from ._ratios import ratio_cell, run_line


def print_tokens_table(tokens: list[dict], args, load: dict) -> None:
    """The speed-ups law / explicit at many tokens, against the goals."""
    print(
        f"\nLaw chain vs explicit network at m = {args.tokens}, n = {args.tokens_width}, depth "
        f"{args.tokens_depth} (sample-layers per second, same run; load average "
        f"{load['before']} before, {load['after']} after)\n"
    )
    print(
        markdown_table(
            ["blocks", "law /s", "explicit /s", "speed-up (wall)", "speed-up (CPU)", "goal", "met"],
            [
                [
                    r["blocks"],
                    r["law_rate"],
                    r["explicit_rate"],
                    f"{r['speedup']:.3g}x",
                    f"{r['speedup_cpu']:.3g}x",
                    f">= {r['goal']:g}x",
                    "yes" if min(r["speedup"], r["speedup_cpu"]) >= r["goal"] else "no",
                ]
                for r in tokens
            ],
        )
    )


def print_cost_in_m(by_m: dict, args) -> None:
    """The law chain's cost per sample-layer against m, and the fitted exponents."""
    print(f"\nLaw chain cost per sample-layer against m (n = max({args.tokens_width}, m))\n")
    table = []
    for m in args.m_sweep:
        cells = [r for r in by_m["rows"] if r["m"] == m]  # attention, attention+mlp
        table.append(
            [m, *[r["us_per_sample_layer"] for r in cells]]
            + [r["cpu_us_per_sample_layer"] for r in cells]
        )
    print(
        markdown_table(
            ["m", "attention (us)", "attention+mlp (us)", "attention (CPU us)", "a+mlp (CPU us)"],
            table,
        )
    )
    for blocks, fit in by_m["fits"].items():
        b32, ball, bcpu = fit["exponent_m_ge_32"], fit["exponent_all"], fit["cpu_exponent_m_ge_32"]
        print(
            f"{blocks}: t ~ m^{b32:.2f} for m >= 32 (m^{ball:.2f} over all m; CPU time "
            f"m^{bcpu:.2f} for m >= 32)"
            if None not in (b32, ball, bcpu)
            else f"{blocks}: too few sizes for a fit"
        )


def print_law_cost(scaling: list[dict], widths: list[int]) -> None:
    print("\nLaw chain cost per sample per layer (microseconds)\n")
    print(
        markdown_table(
            ["n", "attention", "attention+mlp"],
            [[n, *[s["us_per_sample_layer"] for s in scaling if s["n"] == n]] for n in widths],
        )
    )


def _batch(r: dict, side: str) -> tuple:
    return (r[f"{side}_samples"], r.get(f"{side}_depth", r.get("depth")))


def _speedup(r: dict) -> float | str | None:
    return ratio_cell(
        r["law_rate"],
        r["explicit_rate"],
        num_batch=_batch(r, "law"),
        den_batch=_batch(r, "explicit"),
        what=f"law / explicit at n = {r['n']}",
    )


def _tokens_summary(laws: dict) -> list[str]:
    rows = [
        [r["blocks"], r["m"], r["n"], f"{r['law_samples']} / {r['explicit_samples']}", r["depth"]]
        + [r["law_rate"], r["explicit_rate"], _speedup(r), f">= {r['goal']:g}"]
        for r in laws.get("tokens", [])
    ]
    if not rows:
        return []
    return [
        "\nMany tokens (`bench_laws`, same run, interleaved; samples x layers per second):\n",
        *summary_table(
            ["blocks", "m", "n", "samples law / explicit", "depth", "law chain", "explicit"]
            + ["speedup", "goal"],
            rows,
        ),
    ]


def summary(laws: dict) -> list[str]:
    """The `bench_laws` part of the summary (law chain vs explicit networks at many tokens and
    across widths), from its JSON alone; printed by the benchmark and by `run_all`.

    A speed-up is shown only where both methods ran at the same samples and depth (`ratio_cell`).
    """
    cfg = ShapedConfig.from_dict(laws["config"])
    rows = []
    for r in laws["throughput"]:
        # normal draws of the explicit networks, from this file alone
        draws = r["explicit_rate"] * weights_per_layer(cfg, r["n"])
        batches = [f"{' x '.join(map(str, _batch(r, side)))}" for side in ("law", "explicit")]
        rows.append([r["n"], *batches, r["law_rate"], r["explicit_rate"], _speedup(r), draws])
    out = [
        f"\n**Exact law chain vs explicit networks** (`bench_laws`, m = {laws['m']}, "
        "samples x layers per second):",
        run_line(laws, "laws", load=laws.get("load_average")),
        *_tokens_summary(laws),
        "\nAcross widths (same run):\n",
        *summary_table(
            ["n", "law samples x depth", "explicit samples x depth", "law chain", "explicit"]
            + ["speedup", "explicit: normal draws / s"],
            rows,
        ),
    ]
    if any(isinstance(row[-2], str) for row in rows) or any(
        r["law_samples"] != r["explicit_samples"] for r in laws.get("tokens", [])
    ):
        out.append(
            "\nThis JSON timed the law chain at more samples than the explicit network (an "
            "older version of the benchmark), so no speed-up is shown for those rows: the rates "
            "of a batched sampler depend on its batch. The benchmark now runs both at one batch."
        )
    return out
