"""Stopping a command on SIGTERM or SIGINT within seconds, even inside a compiled call.

A Python signal handler runs only in the main thread, between two bytecodes. While the main
thread is inside a compiled XLA call (minutes for a large batch, forever for a deadlocked one)
the handler does not run, so a handler that raises `KeyboardInterrupt` alone cannot stop the
command: `timeout 300 sdeformer compare ...` would wait for the call to return.

The C-level handler does run at once, and `signal.set_wakeup_fd` makes it write the signal
number to a pipe. A daemon thread reads that pipe (XLA releases the interpreter lock while it
computes), so it sees every signal when it arrives:

- the first SIGTERM or SIGINT asks for a clean stop: the Python handler raises
  `KeyboardInterrupt` as soon as the main thread runs Python again (the command then reports
  that finished units are saved and exits with 128 + the signal number: 143 for SIGTERM, 130
  for SIGINT), and the thread arms a grace timer (`SDEFORMER_STOP_GRACE_S` seconds, default 5):
  if the process is still alive when it runs out, the thread prints one line and ends the
  process with `os._exit` (same status);
- a second SIGTERM or SIGINT ends the process at once, with one line and the same status.

A hard exit can only lose the unit in progress: result files are written to a temporary and
renamed (sdeformer.results), and a leftover temporary is removed when the directory is opened
again.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator

GRACE_ENV = "SDEFORMER_STOP_GRACE_S"
DEFAULT_GRACE_S = 5.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)
_WAKE = 0  # the byte that wakes the watcher when the command ends (no signal has number 0)


def grace_seconds() -> float:
    """The grace period after a first signal: `SDEFORMER_STOP_GRACE_S`, default 5 s."""
    text = os.environ.get(GRACE_ENV)
    if text is None or text.strip() == "":
        return DEFAULT_GRACE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        print(
            f"{GRACE_ENV}={text!r} is not a number of seconds >= 0; using {DEFAULT_GRACE_S:g}",
            file=sys.stderr,
        )
        return DEFAULT_GRACE_S
    return value


def exit_status(signum: int) -> int:
    """The exit status of a command stopped by `signum`: 128 + signum (143 SIGTERM, 130 SIGINT)."""
    return 128 + int(signum)


class Stopper:
    """The signal state of one command (see the module docstring); `signum` of the first stop."""

    def __init__(self, name: str, grace_s: float):
        self.name = name
        self.grace_s = grace_s
        self.signum: int | None = None
        self._finished = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._thread = threading.Thread(target=self._watch, name="sdeformer-stop", daemon=True)

    def _hard_exit(self, why: str, signum: int) -> None:
        try:
            os.write(2, f"{self.name}: {why}; stopping now\n".encode())
        finally:
            os._exit(exit_status(signum))

    def _watch(self) -> None:
        deadline = None
        while True:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            ready, _, _ = select.select([self._read], [], [], timeout)
            if not ready:  # the grace period ran out with the process still alive
                self._hard_exit(
                    f"still running {self.grace_s:g} s after {signal.Signals(self.signum).name} "
                    f"(grace period, {GRACE_ENV})",
                    self.signum,
                )
            for byte in os.read(self._read, 64):
                if byte == _WAKE:
                    if self._finished and deadline is None:
                        os.close(self._read)
                        return
                elif byte in SIGNALS:
                    if deadline is not None:
                        self._hard_exit(f"second {signal.Signals(byte).name}", self.signum)
                    self.signum = byte
                    deadline = time.monotonic() + self.grace_s

    def handler(self, signum, frame) -> None:
        """The Python handler: the first signal raises KeyboardInterrupt in the main thread."""
        if self.signum is None:
            self.signum = signum
        raise KeyboardInterrupt(f"signal {signum}")

    def finish(self) -> None:
        """The command ended: stop watching unless a signal armed the grace timer."""
        self._finished = True
        with contextlib.suppress(OSError):
            os.write(self._write, bytes([_WAKE]))
            os.close(self._write)


@contextlib.contextmanager
def stopping(name: str, grace_s: float | None = None) -> Iterator[Stopper | None]:
    """Within this block SIGTERM and SIGINT stop the command as the module docstring says.

    Yields the `Stopper` (its `signum` is the first signal received, None if none), or None
    outside the main thread, where signals cannot be handled. The previous handlers and wakeup
    file descriptor are restored on leaving. After a signal the grace timer stays armed on
    leaving: the process was asked to end and must not outlive the grace period.
    """
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    stopper = Stopper(name, grace_seconds() if grace_s is None else grace_s)
    stopper._thread.start()
    previous = {s: signal.signal(s, stopper.handler) for s in SIGNALS}
    previous_fd = signal.set_wakeup_fd(stopper._write)
    try:
        yield stopper
    finally:
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        stopper.finish()
