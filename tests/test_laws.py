"""The exact finite-width law chain against explicit networks: equality in law at small widths.

Every comparison draws independent samples from `law_covariance_paths` and from
`explicit_covariance_paths` (fixed keys) and checks, for every entry of V_l at several depths,
the means and variances (z-scores) and, at the last layer, the correlations' distributions
(two-sample KS), with thresholds fixed in advance by a Bonferroni bound (`compare_paths`).
A negative control checks that the same comparison rejects a wrong law.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import stats

from sdeformer import (
    MissingFaceError,
    ShapedConfig,
    law_covariance_paths,
    sample_covariance_paths,
)
from sdeformer._linalg import cov_factor, psd_sqrt
from sdeformer.blocks import BLOCK_TYPES, ShapedAttention, ShapedMLP
from sdeformer.blocks.shaped_mlp import relu_slopes, shaped_relu

FAMILY_ALPHA = 1e-3
"""Family-wise false-alarm rate of one comparison (Bonferroni over all its entries and tests)."""


@dataclasses.dataclass
class LawComparison:
    mean_z: np.ndarray  # (layers, entries) z-scores of the difference of means
    var_z: np.ndarray  # (layers, entries) z-scores of the difference of variances
    ks_p: np.ndarray  # (pairs,) two-sample KS p-values of the correlations at the last layer
    z_crit: float
    p_crit: float

    @property
    def ok(self) -> bool:
        return (
            np.abs(self.mean_z).max() < self.z_crit
            and np.abs(self.var_z).max() < self.z_crit
            and self.ks_p.min() > self.p_crit
        )

    def __str__(self) -> str:
        return (
            f"max |z| of means {np.abs(self.mean_z).max():.2f}, of variances "
            f"{np.abs(self.var_z).max():.2f} (critical {self.z_crit:.2f}); min KS p "
            f"{self.ks_p.min():.3g} (critical {self.p_crit:.3g})"
        )


def _mean_var_se(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample mean and variance with their standard errors (delta method for the variance:
    Var(s^2) ~ (mu4 - sigma^4) / S with the fourth central moment estimated from the sample)."""
    s = x.shape[0]
    mean = x.mean(0)
    centred = x - mean
    var = (centred**2).mean(0)
    mu4 = (centred**4).mean(0)
    return mean, np.sqrt(var / s), var, np.sqrt(np.maximum(mu4 - var**2, 0.0) / s)


def correlations(v: np.ndarray) -> np.ndarray:
    """rho_ab for a < b of covariance samples (S, m, m) -> (S, pairs)."""
    a, b = np.triu_indices(v.shape[-1], k=1)
    return v[:, a, b] / np.sqrt(v[:, a, a] * v[:, b, b])


def compare_paths(law, explicit, layers) -> LawComparison:
    """Equality-in-law checks of two sets of covariance paths (S, d+1, m, m).

    For each layer in `layers` and each entry a <= b of V_l: z-scores of the difference of the
    two samples' means and variances (independent samples, standard errors added in quadrature).
    At the last layer: two-sample KS p-values of every correlation rho_ab. Under equality in law
    each |z| is asymptotically N(0, 1) and each p-value uniform, so with Bonferroni over the
    2 K z-tests (two-sided) and the P KS tests, the comparison raises a false alarm with
    probability at most FAMILY_ALPHA; thresholds are fixed here, before seeing any data.
    """
    law = np.asarray(law, np.float64)
    explicit = np.asarray(explicit, np.float64)
    m = law.shape[-1]
    iu = np.triu_indices(m)
    mean_z, var_z = [], []
    for layer in layers:
        m1, se_m1, v1, se_v1 = _mean_var_se(law[:, layer][:, iu[0], iu[1]])
        m2, se_m2, v2, se_v2 = _mean_var_se(explicit[:, layer][:, iu[0], iu[1]])
        mean_z.append((m1 - m2) / np.hypot(se_m1, se_m2))
        var_z.append((v1 - v2) / np.hypot(se_v1, se_v2))
    mean_z, var_z = np.array(mean_z), np.array(var_z)
    ks_p = np.array(
        [
            stats.ks_2samp(x, y).pvalue
            for x, y in zip(
                correlations(law[:, -1]).T, correlations(explicit[:, -1]).T, strict=True
            )
        ]
    )
    # Split FAMILY_ALPHA in half between the z-tests and the KS tests.
    z_crit = float(stats.norm.isf(FAMILY_ALPHA / 2 / (2 * mean_z.size + 2 * var_z.size)))
    p_crit = FAMILY_ALPHA / 2 / ks_p.size
    return LawComparison(mean_z, var_z, ks_p, z_crit, p_crit)


