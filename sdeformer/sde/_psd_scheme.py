"""A step of the covariance SDE that keeps V positive definite by construction.

docs/theory.md, section "A scheme that stays in the cone".

The SDE (docs/theory.md, "The limiting covariance SDE") is `dV = b(V) dt + dN`, with the noise
applied in O(m^3) from matrix Brownian increments `dw = {"lin": Z, "mix": E}` (iid N(0, dt)
entries, m x m each): with `L L^T = V`, `S = (Z + Z^T)/sqrt(2)`, `P = L^T C L`,

    dN = sqrt(kappa) L S L^T + (sqrt(alpha)/m) (L E P L^T + L P E^T L^T)

(`L E P L^T = L E M^T` with `M = V C L`, the form of `CovarianceSDE.noise`). Euler-Maruyama
`V + b dt + dN` can leave the PSD cone near singular V. This step does not:

    X_N    = L^-1 dN L^-T = sqrt(kappa) S + (sqrt(alpha)/m) (E P + P E^T)      (whitened noise)
    Y      = L^-1 b(V) L^-T dt = Y_+ - Y_-         (whitened drift, split into PSD parts by eigh)
    c_w    = L^-1 c(V) L^-T                        (whitened Ito correction, below)
    V_next = L ( expm(X_N - c_w dt - Y_-) + Y_+ ) L^T.

The noise, the Ito correction and the inward part of the drift act multiplicatively (the affine-
invariant / exponential step), the outward part of the drift additively, as in Euler. (The plain
exponential step `L expm(X_N + Y - c_w dt) L^T`, `split_drift=False`, overshoots where the drift
pushes a nearly singular V outwards: an eigenvalue eps pushed by delta dt becomes
eps exp(delta dt / eps) instead of eps + delta dt, and overflows for eps = 1e-6.)

Paper symbols -> code: kappa `kappa` (`CovarianceSDE.lin_coefficient`, the Lin coefficients of
all blocks summed), alpha `alpha` (`CovarianceSDE.mix_coefficient`: gam^4 / (tau0^2 H) summed
over the attention blocks), C `_limit.centre_rows`, c(V) `ito_correction`, X_N
`whitened_noise`. `solve_sde(solver="exponential")` takes this step (`exponential_increment`).

Ito correction (weak order 1). `expm(X) = I + X + X^2/2 + O(|X|^3)` and X_N = O(dt^1/2),
Y_+-, c_w dt = O(dt), so `V_next - V = (b - c) dt + dN + L X_N^2 L^T / 2 + R` with `E[R] = O(dt^2)`
(the dt^{3/2} part of R is odd in the Gaussian increments). Choosing `c = L E[X_N^2] L^T / (2 dt)`
makes the conditional mean of the increment that of Euler up to O(dt^2); its second and third
conditional moments agree with Euler's up to O(dt^2) as well (the extra terms are odd, or O(dt^2)),
and all moments are bounded, so by the Milstein-Talay local-to-global theorem the step has weak
order 1, like Euler. (The O(dt^2) constants grow like |V^-1| through Y, where Euler's do not: near
singular V the scheme trades accuracy for staying in the cone; benchmarks/bench_schemes.py
measures both.) Moments of the Gaussian blocks (E iid N(0, dt), S as above): `E[S^2] = (m + 1) I
dt`, `E[E A E] = A^T dt`, `E[E A E^T] = E[E^T A E] = tr(A) I dt`, the cross terms vanish, hence

    E[X_N^2] = dt [ kappa (m + 1) I + (alpha/m^2) ((m + 2) P^2 + tr(P^2) I) ],
    c(V)     = (1/2) [ (kappa (m + 1) + alpha s / m^2) V + alpha (m + 2) / m^2 K ],

with `L P^2 L^T = V C V C V = K` and `tr(P^2) = tr(V C V C) = s` (docs/theory.md, section 3
notation): O(m^3) and independent of the choice of factor. In general
`c_ad = (1/2) sum_bc Sigma_{ab,cd} (V^-1)_bc` (`ito_correction_dense`, O(m^4), any noise, e.g. the
causal mix). With `split_drift=False`, `log det V_next = log det V + tr X`: the step is then
Euler-Maruyama for `log det V` and its SDE (docs/theory.md, "The PSD cone").

Positive definiteness. `X = X_N - c_w dt - Y_-` is real symmetric, `X = U diag(lam) U^T`, so
`expm(X) = U diag(exp(lam)) U^T` is positive definite, and `Y_+` is positive semi-definite; for
every x != 0, `x^T V_next x = |diag(exp(lam/2)) U^T L^T x|^2 + (L^T x)^T Y_+ (L^T x) > 0` because
L is nonsingular. The step carries the factor `G = [L U diag(exp(lam/2)), L W diag(sqrt(mu_+))]`
(m x 2m, `Y = W diag(mu) W^T`) and re-triangularises it by a QR decomposition of G^T
(`G^T = Q R`, `L_next = R^T` with a positive diagonal, the Cholesky factor of `V_next`), so no
Cholesky factorisation of a nearly singular V is ever attempted and `V_next = L_next L_next^T` is
exactly symmetric. In floating point the only failures are `exp(lam/2)` overflowing (an
explosion, reported as non-finite) or underflowing (an eigenvalue of X below about -170 in
float32, which needs a step of absurd size); V0 must be positive definite (a singular V0 has no
nonsingular factor: start from V0 + eps I or take one Euler step).

Law invariance: replacing L by L Q (Q orthogonal) maps S, E, P, Y to Q^T S Q, Q^T E Q,
Q^T P Q, Q^T Y Q, which leaves the laws of S and E unchanged and commutes with the split of Y,
and `L Q f(Q^T X Q) Q^T L^T = L f(X) L^T`: the step does not depend on which factor of V is
carried. With the Cholesky factor it uses the same
`dw` as `CovarianceSDE.noise(V, cholesky(V), dw)`, so Euler and this step driven by one Brownian
path converge to the same strong solution (both have strong order 1/2: the difference per step
is `L (X_N^2 - E X_N^2) L^T / 2`, of mean zero and size O(dt)).

Cost per step: one drift, four triangular solves, two symmetric eigendecompositions, one QR of a
2m x m matrix and a few m x m products: O(m^3), like the O(m^3) Euler step (the ratio is
measured in benchmarks/bench_schemes.py).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import _lapack
from .._linalg import symmetrize
from .._typing import Scalar
from ..blocks import _limit

__all__ = [
    "euler_step",
    "exponential_increment",
    "exponential_step",
    "ito_correction",
    "ito_correction_dense",
    "whitened_noise",
]


def ito_correction(v: Float[Array, "m m"], kappa: float, alpha: float) -> Float[Array, "m m"]:
    """c(V) = L E[X_N^2] L^T / (2 dt) for the non-causal noise, in closed form (O(m^3)).

    (1/2) [(kappa (m+1) + alpha s/m^2) V + alpha (m+2)/m^2 K], s = tr(V C V C), K = V C V C V.
    """
    m = v.shape[-1]
    cv = _limit.centre_rows(v)  # C V
    s = jnp.trace(cv @ cv)
    k = v @ cv @ cv
    return 0.5 * ((kappa * (m + 1) + alpha * s / m**2) * v + (alpha * (m + 2) / m**2) * k)


def ito_correction_dense(
    sigma: Float[Array, "m m m m"], factor: Float[Array, "m m"]
) -> Float[Array, "m m"]:
    """c_ad = (1/2) sum_bc Sigma_{ab,cd} (V^-1)_bc for any noise covariance Sigma (O(m^4)).

    Given a nonsingular lower-triangular `factor` L of V.
    """
    eye = jnp.eye(factor.shape[-1], dtype=factor.dtype)
    vinv = _lapack.solve_triangular(
        factor.T, _lapack.solve_triangular(factor, eye, lower=True), lower=False
    )  # V^-1 = L^-T L^-1
    return 0.5 * symmetrize(jnp.einsum("abcd,bc->ad", sigma, vinv))


def _whitened_parts(factor, dw, kappa, alpha):
    """(X_N, L^-1 c L^-T) in closed form.

    X_N = sqrt(kappa) S + (sqrt(alpha)/m)(E P + P E^T) and
    L^-1 c L^-T = (1/2)[(kappa (m+1) + alpha tr(P^2)/m^2) I + alpha (m+2)/m^2 P^2], P = L^T C L.
    """
    m = factor.shape[-1]
    z = dw["lin"]
    s = (z + z.T) / math.sqrt(2.0)
    cl = _limit.centre_rows(factor)
    p = cl.T @ cl  # L^T C L (C is a projection)
    x_noise = jnp.sqrt(kappa) * s
    if "mix" in dw:  # without attention blocks the Brownian pytree has no "mix" (alpha = 0)
        half = dw["mix"] @ p
        x_noise = x_noise + (jnp.sqrt(alpha) / m) * (half + half.T)
    p2 = p @ p
    eye = jnp.eye(m, dtype=factor.dtype)
    corr = 0.5 * (
        (kappa * (m + 1) + alpha * jnp.trace(p2) / m**2) * eye + alpha * (m + 2) / m**2 * p2
    )
    return x_noise, corr


def whitened_noise(
    factor: Float[Array, "m m"], dw: dict[str, Array], kappa: Scalar, alpha: Scalar
) -> Float[Array, "m m"]:
    """X_N = L^-1 dN L^-T = sqrt(kappa) S + (sqrt(alpha)/m) (E P + P E^T), P = L^T C L."""
    return _whitened_parts(factor, dw, kappa, alpha)[0]


def _whiten(factor: Float[Array, "m m"], a: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """L^-1 A L^-T for lower-triangular L and symmetric A (two triangular solves)."""
    y = _lapack.solve_triangular(factor, a, lower=True)
    return symmetrize(_lapack.solve_triangular(factor, y.T, lower=True))


def _noise_and_correction(sde, factor, dw):
    kappa, alpha = sde.lin_coefficient, sde.mix_coefficient
    if (
        sde.has_attention_noise and sde.config.causal
    ):  # no closed form here: the general contraction and L^-1 dN L^-T
        v = factor @ factor.T
        corr = _whiten(factor, ito_correction_dense(sde.noise_covariance(v), factor))
        return _whiten(factor, sde.noise(v, factor, dw)), corr
    return _whitened_parts(factor, dw, kappa, alpha)


def exponential_step(
    sde, factor: Float[Array, "m m"], dt, dw: dict[str, Array], *, split_drift: bool = True
) -> Float[Array, "m m"]:
    """One step of the scheme: the Cholesky factor of V_next, in O(m^3).

    Given the nonsingular lower-triangular factor L of V (see the module docstring).

    `split_drift=True` (default): V_next = L (expm(X_N - c_w dt - Y_-) + Y_+) L^T with the
    whitened drift Y = L^-1 b L^-T dt = Y_+ - Y_- split into its positive and negative parts;
    `split_drift=False`: the plain exponential step V_next = L expm(X_N + (Y - c_w dt)) L^T
    (c_w = L^-1 c L^-T), which overflows where the drift pushes a nearly singular V outwards.
    """
    x_noise, corr = _noise_and_correction(sde, factor, dw)
    y = _whiten(factor, sde.drift(factor @ factor.T)) * dt
    if not split_drift:
        lam, u = _lapack.eigh(symmetrize(x_noise + y - corr * dt))
        g = (factor @ u) * jnp.exp(0.5 * lam)  # G G^T = V_next
    else:
        mu, w = _lapack.eigh(y)
        y_neg = (w * jnp.clip(-mu, 0.0)) @ w.T
        lam, u = _lapack.eigh(symmetrize(x_noise - corr * dt - y_neg))
        g = jnp.concatenate(
            [(factor @ u) * jnp.exp(0.5 * lam), (factor @ w) * jnp.sqrt(jnp.clip(mu, 0.0))], 1
        )  # G G^T = L (expm(X) + Y_+) L^T, G is m x 2m
    r = _lapack.qr_r(g.T)  # G^T = Q R  =>  V_next = R^T R, R (m, m)
    sign = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(r.dtype)
    return r.T * sign  # lower triangular with a positive diagonal


def exponential_increment(
    sde, v: Float[Array, "m m"], factor: Float[Array, "m m"], dt, dw: dict[str, Array]
) -> Float[Array, "m m"]:
    """V_next - V for `solve_sde(solver="exponential")`, whose state is V.

    `factor` is the Cholesky factor of V computed by the solver's exit check. (In floating point
    V + (V_next - V) is V_next up to rounding of order eps |V|, which the PSD check's tolerance
    covers.)
    """
    nxt = exponential_step(sde, factor, dt, dw)
    return symmetrize(nxt @ nxt.T - v)


def euler_step(sde, v: Float[Array, "m m"], dt, dw: dict[str, Array]) -> Float[Array, "m m"]:
    """One Euler-Maruyama step V + b(V) dt + dN(V, dw) (the reference scheme), symmetrised."""
    return symmetrize(v + sde.drift(v) * dt + sde.noise(v, sde.factor(v), dw))
