"""The shallow encoder, its empirical and analytic NTK, gradient descent and the `ntk` command."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from sdeformer.cli import main
from sdeformer.ntk import (
    INITS,
    ShallowEncoder,
    analytic_ntk,
    digits_data,
    empirical_ntk,
    fit_linear_rate,
    fit_loglog,
    kernel_errors,
    limit_ntk,
    load_data,
    ntk_scale,
    partition_params,
    resolve_tau0,
    squared_loss,
    synthetic_data,
    train_gd,
)
from sdeformer.ntk.empirical import min_eigenvalue


def _brute_force_ntk(model, xs):
    """J J^T with J the full (N, P) Jacobian of the batch outputs (jax.jacrev)."""
    params, rest = partition_params(model)
    flat, unravel = ravel_pytree(params)

    def outputs(theta):
        m = jax.tree.map(
            lambda p, r: r if p is None else p, unravel(theta), rest, is_leaf=lambda x: x is None
        )
        return jax.vmap(m)(xs)

    jac = jax.jacrev(outputs)(flat)
    return jac @ jac.T


@pytest.mark.parametrize("scaling", ["sqrt", "linear"])
def test_empirical_ntk_equals_brute_force_jacobian_in_float64(key, scaling):
    with jax.enable_x64(True):
        xkey, mkey = jr.split(key)
        xs = jr.normal(xkey, (7, 4, 3), jnp.float64)
        model = ShallowEncoder(3, 5, scaling=scaling, init="he", key=mkey, dtype=jnp.float64)
        brute = _brute_force_ntk(model, xs)
        assert brute.dtype == jnp.float64
        scale = float(jnp.max(jnp.abs(brute)))
        for strategy, block in [("jacobian", 4), ("blocked", 3), ("implicit", 4), ("auto", 2)]:
            k = empirical_ntk(model, xs, strategy=strategy, block=block)
            assert k.dtype == jnp.float64
            # Same sums in another order: float64 rounding, 1e3 eps of the largest entry.
            np.testing.assert_allclose(k, brute, rtol=0, atol=1e3 * 2.2e-16 * scale)
        # "auto" falls back to the blocked strategy when the Jacobian exceeds the budget.
        k = empirical_ntk(model, xs, memory_bytes=1)
        np.testing.assert_allclose(k, brute, rtol=0, atol=1e3 * 2.2e-16 * scale)
    assert jnp.zeros(()).dtype == jnp.float32  # x64 did not leak into the rest of the suite


def test_float32_ntk_agrees_with_float64(key):
    xkey, mkey = jr.split(key)
    xs = jr.normal(xkey, (6, 4, 3))
    model = ShallowEncoder(3, 64, init="lecun", key=mkey)
    k32 = empirical_ntk(model, xs)
    with jax.enable_x64(True):
        m64 = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx_array(a) else a, model)
        k64 = np.asarray(empirical_ntk(m64, xs.astype(jnp.float64)))
    # Each entry sums about 4 * 3 * 64 float32 products: relative rounding well under 1e-4.
    np.testing.assert_allclose(np.asarray(k32), k64, rtol=0, atol=1e-4 * np.abs(k64).max())


def eqx_array(a) -> bool:
    return isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating)


@pytest.mark.slow
@pytest.mark.parametrize("init", INITS)
def test_analytic_kernel_matches_wide_empirical_within_monte_carlo_error(key, init, full):
    width = 16384 if full else 4096
    seeds = 16 if full else 6
    xs, _ = synthetic_data(6, key=jr.fold_in(key, 1))
    kbar = np.asarray(analytic_ntk(xs, init=init, width=width), dtype=np.float64)

    def mean_and_error(scaling):
        ks = np.stack(
            [
                np.asarray(
                    empirical_ntk(
                        ShallowEncoder(
                            8, width, scaling=scaling, init=init, key=jr.fold_in(key, s)
                        ),
                        xs,
                    ),
                    dtype=np.float64,
                )
                for s in range(seeds)
            ]
        )
        # Frobenius norm of the Monte Carlo error of the mean: sqrt(sum_ij var_ij / S).
        return ks.mean(axis=0), math.sqrt(ks.var(axis=0, ddof=1).sum() / seeds)

    mean, se = mean_and_error("linear")
    # Under tau0 = d_m^-1 the expected kernel differs from Kbar only through the O(d_m^-1/2)
    # logits, whose first-order effect averages out: a bias O(1/d_m) ~ 2e-4 ||Kbar|| here, far
    # below the Monte Carlo error (~1e-2 ||Kbar||). So ||mean - Kbar|| must be within 3 standard
    # errors (the Frobenius norm of the noise concentrates near 1 se).
    assert np.linalg.norm(mean - kbar) <= 3 * se
    assert se < 0.05 * np.linalg.norm(kbar)  # the check is sharp, not vacuous
    if init == "ntk":
        # Power: under tau0 = d_m^-1/2 the attention does not become uniform; the same check fails.
        mean_sqrt, se_sqrt = mean_and_error("sqrt")
        assert np.linalg.norm(mean_sqrt - kbar) > 3 * se_sqrt


@pytest.mark.slow
def test_kernel_error_decays_like_inverse_sqrt_width(key, full):
    xs, _ = synthetic_data(8, key=jr.fold_in(key, 2))
    widths = [64, 256, 1024, 4096] if full else [64, 256, 1024]
    samples = [
        kernel_errors(xs, w, scaling="linear", init="ntk", seeds=4, key=jr.fold_in(key, w))[
            "errors"
        ]
        for w in widths
    ]
    fit = fit_loglog(widths, samples)
    # Theory (docs/ntk.md): relative error ~ d_m^{-1/2}; 3 (chi^2-inflated) standard errors.
    assert abs(fit.slope + 0.5) <= 3 * fit.slope_se
    assert fit.slope_se < 0.15  # the window is narrow enough to tell -1/2 from 0 or -1
    sqrt_samples = [
        kernel_errors(xs, w, scaling="sqrt", init="ntk", seeds=4, key=jr.fold_in(key, w))["errors"]
        for w in widths
    ]
    assert fit_loglog(widths, sqrt_samples).slope > -0.2  # no convergence to Kbar under sqrt


def test_limit_kernel_is_the_normalised_expected_kernel(key):
    xs, _ = synthetic_data(5, key=key)
    for init in INITS:
        kbar = analytic_ntk(xs, init=init, width=10**6) / ntk_scale(init, 10**6)
        lim = limit_ntk(xs, init=init)
        # Only the O(1/d_m) term of the V gradients separates them under LeCun and He.
        np.testing.assert_allclose(kbar, lim, rtol=1e-4 if init != "ntk" else 1e-6)
    # kappa1(u, u) = |u|^2 / 2: the diagonal of the LeCun limit is |u|^2 / (2 d).
    u = xs.mean(axis=1)
    np.testing.assert_allclose(
        jnp.diag(limit_ntk(xs, init="lecun")), jnp.sum(u**2, axis=1) / 16, rtol=1e-5
    )


def test_scalings_and_inits_are_wired_as_documented(key):
    assert resolve_tau0("sqrt", 64) == pytest.approx(1 / 8)
    assert resolve_tau0("linear", 64) == pytest.approx(1 / 64)
    assert resolve_tau0(0.3, 64) == pytest.approx(0.3)
    d, width = 8, 4096
    expected = {"lecun": (1 / d, 1 / width), "he": (2 / d, 2 / width), "ntk": (1.0, 1.0)}
    for init, (var_in, var_out) in expected.items():
        m = ShallowEncoder(d, width, init=init, key=key)
        for w in (m.wq, m.wk, m.wv):
            # Sample variance of 32768 normals: relative standard error sqrt(2/32768) = 0.8%.
            assert float(jnp.var(w)) == pytest.approx(var_in, rel=4 * math.sqrt(2 / w.size))
        assert float(jnp.var(m.wo)) == pytest.approx(var_out, rel=4 * math.sqrt(2 / width))
    # LeCun and NTK initialisation are the same function at init (same normals, other factors).
    xs = jr.normal(jr.fold_in(key, 1), (4, 8, d))
    f_lecun = jax.vmap(ShallowEncoder(d, 256, init="lecun", key=key))(xs)
    f_ntk = jax.vmap(ShallowEncoder(d, 256, init="ntk", key=key))(xs)
    np.testing.assert_allclose(f_lecun, f_ntk, rtol=1e-5, atol=1e-6)
    # ... but the NTK grows like d_m under LeCun and stays O(1) under NTK initialisation.
    for init, grows in [("lecun", True), ("ntk", False)]:
        k_small = empirical_ntk(ShallowEncoder(d, 256, init=init, key=key), xs)
        k_big = empirical_ntk(ShallowEncoder(d, 4096, init=init, key=key), xs)
        ratio = float(jnp.trace(k_big) / jnp.trace(k_small))
        assert (ratio > 8) if grows else (0.5 < ratio < 2)  # 16 vs 1 in expectation


def test_softmax_tends_to_uniform_only_for_inverse_width_scaling(key):
    xs = jr.normal(jr.fold_in(key, 3), (8, 8, 8))

    def gap(scaling, width):
        gaps = []
        for s in range(4):
            m = ShallowEncoder(8, width, scaling=scaling, key=jr.fold_in(key, s))
            gaps.append(float(jnp.mean(jnp.abs(jax.vmap(m.attention)(xs) - 1 / 8))))
        return np.mean(gaps)

    # Logits ~ tau0 sqrt(d_m): the gap shrinks by sqrt(4096/256) = 4 under "linear" and not at
    # all under "sqrt"; thresholds halfway (in log) between the two predictions.
    assert gap("linear", 4096) / gap("linear", 256) < 0.5
    assert gap("sqrt", 4096) / gap("sqrt", 256) > 0.5
    assert gap("linear", 4096) < 0.02


def test_gradient_descent_reduces_the_loss(key):
    xs, ys = synthetic_data(16, key=key)
    model = ShallowEncoder(8, 64, scaling="linear", init="he", key=jr.fold_in(key, 1))
    run = train_gd(model, xs, ys, steps=120, checkpoints=3)
    losses = run["losses"]
    assert losses.shape == (121,)
    assert losses[0] == pytest.approx(float(squared_loss(model, xs, ys)), rel=1e-6)
    assert losses[-1] < 0.25 * losses[0]
    assert np.all(np.diff(losses) <= 1e-6 * losses[0])  # lr = N/lambda_max: monotone descent
    assert run["steps"] == 120 and run["checkpoint_steps"] == [40, 80, 120]
    assert 0 < run["weight_change"] < 1 and len(run["ntk_change"]) == 3
    fit = fit_linear_rate(losses)
    assert 0 < fit["rate"] < 1
    # The kernel-regime bound on the slowest direction is never beaten in the tail... by much:
    # the measured tail rate is at most as slow as the predicted slowest-direction rate.
    assert fit["rate"] <= run["predicted_rate"] + 1e-9
    with pytest.raises(FloatingPointError, match="diverged"):
        train_gd(model, xs, ys, steps=40, lr=1e6, checkpoints=1)


def test_fit_linear_rate_recovers_a_geometric_rate():
    losses = 3.0 * 0.97 ** np.arange(200)
    fit = fit_linear_rate(losses)
    assert fit["rate"] == pytest.approx(0.97, rel=1e-12)
    assert fit["slope_se"] < 1e-12
    assert fit_linear_rate(np.array([1.0, 0.0, 0.0]))["rate"] is None


def test_fit_loglog_recovers_a_power_law():
    rng = np.random.default_rng(0)
    widths = [32, 64, 128, 256, 512]
    samples = [w**-0.5 * (1 + 0.01 * rng.standard_normal(50)) for w in widths]
    fit = fit_loglog(widths, samples)
    # 50 samples with 1% noise: se of log-mean ~ 0.0014 per width, slope se ~ 1e-3.
    assert abs(fit.slope + 0.5) < 5 * fit.slope_se and fit.slope_se < 0.005
    assert fit.method == "loglog" and fit.covers(-0.5, 0.999)
    short = fit_loglog(widths, [s[:1] for s in samples])  # one initialisation per width
    assert not short.determined and "undetermined" in short.describe()


def test_data_sets(key):
    xs, ys = digits_data(40, key=key)
    assert xs.shape == (40, 8, 8) and ys.shape == (40,)
    np.testing.assert_allclose(jnp.sum(xs**2, axis=(1, 2)), 64.0, rtol=1e-5)
    assert float(jnp.mean(ys)) == pytest.approx(0, abs=1e-6)
    assert float(jnp.std(ys)) == pytest.approx(1, rel=1e-5)
    xs2, ys2 = load_data("synthetic", 10, key=key)
    assert xs2.shape == (10, 8, 8) and ys2.dtype == jnp.float32
    lam = float(min_eigenvalue(empirical_ntk(ShallowEncoder(8, 64, key=key), xs)))
    assert lam > 0  # distinct digits: positive definite NTK


def test_bad_arguments_raise_clear_errors(key):
    with pytest.raises(ValueError, match="scaling='cubic'.*'sqrt'"):
        ShallowEncoder(8, 16, scaling="cubic", key=key)
    with pytest.raises(ValueError, match="tau0 must be finite and > 0"):
        ShallowEncoder(8, 16, scaling=-1.0, key=key)
    with pytest.raises(ValueError, match="init='xavier'.*lecun"):
        ShallowEncoder(8, 16, init="xavier", key=key)
    with pytest.raises(ValueError, match=r"width \(d_m\)=0"):
        ShallowEncoder(8, 0, key=key)
    xs = jnp.zeros((3, 4, 8))
    model = ShallowEncoder(8, 4, key=key)
    with pytest.raises(ValueError, match="strategy='fast'"):
        empirical_ntk(model, xs, strategy="fast")
    with pytest.raises(ValueError, match="lr_factor=3.0"):
        train_gd(model, xs, jnp.zeros(3), lr_factor=3.0)
    with pytest.raises(ValueError, match="num_inputs <= 1797"):
        digits_data(5000, key=key)
    with pytest.raises(ValueError, match="data='mnist'"):
        load_data("mnist", 4, key=key)
    with pytest.raises(ValueError, match="init='x'"):
        analytic_ntk(xs, init="x", width=4)


def test_ntk_command_runs_writes_json_and_resumes(tmp_path, capsys):
    out = tmp_path / "ntk"
    argv = [
        "ntk", "--widths", "8,16", "--scalings", "linear,sqrt", "--inits", "ntk",
        "--data", "synthetic", "--samples", "6", "--seeds", "2", "--steps", "8",
        "--checkpoints", "2", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "ntk.json").read_text())
    assert len(report["units"]) == 4
    assert set(report["kernel_error_fits"]) == {"linear/ntk", "sqrt/ntk"}
    for fit in report["kernel_error_fits"].values():  # PowerLawFit.to_dict, as in sweep-width
        assert fit["method"] == "loglog" and fit["status"] in ("determined", "undetermined")
    unit = report["units"][0]
    assert len(unit["losses"]) == 9 and len(unit["kernel_errors"]) == 2
    for unit in report["units"]:
        assert unit["lambda_min"] > 0  # the NTK Gram of 6 distinct inputs is positive definite
        assert all(e > 0 for e in unit["kernel_errors"])  # finite width: K != Kbar
        assert unit["losses"][-1] < unit["losses"][0]  # GD with lr = N / lambda_max descends
        assert unit["weight_change"] > 0
    assert report["provenance"]["versions"]["jax"] == jax.__version__
    import matplotlib.image

    for name, panels in (("ntk_eig.png", 2), ("ntk_loss.png", 0), ("ntk_kernel_error.png", 3)):
        image = matplotlib.image.imread(out / name)
        assert image.shape[1] >= panels * 0.8 * image.shape[0] and min(image.shape[:2]) > 200
        assert image[..., :3].std() > 0.05  # drawn on, not a blank canvas
    assert "| scaling |" in capsys.readouterr().out
    # Seeds do not depend on the lists: the linear unit at width 16 alone equals the same unit
    # of the full run.
    alone = tmp_path / "alone"
    single = [*argv[:2], "16", "--scalings", "linear", *argv[5:-2], str(alone), "--no-progress"]
    assert main(single) == 0
    capsys.readouterr()
    assert json.loads((alone / "units" / "w16_linear_ntk.json").read_text()) == json.loads(
        (out / "units" / "w16_linear_ntk.json").read_text()
    )
    # Resume: a finished unit is read back, not recomputed.
    marker = out / "units" / "w8_linear_ntk.json"
    data = json.loads(marker.read_text())
    data["weight_change"] = 123.0
    marker.write_text(json.dumps(data))
    assert main([*argv, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert any(u["weight_change"] == 123.0 for u in again["units"])
    bad = [*argv[:4], "cubic", *argv[5:-2], str(tmp_path / "x"), "--no-progress"]
    assert main(bad) == 2
    assert "cubic" in capsys.readouterr().err
