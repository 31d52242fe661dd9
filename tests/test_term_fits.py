"""Theory-form fits (compare/term_fits.py) on synthetic data with known coefficients."""

import numpy as np
import pytest

from sdeformer.compare.term_fits import FORMS, fit_terms, pooled_means, summarise_sweep

WIDTHS = np.array([16, 32, 64, 128, 256, 512, 1024])


def truth(form, coef):
    return sum(c * WIDTHS**-p for c, p in zip(coef, FORMS[form], strict=True))


@pytest.mark.parametrize(("form", "coef"), [("limit", (0.05, -0.6)), ("finite", (-0.8, 2.0))])
def test_fit_terms_recovers_exact_coefficients(form, coef):
    fit = fit_terms(WIDTHS, truth(form, coef), np.full(WIDTHS.size, 1e-3), FORMS[form])
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-9, atol=1e-12)
    assert fit.chi2_dof < 1e-12 and fit.distribution == "normal"


def test_fit_terms_intervals_cover_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    coef, se = (0.05, -0.6), np.full(WIDTHS.size, 2e-3)
    covered = 0
    for _ in range(400):
        fit = fit_terms(WIDTHS, truth("limit", coef) + rng.normal(0, se), se, FORMS["limit"])
        lo, hi = fit.interval(0)
        covered += lo <= coef[0] <= hi
    assert 0.91 <= covered / 400 <= 0.99


def test_summarise_sweep_between_and_within_spread():
    rng = np.random.default_rng(1)
    se = np.full((8, WIDTHS.size), 1e-3)
    values = truth("finite", (-0.8, 2.0))[None, :] + rng.normal(0, 1e-3, size=se.shape)
    out = summarise_sweep(WIDTHS, values, se, form="finite")
    mean, within, between = pooled_means(values, se)
    np.testing.assert_allclose(out["mean"], mean)
    np.testing.assert_allclose(within, 1e-3 / np.sqrt(8))
    b = out["theory"]["coef_between"][0]
    assert b["replications"] == 8 and b["interval95"][0] < -0.8 < b["interval95"][1]
    free = out["free"]
    assert free["pooled"]["status"] == "determined"
    assert abs(free["slope_between"]["mean"] - free["pooled"]["slope"]) < 0.2


def test_bad_inputs_name_the_fix():
    with pytest.raises(ValueError, match="more widths than terms"):
        fit_terms([16, 32], [0.1, 0.05], [0.01, 0.01], FORMS["limit"])
    with pytest.raises(ValueError, match="choose form"):
        summarise_sweep(WIDTHS, np.zeros((2, 7)), np.ones((2, 7)), form="limit", power=2)
    with pytest.raises(ValueError, match="at least 2 replications"):
        pooled_means(np.zeros((1, 7)), np.ones((1, 7)))
