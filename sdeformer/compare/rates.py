"""Convergence rates: distance ~ C n^slope fitted without the biases of a log-log fit.

`fit_power_law` fits unbiased estimates y_i of a distance to a power p (p = 2 for the squared
energy distance, p = 1 for a difference of means) on the linear scale:

    E[y_i] = A (n_i / n_ref)^beta,      distance ~ n^slope with slope = beta / p,

by generalised least squares with the estimates' covariance matrix `covariance` (or diagonal
`errors^2`), which comes from the samples' spread (jackknife), never from the values y_i
themselves. There is no logarithm of a noisy value, no selection of the points above a noise
floor, and a value at the noise floor enters with its own error bar; the covariance can carry the
correlation of estimates that share the SDE sample (`sweep.width_distances`).

The fit profiles A out (closed form for fixed beta) and minimises the residual chi^2 over beta on a
grid, then refines it. The slope's standard error comes from the Fisher information of (A, beta),
inflated by sqrt(chi^2 / dof) when the points scatter more than their errors (dof = k - 2); the
95 % interval uses the normal quantile when the errors explain the scatter and Student's t with
k - 2 degrees of freedom when the standard error was inflated from the residuals.

The fit is "undetermined" (slope NaN, never a number that reads as agreement) when fewer than
three widths have a finite estimate and error, when no width's value differs from 0 (a chi^2 test
at 5 %), when the best slope lies on the edge of the search range, or when the standard error is
0 or non-finite. `simulate.py` checks the coverage of the interval with known truths.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize, stats

DETERMINED = "determined"
UNDETERMINED = "undetermined"


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """distance ~ exp(intercept) n^slope with the slope's standard error and interval.

    `method`: "gls" (`fit_power_law`) or "loglog" (`loglog_fit`); `power`: the fitted values
    estimate distance^power; `distribution`: "normal" or "t" (with `dof`) for intervals.
    `status` is "undetermined" (with `reason`) when the data do not determine a slope; then
    `slope`, `slope_se` and `intercept` are NaN.
    """

    slope: float
    slope_se: float
    intercept: float
    widths: tuple[int, ...]
    used: tuple[bool, ...]
    chi2_dof: float | None = None
    dof: int = 0
    distribution: str = "normal"
    status: str = DETERMINED
    reason: str = ""
    method: str = "gls"
    power: int = 1

    @property
    def determined(self) -> bool:
        """True when the data determine a slope (`status` is not "undetermined")."""
        return self.status == DETERMINED

    def quantile(self, level: float = 0.95) -> float:
        """Two-sided multiplier of `slope_se` for an interval at `level`."""
        tail = 0.5 + level / 2
        if self.distribution == "t" and self.dof > 0:
            return float(stats.t.ppf(tail, self.dof))
        return float(stats.norm.ppf(tail))

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Confidence interval of the slope (NaN, NaN) when undetermined."""
        half = self.quantile(level) * self.slope_se
        return (self.slope - half, self.slope + half)

    def covers(self, slope: float, level: float = 0.95) -> bool:
        """True when `slope` lies in the confidence interval at `level` (False if undetermined)."""
        lo, hi = self.interval(level)
        return bool(lo <= slope <= hi)

    def describe(self) -> str:
        """One line: the rate n^(slope +- se) with its 95 % interval, or why it is undetermined."""
        if not self.determined:
            return f"rate undetermined ({self.reason})"
        lo, hi = self.interval()
        return f"n^({self.slope:.3f} +- {self.slope_se:.3f}), 95 % interval [{lo:.3f}, {hi:.3f}]"

    def to_dict(self) -> dict:
        """The fit as a JSON-ready dict: non-finite numbers as None, plus the 95 % interval."""
        out = dataclasses.asdict(self)
        for name in ("slope", "slope_se", "intercept", "chi2_dof"):
            value = out[name]
            if value is not None and not math.isfinite(value):
                out[name] = None
        out["interval95"] = list(self.interval()) if self.determined else None
        return out


def _undetermined(widths, used, reason, *, method="gls", power=1) -> PowerLawFit:
    return PowerLawFit(
        slope=math.nan,
        slope_se=math.nan,
        intercept=math.nan,
        widths=tuple(int(w) for w in widths),
        used=tuple(bool(u) for u in used),
        status=UNDETERMINED,
        reason=reason,
        method=method,
        power=power,
    )


SLOPE_RANGE = (-4.0, 2.0)
"""Range searched for beta / power (the slope of the distance)."""