V0_3 = jnp.array([[1.0, 0.3, 0.1], [0.3, 1.2, -0.2], [0.1, -0.2, 0.8]])
V0_4 = jnp.array(
    [[1.0, 0.5, 0.2, 0.0], [0.5, 1.0, 0.4, 0.1], [0.2, 0.4, 0.9, -0.3], [0.0, 0.1, -0.3, 1.1]]
)
# The one-layer check "far from the limit on purpose" (docs/theory.md section 7).
SPEC6 = ShapedConfig(tau0=0.3, gamma=0.8, key_width=5, c_plus=0.5, c_minus=-2.0)


def _both(config, n, depth, v0, samples, key, law_samples=None):
    lkey, ekey = jr.split(key)
    law = sample_covariance_paths(
        config, v0, width=n, depth=depth, num_samples=law_samples or samples, key=lkey, method="law"
    )
    explicit = sample_covariance_paths(
        config, v0, width=n, depth=depth, num_samples=samples, key=ekey, method="explicit"
    )
    assert law.shape == (law_samples or samples, depth + 1, *v0.shape)
    assert explicit.shape == (samples, depth + 1, *v0.shape)
    assert np.isfinite(np.asarray(law)).all()
    return law, explicit


def test_spec6_one_layer_attention(key, full):
    """The one-layer check (attention block, n = 12, m = 3, n_k = 5 > m), and a negative control:
    the law of the same block WITH an output projection must be rejected by the same test."""
    config = SPEC6.replace(blocks=("attention",))
    samples = 80_000 if full else 12_000
    law, explicit = _both(config, 12, 1, V0_3, samples, key)
    result = compare_paths(law, explicit, layers=[1])
    assert result.ok, str(result)
    wrong = law_covariance_paths(
        config.replace(out_proj=True), V0_3, width=12, depth=1, num_samples=samples, key=key
    )
    assert not compare_paths(wrong, explicit, layers=[1]).ok


def test_spec6_one_layer_mlp(key, full):
    """The one-layer check (shaped-ReLU MLP block, n = 12, m = 3, c_plus = 0.5, c_minus = -2)."""
    config = SPEC6.replace(blocks=("mlp",))
    samples = 20_000 if full else 10_000
    law, explicit = _both(config, 12, 1, V0_3, samples, key)
    result = compare_paths(law, explicit, layers=[1])
    assert result.ok, str(result)


