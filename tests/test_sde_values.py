"""The SDE's parameters as JAX values: `solve_sde(values=..., brownian_ids=...)`.

One compiled solver serves every value, one value per path is a parameter grid in one call,
equal Brownian ids give common random numbers, and `jax.jvp` gives pathwise derivatives that
agree with central finite differences.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdeformer as sf
from sdeformer.config import with_values

CONFIG = sf.ShapedConfig(tau0=1.2, gamma=0.45, c_plus=0.3, c_minus=-0.8)
V0 = sf.equicorrelated(3, 0.3)
FIELDS = ("tau0", "gamma", "c_plus", "c_minus")


def _own(config):
    return {name: getattr(config, name) for name in FIELDS}


@pytest.mark.parametrize(
    "config",
    [CONFIG, CONFIG.replace(causal=True), CONFIG.replace(blocks=("attention",), heads=2)],
    ids=["attention-mlp", "causal", "attention-2-heads"],
)
def test_values_give_the_paths_of_the_config(config, key):
    """An SDE built from another config with this config's values as JAX values: same paths."""
    other = config.replace(tau0=3.0, gamma=0.1, c_plus=1.0, c_minus=1.0)
    kwargs = dict(key=key, num_steps=40, save_times=5)
    want = sf.solve_sde(config, V0, T=0.5, num_samples=16, **kwargs)
    got = sf.solve_sde(other, V0, T=0.5, num_samples=16, values=_own(config), **kwargs)
    np.testing.assert_allclose(got.vs, want.vs, rtol=2e-5, atol=1e-6)
    np.testing.assert_array_equal(got.exit_reason, want.exit_reason)


def test_a_grid_in_one_call_with_common_random_numbers(key, compiles):
    """Per-path gammas with repeated Brownian ids: each cell is the solve at its own config;
    new values reuse the compiled solver."""
    gammas = np.array([0.3, 0.5, 0.7])
    paths = 8
    kwargs = dict(key=key, num_steps=30, save_times=3)
    grid = sf.solve_sde(
        CONFIG,
        V0,
        T=0.5,
        num_samples=3 * paths,
        values={"gamma": np.repeat(gammas, paths)},
        brownian_ids=np.tile(np.arange(paths), 3),
        **kwargs,
    )
    for i, gamma in enumerate(gammas):
        cell = sf.solve_sde(
            CONFIG.replace(gamma=float(gamma)), V0, T=0.5, num_samples=paths, **kwargs
        )
        np.testing.assert_allclose(
            grid.vs[i * paths : (i + 1) * paths], cell.vs, rtol=2e-5, atol=1e-6
        )
    before = compiles.count
    sf.solve_sde(
        CONFIG,
        V0,
        T=0.5,
        num_samples=3 * paths,
        values={"gamma": np.repeat(gammas * 0.9, paths)},
        brownian_ids=np.tile(np.arange(paths), 3),
        **kwargs,
    )
    assert compiles.count == before


def test_batches_keep_the_values_of_their_paths(key):
    """Batching a grid does not mix the values of paths in different batches."""
    values = {"tau0": np.linspace(0.8, 2.0, 10)}
    kwargs = dict(key=key, num_steps=20, save_times=2, values=values)
    one = sf.solve_sde(CONFIG, V0, T=0.3, num_samples=10, **kwargs)
    batched = sf.solve_sde(CONFIG, V0, T=0.3, num_samples=10, batch_size=4, **kwargs)
    np.testing.assert_array_equal(one.vs, batched.vs)


