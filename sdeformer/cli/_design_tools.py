"""`sdeformer design map` and `sdeformer design tune`: the command bodies (flags in design.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import csv_list


def write_report(args: argparse.Namespace, action: str, result) -> tuple[dict, Path]:
    """(report, path): `result.to_dict()` with the command, seed and provenance.

    Written to <out>/<action>.json.
    """
    from ..results import provenance, write_json

    report = {
        "command": f"design {action}",
        **result.to_dict(),
        "seed": args.seed,
        "provenance": provenance(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return report, write_json(out / f"{action}.json", report)


def print_report(args: argparse.Namespace, report: dict, result, where: str) -> int:
    """The JSON report (--json) or the result's table and where the files went; status 0."""
    if args.json:
        print(json.dumps(report))
        return 0
    print(result)
    print(f"\nreport written to {where}")
    return 0


def parse_axis(text: str | None, flag: str):
    """`NAME:LO:HI:COUNT` (e.g. tau0:0.5:3:32) as (name, values); ValueError names the fix."""
    from ..design import PARAMETERS, grid_axis

    if text is None:
        raise ValueError(f"design map needs {flag} NAME:LO:HI:COUNT (e.g. {flag} gamma:0.2:0.9:16)")
    parts = text.split(":")
    if len(parts) != 4:
        raise ValueError(f"{flag} {text}: write NAME:LO:HI:COUNT, e.g. {flag} tau0:0.5:3:32")
    name = parts[0].strip().replace("-", "_")
    if name not in PARAMETERS:
        raise ValueError(f"{flag} {text}: unknown parameter {name!r}; pick one of {PARAMETERS}")
    try:
        lo, hi, count = float(parts[1]), float(parts[2]), int(parts[3])
    except ValueError:
        raise ValueError(f"{flag} {text}: LO and HI must be numbers, COUNT an integer") from None
    try:
        return grid_axis(name, lo, hi, count)
    except ValueError as err:
        raise ValueError(f"{flag} {text}: {err}") from None


def parse_target(text: str | None):
    """`STATISTIC=VALUE` (mean_rho:q50=0.6, mean_rho:mean=0.5, p_collapse=0.1)."""
    from ..design import STATISTICS

    if text is None or "=" not in text:
        raise ValueError(
            f"--target {text}: write STATISTIC=VALUE with STATISTIC one of {STATISTICS}, "
            "e.g. --target mean_rho:q50=0.6"
        )
    name, value = (part.strip() for part in text.rsplit("=", 1))
    if name not in STATISTICS:
        raise ValueError(f"--target {text}: unknown statistic {name!r}; pick one of {STATISTICS}")
    try:
        return name, float(value)
    except ValueError:
        raise ValueError(f"--target {text}: {value!r} is not a number") from None


def parse_ranges(text: str, params) -> dict:
    """`NAME:LO:HI,...` search ranges of the tuned parameters."""
    out = {}
    for item in csv_list(text):
        parts = item.split(":")
        name = parts[0].strip().replace("-", "_")
        if len(parts) != 3 or name not in params:
            raise ValueError(
                f"--range {item}: write NAME:LO:HI for a tuned parameter ({', '.join(params)})"
            )
        try:
            out[name] = (float(parts[1]), float(parts[2]))
        except ValueError:
            raise ValueError(f"--range {item}: LO and HI must be numbers") from None
    return out


def map_command(args: argparse.Namespace, config, v0, dtype, rename) -> int:
    """Compute the map (every input checked first), then write map.json and map.png."""
    import jax.random as jr
    import numpy as np

    from ..design import phase_map, phase_map_figure
    from ..results import atomic_path

    x = parse_axis(args.x, "--x")
    y = parse_axis(args.y, "--y")
    if args.map_method not in ("sde", "law"):
        raise ValueError(f"--method {args.map_method}: design map takes sde (default) or law")

    def progress(done, total):
        if args.json:
            return
        if sys.stderr.isatty():
            print(f"\rcell {done}/{total}", end="" if done < total else "\n", file=sys.stderr)
        else:  # redirected: plain lines, no carriage returns
            print(f"cell {done}/{total}", file=sys.stderr)

    settings = {
        "config": config.to_dict(), "method": args.map_method, "x": [x[0], x[1].tolist()],
        "y": [y[0], y[1].tolist()], "width": args.width, "depth": args.depth,
        "v0": np.asarray(v0, dtype=np.float64).tolist(), "samples": args.samples,
        "collapse_threshold": args.collapse_threshold, "bound": args.bound, "seed": args.seed,
        "float64": args.float64,
    }  # fmt: skip
    store = _OpenedOnUse(Path(args.out), settings, args.overwrite)
    try:
        result = phase_map(
            config, v0, x=x, y=y, width=args.width, depth=args.depth,
            num_samples=args.samples, key=jr.key(args.seed), method=args.map_method,
            collapse_threshold=args.collapse_threshold, bound=args.bound, dtype=dtype,
            progress=progress, store=store, workers=args.workers,
        )  # fmt: skip
    except ValueError as err:
        raise ValueError(rename(str(err))) from None
    report, path = write_report(args, "map", result)
    import matplotlib.pyplot as plt

    fig = phase_map_figure(result)
    figure = Path(args.out) / "map.png"
    with atomic_path(figure) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return print_report(args, report, result, f"{path}, figure to {figure}")


class _OpenedOnUse:
    """The map's `ResultStore` in --out, opened when `phase_map` first asks for a row.

    `phase_map` checks every input before it asks, so a refused map writes nothing; a rerun
    with the same settings resumes from the finished rows, one with other settings is refused
    naming the keys that changed (`ResultsError`, status 2; --overwrite starts afresh).
    """

    def __init__(self, out: Path, settings: dict, overwrite: bool):
        self._args, self._store = (out, settings, overwrite), None

    def _opened(self):
        if self._store is None:
            from ..results import ResultStore

            out, settings, overwrite = self._args
            self._store = ResultStore(out, "design-map", settings, overwrite=overwrite)
        return self._store

    def __getattr__(self, name: str):  # has_arrays, load_arrays, save_arrays
        return getattr(self._opened(), name)


def tune_command(args: argparse.Namespace, config, v0, dtype, rename) -> int:
    """Tune on the limit SDE, certify with the law chain, then write tune.json."""
    import jax.random as jr

    from ..design import PARAMETERS, tune

    if not args.tune:
        raise ValueError("design tune needs --tune NAME[,NAME] (e.g. --tune gamma)")
    params = [p.replace("-", "_") for p in csv_list(args.tune)]
    for p in params:
        if p not in PARAMETERS:
            raise ValueError(f"--tune {args.tune}: unknown parameter {p!r}; pick from {PARAMETERS}")
    statistic, target = parse_target(args.target)
    ranges = parse_ranges(args.range, params)
    try:
        result = tune(
            config, v0, params=params, statistic=statistic, target=target, width=args.width,
            depth=args.depth, key=jr.key(args.seed), ranges=ranges, num_samples=args.samples,
            certify_samples=args.certify_samples, collapse_threshold=args.collapse_threshold,
            bound=args.bound, dtype=dtype,
        )  # fmt: skip
    except ValueError as err:
        raise ValueError(rename(str(err))) from None
    report, path = write_report(args, "tune", result)
    return print_report(args, report, result, str(path))
