"""NTK and gradient-descent convergence of shallow encoder-only Transformers.

After Wu, Liu, Chrysos & Cevher, "On the convergence of encoder-only shallow Transformers"
(NeurIPS 2023). Derivations in docs/ntk.md.
"""

from __future__ import annotations

from .analytic import analytic_ntk as analytic_ntk
from .analytic import arccos_kernels as arccos_kernels
from .analytic import limit_ntk as limit_ntk
from .analytic import ntk_scale as ntk_scale
from .analytic import pooled as pooled
from .data import DATASETS as DATASETS
from .data import digits_data as digits_data
from .data import load_data as load_data
from .data import synthetic_data as synthetic_data
from .empirical import STRATEGIES as STRATEGIES
from .empirical import empirical_ntk as empirical_ntk
from .empirical import min_eigenvalue as min_eigenvalue
from .empirical import parameter_count as parameter_count
from .empirical import partition_params as partition_params
from .empirical import relative_change as relative_change
from .encoder import INITS as INITS
from .encoder import SCALINGS as SCALINGS
from .encoder import ShallowEncoder as ShallowEncoder
from .encoder import resolve_tau0 as resolve_tau0
from .gd import fit_linear_rate as fit_linear_rate
from .gd import squared_loss as squared_loss
from .gd import train_gd as train_gd
from .width_study import fit_loglog as fit_loglog
from .width_study import kernel_errors as kernel_errors
from .width_study import run_unit as run_unit
