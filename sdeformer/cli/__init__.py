"""The `sdeformer` command line: `sdeformer --help` lists the commands."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading

from ..results import ResultsError
from .compare import _add_compare, _add_sweep_width
from .ntk import _add_ntk
from .rank_collapse import _add_rank_collapse
from .train import _add_train, _add_train_sweep
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
    parser = argparse.ArgumentParser(
        prog="sdeformer",
        description=(
            "Shaped Transformers, their covariance SDE limit and exact finite-width laws. "
            "Each command prints a table, writes JSON and figures, and resumes interrupted runs."
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
    return parser


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM (a scheduler ending the job) stops like Ctrl-C: the file being written is
    # discarded (its temporary removed), finished units stay, a rerun resumes.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except (ValueError, ResultsError) as err:
        print(f"sdeformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        reason = "the disk is full" if err.errno == errno.ENOSPC else "a file could not be written"
        print(
            f"sdeformer {args.command}: error: {reason} ({err}); finished units are saved and "
            "no file was left half-written: free space (or fix the path) and rerun to resume",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            f"sdeformer {args.command}: interrupted; finished units are saved, rerun to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
