"""Design at initialisation: what a shaped Transformer's token covariance will look like.

`forecast(config, v0, width=n, depth=d, num_samples=N, key=key, method=...)` samples V_d by one
of four methods (`METHODS`) and returns a `Forecast`: quantiles of the token correlation and
variance features with distribution-free intervals, and the probabilities of near-collapse and
blow-up with exact intervals (docs/design.md).

Modules: `_paths` (the samplers and the one stopping rule), `_features` (the features and their
definitions), `_intervals` (order-statistic and Clopper-Pearson intervals), `_forecast`.
"""

from __future__ import annotations

from ._features import DEFINITIONS as DEFINITIONS
from ._features import FEATURES as FEATURES
from ._features import QUANTILES as QUANTILES
from ._forecast import DepthForecast as DepthForecast
from ._forecast import Forecast as Forecast
from ._forecast import forecast as forecast
from ._intervals import Estimate as Estimate
from ._intervals import proportion_interval as proportion_interval
from ._intervals import quantile_interval as quantile_interval
from ._paths import METHODS as METHODS
from ._paths import sde_num_steps as sde_num_steps
