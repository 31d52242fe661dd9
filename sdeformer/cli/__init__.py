"""The `sdeformer` command line: `sdeformer --help` lists the commands."""

from __future__ import annotations

import argparse
import errno
import signal
import sys

from ..results import ResultsError
from ._stopping import exit_status, stopping
from .common import (
    add_config_file_argument,
    config_defaults,
    read_config_file,
    resolved_options,
)
from .compare import _add_compare, _add_sweep_width
from .design import _add_design
from .ntk import _add_ntk
from .rank_collapse import _add_rank_collapse
from .train import _add_train, _add_train_sweep
from .train_edges import _add_train_edges
from .train_study import _add_train_study

# ------------------------------------------------------------------------------------- main


def _add_run(sub) -> None:
    parser = sub.add_parser(
        "run",
        help="the main job with its defaults (what `make run` does)",
        description=(
            "Run the main job with its default settings: `sdeformer compare` (finite shaped "
            "Transformers against the covariance SDE)."
        ),
    )
    parser.add_argument("--out", default="results/compare", help="output directory")
    parser.set_defaults(func=_run_main_job)


def _run_main_job(args: argparse.Namespace) -> int:
    return main(["compare", "--out", args.out])


def build_parser() -> argparse.ArgumentParser:
    """The `sdeformer` argument parser, with one subcommand per command."""
    parser = argparse.ArgumentParser(
        prog="sdeformer",
        description=(
            "Shaped Transformers, their covariance SDE limit and exact finite-width laws. "
            "Each command prints a table, writes a JSON report (and figures), records the "
            "resolved options and the provenance of the run, reads options from --config FILE, "
            "and resumes interrupted runs."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_compare(sub)
    _add_sweep_width(sub)
    _add_rank_collapse(sub)
    _add_ntk(sub)
    _add_train(sub)
    _add_train_sweep(sub)
    _add_train_study(sub)
    _add_train_edges(sub)
    _add_design(sub)
    for command in sub.choices.values():
        add_config_file_argument(command)
    _refuse_abbreviations(parser)
    return parser


def _refuse_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Options are spelled in full: `--n` is refused, not read as a prefix of `--no-progress`."""
    parser.allow_abbrev = False
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                _refuse_abbreviations(command)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise LookupError(command)


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Parse flags; a `--config FILE` supplies defaults that the flags given then override."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None:
        return args, None
    command = _subparser(parser, args.command)
    try:
        defaults = config_defaults(command, read_config_file(args.config), args.config)
    except ValueError as err:
        command.error(str(err))
    command.set_defaults(**defaults)
    return parser.parse_args(argv), command


def _use_noninteractive_backend() -> None:
    """The CLI writes PNG files and never shows a window: choose Agg unless MPLBACKEND is set.

    Only the command line does this; the library (sdeformer.plot) leaves the backend to the
    user, so `plt.show()` works in scripts and notebooks.
    """
    import os

    if os.environ.get("MPLBACKEND") is None:
        import matplotlib

        matplotlib.use("Agg")


def _write_run_files(command_parser, args: argparse.Namespace) -> None:
    """After a successful command: `<out>/config.json` (resolved options) and provenance."""
    from pathlib import Path

    from ..results import provenance, write_json

    out = getattr(args, "out", None)
    if args.command == "run" or out is None or not Path(out).is_dir():
        return  # `run` is `compare`, which wrote its own files
    if getattr(args, "plan", False):
        return  # `compare --plan` writes nothing
    write_json(Path(out) / "config.json", resolved_options(command_parser, args))
    write_json(
        Path(out) / "provenance.json",
        {"command": args.command, "provenance": provenance()},
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command in `argv` (default: sys.argv); returns the exit status (0: success)."""
    from ..results import accepting_changed

    parser = build_parser()
    args, command_parser = _parse(parser, argv)
    if command_parser is None:
        command_parser = _subparser(parser, args.command)
    _use_noninteractive_backend()
    # SIGTERM (a scheduler ending the job) and SIGINT (Ctrl-C) stop the command: the file being
    # written is discarded (its temporary removed), finished units stay, a rerun resumes; a
    # process stuck in a compiled call is ended after a grace period (see _stopping).
    with stopping(f"sdeformer {args.command}") as stopper:
        try:
            with accepting_changed(getattr(args, "accept_changed", False)):
                code = args.func(args)
            if code == 0:
                _write_run_files(command_parser, args)
            return code
        except (ValueError, ResultsError) as err:
            print(f"sdeformer {args.command}: error: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            reason = (
                "the disk is full" if err.errno == errno.ENOSPC else "a file could not be written"
            )
            print(
                f"sdeformer {args.command}: error: {reason} ({err}); no file was left "
                f"half-written: free space (or fix the path) and {_rerun(args)}",
                file=sys.stderr,
            )
            return 1
        except KeyboardInterrupt:
            print(f"sdeformer {args.command}: interrupted; {_rerun(args)}", file=sys.stderr)
            signum = getattr(stopper, "signum", None)
            return exit_status(signal.SIGINT if signum is None else signum)


def _rerun(args: argparse.Namespace) -> str:
    """What a rerun does: resume from the saved units, or (design) start again."""
    if getattr(args, "resumes", True):
        return "finished units are saved: rerun the same command to resume"
    return "this command keeps no partial results: rerun it to start again"


if __name__ == "__main__":
    sys.exit(main())
