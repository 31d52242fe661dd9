"""Width sweeps fitted in the theory's form, and summarised over independent replications.

docs/theory.md section 4 predicts the weak error of a moment (the signed difference of means of a
bounded feature) as a short expansion in the width n:

    limit SDE:         E[y(n)] = a n^-1/2 + b n^-1         (a = 0 when c_plus + c_minus = 0 or
                                                           there is no MLP block)
    finite-width SDE:  E[y(n)] = b n^-1 + c n^-3/2

`fit_terms` fits such a sum of known powers by weighted least squares (linear in the
coefficients, so there is no exponent search and no log of a noisy value). `summarise_sweep`
takes R independent replications of a sweep (estimates (R, k) with their within-replication
standard errors) and reports, for the theory form and for a free exponent
(`rates.fit_power_law`):

- the fit of the replication means, with its within-fit standard errors (from the replications'
  own jackknife errors, inflated by sqrt(chi^2/dof) when the points scatter more);
- the R per-replication fits, and the between-replication spread of their coefficients and
  slopes: mean +- sd / sqrt(R) with a Student-t interval on R - 1 degrees of freedom.

The two error bars answer different questions: the within-fit one trusts the error model, the
between-replication one only assumes the replications are independent.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from .rates import fit_power_law

FORMS = {"limit": (0.5, 1.0), "finite": (1.0, 1.5)}
"""Powers p of the terms coef n^-p in the theory's form (docs/theory.md section 4)."""


@dataclasses.dataclass(frozen=True)
class TermFit:
    """E[y_i] = sum_j coef_j n_i^-p_j by weighted least squares with weights 1 / se_i^2.

    `cov` is (X^T W X)^-1, inflated by chi^2/dof where that exceeds 1 (then intervals use
    Student's t on dof = k - len(powers), otherwise the normal quantile).
    """

    powers: tuple[float, ...]
    coef: tuple[float, ...]
    se: tuple[float, ...]
    chi2_dof: float | None
    dof: int
    distribution: str

    def interval(self, j: int, level: float = 0.95) -> tuple[float, float]:
        """Interval of coefficient j at `level`."""
        tail = 0.5 + level / 2
        q = stats.t.ppf(tail, self.dof) if self.distribution == "t" else stats.norm.ppf(tail)
        return (self.coef[j] - q * self.se[j], self.coef[j] + q * self.se[j])

    def to_dict(self) -> dict:
        """JSON-ready: powers, coefficients, standard errors and 95 % intervals."""
        return {
            "powers": list(self.powers),
            "coef": list(self.coef),
            "se": list(self.se),
            "interval95": [list(self.interval(j)) for j in range(len(self.powers))],
            "chi2_dof": self.chi2_dof,
            "dof": self.dof,
            "distribution": self.distribution,
        }


def fit_terms(widths, values, errors, powers) -> TermFit:
    """Fit E[values] = sum_j coef_j widths^-powers_j (weights 1 / errors^2).

    Needs more finite points (finite value, error > 0) than terms; raises ValueError otherwise.
    """
    n = np.asarray(widths, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    powers = tuple(float(p) for p in powers)
    if not (n.shape == y.shape == e.shape and n.ndim == 1):
        raise ValueError(
            f"fit_terms: widths {n.shape}, values {y.shape}, errors {e.shape}; need equal (k,)"
        )
    used = np.isfinite(y) & np.isfinite(e) & (e > 0) & (n > 0)
    if used.sum() <= len(powers):
        raise ValueError(
            f"fit_terms: {int(used.sum())} usable widths for {len(powers)} terms; need more "
            "widths than terms"
        )
    x = n[used, None] ** -np.asarray(powers)[None, :]
    w = 1.0 / e[used] ** 2
    cov = np.linalg.inv(x.T @ (x * w[:, None]))
    coef = cov @ (x.T @ (w * y[used]))
    dof = int(used.sum()) - len(powers)
    chi2_dof = float(np.sum(w * (y[used] - x @ coef) ** 2)) / dof
    inflate = chi2_dof > 1
    if inflate:
        cov = cov * chi2_dof
    return TermFit(
        powers=powers,
        coef=tuple(float(c) for c in coef),
        se=tuple(float(math.sqrt(v)) for v in np.diagonal(cov)),
        chi2_dof=chi2_dof,
        dof=dof,
        distribution="t" if inflate else "normal",
    )


def spread(values) -> dict:
    """Mean, sd and sd / sqrt(R) of R replication values, with the t interval (R - 1 dof)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size < 2:
        return {
            "replications": int(v.size),
            "mean": None,
            "sd": None,
            "se": None,
            "interval95": None,
        }
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    se = sd / math.sqrt(v.size)
    q = float(stats.t.ppf(0.975, v.size - 1))
    return {
        "replications": int(v.size),
        "mean": mean,
        "sd": sd,
        "se": se,
        "interval95": [mean - q * se, mean + q * se],
    }


def pooled_means(values, errors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean over replications, within se of the mean, between-replication se) per width.

    `values`, `errors`: (R, k). The within se is sqrt(sum_r se_r^2) / R (the replications'
    own errors); the between se is sd over replications / sqrt(R).
    """
    y = np.asarray(values, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    if y.ndim != 2 or y.shape != e.shape or y.shape[0] < 2:
        raise ValueError(
            f"values {y.shape} and errors {e.shape}: need equal (replications, widths) shapes "
            "with at least 2 replications"
        )
    r = y.shape[0]
    return y.mean(0), np.sqrt((e**2).sum(0)) / r, y.std(0, ddof=1) / math.sqrt(r)


def _free_fit(widths, y, e, power):
    return fit_power_law(widths, y, e, power=power, signed=power == 1)


def summarise_sweep(widths, values, errors, *, form: str | None, power: int = 1) -> dict:
    """Pooled and per-replication fits of R replications of one sweep (module docstring).

    `values`, `errors`: (R, k) estimates (of distance^power) and their standard errors;
    `form`: a key of `FORMS` for the theory-form fit (power 1 only), or None.
    """
    if form is not None and (form not in FORMS or power != 1):
        raise ValueError(
            f"form={form!r} with power={power}: choose form from {sorted(FORMS)} "
            "for a signed moment difference (power 1), or None"
        )
    widths = np.asarray(widths)
    mean, within, between = pooled_means(values, errors)
    pooled = _free_fit(widths, mean, within, power)
    per_rep = [_free_fit(widths, v, s, power) for v, s in zip(values, errors, strict=True)]
    out = {
        "widths": [int(w) for w in widths],
        "replications": int(np.shape(values)[0]),
        "mean": mean.tolist(),
        "within_se": within.tolist(),
        "between_se": between.tolist(),
        "free": {
            "pooled": pooled.to_dict(),
            "slope_between": spread([f.slope for f in per_rep if f.determined]),
            "undetermined_replications": sum(not f.determined for f in per_rep),
        },
    }
    if form is not None:
        powers = FORMS[form]
        fit = fit_terms(widths, mean, within, powers)
        reps = [fit_terms(widths, v, s, powers) for v, s in zip(values, errors, strict=True)]
        out["theory"] = {
            "form": form,
            "pooled": fit.to_dict(),
            "coef_between": [spread([r.coef[j] for r in reps]) for j in range(len(powers))],
        }
    return out
