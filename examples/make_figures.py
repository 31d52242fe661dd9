"""The figures of the README and the docs (`make figures` writes them to docs/figures/).

    python examples/make_figures.py --out docs/figures

- `finite_vs_sde.png`: the law of the token correlation at t = T, finite width (exact law
  chain) against the covariance SDE;
- `rank_collapse.png`: mean correlation, stable rank and smallest correlation eigenvalue with
  depth, shaped vs unshaped attention vs Pre-LN;
- `bench_width.png`, `bench_tokens.png`: the width-scale and token-scale benchmarks, read from
  benchmarks/results/*.json (run `make bench` first to refresh them);
- `train_sweep.png`: the training study, read from a `sdeformer train-sweep` report when one
  exists (`--train-report`, default results/train_sweep/train_sweep.json).

Small sizes: the whole script runs in a minute or two on a laptop CPU. Each figure is written
atomically; one whose input is missing is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def finite_vs_sde(out: Path) -> Path:
    import jax.random as jr
    import matplotlib.pyplot as plt
    import numpy as np

    import sdeformer as sdf
    from sdeformer import plot
    from sdeformer.rank_collapse import equicorrelated

    config = sdf.ShapedConfig(tau0=1.0, gamma=0.4, c_minus=-1.0)
    v0 = equicorrelated(2, 0.3)
    n, T, samples = 32, 1.0, 4000
    paths = sdf.law_covariance_paths(
        config, v0, width=n, depth=round(T * n), num_samples=samples, key=jr.key(0)
    )
    sde = sdf.solve_sde(config, v0, T=T, num_samples=samples, key=jr.key(1), num_steps=200)
    v_T, alive = sde.final()
    finite = np.asarray(sdf.metrics.correlation(paths[:, -1])[:, 0, 1])
    limit = np.asarray(sdf.metrics.correlation(v_T[alive])[:, 0, 1])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    bins = np.linspace(-1, 1, 51)
    ax.hist(finite, bins=bins, density=True, histtype="step", lw=1.6, label=f"width n = {n}")
    ax.hist(limit, bins=bins, density=True, histtype="step", lw=1.6, label="covariance SDE")
    ax.set_xlabel("token correlation rho_01 at t = T = 1")
    ax.set_ylabel("density")
    ax.set_title(f"finite shaped Transformers vs their SDE limit ({samples} samples each)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return plot.save_figure(fig, out / "finite_vs_sde.png")


def rank_collapse(out: Path) -> Path:
    import jax.random as jr
    import numpy as np

    import sdeformer as sdf
    from sdeformer import plot
    from sdeformer.rank_collapse import MODEL_KINDS, collapse_summary, equicorrelated, kind_config

    base = sdf.ShapedConfig(tau0=1.0, gamma=0.5, c_minus=-1.0)
    n, depth, samples = 32, 64, 64
    v0 = equicorrelated(4, 0.3)
    curves = {}
    for kind in MODEL_KINDS:
        method = "explicit" if kind == "preln" else "law"
        paths = sdf.sample_covariance_paths(
            kind_config(base, kind),
            v0,
            width=n,
            depth=depth,
            num_samples=samples,
            key=jr.key(0),
            method=method,
        )
        curves[kind] = collapse_summary(np.asarray(paths))
    return plot.save_figure(plot.rank_collapse_figure(curves, n=n), out / "rank_collapse.png")


def bench_width(out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    from sdeformer import plot

    path = ROOT / "benchmarks" / "results" / "laws.json"
    if not path.exists():
        print(f"skipped bench_width.png: no {path} (run make bench)")
        return None
    data = json.loads(path.read_text())
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    rows = data["throughput"]
    ns = [r["n"] for r in rows]
    left.plot(ns, [r["law_rate"] for r in rows], marker="o", label="exact law chain")
    left.plot(ns, [r["explicit_rate"] for r in rows], marker="o", label="explicit network")
    left.set_ylabel("samples x layers / s")
    left.set_title("law chain vs explicit networks (m = 4)", fontsize=10)
    by_blocks: dict[str, list] = {}
    for r in data.get("law_cost", []):
        by_blocks.setdefault("+".join(r["blocks"]), []).append(r)
    for name, group in by_blocks.items():
        right.plot(
            [r["n"] for r in group],
            [r["us_per_sample_layer"] for r in group],
            marker="o",
            label=name,
        )
    right.set_ylabel("microseconds per sample and layer")
    right.set_title("law chain cost per layer: flat in n without the MLP", fontsize=10)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width n")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"width scale ({data['machine'].get('cpu_count', '?')} CPU cores)")
    fig.tight_layout()
    return plot.save_figure(fig, out / "bench_width.png")


def bench_tokens(out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    from sdeformer import plot

    path = ROOT / "benchmarks" / "results" / "sde.json"
    if not path.exists():
        print(f"skipped bench_tokens.png: no {path} (run make bench)")
        return None
    rows = json.loads(path.read_text())["rows"]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ms = [r["m"] for r in rows]
    ax.plot(ms, [r["diffrax_paths_per_s"] for r in rows], marker="o", label="diffrax (Euler)")
    ax.plot(ms, [r["baseline_paths_per_s"] for r in rows], marker="o", label="hand-written scan")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens m")
    ax.set_ylabel("SDE paths / s (200 steps)")
    ax.set_title("token scale: the covariance SDE", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return plot.save_figure(fig, out / "bench_tokens.png")


def train_sweep(out: Path, report: Path) -> Path | None:
    from sdeformer import plot

    if not report.exists():
        print(f"skipped train_sweep.png: no {report} (run sdeformer train-sweep first)")
        return None
    rows = json.loads(report.read_text()).get("rows")
    if not rows:
        print(f"skipped train_sweep.png: {report} has no rows")
        return None
    return plot.save_figure(plot.train_sweep_figure(rows), out / "train_sweep.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="output folder")
    parser.add_argument(
        "--train-report",
        default=str(ROOT / "results" / "train_sweep" / "train_sweep.json"),
        help="a `sdeformer train-sweep` report to draw the training study from",
    )
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # a script that writes files: no window
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for make in (finite_vs_sde, rank_collapse, bench_width, bench_tokens):
        written = make(out)
        if written is not None:
            print(f"wrote {written}")
    written = train_sweep(out, Path(args.train_report))
    if written is not None:
        print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
