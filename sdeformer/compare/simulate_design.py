"""Coverage of the convergence procedure on simulated data with the real design.

`simulate.py` checks the power-law fit on a Gaussian mean shift; this module checks the
procedure of `benchmarks.convergence` itself: the real widths, samples per side and number of
replications, a bounded feature with an exit atom, and truths that are sums of two terms
(the theory's form) or that the fitted form misspecifies.

The feature of the "SDE" is Y = 0.99 with probability q (paths held at their exit) and otherwise
2 Beta(2, 2) - 1 (in [-1, 1], mean 0). The "network" at width n has the same exit atom and,
off it, draws from 2 Beta(3, 2) - 1 (mean +0.2) or 2 Beta(2, 3) - 1 (mean -0.2) with probability
|delta_n| / (0.2 (1 - q)), else from 2 Beta(2, 2) - 1: so E X_n - E Y = delta_n exactly. Each
(study, replication, width) has fresh samples on both sides. The estimates and errors are those of
the real sweeps (difference of means, its standard error) and the fit is
`term_fits.summarise_sweep`; the study records how often the 95 % intervals (the pooled fit's and
the between-replication t interval) cover the true coefficients.
"""

from __future__ import annotations

import math

import numpy as np

from .term_fits import FORMS, summarise_sweep

EXIT_VALUE = 0.99
SHIFT = 0.2


def _draw(rng, shape, delta: float, exit_fraction: float) -> np.ndarray:
    """Samples of the bounded feature with mean shift `delta` (module docstring)."""
    p = abs(delta) / (SHIFT * (1 - exit_fraction))
    if p > 1:
        raise ValueError(f"delta={delta:.3g} is too large for the bounded law; need <= {SHIFT}")
    base = 2 * rng.beta(2, 2, size=shape) - 1
    hi, lo = (3, 2) if delta > 0 else (2, 3)
    shifted = 2 * rng.beta(hi, lo, size=shape) - 1
    values = np.where(rng.random(shape) < p, shifted, base)
    return np.where(rng.random(shape) < exit_fraction, EXIT_VALUE, values)


def truth_values(widths, truth: dict) -> np.ndarray:
    """delta_n = sum over (power, coef) of coef n^-power, plus a constant `floor`."""
    n = np.asarray(widths, dtype=np.float64)
    terms = sum(c * n**-p for p, c in truth["terms"].items())
    return terms + truth.get("floor", 0.0)


def _estimates(rng, widths, delta, studies, replications, num_samples, exit_fraction):
    """Difference of means and its standard error, (studies, replications, widths) each."""
    shape = (num_samples, studies, replications)
    est, se = [], []
    for d in delta:
        x = _draw(rng, shape, d, exit_fraction)
        y = _draw(rng, shape, 0.0, exit_fraction)
        est.append(x.mean(0) - y.mean(0))
        se.append(np.sqrt(x.var(0, ddof=1) / num_samples + y.var(0, ddof=1) / num_samples))
    return np.stack(est, -1), np.stack(se, -1)


def run_design_study(
    truth: dict,
    *,
    form: str,
    widths=(16, 32, 64, 128, 256, 512, 1024),
    replications: int = 8,
    num_samples: int = 2000,
    exit_fraction: float = 0.02,
    studies: int = 200,
    seed: int = 0,
) -> dict:
    """Coverage of the theory-form coefficients for one truth (module docstring).

    `truth`: {"name", "terms": {power: coef}, "floor": constant}; the covered coefficients are
    those of the fitted form's powers (a term absent from the truth has the true value 0).
    """
    if form not in FORMS:
        raise ValueError(f"form={form!r}; choose from {sorted(FORMS)}")
    rng = np.random.default_rng(seed)
    delta = truth_values(widths, truth)
    est, se = _estimates(rng, widths, delta, studies, replications, num_samples, exit_fraction)
    powers = FORMS[form]
    true = [truth["terms"].get(p, 0.0) for p in powers]
    pooled_hits = np.zeros(len(powers))
    between_hits = np.zeros(len(powers))
    slopes = []
    for s in range(studies):
        out = summarise_sweep(widths, est[s], se[s], form=form)
        fit = out["theory"]["pooled"]
        for j, c in enumerate(true):
            lo, hi = fit["interval95"][j]
            pooled_hits[j] += lo <= c <= hi
            lo, hi = out["theory"]["coef_between"][j]["interval95"]
            between_hits[j] += lo <= c <= hi
        pooled = out["free"]["pooled"]
        slopes.append(pooled["slope"] if pooled["status"] == "determined" else math.nan)
    slopes = np.array(slopes, dtype=np.float64)
    return {
        "truth": truth["name"],
        "form": form,
        "powers": list(powers),
        "true_coef": true,
        "widths": [int(w) for w in widths],
        "replications": replications,
        "num_samples": num_samples,
        "studies": studies,
        "coverage_pooled": (pooled_hits / studies).tolist(),
        "coverage_between": (between_hits / studies).tolist(),
        "free_slope_determined": float(np.isfinite(slopes).mean()),
        "free_slope_median": float(np.nanmedian(slopes)) if np.isfinite(slopes).any() else None,
    }


TRUTHS = (
    ({"name": "a n^-1/2 + b n^-1 (a = 0.05, b = -0.5)", "terms": {0.5: 0.05, 1.0: -0.5}}, "limit"),
    ({"name": "b n^-1 only (a = 0, b = -0.5)", "terms": {1.0: -0.5}}, "limit"),
    ({"name": "b n^-1 + c n^-3/2 (b = -0.3, c = 1)", "terms": {1.0: -0.3, 1.5: 1.0}}, "finite"),
    (
        {
            "name": "misspecified: a, b and c n^-3/2 (c = 2)",
            "terms": {0.5: 0.05, 1.0: -0.5, 1.5: 2.0},
        },
        "limit",
    ),
    (
        {
            "name": "misspecified: b, c and a floor 2e-3",
            "terms": {1.0: -0.3, 1.5: 1.0},
            "floor": 2e-3,
        },
        "finite",
    ),
)
"""Two-term truths in the fitted form and truths the form misspecifies."""


def coverage_rows(**kwargs) -> list[dict]:
    """`run_design_study` for every truth of `TRUTHS`."""
    return [run_design_study(t, form=f, seed=i, **kwargs) for i, (t, f) in enumerate(TRUTHS)]


def design_table(rows: list[dict]) -> str:
    """A markdown table of `coverage_rows`."""
    lines = [
        "| truth | fitted form | true coefficients | 95 % coverage (pooled fit) | "
        "95 % coverage (replications, t) | median free slope |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        terms = ", ".join(
            f"n^-{p:g}: {c:+g}" for p, c in zip(r["powers"], r["true_coef"], strict=True)
        )
        pooled = ", ".join(f"{c:.0%}" for c in r["coverage_pooled"])
        between = ", ".join(f"{c:.0%}" for c in r["coverage_between"])
        slope = "-" if r["free_slope_median"] is None else f"{r['free_slope_median']:+.2f}"
        lines.append(
            f"| {r['truth']} | {FORM_NAMES[r['form']]} | {terms} | {pooled} | {between} | {slope} |"
        )
    return "\n".join(lines)


FORM_NAMES = {"limit": "a n^-1/2 + b n^-1", "finite": "b n^-1 + c n^-3/2"}
