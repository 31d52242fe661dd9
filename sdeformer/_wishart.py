"""Wishart draws by the Bartlett decomposition: O(m^2) random numbers for any degrees of freedom.

`Wish_m(k)` is the law of `G G^T` for `G` an m x k matrix of iid N(0, 1) entries. Drawing `G`
costs m k random numbers; the Bartlett decomposition draws the same law with O(m^2) of them:
the LQ decomposition `G = T Q` (Q with orthonormal rows, independent of T) has a lower
trapezoidal factor `T` of shape (m, min(m, k)) with independent entries

    T_ii^2 ~ chi^2(k - i)   (i = 0 .. min(m, k) - 1, zero-based)
    T_ij   ~ N(0, 1)        (i > j)
    T_ij   = 0              (i < j)

and `G G^T = T T^T`. For k >= m this is the classical Bartlett decomposition; for k < m the
Wishart is singular (rank k) and the rows below the k-th are the plain Gaussian coordinates of
`G`'s rows in the basis spanned by the first k rows. Because every use in this package only needs
`T T^T` (or `L T` for a fixed factor L), the factor is returned and the Wishart matrix is formed
only on request.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray


def _check_dims(m: object, dof: object) -> tuple[int, int]:
    for name, value, minimum in (("m", m, 1), ("dof", dof, 0)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
            raise ValueError(
                f"Wishart: {name}={value!r} is invalid; the dimension m must be an integer >= 1 "
                "and the degrees of freedom dof an integer >= 0 (a Wishart W_m(dof) is G G^T "
                "with G an m x dof Gaussian matrix)"
            )
    return int(m), int(dof)


CHI_SQUARE_ROUNDS = 12
"""Marsaglia-Tsang candidates drawn per chi-square variate (see `chi_square_from_normals`)."""

REJECTION_BOUNDS = (
    (1.0, 0.0484),
    (1.5, 0.0269),
    (2.0, 0.0184),
    (3.0, 0.0112),
    (10.0, 0.00294),
    (20.0, 0.00143),
    (50.0, 0.000562),
)
"""(a, p): the Marsaglia-Tsang proposal for Gamma(shape) is rejected with probability at most p
for every shape >= a (exact values by quadrature at shape a, rounded up; the rejection
probability decreases with the shape, about 0.028 / shape for large shapes). Checked by
tests/test_wishart.py."""

FAILURE_BOUND = 3e-16
"""Largest probability per variate that every candidate is rejected (then the first is kept)."""


def _phi(x: Array) -> Array:
    """The standard normal CDF as 0.5 erfc(-x / sqrt(2)).

    Accurate in both tails, and about 4x cheaper on CPU than `jax.scipy.special.ndtr` (which
    evaluates erf and erfc and selects).
    """
    return 0.5 * jax.lax.erfc(x * (-1.0 / math.sqrt(2.0)))


def chi_square_rounds(min_df: int | None = None) -> int:
    """Candidates per chi-square variate so that all fail with probability < 3e-16.

    `min_df` is a static lower bound of the degrees of freedom (None: any df > 0, the
    `CHI_SQUARE_ROUNDS` = 12 of shape 1). Large degrees of freedom need fewer candidates
    (5 for df >= 100), which the Bartlett factors use: their df are known when tracing.
    """
    if min_df is None or min_df < 2:
        return CHI_SQUARE_ROUNDS
    shape = min_df / 2
    p = min(bound for a, bound in REJECTION_BOUNDS if a <= shape)
    return max(1, math.ceil(math.log(FAILURE_BOUND) / math.log(p)))


def chi_square_size(r: int, min_df: int | None = None) -> int:
    """Standard normals `chi_square_from_normals` consumes for r chi-square variates.

    Two per candidate (the proposal and its uniform) plus, when some df may be below 2, one
    per variate for the shape boost.
    """
    boost = min_df is None or min_df < 2
    return r * (2 * chi_square_rounds(min_df) + int(boost))


def chi_square_from_normals(
    z: Float[Array, " size"], df: Float[Array, " r"], min_df: int | None = None
) -> Float[Array, " r"]:
    """chi^2(df) variates (df > 0 elementwise) from iid N(0, 1) numbers, with no further draws.

    chi^2(df) = 2 Gamma(df / 2), and Gamma(a) is drawn by Marsaglia-Tsang rejection (proposal
    d (1 + c x)^3, x ~ N(0, 1), accepted when log u < x^2/2 + d - d v + d log v; for a < 1 the
    boost Gamma(a) = Gamma(a + 1) U^(1/a)). Uniforms are Phi(x) of further normals. Instead of a
    `while_loop`, `CHI_SQUARE_ROUNDS` = 12 candidates are drawn at once and the first accepted
    one is kept: each is accepted with probability > 0.95 (shape >= 1), so all twelve fail with
    probability < 0.05^12 < 3e-16 per variate, far below float32 resolution (that event keeps
    the first candidate). With a static lower bound `min_df` of the degrees of freedom, fewer
    candidates give the same bound (`chi_square_rounds`, `REJECTION_BOUNDS`) and the boost is
    dropped when min_df >= 2. Everything comes from one flat normal vector of
    `chi_square_size(r, min_df)` numbers so that the whole law step needs one call to the PRNG:
    on CPU each call site of `jax.random` costs about a second of compile time
    (`jax.random.chisquare` about ten).
    """
    (r,) = df.shape
    dtype = df.dtype
    rounds = chi_square_rounds(min_df)
    x = z[: rounds * r].reshape(rounds, r)
    u = _phi(z[rounds * r : 2 * rounds * r].reshape(rounds, r))
    boost_possible = min_df is None or min_df < 2
    a = df / 2
    boost = a < 1
    d = jnp.where(boost, a + 1, a) - 1.0 / 3.0
    c = jax.lax.rsqrt(9.0 * d)
    v = (1.0 + c * x) ** 3
    safe_v = jnp.where(v > 0, v, jnp.ones((), dtype))
    ok = (v > 0) & (jnp.log(u) < 0.5 * x**2 + d - d * safe_v + d * jnp.log(safe_v))
    first = jnp.argmax(ok, axis=0)
    g = jnp.take_along_axis(d * safe_v, first[None], axis=0)[0]
    if boost_possible:
        g = jnp.where(boost, g * _phi(z[2 * rounds * r :]) ** (1.0 / a), g)
    return 2.0 * g


def _below_count(m: int, r: int) -> int:
    """Entries strictly below the diagonal of an m x r lower trapezoidal matrix (r <= m)."""
    return r * (m - 1) - r * (r - 1) // 2


def bartlett_size(m: int, dof: int) -> int:
    """Standard normals `bartlett_from_normals` consumes for a factor of Wish_m(dof).

    One per entry strictly below the diagonal of the m x min(m, dof) factor (about m^2 / 2 for
    dof >= m) and `chi_square_size` per diagonal entry.
    """
    m, dof = _check_dims(m, dof)
    r = min(m, dof)
    return _below_count(m, r) + chi_square_size(r, dof - r + 1)


def bartlett_from_normals(z: Float[Array, " size"], m: int, dof: int) -> Float[Array, "m r"]:
    """The Bartlett factor of `bartlett_factor`, built from `bartlett_size(m, dof)` iid N(0, 1).

    The first `r (m - 1) - r (r - 1) / 2` numbers fill the entries below the diagonal (column
    by column, as `numpy.tril_indices` orders them row by row), the rest give the diagonal's
    chi variates: no number is drawn for the zeros above the diagonal.
    """
    m, dof = _check_dims(m, dof)
    r = min(m, dof)
    dtype = z.dtype
    count = _below_count(m, r)
    df = jnp.asarray(dof, dtype) - jnp.arange(r, dtype=dtype)
    diag = jnp.sqrt(chi_square_from_normals(z[count:], df, min_df=dof - r + 1))
    # One gather with a static index table (a scatter is about 4x slower on CPU): entries below
    # the diagonal read z, the diagonal reads `diag`, the zeros above it read a trailing 0.
    index = np.full((m, r), count + r, np.int32)
    rows, cols = np.tril_indices(m, k=-1, m=r)
    index[rows, cols] = np.arange(count)
    index[np.arange(r), np.arange(r)] = count + np.arange(r)
    return jnp.concatenate([z[:count], diag, jnp.zeros((1,), dtype)])[index]


def bartlett_factor(key: PRNGKeyArray, m: int, dof: int, dtype=jnp.float32) -> Float[Array, "m r"]:
    """A lower trapezoidal T of shape (m, min(m, dof)) with T T^T ~ Wish_m(dof) (identity scale).

    Arguments: `m` the dimension, `dof` the (integer, static) degrees of freedom, any `dof >= 0`
    (dof = 0 gives an (m, 0) factor, i.e. the zero matrix). Costs O(m min(m, dof)) draws.
    """
    return bartlett_from_normals(jr.normal(key, (bartlett_size(m, dof),), dtype), m, dof)


def wishart(key: PRNGKeyArray, m: int, dof: int, dtype=jnp.float32) -> Float[Array, "m m"]:
    """A draw of Wish_m(dof) (identity scale): E[W] = dof I, Var[W_ij] = dof (1 + [i = j])."""
    t = bartlett_factor(key, m, dof, dtype)
    return t @ t.T


def complement_dof(n: int, m: int) -> int:
    """Degrees of freedom n - m of the Wishart `Wish_m(n - m)` in the exact laws; needs n >= m.

    It counts the directions of the width orthogonal to the m token vectors. The exact laws need
    the hidden state X (m x n) to be written as sqrt(n) L O with O (m x n) orthonormal rows, which
    exists only when n >= m (n = m gives a zero Wishart).
    """
    if n < m:
        raise ValueError(
            f"the exact finite-width law needs width n >= number of tokens m, got n={n}, m={m}: "
            f"the Wishart Wish_m(n - m) has n - m = {n - m} < 0 degrees of freedom (and a width-n "
            "hidden state cannot carry a rank-m covariance); pass n >= m"
        )
    return n - m
