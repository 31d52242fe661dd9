"""The extension API: a user block type registered without editing the package.

The block is the example of docs/usage.md ("Your own block type"), executed from the document
itself, so the documented code is the tested code. It is a linear residual block
X_next = lam X + gam X W / sqrt(n) whose three faces are checked against each other: the
one-step moments of the finite face (explicit weights) and of the law face at width n match the
limit face exactly at every n (E[V_next] = V, Cov(V_next) = kappa Lin / n, docs/theory.md
section 4, "A linear residual layer"), and the law face again at large n.
"""

from __future__ import annotations

import math
import pathlib
import re
import sys
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdeformer as sdf
from sdeformer.blocks import NoiseTerms

USAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "usage.md"
NAME = "my_linear"


def _example_code() -> str:
    text = USAGE.read_text()
    section = text.split("### Your own block type", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/usage.md: no python block in 'Your own block type'"
    return match.group(1)


@pytest.fixture(scope="module")
def example():
    """The namespace of the docs example (it registers 'my_linear'); unregistered afterwards."""
    module = types.ModuleType("usage_example")  # a real module: dataclasses look it up
    sys.modules[module.__name__] = module
    # dont_inherit: run it as a user's file would, without this file's `from __future__` flags
    exec(compile(_example_code(), str(USAGE), "exec", dont_inherit=True), module.__dict__)
    try:
        yield module.__dict__
    finally:
        sdf.unregister_block(NAME)
        del sys.modules[module.__name__]


def _finite_only(name: str, **faces):
    """A block type with only a finite face (plus `faces`), registered under `name`."""

    def init(self, config, n, *, key, dtype=jnp.float32):
        self.config = config

    attrs = {
        "__annotations__": {"config": sdf.ShapedConfig},
        "name": name,
        "__init__": init,
        "__call__": lambda self, x: x,
        **faces,
    }
    return sdf.register_block(type("FiniteOnly", (sdf.Block,), attrs))


# --- registry --------------------------------------------------------------------------------


def test_registered_block_is_accepted_by_config(example):
    config = sdf.ShapedConfig(blocks=("attention", NAME))
    assert config.blocks == ("attention", NAME)
    assert sdf.registered_blocks()[NAME] is example["LinearResidual"]
    # still hashable and static, and round-trips through its dictionary
    assert hash(config) == hash(sdf.ShapedConfig(blocks=["attention", NAME]))
    assert sdf.ShapedConfig.from_dict(config.to_dict()) == config
    assert config.is_shaped  # the example has all limit faces
    assert not config.replace(blocks=("standard_attention", NAME)).is_shaped


def test_unknown_block_names_the_registered_ones(example):
    with pytest.raises(ValueError, match=r"unknown block 'nope'.*'preln_mlp', 'my_linear'"):
        sdf.ShapedConfig(blocks=("attention", "nope"))


def test_registration_errors(example):
    cls = example["LinearResidual"]
    with pytest.raises(ValueError, match=r"'my_linear' is already registered.*unregister_block"):
        sdf.register_block(cls)
    with pytest.raises(ValueError, match="'attention' is already registered"):
        _finite_only("attention")
    with pytest.raises(TypeError, match="not a subclass of sdeformer.Block"):
        sdf.register_block(int)
    with pytest.raises(ValueError, match="must set its own class attribute `name`"):
        sdf.register_block(type("Nameless", (sdf.Block,), {"__call__": lambda self, x: x}))
    with pytest.raises(ValueError, match="has no finite face"):
        sdf.register_block(type("NoCall", (sdf.Block,), {"name": "no_call"}))
    with pytest.raises(ValueError, match="built-in block"):
        sdf.unregister_block("mlp")
    with pytest.raises(ValueError, match="no block named 'nope'"):
        sdf.unregister_block("nope")
    assert "no_call" not in sdf.registered_blocks()
    # a freed name can be registered again, to another class (re-running a notebook cell)
    first = _finite_only("again")
    sdf.unregister_block("again")
    with pytest.raises(ValueError, match="unknown block 'again'"):
        sdf.ShapedConfig(blocks=("again",))
    second = _finite_only("again")
    try:
        assert second is not first and sdf.registered_blocks()["again"] is second
    finally:
        sdf.unregister_block("again")


def test_missing_faces_are_reported_at_construction():
    _finite_only("finite_only")
    try:
        config = sdf.ShapedConfig(blocks=("attention", "finite_only"))
        with pytest.raises(ValueError, match="'finite_only'.*does not define the limit face"):
            sdf.CovarianceSDE(config)
        with pytest.raises(sdf.MissingFaceError, match="'finite_only'.*law_step"):
            sdf.law_covariance_paths(
                config, jnp.eye(2), width=8, depth=1, num_samples=1, key=jr.key(0)
            )
        block = sdf.registered_blocks()["finite_only"]
        v = jnp.eye(2)
        for face, call in [
            ("drift", lambda: block.drift(config, v)),
            ("noise_covariance", lambda: block.noise_covariance(config, v)),
            ("noise_terms", lambda: block.noise_terms(config)),
            ("attention term", lambda: block.mix_noise(config, v, v, v)),
            ("law_step", lambda: block.law_step(config, 8, v, key=jr.key(0))),
        ]:
            with pytest.raises(sdf.MissingFaceError, match=face):
                call()
        assert block.law_factor_step is None  # optional face: the law chain uses law_step
    finally:
        sdf.unregister_block("finite_only")


def test_own_attention_noise_is_refused():
    """The solver merges attention terms with ShapedAttention's noise map: another is refused."""

    @classmethod
    def zero(cls, config, v, *args, **kwargs):
        return jnp.zeros_like(v)

    faces = {
        "drift": zero,
        "noise_covariance": classmethod(lambda cls, c, v: jnp.zeros((2,) * 4)),
        "noise_terms": classmethod(lambda cls, c: NoiseTerms(0.0, 1.0, "attention")),
        "mix_noise": zero,
    }
    _finite_only("own_mix", **faces)
    try:
        with pytest.raises(ValueError, match="shaped attention's term only"):
            sdf.CovarianceSDE(sdf.ShapedConfig(blocks=("own_mix",)))
    finally:
        sdf.unregister_block("own_mix")


# --- the example runs everywhere a built-in block does ----------------------------------------


def test_example_runs_finite_law_and_sde(example):
    config = example["config"]
    v0 = example["v0"]
    assert config.blocks == ("attention", NAME)
    # finite: the explicit network of the example
    _, covs = example["model"].covariance_path(sdf.input_from_covariance(v0, 16))
    assert covs.shape == (5, 2, 2) and bool(jnp.all(jnp.isfinite(covs)))
    # law chain
    law = example["law"]
    assert law.shape == (8, 5, 2, 2) and bool(jnp.all(jnp.isfinite(law)))
    np.testing.assert_allclose(law[:, 0], np.broadcast_to(v0, (8, 2, 2)))
    # SDE: the merged noise is the blocks' sum, and the solver ran
    sol = example["sol"]
    assert sol.vs.shape[0] == 8 and bool(jnp.all(jnp.isfinite(sol.vs)))
    sde = sdf.CovarianceSDE(config)
    kappa = 2 * config.gamma**2 - config.gamma**4
    att_kappa = sdf.ShapedAttention.noise_terms(config).lin
    assert sde.lin_coefficient == pytest.approx(att_kappa + kappa)
    v = jnp.array([[1.0, 0.3, 0.1], [0.3, 1.2, 0.4], [0.1, 0.4, 0.9]])
    f = sde.noise_factor(v)  # the O(m^3) noise map, pushed through a basis
    # float32 sums of O(1) terms: agreement to ~1e-6 relative; 1e-4 is far below any real error
    np.testing.assert_allclose(
        jnp.einsum("abk,cdk->abcd", f, f), sde.noise_covariance(v), rtol=1e-4, atol=1e-4
    )


# --- the three faces agree (one-step moments) ------------------------------------------------

SAMPLES = 4000
Z_MAX = 4.5
"""27 z-scores (6 means, 21 covariances): P(max |z| > 4.5) is about 27 * 7e-6 = 2e-4 for
Gaussian z-scores; the keys are fixed, so the test is deterministic."""
V = np.array([[1.0, 0.3, 0.1], [0.3, 1.2, 0.4], [0.1, 0.4, 0.9]], np.float32)


def _z_scores(samples: np.ndarray, mean: np.ndarray, cov: np.ndarray):
    """z-scores of the sample mean and covariance of `samples` (N, p) against targets; standard
    errors from the samples themselves (the covariance's from the products' spread)."""
    num = samples.shape[0]
    centred = samples - samples.mean(0)
    z_mean = (samples.mean(0) - mean) / (samples.std(0) / math.sqrt(num))
    prods = centred[:, :, None] * centred[:, None, :]
    z_cov = (prods.mean(0) - cov) / (prods.std(0) / math.sqrt(num))
    i, j = np.triu_indices(cov.shape[0])
    return z_mean, z_cov[i, j]


def _scaled_steps(v_next: jax.Array, n: int) -> np.ndarray:
    """sqrt(n) (V_next - V) on the upper triangle: mean drift / sqrt(n), covariance Sigma."""
    i, j = np.triu_indices(V.shape[0])
    return np.asarray(math.sqrt(n) * (v_next - V)[:, i, j], np.float64)


def _limit_targets(cls, config, n: int, kappa_scale: float = 1.0):
    i, j = np.triu_indices(V.shape[0])
    drift = np.asarray(cls.drift(config, jnp.asarray(V), width=n))[i, j] / math.sqrt(n)
    sigma = kappa_scale * np.asarray(cls.noise_covariance(config, jnp.asarray(V)))
    return drift, sigma[i, j][:, i, j]


def test_faces_agree_by_one_step_moments(example):
    cls = example["LinearResidual"]
    config = sdf.ShapedConfig(gamma=0.8, blocks=(NAME,))
    keys = jr.split(jr.key(7), SAMPLES)
    v = jnp.asarray(V)

    def finite(n):
        x0 = sdf.input_from_covariance(v, n)

        @jax.vmap
        def one(k):
            x1 = cls(config, n, key=k)(x0)
            return x1 @ x1.T / n

        return eqx.filter_jit(one)(keys)

    def law(n):
        return jax.jit(jax.vmap(lambda k: cls.law_step(config, n, v, key=k)))(keys)

    kappa = 2 * 0.8**2 - 0.8**4
    # power: noise 2 gam^2 Lin (the Wishart term's -gam^4 left out) is 47% too large
    wrong = 2 * 0.8**2 / kappa
    for face, n, draws in [
        ("finite", 16, finite(16)),
        ("law", 16, law(16)),
        ("law", 1024, law(1024)),
    ]:
        samples = _scaled_steps(draws, n)
        z_mean, z_cov = _z_scores(samples, *_limit_targets(cls, config, n))
        assert np.max(np.abs(z_mean)) < Z_MAX, (face, n, z_mean)
        assert np.max(np.abs(z_cov)) < Z_MAX, (face, n, z_cov)
        _, z_wrong = _z_scores(samples, *_limit_targets(cls, config, n, wrong))
        assert np.max(np.abs(z_wrong)) > 2 * Z_MAX, (face, n, z_wrong)