CASES = {
    # n_k = 2 < m = 3, two heads, n_h = 4: full layer at a tiny width.
    "layer-heads2-nk<m": (
        SPEC6.replace(heads=2, key_width=2, mlp_ratio=0.5, tau0=0.5, gamma=0.6),
        8,
        3,
        V0_3,
    ),
    # out_proj (n/H = 8 value columns per head), causal, 4 heads, n_k = n >= m, m = 4.
    "outproj-causal-heads4": (
        ShapedConfig(
            tau0=0.5, gamma=0.7, heads=4, out_proj=True, causal=True, blocks=("attention",)
        ),
        32,
        2,
        V0_4,
    ),
    # standard (unshaped) attention with heads and the shaped MLP, n_k = m.
    "standard-attention": (
        ShapedConfig(
            gamma=0.6, heads=2, key_width=3, c_minus=-2.0, blocks=("standard_attention", "mlp")
        ),
        32,
        2,
        V0_3,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_chain_matches_explicit(case, key, full):
    config, n, depth, v0 = CASES[case]
    samples = 16_000 if full else 3_000
    law, explicit = _both(config, n, depth, v0, samples, jr.fold_in(key, len(case)))
    result = compare_paths(law, explicit, layers=range(1, depth + 1))
    assert result.ok, f"{case}: {result}"


@pytest.mark.slow
def test_chain_matches_explicit_n128(key, full):
    """Width 128: full shaped layers (two at full size, one by default), causal, 2 heads with
    out_proj, n_k = 4 = m."""
    config = ShapedConfig(
        tau0=0.5, gamma=0.6, heads=2, out_proj=True, causal=True, key_width=4, mlp_ratio=0.5
    )
    depth = 2 if full else 1
    samples = 4_000 if full else 1_000
    law, explicit = _both(config, 128, depth, V0_4, samples, key, law_samples=4 * samples)
    result = compare_paths(law, explicit, layers=range(1, depth + 1))
    assert result.ok, str(result)


def test_law_errors(key):
    with pytest.raises(ValueError, match="method='bogus'.*'law', 'explicit'"):
        sample_covariance_paths(
            ShapedConfig(), V0_3, width=8, depth=2, num_samples=3, key=key, method="bogus"
        )
    with pytest.raises(ValueError, match="n=2, m=3"):
        law_covariance_paths(ShapedConfig(), V0_3, width=2, depth=1, num_samples=2, key=key)
    with pytest.raises(MissingFaceError, match="LayerNorm"):
        law_covariance_paths(
            ShapedConfig(blocks=("preln_attention",)),
            V0_3,
            width=8,
            depth=1,
            num_samples=2,
            key=key,
        )
    with pytest.raises(MissingFaceError, match="LayerNorm"):
        sample_covariance_paths(
            ShapedConfig(blocks=("attention", "preln_mlp")),
            V0_3,
            width=8,
            depth=1,
            num_samples=2,
            key=key,
        )
    with pytest.raises(ValueError, match="n=10 is not divisible by heads=4"):
        law_covariance_paths(
            ShapedConfig(heads=4, out_proj=True),
            V0_3,
            width=10,
            depth=1,
            num_samples=2,
            key=key,
        )
    with pytest.raises(ValueError, match="not positive semi-definite"):
        law_covariance_paths(ShapedConfig(), -V0_3, width=8, depth=1, num_samples=2, key=key)


def test_width_equal_to_tokens(key):
    """n = m: the complement Wishart has zero degrees of freedom (the law must still hold).

    Also the one switch `sample_covariance_paths(method=...)` (used by `_both`)."""
    config = ShapedConfig(gamma=0.7, key_width=2, blocks=("attention", "mlp"))
    law, explicit = _both(config, 3, 2, V0_3, 3_000, key)
    result = compare_paths(law, explicit, layers=[1, 2])
    assert result.ok, str(result)


# --- Factors instead of eigendecompositions (the law must not change) ---------------------------


def _ref_attention_step(config, n, v, key):
    """The exact law of docs/theory.md section 5 written plainly: eigendecomposition square roots
    `psd_sqrt` for L and M, and brute-force Gaussian products instead of Bartlett factors
    (N_q N_k^T from two m x n_k matrices, Wish(n - m) as G G^T with G m x (n - m)). This is
    the pre-factor implementation's law, independent of the code under test."""
    m = v.shape[-1]
    heads, nk = config.heads, config.n_k(n)
    p = n // heads if config.out_proj else n
    kq, kk, ko, ke, kw = jr.split(key, 5)
    l = psd_sqrt(v)
    nq = jr.normal(kq, (heads, m, nk))
    nkk = jr.normal(kk, (heads, m, nk))
    g = l @ nq @ jnp.swapaxes(nkk, -1, -2) @ l.T / np.sqrt(nk)
    al = BLOCK_TYPES[config.blocks[0]].attention_from_logits(config, g, n) @ l
    if config.out_proj:
        mixed = al @ jr.normal(ko, (heads, m, p))
        sigma = jnp.einsum("hij,hkj->ik", mixed, mixed) / n
    else:
        sigma = jnp.einsum("hij,hkj->ik", al, al) / heads
    factor = psd_sqrt(sigma)
    pm = factor @ jr.normal(ke, (m, m))
    tw = factor @ jr.normal(kw, (m, n - m))
    cross = l @ pm.T
    lam, gam = config.lam, config.gamma
    out = (
        lam**2 * v
        + lam * gam / np.sqrt(n) * (cross + cross.T)
        + gam**2 / n * (pm @ pm.T + tw @ tw.T)
    )
    return 0.5 * (out + out.T)


def _ref_mlp_step(config, n, v, key):
    """The MLP law of docs/theory.md section 5: `psd_sqrt` factors, brute-force Wish(n - m)."""
    m = v.shape[-1]
    nh = config.n_h(n)
    s_plus, s_minus, c = relu_slopes(config, n)
    kh, ke, kw = jr.split(key, 3)
    l_z = psd_sqrt(v)
    act = shaped_relu(l_z @ jr.normal(kh, (m, nh)), s_plus, s_minus)
    l_s = psd_sqrt(act @ act.T)
    pm = l_s @ jr.normal(ke, (m, m))
    tw = l_s @ jr.normal(kw, (m, n - m))
    coef = c / (n * nh)
    cross = l_z @ pm.T
    lam, gam = config.lam, config.gamma
    out = (
        lam**2 * v
        + lam * gam * np.sqrt(coef) * (cross + cross.T)
        + gam**2 * coef * (pm @ pm.T + tw @ tw.T)
    )
    return 0.5 * (out + out.T)


def _ref_paths(config, n, depth, v0, samples, key):
    steps = [_ref_mlp_step if b == "mlp" else _ref_attention_step for b in config.blocks]

    def one(k):
        def layer(v, lk):
            for step, bk in zip(steps, jr.split(lk, len(steps)), strict=True):
                v = step(config, n, v, bk)
            return v, v

        return jnp.concatenate([v0[None], jax.lax.scan(layer, v0, jr.split(k, depth))[1]])

    return jax.jit(jax.vmap(one))(jr.split(key, samples))


FACTOR_CASES = {
    # one head without Wo: the value factor A L is used as it is (no factorisation); the MLP's
    # n_h = 2 < m = 4 uses sigma(H) itself as L_S; n = 6 leaves Wish_4(2), rank 2 < m.
    "one-head-nh<m": (
        ShapedConfig(tau0=0.5, gamma=0.7, key_width=3, mlp_ratio=1 / 3, c_minus=-2.0),
        6,
        V0_4,
    ),
    # Wo with one head (k_v = min(m, n) = m columns, used as they are), standard attention.
    "outproj-standard": (
        ShapedConfig(gamma=0.6, out_proj=True, key_width=2, blocks=("standard_attention", "mlp")),
        8,
        V0_3,
    ),
}


@pytest.mark.parametrize("case", list(FACTOR_CASES))
def test_factor_chain_matches_eigh_reference(case, key, full):
    """The factor-based chain (Cholesky / A L / sigma(H) factors, Bartlett) has the same law as
    the eigendecomposition-based formulas of docs/theory.md section 5 with brute-force Gaussian
    products.

    The draws differ (a Cholesky factor L_c and the symmetric root L_e differ by an orthogonal
    Q, L_e = L_c Q, absorbed by the rotation-invariant logit, E and Wishart draws), so this is
    an equality in law, tested like the explicit comparisons (`compare_paths`, Bonferroni at
    1e-3 over every entry's mean and variance at both layers and every correlation's KS)."""
    config, n, v0 = FACTOR_CASES[case]
    samples = 12_000 if full else 3_000
    lkey, rkey = jr.split(jr.fold_in(key, len(case)))
    law = law_covariance_paths(config, v0, width=n, depth=2, num_samples=samples, key=lkey)
    ref = _ref_paths(config, n, 2, v0, samples, rkey)
    result = compare_paths(law, ref, layers=[1, 2])
    assert result.ok, f"{case}: {result}"


def test_law_step_is_gram_of_factor_step(key):
    """`law_step(V)` is exactly `F F^T` for `F = law_factor_step(cov_factor(V))` with the same
    key (same draws), and F has the documented shape m x (m + min(k, n - m))."""
    for cls, config in (
        (ShapedAttention, ShapedConfig(heads=2, key_width=3)),
        (ShapedMLP, ShapedConfig(mlp_ratio=2.0)),
    ):

        @jax.jit
        def both(v, k, cls=cls, config=config):
            f = cls.law_factor_step(config, 6, cov_factor(v), key=k)
            return f, cls.law_step(config, 6, v, key=k)

        f, v1 = both(V0_4, key)
        assert f.shape == (4, 4 + 2)
        np.testing.assert_allclose(v1, f @ f.T, rtol=1e-5, atol=1e-6)


SINGULAR = {
    "rank-1": jnp.ones((4, 4)),
    "rank-2": jnp.array(
        [[1.0, 1.0, 0.0, 0.5], [1.0, 1.0, 0.0, 0.5], [0.0, 0.0, 2.0, 1.0], [0.5, 0.5, 1.0, 0.75]]
    ),
}


def test_singular_covariance_is_finite(key):
    """Rank-deficient V0 (rank 1 and rank 2; Cholesky gives NaN): the chain falls back to the
    eigendecomposition factor and returns finite PSD covariances, for shaped layers and for
    standard attention with two heads and out_proj."""
    for name, v0 in SINGULAR.items():
        assert not np.isfinite(np.asarray(jnp.linalg.cholesky(v0))).all(), name
        for config in (
            ShapedConfig(gamma=0.6, key_width=2),
            ShapedConfig(heads=2, out_proj=True, blocks=("standard_attention",)),
        ):
            paths = np.asarray(
                law_covariance_paths(config, v0, width=8, depth=3, num_samples=16, key=key),
                np.float64,
            )
            assert np.isfinite(paths).all(), (name, config)
            # PSD up to float32 round-off of entries of size about 1
            assert (np.linalg.eigvalsh(paths) > -1e-4).all(), (name, config)


def test_cov_factor(key):
    """Cholesky where it exists, `psd_sqrt` where it fails, per matrix, batched or not, under
    jit and nested vmap; never NaN for a PSD input."""
    x = jr.normal(key, (3, 4, 6))
    pd = x @ jnp.swapaxes(x, -1, -2)
    batch = jnp.stack([pd[0], SINGULAR["rank-1"], pd[1], SINGULAR["rank-2"], pd[2]])
    nested = jax.vmap(jax.vmap(cov_factor))
    outs = jax.jit(
        lambda b: (
            cov_factor(b),
            jax.vmap(cov_factor)(b),
            nested(b[None])[0],
            jax.lax.map(cov_factor, b, batch_size=2),
            cov_factor(b[1]),
        )
    )(batch)
    for out in outs[:-1]:
        out = np.asarray(out, np.float64)
        assert np.isfinite(out).all()
        # float32 round-off of entries of size <= 8
        np.testing.assert_allclose(out @ np.swapaxes(out, -1, -2), batch, atol=1e-5 * 8)
        # positive definite matrices keep their (lower triangular) Cholesky factor
        np.testing.assert_allclose(out[[0, 2, 4]], np.linalg.cholesky(np.asarray(pd)), atol=1e-5)
    single = np.asarray(outs[-1], np.float64)
    np.testing.assert_allclose(single @ single.T, SINGULAR["rank-1"], atol=1e-5)


def _primitive_paths(jaxpr, outer=()) -> list[tuple[str, ...]]:
    """Every primitive of a jaxpr with the primitives that enclose it (cond, custom_vmap_call)."""
    paths = []
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        paths.append((*outer, name))
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    paths.extend(_primitive_paths(sub, (*outer, name)))
    return paths


def test_cov_factor_same_program_under_vmap(key):
    """A matrix gets the same factor, bit for bit, alone, in a vmapped batch and under nested
    vmaps; the eigendecomposition stays inside one `cond` however many vmaps wrap the call."""
    x = jr.normal(key, (4, 5, 7))
    pd = x @ jnp.swapaxes(x, -1, -2)
    alone = np.stack([np.asarray(jax.jit(cov_factor)(m)) for m in pd])
    vmapped = np.asarray(jax.jit(jax.vmap(cov_factor))(pd))
    nested = np.asarray(jax.jit(jax.vmap(jax.vmap(cov_factor)))(pd.reshape(2, 2, 5, 5)))
    np.testing.assert_array_equal(vmapped, alone)
    np.testing.assert_array_equal(nested.reshape(4, 5, 5), alone)
    for fn, arg in (
        (cov_factor, pd[0]),
        (jax.vmap(cov_factor), pd),
        (jax.vmap(jax.vmap(cov_factor)), pd.reshape(2, 2, 5, 5)),
    ):
        paths = _primitive_paths(jax.make_jaxpr(fn)(arg).jaxpr)
        # one cond (a vmapped cond would become a select that runs both branches) ...
        assert sum(path[-1] == "cond" for path in paths) == 1, paths
        # ... and the eigendecomposition runs only inside it
        eighs = [path for path in paths if path[-1] == "eigh"]
        assert eighs and all("cond" in path[:-1] for path in eighs), eighs
