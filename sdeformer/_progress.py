"""Progress of long calls, in their own units, that tells a stuck call from a slow one.

A long call (SDE paths in batches, a law chain, training chunks) reports how far it got in
meaningful units (paths, layers, steps) and their rate. On a terminal that is a tqdm bar. When
stderr is not a terminal (a log file, a batch job) a bar would write one carriage-return line per
refresh; instead one plain line is written at most every `every_s` seconds (default 5).

While the main thread waits inside one compiled call nothing in Python advances, so a silent
log cannot tell a slow call from a deadlocked one. A daemon thread therefore writes a heartbeat,
`still in <what>, <elapsed> s, last progress <x> s ago`, every `heartbeat_s` seconds (default 10)
without progress: a growing "last progress" with no other line means the call is stuck; progress
lines in between mean it is slow. Only the innermost open `Progress` speaks.

Progress within an SDE batch comes from diffrax's progress-meter hook (`fraction_meter`), which
reports the fraction of the time interval done; it is converted to paths here, so no rate is
ever shown in percent per second.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

import diffrax

_ACTIVE: list[Progress] = []  # open Progress objects, innermost last
_LOCK = threading.Lock()


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """Progress of one long call: `total` items of `unit` (e.g. 2000 "paths").

    `update(n)` / `advance_to(done)` report progress; `inside(what)` marks a stretch spent in one
    compiled call (the heartbeat names it). Use as a context manager; `enabled=False` makes every
    method a no-op. `start`: items already done (a resumed run; not counted in the rate).
    `rate=False` shows counts and elapsed time only (for coarse units such as
    "widths", whose rate says little). `clock` and `terminal` are for tests.
    """

    def __init__(
        self,
        what: str,
        total: float | int,
        unit: str,
        *,
        enabled: bool = True,
        start: float | int = 0,
        rate: bool = True,
        every_s: float | int = 5.0,
        heartbeat_s: float | int = 10.0,
        file=None,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.what, self.total, self.unit, self.rate = what, total, unit, rate
        self.enabled = enabled
        self.every_s, self.heartbeat_s = every_s, heartbeat_s
        self.file = sys.stderr if file is None else file
        self.terminal = _is_terminal(self.file) if terminal is None else terminal
        self.clock = clock
        self.done = self.start = start
        self.postfix = ""
        self.within: str | None = None
        self.started = self.last_progress = self.last_line = clock()
        self._bar = None
        self._stop = threading.Event()
        self._thread = None

    # ---------------------------------------------------------------------------- reporting

    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        if self.terminal:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=self.start,
                desc=self.what,
                unit=self.unit,
                file=self.file,
                leave=False,
            )
        with _LOCK:
            _ACTIVE.append(self)
        if self.heartbeat_s > 0:
            self._thread = threading.Thread(target=self._beat, daemon=True, name="sdeformer-beat")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self.enabled or self._stop.is_set():
            return
        self._stop.set()
        with _LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)
        if self._bar is not None:
            self._bar.close()

    def update(self, n: float | int = 1) -> None:
        """`n` more items done."""
        self.advance_to(self.done + n)

    def set_postfix_str(self, text: str) -> None:
        """A note after the counts (the item in progress), as tqdm's `set_postfix_str`."""
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def advance_to(self, done: float | int) -> None:
        """`done` items done in all (never goes back)."""
        if not self.enabled or done <= self.done:
            return
        now = self.clock()
        if self._bar is not None:
            self._bar.update(done - self.done)
        self.done, self.last_progress = done, now
        if self._bar is None and (now - self.last_line >= self.every_s or done >= self.total):
            self._write(self.line(now))

    def line(self, now: float | int) -> str:
        """The plain progress line: counts, rate in items per second, elapsed seconds."""
        elapsed = now - self.started
        text = f"{self.what}: {self._counts()}"
        if self.rate and elapsed > 0:
            text += f", {(self.done - self.start) / elapsed:.3g} {self.unit}/s"
        text += f", {elapsed:.0f} s"
        return text + (f" ({self.postfix})" if self.postfix else "")

    def _counts(self) -> str:
        done = int(self.done) if float(self.total).is_integer() else f"{self.done:.3g}"
        return f"{done}/{self.total:.6g} {self.unit}"

    def heartbeat(self, now: float | int) -> str | None:
        """The heartbeat line, when `heartbeat_s` passed without progress or another line."""
        if now - max(self.last_progress, self.last_line) < self.heartbeat_s:
            return None
        where = self.within or self.what
        return (
            f"still in {where}, {now - self.started:.0f} s, "
            f"last progress {now - self.last_progress:.0f} s ago "
            f"({self._counts()})"
        )

    def _write(self, text: str) -> None:
        self.last_line = self.clock()
        if self._bar is not None:
            self._bar.write(text, file=self.file)
        else:
            print(text, file=self.file, flush=True)

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.heartbeat_s)):
            with _LOCK:
                innermost = bool(_ACTIVE) and _ACTIVE[-1] is self
            text = self.heartbeat(self.clock()) if innermost else None
            if text is not None:
                self._write(text)

    # --------------------------------------------------------------------- compiled calls

    @contextlib.contextmanager
    def inside(self, what: str, size: float | int | None = None) -> Iterator[None]:
        """A stretch inside one compiled call worth `size` items (reported by `fraction`)."""
        self.within, self._base, self._size = what, self.done, size
        try:
            yield
        finally:
            self.within = None
            if size is not None:
                self.advance_to(self._base + size)

    def fraction(self, f: float | int) -> None:
        """Within `inside(..., size)`: the fraction `f` of that stretch is done."""
        if self.within is not None and getattr(self, "_size", None) is not None:
            self.advance_to(self._base + min(max(float(f), 0.0), 1.0) * self._size)


def active() -> Progress | None:
    """The innermost open `Progress` (None if none)."""
    with _LOCK:
        return _ACTIVE[-1] if _ACTIVE else None


class FractionMeter(diffrax.TqdmProgressMeter):
    """A diffrax progress meter that reports the solve's fraction to the innermost `Progress`.

    diffrax calls back every `refresh_steps` steps with the fraction of [t0, t1] done; the
    enclosing `Progress.inside(..., size)` turns it into items (paths) and their rate.
    """

    @staticmethod
    def _init_bar():
        return active()

    @staticmethod
    def _step_bar(bar, progress) -> None:
        if bar is not None:
            bar.fraction(float(progress))

    @staticmethod
    def _close_bar(bar) -> None:
        if bar is not None:
            bar.fraction(1.0)
