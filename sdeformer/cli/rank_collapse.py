"""`sdeformer rank-collapse`: token correlations with depth at initialisation."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ._compare_sources import _check_finite_source
from .common import (
    add_config_arguments,
    add_depth_arguments,
    add_run_arguments,
    check_devices,
    config_from_args,
    csv_list,
    markdown_table,
    positive_int,
    progress,
    resolve_depth,
    settings_title,
    setup_precision,
)

# ------------------------------------------------------------------------------- rank-collapse

CHUNK = 8
"""Networks per progress step; chunk c of a model kind draws from fold_in(kind key, c)."""


def _add_rank_collapse(sub) -> None:
    parser = sub.add_parser(
        "rank-collapse",
        help="token correlations with depth: shaped vs unshaped attention vs Pre-LN at init",
        description=(
            "Monte Carlo over freshly initialised explicit networks of the mean token "
            "correlation, stable rank and smallest correlation eigenvalue per layer, for the "
            "shaped Transformer, the same network with unshaped Softmax attention, and a "
            "standard Pre-LN Transformer. "
            "Writes a JSON report and a PNG figure; resumes model kinds already computed. "
            "Seeds: model kind k draws from fold_in(key(seed), crc32(k)), so its numbers do not "
            "depend on which other kinds are run or in what order; networks come in chunks of "
            "--chunk, chunk c of kind k uses fold_in(kind key, c), split into one key per "
            "network, whatever --devices is."
        ),
    )
    add_config_arguments(parser)
    group = parser.add_argument_group("experiment")
    group.add_argument(
        "--width", dest="n", type=positive_int, default=128, help="width n (default: 128)"
    )
    add_depth_arguments(group, default=("depth", 256))
    group.add_argument("--tokens", type=positive_int, default=8, help="tokens m (default: 8)")
    group.add_argument(
        "--rho0", type=float, default=0.3, help="input token correlation (default: 0.3)"
    )
    group.add_argument(
        "--samples", type=positive_int, default=32, help="networks per model kind (default: 32)"
    )
    group.add_argument(
        "--kinds",
        default="shaped,unshaped,preln",
        help="comma-separated model kinds from shaped,unshaped,preln (default: all three)",
    )
    group.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        metavar="N",
        help="shard the networks of each chunk over this many devices (jax.devices(); on CPU "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N; more than "
        "jax.device_count() is refused). The numbers for a --seed do not depend on --devices "
        "(default: 1)",
    )
    group.add_argument(
        "--chunk",
        type=positive_int,
        default=CHUNK,
        help="networks per call (and progress step); chunk c of a kind draws from "
        "fold_in(kind key, c), so the numbers depend on --chunk but not on --devices; raise it "
        f"to a multiple of --devices on accelerators (default: {CHUNK})",
    )
    group.add_argument(
        "--sde",
        action="store_true",
        help="overlay the limit SDE's median and 5-95 %% band of each measure on the shaped "
        "curves, solved on [0, T], T = depth / width, with the step rule's number of steps",
    )
    group.add_argument(
        "--sde-samples",
        type=positive_int,
        default=1000,
        help="SDE paths of the --sde overlay (default: 1000)",
    )
    add_run_arguments(parser, "results/rank_collapse")
    parser.set_defaults(func=rank_collapse_command)


def rank_collapse_command(args: argparse.Namespace) -> int:
    """Run `sdeformer rank-collapse` with the parsed `args`; returns the exit status (0)."""
    from .. import plot
    from ..results import ResultStore, provenance, write_json

    dtype = setup_precision(args)
    base, kinds, v0, depth = _checked_inputs(args, dtype)
    settings = {
        "config": base.to_dict(),
        "n": args.n,
        "depth": depth,
        "tokens": args.tokens,
        "rho0": args.rho0,
        "samples": args.samples,
        "seed": args.seed,
        "float64": args.float64,
        "chunk": args.chunk,
    }
    out = Path(args.out)
    store = ResultStore(out, "rank-collapse", settings, overwrite=args.overwrite)
    started = time.perf_counter()
    curves = _curves(args, base, kinds, v0, depth, store)
    sde = _sde_bands(args, base, v0, depth, store) if args.sde else None
    elapsed = time.perf_counter() - started
    title = settings_title(
        base, m=args.tokens, rho0=args.rho0, n=args.n, depth=depth, T=depth / args.n
    )
    title += f", {args.samples} networks per model"
    figure = plot.save_figure(
        plot.rank_collapse_figure(curves, n=args.n, sde=sde, title=title),
        out / "rank_collapse.png",
    )
    marks = sorted({0, depth // 4, depth // 2, depth})
    report = {
        "command": "rank-collapse",
        "settings": settings,
        "devices": args.devices,
        "provenance": provenance(),
        "seconds": elapsed,
        "layers_reported": marks,
        "curves": curves,
        "sde": sde,
        "figure": str(figure),
        "resumed": store.resumed_text(),
    }
    report_path = write_json(out / "rank_collapse.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    _print_table(curves, marks, args.n, sde)
    print(f"\n{args.samples} networks per model, n={args.n}, depth={depth}: {elapsed:.1f} s")
    if sde is not None:
        print(
            f"SDE: {sde['num_samples']} paths on [0, T = {depth / args.n:.4g}], "
            f"{sde['num_steps']} euler steps (step rule); median and 5-95 % band of the paths "
            f"alive at t ({sde['alive'][-1]:.1%} alive at T)"
        )
    print(f"results written to {report_path} and {figure}")
    if report["resumed"]:
        print(report["resumed"])
    return 0


def _checked_inputs(args: argparse.Namespace, dtype):
    """(base config, kinds, v0, depth), every input checked before the output folder exists."""
    from ..rank_collapse import MODEL_KINDS, equicorrelated, kind_config

    base = config_from_args(args)
    kinds = csv_list(args.kinds)
    for kind in kinds:
        if kind not in MODEL_KINDS:
            raise ValueError(
                f"--kinds: unknown model kind {kind!r}; choose from {list(MODEL_KINDS)}"
            )
    if args.tokens < 2:
        raise ValueError(f"--tokens {args.tokens}: need at least 2 tokens")
    depth, T = resolve_depth(args, args.n)
    v0 = equicorrelated(args.tokens, args.rho0, dtype)
    check_devices(args.devices)
    for kind in kinds:
        _check_finite_source(kind_config(base, kind), args.n, depth, v0, "explicit")
    if args.sde:
        if "shaped" not in kinds:
            raise ValueError(
                f"--sde overlays the SDE on the shaped curves, but --kinds {args.kinds} has no "
                "'shaped'; add shaped to --kinds (the unshaped and Pre-LN models have no SDE)"
            )
        _check_sde(kind_config(base, "shaped"), v0, T)
    return base, kinds, v0, depth


def _check_sde(config, v0, T: float) -> None:
    """Refuse what `solve_sde` would refuse for the overlay, abstractly (no compilation)."""
    import jax
    import jax.random as jr

    from ..sde import solve_sde

    jax.eval_shape(
        lambda k: solve_sde(config, v0, T=T, num_samples=1, key=k, save_times=2, num_steps=1),
        jr.key(0),
    )


def _sde_bands(args: argparse.Namespace, base, v0, depth: int, store) -> dict:
    """The SDE overlay: the store's unit (named by its paths), or solved and saved."""
    import jax.random as jr

    from ..rank_collapse import kind_config, sde_collapse_bands
    from ..results import fold_in_name

    unit = f"sde-paths={args.sde_samples}"
    if store.has(unit):
        return store.load(unit)
    bands = sde_collapse_bands(
        kind_config(base, "shaped"),
        v0,
        width=args.n,
        depth=depth,
        num_samples=args.sde_samples,
        key=fold_in_name(jr.key(args.seed), "sde"),
        save_times=min(depth + 1, 33),
    )
    store.save(unit, bands)
    return bands


