"""Figures of the training study and of one training run.

They return matplotlib figures; saving is `sdeformer.plot.save_figure`.
"""

from __future__ import annotations

import numpy as np

from ..plot import _pyplot


def _kinds(rows) -> list[str]:
    return list(dict.fromkeys(r["kind"] for r in rows))


def stability_figure(cells: list[dict], *, title: str = "Largest stable learning rate"):
    """Largest stable lr against depth, one line per kind.

    Median over the seeds that have a stable lr, bars min to max over them; each seed with no
    stable lr is drawn at the bottom of the panel with a "v" (in its kind's colour), so a
    dropped seed stays visible.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    kinds = _kinds(cells)
    offsets = np.linspace(-0.06, 0.06, max(len(kinds), 1))
    found = [v for c in cells for v in c["largest_stable_lr"]["per_seed"].values() if v is not None]
    bottom = min(found) / 3.0 if found else 1e-3
    marked = False
    for offset, kind in zip(offsets, kinds, strict=True):
        mine = sorted((c for c in cells if c["kind"] == kind), key=lambda c: c["depth"])
        depths, mid, lo, hi, none_at = [], [], [], [], []
        for cell in mine:
            values = list(cell["largest_stable_lr"]["per_seed"].values())
            x = cell["depth"] * 2**offset
            none_at += [x] * sum(v is None for v in values)
            per_seed = [v for v in values if v is not None]
            if not per_seed:
                continue
            depths.append(x)
            mid.append(float(np.median(per_seed)))
            lo.append(mid[-1] - min(per_seed))
            hi.append(max(per_seed) - mid[-1])
        color = None
        if depths:
            line = ax.errorbar(depths, mid, yerr=[lo, hi], marker="o", capsize=3, label=kind)
            color = line[0].get_color()
        if none_at:
            ax.plot(
                none_at, [bottom] * len(none_at), linestyle="none", marker="v", ms=8,
                color=color, label=None if depths else kind,
            )  # fmt: skip
            marked = True
    if marked:
        ax.set_ylim(bottom=bottom / 1.5)
        title += " (v: a seed with no stable lr)"
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("largest stable peak lr (median, min-max over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def loss_vs_lr_figure(lr_rows: list[dict], *, title: str = "Final validation loss"):
    """Final validation loss against lr per kind, one panel per depth.

    Mean over the seeds that did not diverge or spike, bars min to max; x at the top marks lrs
    where every seed was unstable by divergence or spike (one row of marks per kind).
    """
    plt = _pyplot()
    depths = sorted({r["depth"] for r in lr_rows})
    fig, axes = plt.subplots(
        1, len(depths), figsize=(4.2 * len(depths), 3.8), sharey=True, squeeze=False
    )
    finite = [r["val_loss"]["max"] for r in lr_rows if r["val_loss"] is not None]
    top = max(finite) * 1.03 if finite else 1.0
    kinds = _kinds(lr_rows)
    for ax, depth in zip(axes[0], depths, strict=True):
        for index, kind in enumerate(kinds):
            mine = sorted(
                (r for r in lr_rows if r["kind"] == kind and r["depth"] == depth),
                key=lambda r: r["lr"],
            )
            ok = [r for r in mine if r["val_loss"] is not None]
            if ok:
                mean = np.array([r["val_loss"]["mean"] for r in ok])
                lo = mean - np.array([r["val_loss"]["min"] for r in ok])
                hi = np.array([r["val_loss"]["max"] for r in ok]) - mean
                line = ax.errorbar(
                    [r["lr"] for r in ok], mean, yerr=[lo, hi], marker="o", ms=3, capsize=2,
                    label=kind,
                )  # fmt: skip
                color = line[0].get_color()
            else:
                color = None
            dead = [r["lr"] for r in mine if r["val_loss"] is None]
            if dead:
                level = top * (1.0 + 0.012 * index)  # one row of marks per kind
                ax.scatter(dead, [level] * len(dead), marker="x", s=30, color=color)
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate")
        ax.set_title(f"depth {depth}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("final validation loss (nats / byte)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title + " (x: every seed diverged or spiked)", fontsize=10)
    fig.tight_layout()
    return fig


def run_figure(result: dict, *, title: str = "Training run"):
    """One run: losses and the last layer's mean token correlation against step.

    Training loss (10-step means) and validation loss against step; the last layer's mean token
    correlation against step.
    """
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    block = result["loss_block"]
    blocks = result["loss_blocks"]
    ax.plot(block * (np.arange(len(blocks)) + 0.5), blocks, label="training (10-step mean)")
    evals = result["evals"]
    ax.plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    bx.plot([e["step"] for e in evals], [e["token_correlation"] for e in evals], "o-")
    bx.set_xlabel("step")
    bx.set_ylabel("mean token correlation (last layer)")
    bx.grid(alpha=0.3)
    status = f"diverged at step {result['diverged_at']}" if result["diverged"] else "finished"
    fig.suptitle(f"{title}: {status}", fontsize=10)
    fig.tight_layout()
    return fig


def edge_figure(edges: list[dict], *, title: str = "Divergence edge"):
    """Divergence edge lr against depth, one panel per width, one line per kind.

    The line is the largest lr at which no seed diverged; the points are each seed's edge `lo`
    (survived there, diverged at the next tested lr). A seed that diverged at the smallest lr
    is drawn at the bottom with a "v", one that never diverged at its `lo` with a "^".
    """
    plt = _pyplot()
    widths = sorted({r["width"] for r in edges})
    fig, axes = plt.subplots(
        1, max(len(widths), 1), figsize=(5.0 * max(len(widths), 1), 4.2), squeeze=False
    )
    kinds = _kinds(edges)
    offsets = dict(zip(kinds, np.linspace(-0.08, 0.08, len(kinds)), strict=True))
    if not edges:
        axes[0][0].text(
            0.5, 0.5, "no cell finished yet", ha="center", transform=axes[0][0].transAxes
        )
    los = [e["lo"] for r in edges for e in r["per_seed"].values() if e["lo"] is not None]
    bottom = min(los) / 3.0 if los else 1e-3
    for ax, width in zip(axes[0], widths, strict=False):
        for kind in kinds:
            mine = sorted(
                (r for r in edges if r["kind"] == kind and r["width"] == width),
                key=lambda r: r["depth"],
            )
            xs = [r["depth"] * 2 ** offsets[kind] for r in mine]
            ys = [
                bottom if r["divergence_edge_lr"] is None else r["divergence_edge_lr"] for r in mine
            ]
            (line,) = ax.plot(xs, ys, marker="o", label=kind)
            for x, r in zip(xs, mine, strict=True):
                for e in r["per_seed"].values():
                    marker = {"below": "v", "above": "^"}.get(e["censored"], ".")
                    y = bottom if e["lo"] is None else e["lo"]
                    ax.plot([x], [y], marker=marker, color=line.get_color(), alpha=0.6)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("depth (layers)")
        ax.set_ylabel("largest peak lr without divergence")
        ax.set_title(f"width {width}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    if edges:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(title + " (line: no seed diverged; dots: per seed; v/^: censored)", fontsize=10)
    fig.tight_layout()
    return fig
