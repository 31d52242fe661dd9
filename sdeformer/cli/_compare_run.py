"""The work of `sdeformer compare`: the checked plan, the result units, the comparisons, the report.

`plan_compare` checks every input before the output folder exists; `run_compare` solves the SDE
first (_compare_sde: a run refused for too many failed paths draws no finite sample and removes
the folder it created), then the finite sources and the one-step moment table, each a unit of
the result store (a killed run resumes), then compares and writes compare.json and the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np

from ._compare_sde import _samples_arrays, _samples_from, sde_settings, sde_unit
from ._compare_sources import (
    FINITE_KEYS,
    MOMENT_TABLE_MAX_TOKENS,
    _check_finite_source,
    _check_run_inputs,
    _check_sde_source,
    _input_covariance,
    _save_every,
)
from .common import config_from_args, csv_list, progress, resolve_depth, settings_title

EXPLICIT_DEFAULT_MAX = 400
"""Explicit networks when --explicit-samples is not given: --samples, but no more than this."""


@dataclasses.dataclass(frozen=True)
class ComparePlan:
    """What one `compare` run computes, checked before any file is written."""

    config: object
    v0: object
    depth: int
    methods: list[str]
    sizes: dict[str, int]
    every: int
    moment_samples: int
    settings: dict  # what every unit depends on: the result store's configuration
    sde_settings: dict  # what only the SDE unit depends on (kept beside it)
    feature_names: list[str] | None = None

    @property
    def m(self) -> int:
        return int(self.v0.shape[0])

    @property
    def units(self) -> tuple[str, ...]:
        """The sample units in the order they are computed: the SDE, then the finite sources."""
        return ("sde", *self.methods)


def plan_compare(args: argparse.Namespace, dtype) -> ComparePlan:
    """The checked plan of a run (`ValueError` naming the fix before the folder is created)."""
    config = config_from_args(args)
    v0 = _input_covariance(args, dtype)
    m = int(v0.shape[0])
    n = args.width
    depth, T = resolve_depth(args, n)
    methods = ["law", "explicit"] if args.method == "both" else [args.method]
    sizes = {
        "law": args.samples,
        "explicit": args.explicit_samples or min(args.samples, EXPLICIT_DEFAULT_MAX),
        "sde": args.sde_samples or args.samples,
    }
    every = _save_every(depth, m, sum(sizes[k] for k in (*methods, "sde")))
    moment_samples = args.moment_samples if m <= MOMENT_TABLE_MAX_TOKENS else 0
    # Every input is checked before the output directory is created.
    _check_run_inputs(args)
    feature_names = _checked_features(args.features, m)
    for method in methods:
        _check_finite_source(config, n, depth, v0, method)
    _check_sde_source(config, v0, depth / n, args, n)
    if moment_samples == 1:
        raise ValueError(
            "--moment-samples 1: the standard errors need at least 2 antithetic pairs; pass 0 "
            "(skip the table) or >= 2"
        )
    settings = {
        "config": config.to_dict(),
        "width": n,
        "T": T,
        "depth": depth,
        "v0": np.asarray(v0).tolist(),
        "method": args.method,
        "num_samples": {k: sizes[k] for k in methods},
        "finite_keys": FINITE_KEYS,
        "bound": args.bound,
        "moment_samples": moment_samples,
        "seed": args.seed,
        "float64": args.float64,
    }
    return ComparePlan(
        config,
        v0,
        depth,
        methods,
        sizes,
        every,
        moment_samples,
        settings,
        sde_settings(args, sizes["sde"]),
        feature_names,
    )


def _checked_features(text: str | None, m: int) -> list[str] | None:
    """The canonical names of `--features` (None: the default set), or a ValueError naming them.

    Refused before any work: an unknown name, with the valid forms at this m (from
    `compare.canonical_name`).
    """
    from .. import compare

    if text is None:
        return None
    names = csv_list(text)
    if not names:
        raise ValueError(f"--features {text!r} names no feature; e.g. --features mean_rho,rho_0_1")
    try:
        return list(dict.fromkeys(compare.canonical_name(name, m) for name in names))
    except ValueError as err:
        raise ValueError(f"--features: {err}") from None


FIGURE_FEATURES = 6
"""Most panels of a compare figure (the first of --features, or of the default figure set)."""


def figure_features(plan: ComparePlan) -> list[str]:
    """The features compare's figures show: --features (the first few), else a default.

    The default is mean_rho, min_eig_rho and log_mean_var (the design forecast's features) and
    rho_0_1 from m = 3 tokens on, rho_0_1 and logvar_0 at m = 2.
    """
    if plan.feature_names is not None:
        return plan.feature_names[:FIGURE_FEATURES]
    if plan.m >= 3:
        return ["mean_rho", "min_eig_rho", "log_mean_var", "rho_0_1"]
    return ["rho_0_1", "logvar_0"]


def _finite_unit(store, plan: ComparePlan, method: str, key, args: argparse.Namespace):
    """The samples of one finite source: the store's unit `method`, sampled unless it is there."""
    from .. import compare

    n = args.width
    label = f"{method} n={n}"
    if store.has_arrays(method):
        return _samples_from(label, store.load_arrays(method))
    src = compare.finite_source(
        plan.config,
        plan.v0,
        width=n,
        T=plan.depth / n,
        num_samples=plan.sizes[method],
        key=key,
        method=method,
        bound=args.bound,
        every=plan.every,
        label=label,
        devices=args.devices,
        progress=not args.no_progress,
    )
    store.save_arrays(method, _samples_arrays(src, failed=False))
    return src


def _moments_unit(store, plan: ComparePlan, key, n: int) -> list:
    """The one-step moment table at V0: the store's `moments` unit, estimated unless there."""
    from .. import compare

    if store.has("moments"):
        return store.load("moments")
    moments = compare.coefficient_table(
        plan.config, plan.v0, width=n, num_samples=plan.moment_samples, key=key
    )
    store.save("moments", moments)
    return moments


def compare_grid(plan: ComparePlan, n: int) -> tuple[np.ndarray, list[float]]:
    """(saved times, compared times): the layer times every source is saved at, and T/2, T."""
    # every source is saved at these layer times (those of `CovarianceSamples.from_paths`)
    layers = np.arange(plan.depth + 1)
    times = np.unique(np.concatenate([layers[:: plan.every], layers[-1:]])) / n
    T = float(times[-1])
    return times, sorted({float(times[np.argmin(np.abs(times - T / 2))]), T})


def _sample_units(store, plan: ComparePlan, times, compare_times, args, created: bool):
    """(sde, exits, finite sources, moments, reused units): the SDE solved and checked first."""
    import jax.random as jr

    from .. import compare

    key = jr.key(args.seed)
    out = Path(args.out)
    finite = {}
    moments = []
    steps = len(plan.methods) + 1 + (plan.moment_samples > 0)
    with progress(steps, "compare", args.no_progress) as bar:
        # The SDE first: too many paths outside the cone refuse the run before any finite
        # sample is drawn, and a folder this run created is removed (a refused run leaves
        # nothing, and the fix it names can be rerun in the same folder).
        try:
            sde, exits, sde_reused = sde_unit(
                store, plan, times, compare_times, jr.fold_in(key, 10), args
            )
        except compare.DiscretisationError:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
        reused = ["sde"] if sde_reused else []
        bar.update(1)
        for i, method in enumerate(plan.methods):
            reused += [method] if store.has_arrays(method) else []
            finite[method] = _finite_unit(store, plan, method, jr.fold_in(key, i), args)
            bar.update(1)
        if plan.moment_samples > 0:
            reused += ["moments"] if store.has("moments") else []
            moments = _moments_unit(store, plan, jr.fold_in(key, 20), args.width)
            bar.update(1)
    return sde, exits, finite, moments, reused


def _compare_all(finite: dict, sde, compare_times, args: argparse.Namespace, feature_names):
    """Each finite source against the SDE at the compared times."""
    from .. import compare

    return {
        method: compare.compare_sources(
            src,
            sde,
            times=compare_times,
            mode=args.mode,
            seed=args.seed,
            max_pairs=args.max_pairs,
            pair_seed=args.pair_seed,
            max_failed_fraction=args.max_failed_fraction,
            feature_names=feature_names,
        )
        for method, src in finite.items()
    }


def run_compare(plan: ComparePlan, args: argparse.Namespace) -> tuple[dict, dict, Path]:
    """Sample (or reuse) every unit, compare, write figures and compare.json.

    Returns (report, comparisons by method, path of compare.json).
    """
    from .. import plot
    from ..results import ResultStore, write_json

    out = Path(args.out)
    times, compare_times = compare_grid(plan, args.width)
    created = not out.exists()
    # One unit per source (arrays, .npz) and one for the moments table: a killed run resumes.
    store = ResultStore(out, "compare", plan.settings, overwrite=args.overwrite)
    started = time.perf_counter()
    sampled_units = _sample_units(store, plan, times, compare_times, args, created)
    sde, exits, finite, moments, reused = sampled_units
    sampled = time.perf_counter()
    comparisons = _compare_all(finite, sde, compare_times, args, plan.feature_names)
    compared = time.perf_counter()
    sources = [*finite.values(), sde]
    shown = figure_features(plan)
    title = _figure_title(plan, args, float(times[-1]))
    figures = [
        plot.save_figure(
            plot.rho_density_figure(sources, features=shown, title=title),
            out / "feature_density.png",
        ),
        plot.save_figure(
            plot.feature_bands_figure(sources, features=shown, title=title),
            out / "feature_bands.png",
        ),
    ]
    report = {
        "command": "compare",
        "settings": {
            **plan.settings,
            "sde": plan.sde_settings,
            "depth": plan.depth,
            "T": float(times[-1]),
            "mode": args.mode,
        },
        "seconds": compared - started,
        "seconds_sampling": sampled - started,
        "seconds_comparison": compared - sampled,
        "sde_steps": args.steps_choice,
        "reused_units": reused,
        "sde_exits": exits,
        "comparisons": {k: c.to_dict() for k, c in comparisons.items()},
        "one_step_moments": moments,
        "figures": [str(f) for f in figures],
        "figure_features": shown,
    }
    return report, comparisons, write_json(out / "compare.json", report)


def _figure_title(plan: ComparePlan, args: argparse.Namespace, T: float) -> str:
    """The settings of the run, for the figures' titles."""
    rho0 = None if args.v0 is not None else args.rho0
    return settings_title(plan.config, m=plan.m, rho0=rho0, n=args.width, depth=plan.depth, T=T)
