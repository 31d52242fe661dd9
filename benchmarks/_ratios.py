"""Ratios of two measured numbers, and the line that says where a table's numbers were measured.

Every ratio a benchmark summary shows is made here, by `ratio`, from two numbers of the one JSON
the summary renders, each with the batch it was measured at (paths, samples x layers, ...). Two
numbers measured at different batches are not compared: `ratio` raises `UnequalBatch`, and
`ratio_cell` writes what the two batches were instead of a quotient. `benchmarks.check_summaries`
records every call (`recording`) and checks that both numbers are leaves of that JSON.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_RECORDS: list[list[dict]] = []


class UnequalBatch(ValueError):
    """Two numbers measured at different batch sizes were about to be divided."""


def ratio(num: float, den: float, *, num_batch: Any, den_batch: Any, what: str = "") -> float:
    """num / den, after checking that both were measured at the same batch.

    A batch is anything comparable with `==`: paths, (samples, depth), None for a measure
    without one (a compile time). Raises `UnequalBatch` naming both batches when they differ,
    and ValueError when `den` is zero or missing.
    """
    if num_batch != den_batch:
        raise UnequalBatch(
            f"{what or 'ratio'}: numerator measured at batch {num_batch!r}, denominator at "
            f"{den_batch!r}; measure both at one batch (in one run, interleaved) to compare them"
        )
    if not den:
        raise ValueError(f"{what or 'ratio'}: denominator {den!r}; nothing to divide by")
    for record in _RECORDS:
        record.append(
            {"what": what, "num": num, "den": den, "num_batch": num_batch, "den_batch": den_batch}
        )
    return num / den


def ratio_cell(num, den, *, num_batch, den_batch, what: str = "") -> float | str | None:
    """A table cell: `ratio(...)`, "-" text (None) when a side is missing, or the two batches
    ("unequal batch 500 / 1") when they differ, so that no unequal-batch quotient is shown."""
    if num is None or den is None or isinstance(num, str) or isinstance(den, str):
        return None
    if num_batch != den_batch:
        return f"unequal batch {_batch_text(num_batch)} / {_batch_text(den_batch)}"
    return ratio(num, den, num_batch=num_batch, den_batch=den_batch, what=what)


def _batch_text(batch) -> str:
    if isinstance(batch, tuple | list):
        return " x ".join(str(b) for b in batch)
    return str(batch)


@contextlib.contextmanager
def recording() -> Iterator[list[dict]]:
    """Collect every `ratio` computed inside the block (numbers and batches of both sides)."""
    record: list[dict] = []
    _RECORDS.append(record)
    try:
        yield record
    finally:
        _RECORDS.remove(record)


def _short(commit: str | None) -> str:
    return "not recorded" if not commit else commit[:7] + (" (dirty)" if "dirty" in commit else "")


def machine_text(machine: dict) -> str:
    """The machine of a JSON in words: device (or CPU model), cores, jax, platform."""
    backend = machine.get("backend") or machine.get("jax_backend")
    cpu = machine.get("cpu_model") or machine.get("processor") or "CPU"
    device = (
        "" if backend == "cpu" else f"{machine.get('device_count', 1)} x {machine.get('device')}, "
    )
    return (
        f"{device}{cpu}, {machine.get('cpu_count')} CPU cores, jax "
        f"{machine.get('jax') or machine.get('jax_version')} (backend {backend}), "
        f"{machine.get('platform')}"
    )


def load_text(load) -> str:
    """The load average a JSON recorded ("not recorded" where it has none)."""
    if not load:
        return "load average not recorded"
    if isinstance(load, dict):
        before, after = load.get("before"), load.get("after", load.get("now"))
        return f"load average {_rounded(before)} before, {_rounded(after)} after"
    return f"load average {_rounded(load)}"


def _rounded(load):
    if isinstance(load, list | tuple):
        return [round(x, 2) for x in load]
    return round(load, 2) if isinstance(load, float) else load


def run_line(data: dict, name: str, *, load=None, commit: str | None = None) -> str:
    """Where and when the numbers of `<name>.json` were measured, read from that JSON alone."""
    if commit is None:
        commit = data.get("commit") or (data.get("provenance") or {}).get("git_commit")
    if load is None:
        load = data.get("load") or data.get("load_average")
    return (
        f"\nMeasured in one run (`{name}.json`) on {machine_text(data.get('machine', {}))}; "
        f"{load_text(load)}; commit {_short(commit)}."
    )