def test_one_brownian_grid_serves_every_step_count(key, compiles):
    """`brownian_steps`: a solve in fewer steps sums the fine increments of the same Brownian
    path, so it tracks the fine solve path by path (strong error), unlike an independent one;
    its increment over a step is exactly the sum of the fine ones; a new step count reuses the
    compiled solver."""
    from sdeformer.sde import PathBrownian

    kwargs = dict(T=1.0, num_samples=400, save_times=2, brownian_steps=240, max_steps=256)
    fine = sf.solve_sde(CONFIG, V0, key=key, num_steps=240, **kwargs).vs[:, -1]
    coarse = sf.solve_sde(CONFIG, V0, key=key, num_steps=60, **kwargs)
    before = compiles.count
    sf.solve_sde(CONFIG, V0, key=key, num_steps=80, **kwargs)
    assert compiles.count == before
    other = sf.solve_sde(CONFIG, V0, key=jr.key(1), num_steps=240, **kwargs).vs[:, -1]
    shared = float(jnp.mean(jnp.abs(coarse.vs[:, -1] - fine)))
    independent = float(jnp.mean(jnp.abs(other - fine)))
    assert shared < 0.3 * independent, (shared, independent)
    path = PathBrownian(jnp.array([3, 4], jnp.uint32), jnp.arange(5, dtype=jnp.uint32),
                        sf.CovarianceSDE(CONFIG).brownian_shape(3))  # fmt: skip
    whole = path.indexed_sum(6, 3, 0.01)
    parts = [path.indexed_sum(6 + i, 1, 0.01) for i in range(3)]
    for name in whole:
        np.testing.assert_allclose(whole[name], sum(p[name] for p in parts), atol=1e-6)
        assert abs(float(jnp.std(whole[name])) / 0.03**0.5 - 1) < 0.3  # N(0, 3 x 0.01)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_steps": 7, "brownian_steps": 20},
        {"num_steps": 4, "brownian_steps": 8, "solver": "heun"},
        {"num_steps": None, "dt0": 0.125, "brownian_steps": 8},
    ],
    ids=["not-a-multiple", "heun", "dt0"],
)
def test_bad_brownian_steps_refused(kwargs):
    with pytest.raises(ValueError, match=r"brownian_steps=\d+ needs solver='euler', num_steps"):
        sf.solve_sde(CONFIG, V0, T=0.5, num_samples=4, key=jr.key(0), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": {"gamma": 1.2}}, r"gamma=1\.2 is invalid; need 0 < gamma < 1"),
        ({"values": {"tau0": [1.0, -1.0, 1.0, 1.0]}}, r"tau0=-1\.0 is invalid"),
        ({"values": {"heads": 2}}, r"\['heads'\] cannot be JAX values; only \['tau0'"),
        ({"values": {"gamma": [0.3, 0.4]}}, r"values\['gamma'\] has shape \(2,\).*\(4,\)"),
        ({"brownian_ids": np.array([0, 1])}, r"brownian_ids has shape \(2,\).*\(4,\) non-negative"),
        ({"brownian_ids": np.array([0, -1, 2, 3])}, r"non-negative integers"),
    ],
    ids=[
        "gamma-out-of-range",
        "tau0-per-path",
        "structural-field",
        "values-shape",
        "ids-shape",
        "ids-sign",
    ],
)
def test_bad_values_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sf.solve_sde(CONFIG, V0, T=0.5, num_samples=4, key=jr.key(0), num_steps=4, **kwargs)


def test_with_values_reads_like_the_config():
    """The valued config's derived lambda follows its gamma; the rest is the config's."""
    valued = with_values(CONFIG, {"gamma": jnp.asarray(0.6)})
    assert float(valued.lam) == pytest.approx(0.8, rel=1e-6)
    assert valued.blocks == CONFIG.blocks and valued.tau0 == CONFIG.tau0


def _mean_rho(values, key):
    """Mean over paths of the mean token correlation at T, no exits (bound inf)."""
    v0 = jnp.asarray(V0, jnp.result_type(float))  # float64 under jax.enable_x64
    sol = sf.solve_sde(
        CONFIG,
        v0,
        T=0.5,
        num_samples=64,
        key=key,
        num_steps=50,
        save_times=2,
        bound=jnp.inf,
        values=values,
    )
    v = sol.vs[:, -1]
    d = jnp.sqrt(jnp.diagonal(v, axis1=-2, axis2=-1))
    rho = v / (d[:, :, None] * d[:, None, :])
    i, j = np.triu_indices(3, 1)
    return jnp.mean(rho[:, i, j])


@pytest.mark.parametrize("name", FIELDS)
def test_pathwise_derivative_matches_central_differences(name, key):
    """jax.jvp through the solve with fixed Brownian paths, against central differences with
    common random numbers, in float64: within 1e-3 relative (no path changes its exit)."""
    with jax.enable_x64(True):
        base = {k: jnp.asarray(v, jnp.float64) for k, v in _own(CONFIG).items()}
        direction = {k: jnp.asarray(float(k == name), jnp.float64) for k in base}
        value, derivative = jax.jvp(lambda p: _mean_rho(p, key), (base,), (direction,))
        h = 1e-4
        up = _mean_rho({**base, name: base[name] + h}, key)
        down = _mean_rho({**base, name: base[name] - h}, key)
        central = (up - down) / (2 * h)
        assert jnp.isfinite(value)
        assert abs(float(derivative) - float(central)) <= 1e-3 * abs(float(central)), (
            float(derivative),
            float(central),
        )
