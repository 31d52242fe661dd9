"""The limiting covariance SDE of a shaped Transformer stack (docs/theory.md section 4).

Layer 3 of the package: it imports config, results, blocks and the linear algebra below it,
never the finite-width side (`sdeformer.finite`), comparisons or applications.

Modules (private; their public names are re-exported here):

- `_coefficients`: `CovarianceSDE` (drift, noise, Stratonovich correction), `SDESolution`,
  `EXIT_REASONS`, the PSD factorisation with fallbacks (`psd_factor`, `psd_factor_batch`);
- `_solve`: `solve_sde` (batches of paths in one `diffrax.diffeqsolve`), `SOLVERS`,
  `sde_memory_estimate`, `default_memory_budget`;
- `_brownian`: `PathBrownian`, counter-based Brownian increments per path;
- `_psd_scheme`: the positive-definite exponential step and the Euler step it is compared with;
- `_coupled_paths`: `coupled_run`, several step sizes and schemes driven by one Brownian path;
- `_steps`: the step rule (`suggest_num_steps`, `step_noise_scale`, `step_noise_scales`).

Within the subpackage the solver imports the coefficients, never the other way round.
"""

from __future__ import annotations

from ._brownian import PathBrownian as PathBrownian
from ._coefficients import STRATONOVICH_AUTODIFF_MAX_TOKENS as STRATONOVICH_AUTODIFF_MAX_TOKENS
from ._coefficients import CovarianceSDE as CovarianceSDE
from ._coefficients import default_psd_tol as default_psd_tol
from ._coefficients import psd_factor as psd_factor
from ._coefficients import psd_factor_batch as psd_factor_batch
from ._coefficients import triu_matrix as triu_matrix
from ._coefficients import triu_vector as triu_vector
from ._coupled_paths import SCHEMES as SCHEMES
from ._coupled_paths import CoupledRun as CoupledRun
from ._coupled_paths import coupled_run as coupled_run
from ._coupled_paths import heun_step as heun_step
from ._psd_scheme import euler_step as euler_step
from ._psd_scheme import exponential_increment as exponential_increment
from ._psd_scheme import exponential_step as exponential_step
from ._psd_scheme import ito_correction as ito_correction
from ._psd_scheme import ito_correction_dense as ito_correction_dense
from ._psd_scheme import whitened_noise as whitened_noise
from ._solution import EXIT_REASONS as EXIT_REASONS
from ._solution import SDESolution as SDESolution
from ._solution import exit_code as exit_code
from ._solve import DEFAULT_MEMORY_BUDGET as DEFAULT_MEMORY_BUDGET
from ._solve import SOLVERS as SOLVERS
from ._solve import default_memory_budget as default_memory_budget
from ._solve import sde_memory_estimate as sde_memory_estimate
from ._solve import solve_sde as solve_sde
from ._steps import MAX_DT as MAX_DT
from ._steps import NOISE_DRAWS as NOISE_DRAWS
from ._steps import STEP_RULE_Z as STEP_RULE_Z
from ._steps import rule_steps as rule_steps
from ._steps import rule_z as rule_z
from ._steps import step_noise_scale as step_noise_scale
from ._steps import step_noise_scales as step_noise_scales
from ._steps import suggest_num_steps as suggest_num_steps
