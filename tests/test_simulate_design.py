"""The real-design coverage study (compare/simulate_design.py): exact shifts, bounded feature."""

import numpy as np
import pytest

from sdeformer.compare import simulate_design as sd


def test_draws_are_bounded_with_the_exact_mean_shift():
    rng = np.random.default_rng(0)
    for delta in (0.1, -0.05, 0.0):
        x = sd._draw(rng, (400_000,), delta, 0.02)
        assert x.min() >= -1 and x.max() <= 1
        exact = 0.02 * sd.EXIT_VALUE + delta  # the base law has mean 0
        assert abs(x.mean() - exact) < 5 * x.std() / np.sqrt(x.size)
    with pytest.raises(ValueError, match="too large"):
        sd._draw(rng, (10,), 0.3, 0.02)


def test_two_term_truth_is_covered_and_inputs_are_checked():
    truth, form = sd.TRUTHS[0]
    row = sd.run_design_study(truth, form=form, studies=40, seed=3)
    assert all(0.8 <= c <= 1.0 for c in row["coverage_between"])
    np.testing.assert_allclose(sd.truth_values([4], {"terms": {1.0: 2.0}, "floor": 0.5}), [1.0])
    with pytest.raises(ValueError, match="choose from"):
        sd.run_design_study(truth, form="other", studies=2)
