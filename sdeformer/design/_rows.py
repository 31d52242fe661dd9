"""The rows of a phase map: resumable units, several computed at once on a multi-core CPU.

A row of cells is one compiled SDE solve (or one law-chain forecast per cell). On a CPU, XLA
runs such a solve, a loop of small operations, on one thread, so a 2-core machine finishes
two rows at once in about the time of one (measured in docs/design.md, "Phase maps").
`run_rows` keeps up to `workers` rows in flight on a thread pool, takes their results in row
order, saves each finished row to the store (the unit of resume) and reports progress from
the calling thread. Every row is a function of its index alone, so the map does not depend on
the number of workers.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os

import jax


def default_workers() -> int:
    """Rows computed at once: the CPU cores this process may use on a CPU backend, else 1."""
    if jax.default_backend() != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def check_workers(workers) -> int:
    """`workers` as a positive int (None: `default_workers()`), else a ValueError naming it."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} is invalid; pass a number of rows >= 1 (or None)")
    return int(workers)


def _unit(j: int) -> str:
    return f"row_{j:04d}"


def run_rows(row, count: int, *, store, progress, cells_per_row: int, workers: int) -> list:
    """[row(j) for j in range(count)], up to `workers` rows at once, resuming from `store`.

    `store`: None, or an object with `has_arrays`, `load_arrays` and `save_arrays`
    (`sdeformer.results.ResultStore`): row j is the unit `row_<j>`, saved as soon as it and
    every row before it are done and read back instead of recomputed on a rerun. `progress`:
    None or a callable (cells done, cells), called after each row in row order. An exception
    (from a row, the store or `progress`) cancels the rows not started and is raised once the
    running ones end; their rows are not saved.
    """
    todo = [j for j in range(count) if store is None or not store.has_arrays(_unit(j))]
    total = count * cells_per_row
    out = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending = collections.deque()
        queue = iter(todo)
        try:
            for j in range(count):
                while len(pending) < workers and (nxt := next(queue, None)) is not None:
                    pending.append((nxt, pool.submit(row, nxt)))
                if pending and pending[0][0] == j:
                    done = pending.popleft()[1].result()
                    if store is not None:
                        store.save_arrays(_unit(j), done)
                else:
                    done = store.load_arrays(_unit(j))
                out.append(done)
                if progress is not None:
                    progress((j + 1) * cells_per_row, total)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return out
