"""The finite-width side: explicit networks, the exact law chain and one-step moments.

Layer 3 of the package, beside `sdeformer.sde` and independent of it: it imports config, the
blocks and the linear algebra below it.

Modules (private; their public names are re-exported here):

- `_explicit`: `ShapedTransformer` (the explicit Equinox network), `explicit_covariance_paths`
  (the ground truth), `input_from_covariance`, batch sizing;
- `_laws`: the exact finite-width covariance chain (`law_covariance_paths`,
  `sample_covariance_paths`, `check_law`);
- `_moments`: `one_step_moments`, n E[dV] and n Cov[dV] of one layer at a fixed V.

The Wishart draws (`wishart`, `bartlett_factor`, `complement_dof`) are re-exported from
`sdeformer._wishart`, one layer down, because the blocks' law faces draw from it too.
"""

from __future__ import annotations

from .._wishart import bartlett_factor as bartlett_factor
from .._wishart import complement_dof as complement_dof
from .._wishart import wishart as wishart
from ._explicit import ShapedTransformer as ShapedTransformer
from ._explicit import default_batch_size as default_batch_size
from ._explicit import explicit_covariance_paths as explicit_covariance_paths
from ._explicit import input_from_covariance as input_from_covariance
from ._explicit import weights_per_layer as weights_per_layer
from ._laws import METHODS as METHODS
from ._laws import check_law as check_law
from ._laws import default_sampler_batch as default_sampler_batch
from ._laws import factor_step as factor_step
from ._laws import law_batch_size as law_batch_size
from ._laws import law_covariance_paths as law_covariance_paths
from ._laws import sample_covariance_paths as sample_covariance_paths
from ._moments import OneStepMoments as OneStepMoments
from ._moments import one_step_moments as one_step_moments
