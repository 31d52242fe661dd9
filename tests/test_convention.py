"""One calling convention for the samplers and solvers: f(config, v0, *, width, depth | T, ...)."""

import warnings

import jax.random as jr
import numpy as np
import pytest

import sdeformer as sdf
from sdeformer import compare
from sdeformer._convention import depth_for, resolve_depth

CONFIG = sdf.ShapedConfig(blocks=("attention",))
V0 = sdf.equicorrelated(2, 0.3)


def test_depth_and_T_are_one_quantity():
    key = jr.key(0)
    by_depth = sdf.law_covariance_paths(CONFIG, V0, width=8, depth=4, num_samples=3, key=key)
    by_T = sdf.law_covariance_paths(CONFIG, V0, width=8, T=0.5, num_samples=3, key=key)
    np.testing.assert_array_equal(np.asarray(by_depth), np.asarray(by_T))
    assert by_T.shape == (3, 5, 2, 2)
    assert resolve_depth(64, T=0.3) == (64, 19)  # round(T n), as the samples' times say
    assert depth_for(1.0, 16) == 16


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(width=8), "exactly one of depth= .* and T= .*neither"),
        (dict(width=8, depth=4, T=0.5), "exactly one of depth=.*both \\(depth=4, T=0.5\\)"),
    ],
)
def test_depth_or_T_exactly_once(kwargs, match):
    with pytest.raises(TypeError, match=match):
        sdf.law_covariance_paths(CONFIG, V0, **kwargs, num_samples=2, key=jr.key(0))


def test_T_too_small_for_the_width():
    with pytest.raises(ValueError, match="T=0.01 at width 8 gives round\\(T n\\) = 0 layers"):
        sdf.explicit_covariance_paths(CONFIG, V0, width=8, T=0.01, num_samples=2, key=jr.key(0))


def test_old_positional_order_names_the_convention():
    with pytest.raises(TypeError) as err:
        sdf.law_covariance_paths(CONFIG, 8, 4, V0, 10, key=jr.key(0))
    text = str(err.value)
    assert "takes config and v0 positionally" in text and "5 positional arguments" in text
    assert "law_covariance_paths(config, v0, *, width, depth=..., T=..., num_samples" in text
    with pytest.raises(TypeError, match="solve_sde takes config and v0 positionally"):
        sdf.solve_sde(CONFIG, V0, 1.0, 10, key=jr.key(0))
    with pytest.raises(TypeError, match="finite_source takes config and v0 positionally"):
        compare.finite_source(CONFIG, 8, 1.0, V0, 10, key=jr.key(0))


def test_a_size_in_v0s_place_names_the_swap():
    with pytest.raises(
        TypeError, match="v0=8 is a number, not an m x m covariance.*a width or a depth"
    ):
        sdf.law_covariance_paths(CONFIG, 8, width=8, depth=4, num_samples=2, key=jr.key(0))
    with pytest.raises(TypeError, match="the first argument is an array of shape \\(2, 2\\)"):
        sdf.solve_sde(V0, CONFIG, T=1.0, num_samples=2, key=jr.key(0))


def test_a_T_that_looks_like_a_depth_warns():
    with pytest.warns(UserWarning, match="T=64 is large .* pass depth=64"):
        sdf.solve_sde(CONFIG, V0, T=64, num_samples=2, key=jr.key(0), num_steps=2, save_times=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an ordinary T is silent
        sdf.solve_sde(CONFIG, V0, T=2.0, num_samples=2, key=jr.key(0), num_steps=2, save_times=2)
    with pytest.raises(ValueError, match="T=-1.0 is invalid; pass a depth-to-width ratio"):
        sdf.solve_sde(CONFIG, V0, T=-1.0, num_samples=2, key=jr.key(0))


def test_every_public_sampler_follows_it():
    import inspect

    from sdeformer import design, sharding

    for fn in (
        sdf.law_covariance_paths,
        sdf.explicit_covariance_paths,
        sdf.sample_covariance_paths,
        sharding.sharded_covariance_paths,
        sdf.solve_sde,
        sharding.sharded_solve_sde,
        compare.finite_source,
        compare.sde_source,
        compare.coefficient_table,
        sdf.one_step_moments,
        design.forecast,
        design.phase_map,
        design.tune,
    ):
        params = list(inspect.signature(fn).parameters.values())
        assert [p.kind for p in params[:2]] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 2, fn
        assert params[0].name == "config" and params[1].name in ("v0", "v"), fn
        rest = {inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD}
        assert all(p.kind in rest for p in params[2:]), fn
        names = {p.name for p in params}
        assert "n" not in names and "key" in names, fn
