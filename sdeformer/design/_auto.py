"""`method="auto"`: the fastest method whose error is known to be below the Monte Carlo error.

The candidates and the rule:

- **law** (exact at width n) where the blocks have a law chain; **explicit** (exact, the
  networks themselves) always. Their error is zero: they are always eligible.
- **sde**, **finite-width-sde**: eligible only where the calibration study (docs/design.md,
  "Calibration study"; `benchmarks/design_calibration.py`) found them trustworthy, and only
  when the error it measured there is below the Monte Carlo half-width 1.96 * 0.5 / sqrt(N) of
  the user's N samples (the half-width of a probability near 0.5, the largest). The user's
  (n, T) is looked up conservatively: the calibrated cell with the largest width <= n and the
  smallest T >= T; the configuration must be in the calibrated family (m tokens and blocks as
  studied, not causal). Outside it, the SDE methods are not eligible.
- Among the eligible methods, the one with the smallest estimated time wins. Times come from
  costs measured on this backend (`CALIBRATION["costs"][backend]`: seconds = a + b * work, with
  work = N d m^2 for the law chain and N * steps * m^2 for the SDEs, least squares over the
  calibration run's forecasts, compilation included). A method without measured costs on the
  backend is ranked after the measured ones, the exact ones first; `explicit` has no
  measured costs yet, so on a CPU it is chosen only where the law chain does not apply.

The table ships with the package (`sdeformer/design/calibration.json`, written by the
calibration study with its commit); without it only the exact methods are eligible.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from importlib import resources

import jax

from ..blocks import MissingFaceError
from ..config import ShapedConfig
from ._paths import sde_num_steps

EXACT = ("law", "explicit")
APPROXIMATE = ("sde", "finite-width-sde")


@functools.cache
def calibration_table() -> dict | None:
    """The shipped calibration summary (cells and costs), or None when the package has none."""
    try:
        text = resources.files(__package__).joinpath("calibration.json").read_text()
    except (FileNotFoundError, OSError):
        return None
    return json.loads(text)


@dataclasses.dataclass(frozen=True)
class Choice:
    """What `auto` chose and why: `candidates` lists every method with its verdict."""

    method: str
    reason: str
    candidates: tuple[dict, ...]

    def to_dict(self) -> dict:
        """Plain JSON-ready dictionary."""
        return {"method": self.method, "reason": self.reason, "candidates": list(self.candidates)}


def _cell(table: dict, method: str, width: int, T: float) -> dict | None:
    cells = [c for c in table["cells"] if c["method"] == method]
    widths = sorted({c["width"] for c in cells if c["width"] <= width})
    times = sorted({c["T"] for c in cells if c["T"] >= T - 1e-12})
    if not widths or not times:
        return None
    return next(
        (c for c in cells if c["width"] == widths[-1] and c["T"] == times[0]),
        None,
    )


def _in_family(table: dict, config: ShapedConfig, m: int) -> str | None:
    family = table["family"]
    if not family["m_min"] <= m <= family["m_max"]:
        return f"m={m} is outside the calibrated {family['m_min']}..{family['m_max']} tokens"
    if config.causal:
        return "causal attention was not calibrated"
    if tuple(config.blocks) not in {tuple(b) for b in family["blocks"]}:
        return f"blocks {config.blocks} were not calibrated"
    return None


def _sde_verdict(table, method, config, m, width, T, num_samples) -> str | None:
    """None when `method` is eligible, else why not."""
    if table is None:
        return "no calibration table ships with this installation"
    outside = _in_family(table, config, m)
    if outside:
        return outside
    cell = _cell(table, method, width, T)
    if cell is None:
        return f"(n={width}, T={T:g}) is outside the calibrated widths and times"
    half_width = 1.96 * 0.5 / math.sqrt(num_samples)
    where = f"the calibrated cell (n={cell['width']}, T={cell['T']:g})"
    if not cell["trusted"]:
        return f"{where} is not trusted ({cell['meet']}/{cell['configs']} configurations meet 0.02)"
    if cell["max_error"] >= half_width:
        return (
            f"its error in {where}, {cell['max_error']:.3f}, is not below the Monte Carlo "
            f"half-width {half_width:.3f} of {num_samples} samples"
        )
    return None


def _estimate(costs: dict | None, method: str, work: float) -> float | None:
    if not costs or method not in costs:
        return None
    return costs[method]["a"] + costs[method]["b"] * work


def choose_method(
    config: ShapedConfig,
    m: int,
    *,
    width: int,
    depth: int,
    num_samples: int,
    table: dict | None | str = "shipped",
    backend: str | None = None,
) -> Choice:
    """The method `forecast(method="auto")` uses at (config, m, n, d, N); see the module."""
    from ..finite import check_law

    table = calibration_table() if table == "shipped" else table
    backend = backend or jax.default_backend()
    costs = None if table is None else table.get("costs", {}).get(backend)
    T = depth / width
    steps = sde_num_steps(m, width, depth)
    work = {"law": num_samples * depth * m**2, "explicit": num_samples * depth * m**2}
    work.update({k: num_samples * steps * m**2 for k in APPROXIMATE})
    candidates = []
    for method in (*EXACT, *APPROXIMATE):
        why = None
        if method == "law":
            try:
                check_law(config, width, m)
            except (MissingFaceError, ValueError) as err:
                why = str(err)
        elif method in APPROXIMATE:
            why = _sde_verdict(table, method, config, m, width, T, num_samples)
        seconds = _estimate(costs, method, work[method])
        candidates.append(
            {"method": method, "eligible": why is None, "why_not": why, "est_seconds": seconds}
        )
    eligible = [c for c in candidates if c["eligible"]]
    # measured costs first (fastest first), then the unmeasured ones, exact before approximate
    ranked = sorted(
        eligible,
        key=lambda c: (c["est_seconds"] is None, c["est_seconds"] or 0.0),
    )
    best = ranked[0]
    if best["est_seconds"] is not None:
        reason = (
            f"the fastest eligible method on {backend} (estimated {best['est_seconds']:.1f} s "
            "from the calibration run's measured costs)"
        )
    else:
        reason = f"no measured costs on {backend}: the first exact method that applies"
    skipped = [f"{c['method']}: {c['why_not']}" for c in candidates if not c["eligible"]]
    if skipped:
        reason += "; not eligible: " + "; ".join(skipped)
    return Choice(best["method"], reason, tuple(candidates))
