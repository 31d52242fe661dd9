"""Locating a divergence edge: a coarse learning-rate grid, then bisection to a chosen factor.

For one (model kind, width, depth, seed), the runs at learning rates `lr_1 < lr_2 < ...` each
either diverge (the engine's rule, docs/training.md) or not. The **edge bracket** is

    lo = the largest tested lr below the smallest diverged lr (every tested lr <= lo survived)
    hi = the smallest diverged lr

so the run survived at `lo` and diverged at `hi`. A **probe** is the geometric midpoint
`sqrt(lo hi)`; training it and adding it to the runs halves `log(hi / lo)`. From a grid with a
factor 4 between points, two probes locate the edge to within a factor 2, then sqrt(2).

Censored edges: if no tested lr diverged, the edge is at least the largest lr (`hi` is None);
if the smallest tested lr diverged, the edge is below it (`lo` is None). Neither is bisected.
A run that survives above `hi` (non-monotone divergence) does not move the bracket; it is
flagged (`non_monotone`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping

ROUNDING = 2e-3
"""Relative slack on the bracket factor: learning rates are rounded to 4 significant digits."""


@dataclasses.dataclass(frozen=True)
class Bracket:
    """The divergence edge of one (kind, width, depth, seed): survived at `lo`, diverged at `hi`.

    `lo` None: the smallest tested lr diverged (the edge is below it). `hi` None: no tested lr
    diverged (the edge is at least `lo`). `non_monotone`: some lr above `hi` survived.
    """

    lo: float | None
    hi: float | None
    non_monotone: bool = False

    @property
    def ratio(self) -> float:
        """The ratio hi / lo (infinite when censored)."""
        if self.lo is None or self.hi is None:
            return math.inf
        return self.hi / self.lo

    @property
    def censored(self) -> str | None:
        """Censoring: "above" (no divergence), "below" (diverged at the smallest lr), or None."""
        if self.hi is None:
            return "above"
        if self.lo is None:
            return "below"
        return None

    def to_dict(self) -> dict:
        """JSON-ready: lo, hi, ratio (None when censored), censored, non_monotone."""
        ratio = None if math.isinf(self.ratio) else self.ratio
        return {
            "lo": self.lo,
            "hi": self.hi,
            "ratio": ratio,
            "censored": self.censored,
            "non_monotone": self.non_monotone,
        }


def bracket(diverged_at_lr: Mapping[float, bool]) -> Bracket:
    """The edge bracket of runs given as {lr: diverged} (see the module docstring)."""
    if not diverged_at_lr:
        raise ValueError("no runs: pass at least one {lr: diverged} entry")
    lrs = sorted(diverged_at_lr)
    diverged = [lr for lr in lrs if diverged_at_lr[lr]]
    if not diverged:
        return Bracket(lrs[-1], None)
    hi = diverged[0]
    below = [lr for lr in lrs if lr < hi]
    survived_above = any(not diverged_at_lr[lr] for lr in lrs if lr > hi)
    return Bracket(below[-1] if below else None, hi, survived_above)


def next_probe(diverged_at_lr: Mapping[float, bool], factor: float) -> float | None:
    """The next lr to train, or None when the bracket is within `factor` or censored.

    The probe is the geometric midpoint of the bracket, rounded to 4 significant digits (so
    that its unit name is stable); a bracket within `factor` up to that rounding (`ROUNDING`,
    relative) is located.
    """
    if not factor > 1:
        raise ValueError(f"factor={factor!r}: pass a bracket factor > 1, e.g. sqrt(2)")
    b = bracket(diverged_at_lr)
    if b.censored or b.ratio <= factor * (1 + ROUNDING):
        return None
    probe = float(f"{math.sqrt(b.lo * b.hi):.4g}")
    if not b.lo < probe < b.hi:
        return None  # the bracket is narrower than 4 significant digits can split
    return probe


def probes_needed(grid_factor: float, factor: float) -> int:
    """How many probes bisect a bracket of `grid_factor` to within `factor`."""
    if not (grid_factor > 1 and factor > 1):
        raise ValueError(f"need factors > 1, got grid {grid_factor!r} and target {factor!r}")
    return max(0, math.ceil(math.log(math.log(grid_factor) / math.log(factor), 2) - 1e-9))


def geometric_grid(low: float, factor: float, count: int) -> tuple[float, ...]:
    """`count` learning rates `low * factor^k`, rounded to 4 significant digits."""
    if not (low > 0 and factor > 1 and count >= 1):
        raise ValueError(
            f"grid low={low!r}, factor={factor!r}, count={count!r}: need low > 0, factor > 1 "
            "and count >= 1"
        )
    return tuple(float(f"{low * factor**k:.4g}") for k in range(count))


def runs_by_lr(runs: Iterable[Mapping]) -> dict[float, bool]:
    """{lr: diverged} of run records (the engine's `lr` and `diverged` fields)."""
    return {float(r["lr"]): bool(r["diverged"]) for r in runs}


def locate_edge(
    grid: Iterable[float], factor: float, run: Callable[[float, str], bool | None]
) -> tuple[dict[float, bool], bool]:
    """Locate one edge: the grid in ascending order up to the first divergence, then probes.

    `run(lr, role)` trains (or looks up) the run at `lr` ("grid" or "probe") and returns whether
    it diverged, or None to stop here (a run budget, a missing saved run). Returns
    ({lr: diverged} of the runs done, whether the edge is located).
    """
    seen: dict[float, bool] = {}
    for lr in sorted(grid):
        diverged = run(lr, "grid")
        if diverged is None:
            return seen, False
        seen[lr] = diverged
        if diverged:
            break
    while (probe := next_probe(seen, factor)) is not None:
        diverged = run(probe, "probe")
        if diverged is None:
            return seen, False
        seen[probe] = diverged
    return seen, True