def fit_power_law(
    widths,
    values,
    errors=None,
    *,
    covariance=None,
    power: int = 1,
    signed: bool = False,
    variance_basis=None,
    shared=None,
    iterations: int = 3,
    signal_level: float = 0.05,
) -> PowerLawFit:
    """Fit E[values] = A n^(power * slope) by generalised least squares (module docstring).

    - `values` (k,): unbiased estimates of distance^power at `widths` (may be negative);
    - `errors` (k,) standard errors, or `covariance` (k, k) of the estimates;
    - `signed`: A may have either sign (a difference of means); otherwise A > 0;
    - `variance_basis`: (s, t), each (k,), for estimates whose variance grows with their mean
      (U-statistics of squared distances): the variances are modelled as
      b s_i + c t_i mu_i with mu_i the fitted mean (not the noisy value), plus, for estimates
      that share a sample, d shared_ij sqrt(mu_i mu_j) (the first-order term of a U-statistic
      through the shared sample; `shared` (k, k) is 1/size of the sample shared by i and j,
      diagonal included, 0 where nothing is shared, so every term is positive semi-definite);
      d >= 0 is fitted by non-negative least squares to the off-diagonal entries of
      `covariance` (the jackknife's) and b, c >= 0 to its diagonal less the shared term, and the
      fit is iterated `iterations` times. For a two-sample U-statistic,
      s = (1/size_a + 1/size_b)^2 (the degenerate part) and t = 1/size_a + 1/size_b.
    Returns a `PowerLawFit` of the distance's slope; "undetermined" where the data say nothing.
    """
    if covariance is None:
        if errors is None:
            raise ValueError("fit_power_law: pass errors (k,) or covariance (k, k)")
        e = np.asarray(errors, dtype=np.float64)
        covariance = np.diag(np.where(np.isfinite(e), e, np.inf) ** 2)
    cov = np.asarray(covariance, dtype=np.float64)
    fit = _gls_fit(widths, values, cov, power, signed, signal_level)
    if variance_basis is None:
        return fit
    s, t = (np.asarray(b, dtype=np.float64) for b in variance_basis)
    k = s.size
    shared = np.zeros((k, k)) if shared is None else np.asarray(shared, dtype=np.float64)
    var = np.diagonal(cov)
    if not np.all(np.isfinite(cov)) or not np.all(var > 0):
        return fit
    off = ~np.eye(k, dtype=bool) & (shared != 0)
    n = np.asarray(widths, dtype=np.float64)
    for _ in range(iterations):
        if not fit.determined:
            return fit
        mu = np.exp(power * (fit.intercept + fit.slope * np.log(n)))
        root = shared * np.sqrt(np.outer(mu, mu))
        # d from the covariances between estimates that share a sample, then b, c from the
        # variances left after the shared term (each step non-negative least squares)
        d = 0.0
        if off.any():
            norm = np.sqrt(np.outer(var, var))[off]
            (d,), _ = optimize.nnls((root[off] / norm)[:, None], cov[off] / norm)
        left = var - d * np.diagonal(root)
        basis = np.stack([s, t * mu], axis=1) / var[:, None]
        coef, _ = optimize.nnls(basis, left / var)
        model = np.diag(s * coef[0] + t * mu * coef[1]) + d * root
        eig = np.linalg.eigvalsh(model)
        if not eig[0] > 1e-10 * eig[-1]:
            return fit  # the model is singular: keep the last fit
        fit = _gls_fit(widths, values, model, power, signed, signal_level)
    return fit


class _NoFit(Exception):
    """Why a power-law fit is undetermined (caught by `_gls_fit`)."""


def _gls_weight(y, cov, used, signal_level):
    """(inverse covariance of the used widths' estimates, chi2 against 0), or `_NoFit`."""
    if used.sum() < 3:
        raise _NoFit(f"{int(used.sum())} width(s) with a finite estimate and error; need >= 3")
    try:
        weight = np.linalg.inv(cov[np.ix_(used, used)])
    except np.linalg.LinAlgError:
        raise _NoFit("singular covariance of the estimates") from None
    weight = 0.5 * (weight + weight.T)
    y_u = y[used]
    chi2_zero = float(y_u @ weight @ y_u)
    if stats.chi2.sf(chi2_zero, y_u.size) > signal_level:
        raise _NoFit(
            f"no width's estimate differs from 0 (chi2 = {chi2_zero:.3g} on {y_u.size} dof)"
        )
    return weight, chi2_zero


