"""The features of a forecast, computed per sample from the covariance V at one depth.

With rho_ab = V_ab / sqrt(V_aa V_bb) the token correlations (docs/theory.md section 6):

- `mean_rho` = 2 / (m (m - 1)) sum_{a < b} rho_ab, 1 under full rank collapse;
- `min_eig_rho` = lambda_min(rho), 0 when the tokens' directions are linearly dependent;
- `log_mean_var` = log( tr(V_d) / tr(V_0) ), the growth of the mean token variance.

They are the comparison layer's features of the same names (`sdeformer.compare.features`),
computed there, so `sdeformer compare --features` compares what a forecast reports.
"""

from __future__ import annotations

import numpy as np

from ..compare.features import summary_features

FEATURES = ("mean_rho", "min_eig_rho", "log_mean_var")
"""Feature names, in the order they are reported."""

QUANTILES = {"q05": 0.05, "q50": 0.5, "q95": 0.95}
"""Reported quantiles of each feature."""

DEFINITIONS = {
    "mean_rho": "mean over token pairs a < b of the correlation V_ab / sqrt(V_aa V_bb) at depth d.",
    "min_eig_rho": "smallest eigenvalue of the m x m token correlation matrix at depth d.",
    "log_mean_var": "log of the mean diagonal of V_d over the mean diagonal of V_0.",
    "p_collapse": "probability that mean_rho at depth d is at least the collapse threshold.",
    "p_blowup": "probability that the path has, by depth d, crossed the bound (some |V_ab| > "
    "bound), become non-finite or (SDE) left the PSD cone.",
    "quantile_interval": "distribution-free 95 % interval between two order statistics whose "
    "ranks come from the Binomial(N, p) law of the number of samples below the p-quantile.",
    "event_interval": "exact Clopper-Pearson 95 % interval of a binomial proportion.",
    "exits": "a stopped path enters every statistic with its state at the exit (the state that "
    "crossed the bound, or the last valid one if that state is non-finite or not PSD), never "
    "dropped.",
}
"""One sentence per reported quantity (part of every JSON report)."""


def sample_features(vs: np.ndarray, v0: np.ndarray) -> dict[str, np.ndarray]:
    """Features of covariances `vs` (samples, m, m) relative to the input `v0` (m, m).

    Returns float64 arrays (samples,) keyed by `FEATURES`. Raises ValueError if a feature is
    not finite (a held exit state is always a finite PSD matrix, so this signals a bug or a
    zero variance, never a silent NaN).
    """
    vs = np.asarray(vs, dtype=np.float64)
    trace0 = float(np.trace(np.asarray(v0, dtype=np.float64)))
    columns = summary_features(vs.reshape(-1, *vs.shape[-2:]), FEATURES, trace0=trace0)
    out = {name: columns[:, i].reshape(vs.shape[:-2]) for i, name in enumerate(FEATURES)}
    for name, values in out.items():
        bad = int((~np.isfinite(values)).sum())
        if bad:
            raise ValueError(
                f"{name} is not finite for {bad} of {values.size} samples (a token variance "
                "V_aa reached 0); pass a v0 with positive variances or a smaller depth"
            )
    return out
