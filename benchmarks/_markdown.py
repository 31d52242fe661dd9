"""Markdown of the benchmark summaries (standard library only): number cells and tables.

The tables of `benchmarks/results/README.md` are rendered here, by the function of each
benchmark that both the benchmark (at the end of its run) and `run_all` (for the summary) call.
"""

from __future__ import annotations


def format_number(x, digits: int = 3) -> str:
    """A summary cell: "-" for None, floats with `digits` significant digits (thousands
    separators from 10 to 1e5), anything else as `str`."""
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-2):
            return f"{x:.{digits}g}"
        return f"{x:.{digits}g}" if abs(x) < 10 else f"{x:,.0f}"
    return str(x)


def summary_table(headers: list[str], rows: list[list]) -> list[str]:
    """The lines of a markdown table of `rows` under `headers` (cells by `format_number`)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(format_number(v) for v in row) + " |" for row in rows]
    return lines


def columns(records: list[dict], keys: list[str]) -> list[list]:
    """The table rows of `records`: the values of `keys`, in that order."""
    return [[r[k] for k in keys] for r in records]