def _best_exponent(x, y_u, weight, chi2_zero, power, signed):
    """(beta, amplitude a, chi2) of a x^beta by profile least squares over the slope range."""

    def amplitude_and_rss(beta):
        g = np.exp(np.multiply.outer(np.atleast_1d(beta), x))  # (betas, k)
        gw = g @ weight
        gwy, gwg = gw @ y_u, np.sum(gw * g, axis=1)
        a = gwy / gwg
        if not signed:
            a = np.maximum(a, 0.0)
        return a, chi2_zero - 2 * a * gwy + a * a * gwg

    lo, hi = power * SLOPE_RANGE[0], power * SLOPE_RANGE[1]
    grid = np.linspace(lo, hi, 301)
    best = int(np.argmin(amplitude_and_rss(grid)[1]))
    step = grid[1] - grid[0]
    refine = optimize.minimize_scalar(
        lambda b: float(amplitude_and_rss(b)[1][0]),
        bounds=(max(lo, grid[best] - step), min(hi, grid[best] + step)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    beta = float(refine.x)
    a, chi2 = (float(v[0]) for v in amplitude_and_rss(beta))
    if a == 0.0 or beta <= lo + step or beta >= hi - step:
        raise _NoFit(
            "no power law with A > 0 and a slope in "
            f"[{SLOPE_RANGE[0]}, {SLOPE_RANGE[1]}] fits (best slope {beta / power:.3g})"
        )
    return beta, a, chi2


def _gls_fit(widths, values, cov, power, signed, signal_level) -> PowerLawFit:
    n = np.asarray(widths, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if cov.shape != (n.size, n.size) or y.shape != n.shape:
        raise ValueError(
            f"fit_power_law: {n.size} widths, values of shape {y.shape}, covariance of shape "
            f"{cov.shape}; need (k,), (k,) and (k, k)"
        )
    diag = np.diagonal(cov)
    used = np.isfinite(y) & np.isfinite(diag) & (diag > 0) & (n > 0)
    try:
        weight, chi2_zero = _gls_weight(y, cov, used, signal_level)
        n_u = n[used]
        n_ref = math.exp(float(np.mean(np.log(n_u))))
        x = np.log(n_u / n_ref)
        beta, a, chi2 = _best_exponent(x, y[used], weight, chi2_zero, power, signed)
        g = np.exp(beta * x)
        jac = np.stack([g, a * g * x], axis=1)
        try:
            cov_params = np.linalg.inv(jac.T @ weight @ jac)
        except np.linalg.LinAlgError:
            raise _NoFit("singular Fisher information") from None
        dof = n_u.size - 2
        chi2_dof = chi2 / dof if dof > 0 else None
        inflate = chi2_dof is not None and chi2_dof > 1
        var_beta = cov_params[1, 1] * (chi2_dof if inflate else 1.0)
        beta_se = math.sqrt(var_beta) if var_beta > 0 else math.nan
        if not (math.isfinite(beta_se) and beta_se > 0):
            raise _NoFit(f"standard error {beta_se!r}")
    except _NoFit as why:
        return _undetermined(n, used, str(why), power=power)
    slope = beta / power
    return PowerLawFit(
        slope=slope,
        slope_se=beta_se / power,
        intercept=math.log(abs(a)) / power - slope * math.log(n_ref),
        widths=tuple(int(w) for w in n),
        used=tuple(bool(u) for u in used),
        chi2_dof=chi2_dof,
        dof=dof,
        distribution="t" if inflate else "normal",
        method="gls",
        power=power,
    )


def loglog_fit(widths, values, errors) -> PowerLawFit:
    """Weighted least squares of log value = intercept + slope log width (positive values).

    For values that are all far above their noise (for example means of positive errors with
    small relative errors, as the NTK kernel errors): the standard error of log value is
    error / value (delta method). `slope_se` is inflated by sqrt(chi2 / dof) when the points
    scatter more than their error bars (never deflated), and intervals then use Student's t.
    Near a noise floor use `fit_power_law`, which is unbiased there.
    """
    n = np.asarray(widths, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    used = np.isfinite(values) & (values > 0) & np.isfinite(errors) & (errors > 0)
    if used.sum() < 2:
        return _undetermined(n, used, "fewer than 2 positive values", method="loglog")
    x = np.log(n[used])
    y, sigma = np.log(values[used]), errors[used] / values[used]
    w = 1.0 / sigma**2
    design = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    coef = cov @ design.T @ (w * y)
    dof = x.size - 2
    chi2 = float(np.sum(w * (y - design @ coef) ** 2)) / dof if dof > 0 else None
    inflate = chi2 is not None and chi2 > 1
    if inflate:
        cov = cov * chi2
    se = math.sqrt(cov[1, 1])
    if not (math.isfinite(se) and se > 0):
        return _undetermined(n, used, f"standard error {se!r}", method="loglog")
    return PowerLawFit(
        slope=float(coef[1]),
        slope_se=se,
        intercept=float(coef[0]),
        widths=tuple(int(v) for v in n),
        used=tuple(bool(u) for u in used),
        chi2_dof=chi2,
        dof=dof,
        distribution="t" if inflate else "normal",
        method="loglog",
    )
