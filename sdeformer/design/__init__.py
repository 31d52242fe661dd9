"""Design at initialisation: what a shaped Transformer's token covariance will look like.

`forecast(config, v0, width=n, depth=d, num_samples=N, key=key, method=...)` samples V_d by one
of four methods (`METHODS`) and returns a `Forecast`: quantiles of the token correlation and
variance features with distribution-free intervals, and the probabilities of near-collapse and
blow-up with exact intervals (docs/design.md). `phase_map` maps p_collapse, p_blowup and the
median mean_rho over a grid of two parameters; `tune` puts a statistic at depth d on a target
and certifies it with the exact law chain. `choose_method` is the choice `method="auto"` makes
(from the shipped calibration table and measured costs), without sampling.

Modules: `_paths` (the samplers and the one stopping rule), `_features` (the features and their
definitions), `_intervals` (order-statistic and Clopper-Pearson intervals), `_forecast`,
`_auto` (method="auto"), `_cells` (one limit-SDE evaluation with common random numbers),
`_map`, `_tune`, `_figures` (matplotlib, imported only when a figure is asked for).
"""

from __future__ import annotations

from ._auto import Choice as Choice
from ._auto import choose_method as choose_method
from ._cells import PARAMETERS as PARAMETERS
from ._features import DEFINITIONS as DEFINITIONS
from ._features import FEATURES as FEATURES
from ._features import QUANTILES as QUANTILES
from ._forecast import DepthForecast as DepthForecast
from ._forecast import Forecast as Forecast
from ._forecast import forecast as forecast
from ._intervals import Estimate as Estimate
from ._intervals import proportion_interval as proportion_interval
from ._intervals import quantile_interval as quantile_interval
from ._map import MAP_METHODS as MAP_METHODS
from ._map import PhaseMap as PhaseMap
from ._map import grid_axis as grid_axis
from ._map import phase_map as phase_map
from ._paths import METHODS as METHODS
from ._paths import sde_num_steps as sde_num_steps
from ._tune import STATISTICS as STATISTICS
from ._tune import TuneResult as TuneResult
from ._tune import tune as tune


def phase_map_figure(result, *, ax=None):
    """Contours of p_collapse, p_blowup and the median mean_rho of a `PhaseMap` (matplotlib).

    `ax`: None (a new figure) or three Axes; returns the Figure. Imports matplotlib only here.
    """
    from ._figures import phase_map_figure as draw

    return draw(result, ax=ax)
