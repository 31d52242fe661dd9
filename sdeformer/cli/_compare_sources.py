"""What `sdeformer compare` and `sdeformer sweep-width` share.

The input covariance, the SDE options and the memory rule for saved times.
"""

from __future__ import annotations

import argparse

import numpy as np

from .common import check_devices, positive_int

MOMENT_TABLE_MAX_TOKENS = 8
"""The one-step moment table needs the dense noise tensor (m^4 entries): small m only."""

FINITE_KEYS = "per-sample"
"""Recorded in the settings: finite sources draw one key per sample
(sharding.sharded_covariance_paths), the same for every --devices, so results of the older
per-call keys are not resumed."""


def _add_input_arguments(group) -> None:
    group.add_argument("--tokens", type=positive_int, default=2, help="tokens m (default: 2)")
    group.add_argument(
        "--rho0", type=float, default=0.3, help="input correlation of every pair (default: 0.3)"
    )
    group.add_argument(
        "--v0",
        default=None,
        help="input covariance as rows separated by ';' (e.g. '1,0.3;0.3,1'); overrides "
        "--tokens and --rho0",
    )
    group.add_argument(
        "--steps",
        type=_steps_value,
        default="auto",
        metavar="{auto,N}",
        help="SDE solver steps over [0, T]: 'auto' picks the fewest steps inside the step rule "
        "z = 1 / sqrt(s2 T / steps) >= 4, s2 the squared smallest eigenvalue of the whitened "
        "noise at V0 (docs/usage.md, 'How many SDE steps'); an explicit N outside the rule is "
        "refused unless --allow-coarse-steps or --solver exponential (default: auto)",
    )
    group.add_argument(
        "--allow-coarse-steps",
        action="store_true",
        help="run an explicit --steps outside the step rule: paths that leave the PSD cone are "
        "counted and the comparison is refused above --max-failed-fraction",
    )
    group.add_argument(
        "--solver",
        choices=("euler", "exponential", "heun"),
        default="euler",
        help="SDE scheme: Euler-Maruyama, the exponential step that keeps V positive definite "
        "by construction (docs/theory.md section 9; about 2x Euler's cost, for many tokens or "
        "coarse steps), or Stratonovich Heun (default: euler)",
    )
    group.add_argument(
        "--bound",
        type=float,
        default=1e3,
        help="stop paths (SDE and finite) where some |V_ab| exceeds this, checked at the layer "
        "times of the finite network (default: 1000)",
    )
    group.add_argument(
        "--finite-width-sde",
        action="store_true",
        help="compare with the finite-width SDE at the network's width (exact finite-width "
        "drifts, docs/theory.md) instead of the limit SDE",
    )
    group.add_argument(
        "--max-failed-fraction",
        type=float,
        default=0.01,
        help="refuse a comparison where more than this fraction of SDE paths left the PSD cone "
        "(discretisation failures of the Euler scheme; more --steps or --solver exponential "
        "fix them) (default: 0.01)",
    )


