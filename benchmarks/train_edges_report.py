"""The second training study's committed report: edges from the saved runs, beside the forecast.

Reads the units of `sdeformer train-edges --profile <profile> --out <dir>` (finished or not),
builds the report of `sdeformer.train.edge_report` from them, and adds, per (width, depth), the
design forecast at initialisation (`sdeformer.design.forecast`) for the models whose body the
forecast represents:

- `shaped` (and, at initialisation, `shaped-ln`, `shaped-recover`, `shaped-learn`, which share
  its weights and scalars): `ShapedConfig(causal=True, heads, out_proj=True)`, blocks
  ("attention", "mlp");
- `standard`: blocks ("standard_attention", "mlp") with `c_minus = -sqrt(n)` (slope 0 on the
  negative side: ReLU), the training model's standard scalars.

Widths below the sequence length (n < m: the token covariance is singular) are not forecast.
The Pre-LN and Post-LN models are not represented (LayerNorm has no law chain or SDE face, and
the forecast's Pre-LN block has unit, not 1/sqrt(2L), residual outputs). The input covariance
V_0 is the mean over validation sequences of the embedded tokens' Gram matrix `h_0 h_0^T / n`
(the models' own input, m = seq_len tokens). `--samples` networks per forecast, method "auto".

Run: `python -m benchmarks.train_edges_report --out docs/results/train_edges_cpu` writes
`docs/results/train_study_cpu2.json` (with the commit and the command) and prints the table.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr

from sdeformer.config import ShapedConfig
from sdeformer.design import forecast
from sdeformer.results import ResultStore, write_json
from sdeformer.train.data import make_tasks
from sdeformer.train.edge_report import claim_table, edge_report, report_table, vs_shaped_table
from sdeformer.train.edge_study import EDGE_PROFILES, Cell

from ._common import ROOT, command_of, commit, load_average, machine, markdown_table

FORECAST_KINDS = ("shaped", "standard")


def forecast_config(kind: str, width: int, heads: int) -> ShapedConfig:
    """The `ShapedConfig` of a training kind's body at initialisation (see the module doc)."""
    base = ShapedConfig(causal=True, heads=heads, out_proj=True)
    if kind == "shaped":
        return base
    return base.replace(blocks=("standard_attention", "mlp"), c_minus=-math.sqrt(width))


def input_covariance(profile, width: int, depth: int, val_task) -> jax.Array:
    """Mean over validation sequences of h_0 h_0^T / n for the study's embedding (seed 0)."""
    spec = profile.model_spec(width, depth, val_task.vocab)
    model, _ = spec.build("shaped", key=Cell("shaped", width, depth, 0).keys()[0])
    tokens = val_task.eval_batch(profile.eval_batch_size)[0]
    h0 = jax.vmap(model.embed)(tokens)
    return jnp.mean(jnp.einsum("bmn,bpn->bmp", h0, h0), axis=0) / width


def forecasts(profile, val_task, samples: int, seed: int) -> list[dict]:
    """One forecast per (width, depth, forecastable kind)."""
    out = []
    for width in profile.widths:
        if width < profile.seq_len:
            print(f"no forecast at n={width}: fewer width than tokens (m={profile.seq_len})")
            continue
        for depth in profile.depths(width):
            v0 = input_covariance(profile, width, depth, val_task)
            for kind in FORECAST_KINDS:
                key = jr.fold_in(jr.key(seed), width * 1000 + depth)
                config = forecast_config(kind, width, profile.heads)
                result = forecast(
                    config, v0, width=width, depth=depth, num_samples=samples, key=key,
                    method="auto",
                )  # fmt: skip
                out.append(
                    {
                        "kind": kind,
                        "width": width,
                        "depth": depth,
                        "method": result.method,
                        "seconds": result.seconds,
                        "p_blowup": result.final.p_blowup.to_dict(),
                        "p_collapse": result.final.p_collapse.to_dict(),
                        "mean_rho_q50": result.final.features["mean_rho"]["q50"].to_dict(),
                        "log_mean_var_q95": result.final.features["log_mean_var"]["q95"].to_dict(),
                        "input_mean_correlation": float(
                            (v0 / jnp.sqrt(jnp.outer(jnp.diag(v0), jnp.diag(v0))))[
                                jnp.triu_indices(v0.shape[0], 1)
                            ].mean()
                        ),
                    }
                )
                print(
                    f"forecast {kind} n={width} d={depth}: {result.method}, {result.seconds:.1f} s"
                )
    return out


def forecast_table(report: dict) -> str:
    """Markdown: the forecast at initialisation beside the kind's edge, per (width, depth)."""
    edges = {(r["kind"], r["width"], r["depth"]): r for r in report["edges"]}
    rows = []
    for f in report["forecast"]:
        edge = edges.get((f["kind"], f["width"], f["depth"]))
        lr = "-" if edge is None else f"{edge['divergence_edge_lr'] or 0:.3g}"
        init = "-" if edge is None else str(edge["seeds_diverged_at_initialisation"])
        rows.append(
            [f["kind"], f["width"], f["depth"], f["method"],
             f"{f['p_blowup']['value']:.3f}", f"{f['p_collapse']['value']:.3f}",
             f"{f['mean_rho_q50']['value']:.3f}", lr, init]
        )  # fmt: skip
    return markdown_table(
        ["kind", "width", "depth", "method", "p_blowup", "p_collapse", "median mean_rho",
         "edge lr (0: below grid)", "seeds diverged at init"],
        rows,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=tuple(EDGE_PROFILES), default="cpu")
    parser.add_argument("--out", required=True, help="the train-edges output directory")
    parser.add_argument("--samples", type=int, default=400, help="networks per forecast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=None, help="the kinds the study ran (default: all)")
    parser.add_argument("--seeds", type=int, default=None, help="the seeds it ran")
    parser.add_argument("--json", default=None, help="report path (default: docs/results/...)")
    args = parser.parse_args(argv)
    profile = EDGE_PROFILES[args.profile]
    if args.kinds:
        profile = profile.replace(kinds=tuple(args.kinds.split(",")))
    if args.seeds:
        profile = profile.replace(seeds=args.seeds)
    _, val_task, info = make_tasks("stdlib", profile.seq_len, max_bytes=profile.max_bytes)
    settings = {"profile": profile.settings(), "data": info, "first_seed": 0}
    store = ResultStore(Path(args.out), "train-edges", settings)
    report = edge_report(profile, list(store.load_all().values()), list(profile.cells()))
    report["forecast"] = forecasts(profile, val_task, args.samples, args.seed)
    report.update(
        command=command_of("train_edges_report", argv),
        commit=commit(),
        machine=machine(),
        load_average=load_average(),
        settings=settings,
        units=args.out,
    )
    path = Path(args.json or ROOT / "docs" / "results" / f"train_study_{args.profile}2.json")
    print(report_table(report))
    print()
    print(forecast_table(report))
    print()
    print(vs_shaped_table(report))
    print()
    print(claim_table(report))
    written = write_json(path, report)
    print(f"{report['cells_done']}/{report['cells_total']} cells; written to {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
