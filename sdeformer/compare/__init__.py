"""The comparison layer: distances between laws of covariance samples and their rates in the width.

Distances between laws of covariance samples, their noise levels, stopping and exits, and
convergence rates in the width (docs/theory.md).

Modules: `features` (names, pair subsets, many-token summaries), `distances` (vectorised KS, W1,
energy distance, permutation and `scipy.stats.kstwo` noise levels), `samples`
(`CovarianceSamples`: one grid, one stopping rule, PSD exits as failures), `rows` (one feature's
two laws at one time: `FeatureComparison`, `compare_arrays`), `comparison` (`compare_sources` and
its `Comparison`: table, verdict levels), `sources` (finite networks and the SDE on the layer
grid), `planning` (samples per source to detect a gap at the verdict's level), `width_sweep`
(width sweeps), `rates` (unbiased power-law fits), `term_fits` (fits in the theory's form and
over replications), `simulate` and `simulate_design` (coverage studies of the rate fit and of
the convergence procedure).
"""

from __future__ import annotations

from .comparison import MODES as MODES
from .comparison import Comparison as Comparison
from .comparison import DiscretisationError as DiscretisationError
from .comparison import check_failed_fraction as check_failed_fraction
from .comparison import compare_sources as compare_sources
from .distances import QUANTILES as QUANTILES
from .distances import JackknifeEstimate as JackknifeEstimate
from .distances import energy_distance as energy_distance
from .distances import ks_noise as ks_noise
from .distances import ks_pvalue as ks_pvalue
from .distances import ks_statistic as ks_statistic
from .distances import mean_difference as mean_difference
from .distances import wasserstein1 as wasserstein1
from .distances import wasserstein_noise as wasserstein_noise
from .features import MAX_PAIRS as MAX_PAIRS
from .features import SUMMARY_FEATURES as SUMMARY_FEATURES
from .features import FeatureSet as FeatureSet
from .features import canonical_name as canonical_name
from .features import features as features
from .features import select_pairs as select_pairs
from .features import summary_features as summary_features
from .planning import SamplePlan as SamplePlan
from .planning import detection_power as detection_power
from .planning import plan_from_pilot as plan_from_pilot
from .planning import plan_samples as plan_samples
from .rates import PowerLawFit as PowerLawFit
from .rates import fit_power_law as fit_power_law
from .rates import loglog_fit as loglog_fit
from .rows import FeatureComparison as FeatureComparison
from .rows import compare_arrays as compare_arrays
from .rows import compare_feature as compare_feature
from .rows import verdict_alpha as verdict_alpha
from .rows import z_score as z_score
from .samples import FAILURE_REASONS as FAILURE_REASONS
from .samples import CovarianceSamples as CovarianceSamples
from .sources import coefficient_table as coefficient_table
from .sources import depth_for as depth_for
from .sources import exit_summary as exit_summary
from .sources import finite_source as finite_source
from .sources import sde_source as sde_source
from .width_sweep import DESCRIPTIVE as DESCRIPTIVE
from .width_sweep import DISTANCES as DISTANCES
from .width_sweep import fit_width_sweep as fit_width_sweep
from .width_sweep import public_row as public_row
from .width_sweep import sweep_covariance as sweep_covariance
from .width_sweep import width_distances as width_distances

"""Alias of `ks_statistic` (the name before the vectorised version)."""
