"""The SDE unit of `sdeformer compare`: solved first, checked, and kept apart from the finite ones.

The SDE is solved before any finite sample, so a run whose SDE paths leave the PSD cone too often
is refused (or, under `--steps auto`, solved again with twice the steps) before the finite work.
Its settings (steps, solver, paths, limit or finite-width SDE) are stored beside its samples, not
in the run's configuration: a rerun that changes only them solves the SDE again and reuses the
finite samples, which do not depend on them.
"""

from __future__ import annotations

import argparse
import sys

from ._compare_sources import _solve_sde, _use_steps

AUTO_DOUBLINGS = 3
"""`--steps auto`: how often the SDE is solved again with twice the steps while more than
`--max-failed-fraction` of its paths leave the PSD cone (at most 8 times the rule's steps)."""


def sde_settings(args: argparse.Namespace, num_samples: int) -> dict:
    """The options the SDE unit depends on (and the finite units do not)."""
    choice = args.steps_choice
    return {
        "steps": "auto" if choice["chosen_by"] == "auto" else choice["steps"],
        "solver": args.solver,
        "num_samples": num_samples,
        "finite_width_sde": args.finite_width_sde,
    }


def failed_fraction(src, times) -> float:
    """The largest fraction of `src`'s paths failed (PSD exits, solver failures) by `times`."""
    return max(float(src.failed_fraction[src.index_of(t)]) for t in times)


def _samples_arrays(src, *, failed: bool) -> dict:
    """The arrays of a `CovarianceSamples` saved as a unit (`failed` only for the SDE)."""
    arrays = {"ts": src.ts, "vs": src.vs, "alive": src.alive}
    return {**arrays, "failed": src.failed} if failed else arrays


def _samples_from(label: str, saved: dict):
    """The `CovarianceSamples` of a saved unit (`failed` all False where it was not saved)."""
    from .. import compare

    return compare.CovarianceSamples(
        label, saved["ts"], saved["vs"], saved["alive"], saved.get("failed")
    )


def _changed(old: dict, new: dict) -> str:
    return ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k])


def sde_unit(store, plan, times, compare_times, key, args: argparse.Namespace):
    """(SDE samples, exit summary, reused): the store's unit if solved with these settings.

    Otherwise solved (and checked: `DiscretisationError` naming the options that fix it) and
    saved, unit by unit, the settings last (a run killed in between solves it again).
    """
    from .. import compare

    label = "SDE" if not args.finite_width_sde else f"SDE (width {args.width})"
    wanted = plan.sde_settings
    if store.has_arrays("sde") and store.has("sde_settings") and store.has("sde_exits"):
        saved = store.load("sde_settings")
        if saved["request"] == wanted:
            _use_steps(args, int(saved["steps"]))
            sde = _samples_from(label, store.load_arrays("sde"))
            fraction = failed_fraction(sde, compare_times)
            if fraction > args.max_failed_fraction:
                raise compare.DiscretisationError(refusal(fraction, args, doubled=0))
            return sde, store.load("sde_exits"), True
        print(
            f"the SDE's settings changed ({_changed(saved['request'], wanted)}): solving it "
            f"again; the finite samples in {store.directory} are reused",
            file=sys.stderr,
        )
    sde, exits = solve_checked(plan, times, compare_times, key, args, label)
    store.save_arrays("sde", _samples_arrays(sde, failed=True))
    store.save("sde_exits", exits)
    store.save("sde_settings", {"request": wanted, "steps": int(args.steps)})
    return sde, exits, False


def solve_checked(plan, times, compare_times, key, args: argparse.Namespace, label: str):
    """(SDE samples, exits) with at most `--max-failed-fraction` of the paths failed.

    Under `--steps auto` (Euler or Heun) a solve above it is repeated with twice the steps, up to
    `AUTO_DOUBLINGS` times, each said on stderr; then `DiscretisationError`.
    """
    from .. import compare

    auto = args.steps_choice["chosen_by"] == "auto" and args.solver != "exponential"
    tries = AUTO_DOUBLINGS if auto else 0
    for attempt in range(tries + 1):
        sde, exits = _solve_sde(
            plan.config, plan.v0, times, plan.sizes["sde"], key, args, args.width, label
        )
        fraction = failed_fraction(sde, compare_times)
        if fraction <= args.max_failed_fraction:
            return sde, exits
        if attempt < tries:
            print(
                f"SDE: {fraction:.2%} of the paths left the PSD cone at {args.steps} "
                f"{args.solver} steps, above --max-failed-fraction "
                f"{args.max_failed_fraction:g}: solving again with {2 * args.steps} steps "
                "(--steps auto)",
                file=sys.stderr,
            )
            _use_steps(args, 2 * args.steps)
    raise compare.DiscretisationError(refusal(fraction, args, doubled=tries))


def refusal(fraction: float, args: argparse.Namespace, *, doubled: int) -> str:
    """Why the SDE was refused, and the options that fix it."""
    head = (
        f"SDE: {fraction:.2%} of the paths left the PSD cone (or the solver failed) by t = T at "
        f"{args.steps} {args.solver} steps, above --max-failed-fraction "
        f"{args.max_failed_fraction:g}"
    )
    accept = (
        f"--max-failed-fraction {min(1.0, 2 * fraction):.2g} to exclude them (the laws are then "
        "conditional on staying in the cone)"
    )
    if args.solver == "exponential":
        return f"{head}; pass {accept}"
    if doubled:
        return (
            f"{head}, after doubling the step rule's steps {doubled} times: more steps do not "
            "remove these exits (the SDE's paths reach a singular V); pass --solver exponential "
            f"(it stays in the cone), or {accept}"
        )
    return (
        f"{head}; pass --steps auto (solves again with twice the steps while too many paths "
        f"leave the cone) or --steps {2 * args.steps}, or --solver exponential (it stays in the "
        f"cone), or {accept}"
    )
