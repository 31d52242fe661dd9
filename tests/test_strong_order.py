"""Strong order of the covariance-SDE schemes: runs at several step sizes tied to ONE Brownian path
per sample (`sdeformer.sde._coupled_paths`: the coarse increments are sums of the fine ones).

Euler-Maruyama and the exponential step (`sdeformer.sde._psd_scheme`) both have strong order 1/2 for
this non-commutative noise; both converge to the same strong solution. So does Heun on the
Stratonovich form (the other solver of `solve_sde`), started at V0 = I.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from sdeformer.config import ShapedConfig
from sdeformer.sde import CovarianceSDE, coupled_run

CONFIG = ShapedConfig(tau0=1.0, gamma=0.4, c_plus=0.0, c_minus=-1.0)
COARSE = (4, 8, 16, 32)
FINE = 256
T = 0.5


def _fit(errors):
    """Least-squares slope of log E|V_h - V_ref| in log h, and its bootstrap standard error."""
    hs = np.log(T / np.asarray(COARSE))
    slope = np.polyfit(hs, np.log(errors.mean(0)), 1)[0]
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(200):
        idx = rng.integers(0, errors.shape[0], errors.shape[0])
        boots.append(np.polyfit(hs, np.log(errors[idx].mean(0)), 1)[0])
    return float(slope), float(np.std(boots))


class _WithoutCorrection(eqx.Module):
    """The SDE with a zero Stratonovich correction: Heun then solves a different SDE."""

    inner: CovarianceSDE

    @property
    def config(self):
        return self.inner.config

    def drift(self, v):
        return self.inner.drift(v)

    def factor(self, v):
        return self.inner.factor(v)

    def noise(self, v, factor, dw):
        return self.inner.noise(v, factor, dw)

    def brownian_shape(self, m, dtype):
        return self.inner.brownian_shape(m, dtype)

    def stratonovich_correction(self, v, factor):
        return jnp.zeros_like(v)


@pytest.fixture(scope="module")
def coupled():
    """Euler, the exponential step and Heun (the Stratonovich solver of solve_sde,
    `coupled_paths.heun_step`) from V0 = I, where Heun's correction used to differentiate eigh
    at repeated eigenvalues; the same programs on other Brownian paths; and Heun without its
    Stratonovich correction."""
    m = 3
    sde = CovarianceSDE(CONFIG)
    kw = dict(num_samples=256, schemes=("euler", "exponential", "heun"))
    run = coupled_run(sde, jnp.eye(m), T, (*COARSE, FINE), key=jr.key(7), **kw)
    other = coupled_run(sde, jnp.eye(m), T, (*COARSE, FINE), key=jr.key(8), **kw)
    wrong = coupled_run(
        _WithoutCorrection(sde),
        jnp.eye(m),
        T,
        (*COARSE, FINE),
        key=jr.key(7),
        num_samples=256,
        schemes=("heun",),
    )
    return run, other, wrong


def _errors(run_a, scheme_a, run_b, scheme_b):
    """(paths, levels) Frobenius distances of the coarse runs of a to the finest run of b, on the
    paths where no run crossed the bound or went non-finite."""
    coarse = np.asarray(run_a.vs[scheme_a][:-1], np.float64)
    ref = np.asarray(run_b.vs[scheme_b][-1], np.float64)
    ok = np.all(np.asarray(run_a.exit_code[scheme_a]) < 2, 0) & np.all(
        np.asarray(run_b.exit_code[scheme_b]) < 2, 0
    )
    err = np.sqrt(((coarse - ref[None]) ** 2).sum((-1, -2))).T
    return err[ok]


@pytest.mark.parametrize("scheme", ["euler", "exponential"])
def test_strong_order_one_half(coupled, scheme):
    """Slope of E|V_h - V_{T/256}| in h over h = T/4 .. T/32 (256 samples, one Brownian path each)
    is 1/2. Measured (bootstrap se): Euler 0.62 (0.03), steeper because its error at h = T/4 is
    large (7% of its coarse runs leave the cone from V0 = I); exponential 0.48 (0.02). The window
    [0.35, 0.70] is +-3 to 5 standard errors around 0.5 plus the reference's bias (at h = T/32
    it adds about sqrt(1 - 1/8): expected slope about 0.53)."""
    run, _, _ = coupled
    slope, se = _fit(_errors(run, scheme, run, scheme))
    assert 0.35 < slope < 0.70, (scheme, slope, se)
    assert se < 0.1, se


def test_both_schemes_converge_to_the_same_strong_solution(coupled):
    """The exponential step's coarse runs approach Euler's finest run at order 1/2 (same Brownian
    path, same noise application), while against Euler runs driven by OTHER Brownian paths the
    distance does not shrink (power check: the coupling is what makes the errors small).
    Measured: 0.42 (0.02), flattened by Euler's reference error; uncoupled -0.01."""
    run, other, _ = coupled
    slope, se = _fit(_errors(run, "exponential", run, "euler"))
    assert 0.35 < slope < 0.70, (slope, se)
    uncoupled, _ = _fit(_errors(run, "exponential", other, "euler"))
    assert abs(uncoupled) < 0.15, uncoupled


def test_heun_strong_order_and_limit(coupled):
    """Heun from V0 = I: no path is non-finite; it converges strongly at order >= 1/2, and its
    coarse runs approach Euler's finest run (so the Stratonovich correction converts to the
    same Ito SDE). Measured slopes (bootstrap se): Heun against its own reference 1.03 (0.04):
    at these steps its Levy-area error, which limits it to 1/2 as h -> 0 for this
    non-commutative noise, is still below its order-1 terms; against Euler's reference 0.84
    (0.03), flattened by that reference's own O(h^1/2) error. Power check: without the
    correction Heun converges to another SDE, and its distance to Euler's reference grows
    (measured slope -0.21)."""
    run, _, wrong = coupled
    assert int((np.asarray(run.exit_code["heun"]) == 3).sum()) == 0
    slope, se = _fit(_errors(run, "heun", run, "heun"))
    assert 0.35 < slope < 1.2, (slope, se)
    slope, se = _fit(_errors(run, "heun", run, "euler"))
    assert 0.35 < slope < 1.2, (slope, se)
    plateau, _ = _fit(_errors(wrong, "heun", run, "euler"))
    assert plateau < 0.2, plateau