def _curves(args: argparse.Namespace, base, kinds, v0, depth: int, store) -> dict:
    """The collapse curves of every kind: the store's unit, or sampled in chunks and saved."""
    import jax.random as jr
    import numpy as np

    from ..rank_collapse import collapse_summary, kind_config
    from ..results import fold_in_name
    from ..sharding import gather, sharded_covariance_paths

    chunk = args.chunk
    chunks = -(-args.samples // chunk)
    curves = {}
    with progress(len(kinds) * chunks, "rank-collapse", args.no_progress, "chunks") as bar:
        for kind in kinds:
            if store.has(kind):
                curves[kind] = store.load(kind)
                bar.update(chunks)
                continue
            cfg = kind_config(base, kind)
            # A stable id per kind: `--kinds unshaped` reproduces `--kinds shaped,unshaped`.
            kind_key = fold_in_name(jr.key(args.seed), kind)
            parts = []
            for c in range(chunks):
                size = min(chunk, args.samples - c * chunk)
                paths = sharded_covariance_paths(
                    cfg,
                    v0,
                    width=args.n,
                    depth=depth,
                    num_samples=size,
                    key=jr.fold_in(kind_key, c),
                    method="explicit",
                    devices=args.devices,
                )
                parts.append(np.asarray(gather(paths)))
                bar.update(1)
            summary = collapse_summary(np.concatenate(parts))
            curves[kind] = {k: v.tolist() for k, v in summary.items()}
            store.save(kind, curves[kind])
    return curves


def _print_table(curves: dict, marks: list[int], n: int, sde: dict | None) -> None:
    rows = [
        [
            kind, layer, layer / n, curve["mean_correlation_mean"][layer],
            curve["mean_correlation_se"][layer], curve["stable_rank_mean"][layer],
            curve["min_eigenvalue_mean"][layer],
        ]
        for kind, curve in curves.items()
        for layer in marks
    ]  # fmt: skip
    headers = ["model", "layer", "t", "mean rho", "+-se", "stable rank", "min eig(rho)"]
    print(markdown_table(headers, rows))
    if sde is None:
        return
    print("\nLimit SDE (quantiles over the paths alive at t):")
    rows = [
        [
            round(layer), layer / n, sde["mean_correlation_q05"][i],
            sde["mean_correlation_q50"][i], sde["mean_correlation_q95"][i],
            sde["stable_rank_q50"][i], sde["min_eigenvalue_q50"][i], sde["alive"][i],
        ]
        for i, layer in enumerate(sde["layers"])
        if i in _band_marks(len(sde["layers"]))
    ]  # fmt: skip
    headers = ["layer", "t", "mean rho q05", "q50", "q95", "stable rank q50", "min eig q50"]
    print(markdown_table([*headers, "alive"], rows))


def _band_marks(count: int) -> set[int]:
    """The saved SDE times shown in the table: the first, quarter, half and last."""
    last = count - 1
    return {0, last // 4, last // 2, last}