def _steps_value(text: str) -> str | int:
    """'auto' or a positive number of steps (argparse type of --steps)."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err}; or pass 'auto'") from None


def _resolve_steps(config, v0, T: float, args: argparse.Namespace) -> None:
    """Replace `args.steps` by a number of steps; refuse an explicit one outside the step rule.

    'auto' becomes `rule_steps` (as `suggest_num_steps`); an explicit N with z < `STEP_RULE_Z`
    is refused for Euler and Heun unless `--allow-coarse-steps`. The choice is kept in
    `args.steps_choice` (printed and recorded) and is made once per command.
    """
    from ..sde import STEP_RULE_Z, rule_steps, rule_z, step_noise_scale

    if getattr(args, "steps_choice", None) is not None:
        return
    s2 = step_noise_scale(config, v0)
    chosen_by = "auto" if args.steps == "auto" else "user"
    needed = rule_steps(s2, T)
    if chosen_by == "auto":
        args.steps = needed
    z = rule_z(s2, T, args.steps)
    coarse = z < STEP_RULE_Z
    if coarse and args.solver != "exponential" and not args.allow_coarse_steps:
        raise ValueError(
            f"--steps {args.steps} is outside the step rule for the {args.solver} solver at "
            f"T = {T:.4g}: z = 1 / sqrt(s2 T / steps) = {z:.2f} < {STEP_RULE_Z:g} (s2 = {s2:.3g} "
            f"at this V0 and configuration); pass --steps auto (the rule's {needed} steps, "
            f"or more where the SDE's paths need them) or --steps {needed} or more, "
            "or --solver exponential (positive definite at any step), or --allow-coarse-steps "
            "to run it anyway (paths that leave the PSD cone are counted, and the comparison "
            "is refused above --max-failed-fraction)"
        )
    args.steps_choice = {
        "steps": args.steps,
        "chosen_by": chosen_by,
        "z": z,
        "rule_z": STEP_RULE_Z,
        "s2": s2,
        "T": T,
        "coarse": coarse,
    }


def _use_steps(args: argparse.Namespace, steps: int) -> None:
    """Solve with `steps` from now on (`--steps auto` doubling, or a saved SDE unit's steps)."""
    from ..sde import STEP_RULE_Z, rule_z

    choice = args.steps_choice
    z = rule_z(choice["s2"], choice["T"], steps)
    args.steps = steps
    choice.update(steps=steps, z=z, coarse=z < STEP_RULE_Z)


def _steps_note(args: argparse.Namespace) -> str:
    """'1078 euler steps (auto, z = 4.00)': the step choice, for the table's heading."""
    c = args.steps_choice
    return f"{c['steps']} {args.solver} steps ({c['chosen_by']}, z = {c['z']:.2f})"


def _input_covariance(args: argparse.Namespace, dtype):
    import jax.numpy as jnp

    from ..config import check_covariance
    from ..rank_collapse import equicorrelated

    if not args.bound > 0:  # also refuses NaN
        raise ValueError(f"--bound {args.bound}: pass a bound > 0 (inf for none)")
    if args.v0 is not None:
        try:
            rows = [[float(x) for x in row.split(",")] for row in args.v0.split(";")]
            matrix = np.array(rows, dtype=np.float64)
        except ValueError as err:
            raise ValueError(
                f"--v0 {args.v0!r} is not a matrix; write rows separated by ';' and entries by ','"
            ) from err
        return jnp.asarray(check_covariance(matrix, name="--v0"), dtype)
    if args.tokens < 2:
        raise ValueError(f"--tokens {args.tokens}: need at least 2 tokens")
    return equicorrelated(args.tokens, args.rho0, dtype)


SAVED_BYTES = 2**31
"""Budget for the covariances kept in memory at once (all sources, all saved times)."""


def _save_every(depth: int, m: int, total_samples: int) -> int:
    """Keep every `every`-th layer: about 16 times over [0, T], but always 0, T/2, T.

    Fewer times when the saved float32 covariances of all sources would exceed `SAVED_BYTES`
    (many tokens).
    """
    per_time = total_samples * m * m * 4
    times = max(2, min(16, SAVED_BYTES // max(per_time, 1) - 1))
    every = max(1, depth // times)
    return min(every, max(1, depth // 2))


def _sde_options(args: argparse.Namespace, width: int) -> dict:
    """Keywords of `compare.sde_source` chosen by the flags shared by both commands."""
    return {
        "num_steps": args.steps,
        "solver": args.solver,
        "bound": args.bound,
        "width": width if args.finite_width_sde else None,
        "progress": not args.no_progress,
    }


def _solve_sde(config, v0, times, num_samples: int, key, args, width: int, label=None):
    """(SDE samples, exit summary) at `times`, with the options of the shared flags."""
    from .. import compare

    sde, solution = compare.sde_source(
        config,
        v0,
        times=times,
        num_samples=num_samples,
        key=key,
        label=label,
        **_sde_options(args, width),
    )
    return sde, compare.exit_summary(solution)


def _exits_line(exits: dict) -> str:
    return (
        f"SDE paths: {exits['paths']}, survived {exits['survived']}, crossed the bound "
        f"{exits['crossed_bound']}, non-finite {exits['non_finite']}; discretisation failures "
        f"(left the PSD cone {exits['left_psd_cone']}, solver failures "
        f"{exits['solver_failure']}): {exits['discretisation_failure_fraction']:.2%}, excluded"
    )


def _check_finite_source(config, n: int, depth: int, v0, method: str) -> None:
    """Refuse what the finite sampler would refuse (n < m, missing law faces, ...), abstractly.

    Runs the sampler's host-side checks under `jax.eval_shape` (no compilation, well under a
    second), so a command fails before it creates its output directory.
    """
    import jax
    import jax.random as jr

    from ..finite import sample_covariance_paths

    jax.eval_shape(
        lambda k: sample_covariance_paths(
            config, v0, width=n, depth=depth, num_samples=1, key=k, method=method
        ),
        jr.key(0),
    )


def _check_sde_source(config, v0, T: float, args: argparse.Namespace, width: int) -> None:
    """Refuse what `solve_sde` would refuse for these options, before any file is written.

    First the number of steps (`_resolve_steps`: 'auto' chosen, an explicit number outside the
    step rule refused), then the solver against V0 and the number of tokens, the memory of one
    path, the bound, a positive definite V0 for the exponential scheme: the solver's host-side
    checks, run under `jax.eval_shape`.
    """
    import jax
    import jax.random as jr

    from ..sde import solve_sde

    _resolve_steps(config, v0, T, args)
    options = _sde_options(args, width)
    options.pop("progress")
    jax.eval_shape(
        lambda k: solve_sde(config, v0, T=T, num_samples=1, key=k, save_times=2, **options),
        jr.key(0),
    )


def _check_run_inputs(args: argparse.Namespace) -> None:
    """The checks of `--devices` and `--max-failed-fraction` both commands make first."""
    check_devices(args.devices)
    _check_max_failed_fraction(args.max_failed_fraction)


def _check_max_failed_fraction(value: float) -> None:
    if not 0 <= value <= 1:  # also refuses NaN
        raise ValueError(
            f"--max-failed-fraction {value}: pass a fraction in [0, 1] of the SDE paths"
        )
