"""The covariance SDE solver and the one-step moments of finite networks (docs/theory.md
sections 4, 7)."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
from conftest import FULL

import sdeformer as sf

V3 = jnp.array([[1.0, 0.3, 0.1], [0.3, 1.5, 0.5], [0.1, 0.5, 0.8]])


def _unique_pairs(m):
    pairs = [(a, b) for a in range(m) for b in range(a, m)]
    return [(p, q) for i, p in enumerate(pairs) for q in pairs[i:]]


def _max_z(est, se, want):
    m = est.shape[0]
    return max(
        abs(float(est[a, b, c, d] - want[a, b, c, d])) / float(se[a, b, c, d])
        for (a, b), (c, d) in _unique_pairs(m)
    )


# Each estimate is compared entrywise with its Monte Carlo standard error; with 21 unique
# entries of Sigma (m = 3) a 4.5 standard-error bound keeps the family-wise false alarm rate
# below 1e-4 while the finite-width bias (O(1/n) for these configs, measured below 1 SE) stays
# inside. Each test also checks that a wrong coefficient is rejected by the same bound.
Z = 4.5
N_WIDTH = 256 if FULL else 128
N_PAIRS = 8000 if FULL else 2000


@pytest.mark.slow
@pytest.mark.parametrize(
    "cfg, wrong",
    [
        # full layer, 2 heads; c_plus = -c_minus keeps the MLP drift's finite-n bias O(1/n)
        (
            sf.ShapedConfig(tau0=0.7, gamma=0.6, heads=2, c_plus=0.7, c_minus=-0.7, key_width=8),
            {"mlp_ratio": 0.25},
        ),
        # attention only, output projection, 2 heads
        (
            sf.ShapedConfig(
                tau0=0.6, gamma=0.7, heads=2, out_proj=True, blocks=("attention",), key_width=8
            ),
            {"out_proj": False},
        ),
        # MLP only, ratio 1/2, asymmetric slopes
        (
            sf.ShapedConfig(gamma=0.6, c_plus=0.5, c_minus=-1.0, mlp_ratio=0.5, blocks=("mlp",)),
            {"mlp_ratio": 1.0},
        ),
    ],
)
def test_one_step_moments_match_the_limit(cfg, wrong, key):
    est = sf.one_step_moments(cfg, V3, width=N_WIDTH, num_samples=N_PAIRS, key=key)
    sde = sf.CovarianceSDE(cfg)
    drift = sde.drift(V3)
    if cfg.blocks == ("mlp",):
        # the exact finite-width MLP drift is the limit times 2 / (s_+^2 + s_-^2) (docs/theory.md)
        sp, sm, c = sf.blocks.shaped_mlp.relu_slopes(cfg, N_WIDTH)
        drift = drift * c
    z_drift = jnp.abs(est.drift - drift) / est.drift_se
    assert float(z_drift.max()) < Z, (est.drift, drift, est.drift_se)
    sigma = sde.noise_covariance(V3)
    assert _max_z(est.noise, est.noise_se, sigma) < Z
    wrong_sigma = sf.CovarianceSDE(cfg.replace(**wrong)).noise_covariance(V3)
    assert _max_z(est.noise, est.noise_se, wrong_sigma) > Z  # the test has the power to fail


@pytest.mark.slow
def test_attention_noise_heads_factor(key):
    """The attention part of Sigma_att, from n Cov(E[dV | W^Q, W^K]) (no Lin-term noise)."""
    cfg = sf.ShapedConfig(tau0=0.8, gamma=0.7, heads=2, blocks=("attention",), key_width=8)
    est = sf.one_step_moments(cfg, V3, width=N_WIDTH, num_samples=N_PAIRS, key=key)
    m = V3.shape[0]
    att = sf.blocks._limit.mix_tensor(V3, sf.blocks._limit.attention_k(V3))

    def part(heads):
        return cfg.gamma**4 / (cfg.tau0**2 * m**2 * heads) * att

    assert _max_z(est.conditional_noise, est.conditional_noise_se, part(2)) < Z
    assert _max_z(est.conditional_noise, est.conditional_noise_se, part(1)) > Z
    assert _max_z(est.conditional_noise, est.conditional_noise_se, part(3)) > Z


def test_one_step_moments_reproducible(key):
    cfg = sf.ShapedConfig(key_width=4, blocks=("attention",))
    a = sf.one_step_moments(cfg, V3, width=16, num_samples=8, key=key)
    b = sf.one_step_moments(cfg, V3, width=16, num_samples=8, key=key)
    np.testing.assert_array_equal(a.noise, b.noise)
    np.testing.assert_array_equal(a.drift, b.drift)


# --- the solver -------------------------------------------------------------------------------

# MLP-only stack with c_plus = c_minus: zero drift, Sigma = kappa Lin. Then E[V_t] = V_0 and the
# second moments M_abcd = E[V_ab V_cd] solve the linear ODE dM/dt = kappa L(M),
# L(M)_abcd = M_acbd + M_adbc; Euler-Maruyama gives exactly M_N = (1 + dt kappa L)^N M_0.
LINEAR = sf.ShapedConfig(gamma=0.5, c_plus=-0.5, c_minus=-0.5, blocks=("mlp",))
V2 = jnp.array([[1.0, 0.1], [0.1, 1.2]])
T = 0.2


def _second_moment_map(m):
    lmap = np.zeros((m**4, m**4))
    for a, b, c, d in itertools.product(range(m), repeat=4):
        row = np.ravel_multi_index((a, b, c, d), (m,) * 4)
        lmap[row, np.ravel_multi_index((a, c, b, d), (m,) * 4)] += 1
        lmap[row, np.ravel_multi_index((a, d, b, c), (m,) * 4)] += 1
    return lmap


def test_euler_weak_order_on_the_linear_case(key):
    kappa = LINEAR.gamma**2 * (2 - LINEAR.gamma**2 + LINEAR.gamma**2 / LINEAR.mlp_ratio)
    lmap = kappa * _second_moment_map(2)
    m0 = np.einsum("ab,cd->abcd", V2, V2).ravel()
    exact = scipy.linalg.expm(T * lmap) @ m0
    paths = 40000 if FULL else 20000
    for steps in (4, 16):
        sol = sf.solve_sde(
            LINEAR, V2, T=T, num_samples=paths, key=key, num_steps=steps, bound=np.inf
        )
        # at most 1 in 1000 paths leaves the PSD cone at these steps; their frozen last state
        # moves the moments by < 1e-3 of a standard deviation, far below the Monte Carlo error
        assert sol.summary()["survived"] >= paths - paths // 1000
        vt = np.asarray(sol.vs[:, -1], np.float64)
        # mean: a martingale; 4.5 standard errors
        se = vt.std(0) / np.sqrt(paths)
        assert np.all(np.abs(vt.mean(0) - np.asarray(V2)) < Z * se)
        second = np.einsum("sab,scd->sabcd", vt, vt).reshape(paths, -1)
        se2 = second.std(0) / np.sqrt(paths)
        euler = np.linalg.matrix_power(np.eye(16) + T / steps * lmap, steps) @ m0
        assert np.all(np.abs(second.mean(0) - euler) < Z * se2)
        # the noise scale is resolved: kappa 25% too large is rejected by the same bound
        wrong = np.linalg.matrix_power(np.eye(16) + 1.25 * T / steps * lmap, steps) @ m0
        assert np.max(np.abs(second.mean(0) - wrong) / se2) > Z
    # and Euler's weak error is first order: halving dt halves it
    errs = [
        np.abs(np.linalg.matrix_power(np.eye(16) + T / k * lmap, k) @ m0 - exact).max()
        for k in (64, 128)
    ]
    assert 1.9 < errs[0] / errs[1] < 2.1


def test_solver_is_reproducible_and_masks_exits(key):
    cfg = sf.ShapedConfig(tau0=0.3, gamma=0.8, blocks=("attention",))
    v0 = jnp.array([[1.0, 0.5], [0.5, 1.0]])
    kwargs = dict(key=key, num_steps=50, save_times=6, bound=3.0)
    sol = sf.solve_sde(cfg, v0, T=1.0, num_samples=300, **kwargs)
    again = sf.solve_sde(cfg, v0, T=1.0, num_samples=300, **kwargs)
    np.testing.assert_array_equal(sol.vs, again.vs)
    other = sf.solve_sde(cfg, v0, T=1.0, num_samples=300, **{**kwargs, "key": jr.fold_in(key, 1)})
    assert not np.array_equal(sol.vs, other.vs)
    summary = sol.summary()
    assert summary["crossed_bound"] > 0 and summary["survived"] > 0
    assert sum(summary[name] for name in sf.EXIT_REASONS.values()) == 300
    assert bool(jnp.all(jnp.isfinite(sol.vs)))
    stopped = np.asarray(sol.exit_reason) != 0
    assert np.all(np.isinf(sol.exit_time[~stopped])) and np.all(sol.exit_time[stopped] <= 1.0)
    np.testing.assert_array_equal(sol.alive, sol.ts[None, :] < sol.exit_time[:, None])
    # after the exit the last valid state is kept, and it is within the bound
    i = int(np.argmax(stopped))
    last = int(np.asarray(sol.alive[i]).sum()) - 1
    assert np.all(np.asarray(sol.vs[i, last:]) == np.asarray(sol.vs[i, last]))
    assert float(jnp.abs(sol.vs[i]).max()) <= 3.0
    # the state at the exit is the one that crossed the bound, not the last saved one
    crossed = np.asarray(sol.exit_reason) == 2
    assert np.all(np.abs(np.asarray(sol.v_exit)[crossed]).max(axis=(1, 2)) > 3.0)
    survived = ~stopped
    assert np.all(np.abs(np.asarray(sol.v_exit)[survived]).max(axis=(1, 2)) <= 3.0)
    assert int(sol.stats["num_steps"]) == 50 and sol.stats["num_batches"] == 1


def test_psd_and_non_finite_exits_are_reported(key):
    near_singular = jnp.array([[1.0, 0.999], [0.999, 1.0]])
    sol = sf.solve_sde(
        LINEAR.replace(gamma=0.9), near_singular, T=1.0, num_samples=200, key=key, num_steps=4
    )
    assert sol.summary()["left_psd_cone"] > 0
    assert bool(jnp.all(jnp.isfinite(sol.vs)))
    # a violent attention drift with no bound: the state overflows and is reported non-finite
    hot = sf.ShapedConfig(tau0=0.01, gamma=0.9, blocks=("attention",))
    v0 = jnp.array([[30.0, 1.0], [1.0, 1.0]])
    sol = sf.solve_sde(hot, v0, T=1.0, num_samples=20, key=key, num_steps=4, bound=np.inf)
    assert sol.summary()["non_finite"] > 0
    assert bool(jnp.all(jnp.isfinite(sol.vs)))


def test_float64_and_stratonovich_solvers(key):
    with jax.enable_x64(True):
        v0 = jnp.asarray(V2, jnp.float64)
        for solver in ("euler", "heun"):
            sol = sf.solve_sde(
                LINEAR, v0, T=T, num_samples=2000, key=key, num_steps=8, solver=solver
            )
            assert sol.vs.dtype == jnp.float64
            vt = np.asarray(sol.vs[:, -1])
            se = vt.std(0) / np.sqrt(vt.shape[0])
            assert np.all(np.abs(vt.mean(0) - np.asarray(V2)) < Z * se)  # martingale


def test_bad_arguments():
    with pytest.raises(ValueError, match="solver"):
        sf.solve_sde(LINEAR, V2, T=1.0, num_samples=2, key=jr.key(0), solver="rk4")
    with pytest.raises(ValueError, match="removed"):
        sf.solve_sde(LINEAR, V2, T=1.0, num_samples=2, key=jr.key(0), solver="spark")
    with pytest.raises(ValueError, match="enable_x64"):
        sf.solve_sde(LINEAR, V2, T=1.0, num_samples=2, key=jr.key(0), dtype=jnp.float64)
    with pytest.raises(ValueError, match="no covariance SDE limit"):
        sf.solve_sde(
            sf.ShapedConfig(blocks=("preln_mlp",)), V2, T=1.0, num_samples=2, key=jr.key(0)
        )


# --- the O(m^3) solver against the dense formulation, batching, memory, recompilation --------


def _dense_euler(sde, v0, T, steps, paths, key, noise_scale=1.0):
    """Reference: Euler-Maruyama on the upper triangle with the dense symmetric root of the
    pair covariance (the formulation the solver had before the O(m^3) noise)."""
    m = v0.shape[-1]
    i, j = np.triu_indices(m)
    dt = T / steps

    def root(v):
        w, u = jnp.linalg.eigh(sde.pair_covariance(v))
        return (u * jnp.sqrt(jnp.clip(w, 0.0))) @ u.T

    def path(k):
        def step(v, kk):
            xi = jr.normal(kk, (len(i),)) * math.sqrt(dt) * noise_scale
            y = v[i, j] + sde.drift(v)[i, j] * dt + root(v) @ xi
            return sf.sde.triu_matrix(y, m), None

        return jax.lax.scan(step, v0, jr.split(k, steps))[0]

    return jax.jit(jax.vmap(path))(jr.split(key, paths))


@pytest.mark.parametrize("m", [3, 4])
def test_law_matches_the_dense_formulation(m, key):
    """Mean and variance of every entry of V_T: O(m^3) solver vs the dense Euler reference,
    two-sample z < 4.5 (<= 20 entries x 2 moments: family-wise false alarm < 1e-3); a reference
    whose noise covariance is 30% too large is rejected by the same bound (power)."""
    cfg = sf.ShapedConfig(tau0=1.2, gamma=0.4, heads=2)
    sde = sf.CovarianceSDE(cfg)
    v0 = 0.8 * jnp.eye(m) + 0.2 * jnp.ones((m, m)) / m
    T, steps, paths = 0.2, 10, 6000
    sol = sf.solve_sde(
        cfg, v0, T=T, num_samples=paths, key=key, num_steps=steps, save_times=2, bound=np.inf
    )
    # the reference never stops; a PSD exit here is rare enough (< 1 in 1000) not to matter
    assert sol.summary()["survived"] >= paths - paths // 1000
    i, j = np.triu_indices(m)
    ours = np.asarray(sol.vs[:, -1], np.float64)[:, i, j]

    def z_max(noise_scale):
        ref = _dense_euler(sde, v0, T, steps, paths, jr.fold_in(key, 7), noise_scale)
        ref = np.asarray(ref, np.float64)[:, i, j]
        z_mean = np.abs(ours.mean(0) - ref.mean(0)) / np.sqrt((ours.var(0) + ref.var(0)) / paths)

        # the variance of a sample variance: (mu_4 - sigma^4) / n
        def var_se(x):
            c = x - x.mean(0)
            return ((c**4).mean(0) - x.var(0) ** 2) / paths

        z_var = np.abs(ours.var(0) - ref.var(0)) / np.sqrt(var_se(ours) + var_se(ref))
        return max(z_mean.max(), z_var.max())

    assert z_max(1.0) < 4.5
    assert z_max(math.sqrt(1.3)) > 4.5


def test_batching_keeps_paths_and_no_recompilation(key, capsys, compiles):
    """Batches of 4 (padded) give the same paths as one batch; new T, bound and dt0 reuse the
    compiled solver (no XLA compilation); progress=True shows a bar over the batches."""
    kwargs = dict(key=key, num_steps=4, save_times=3)
    one = sf.solve_sde(LINEAR, V2, T=0.2, num_samples=10, **kwargs)
    batched = sf.solve_sde(LINEAR, V2, T=0.2, num_samples=10, batch_size=4, **kwargs)
    assert batched.stats["num_batches"] == 3 and one.stats["num_batches"] == 1
    np.testing.assert_array_equal(one.vs, batched.vs)
    np.testing.assert_array_equal(one.exit_reason, batched.exit_reason)
    before = compiles.count
    later = sf.solve_sde(LINEAR, V2, T=0.3, num_samples=10, **{**kwargs, "key": key}, bound=5.0)
    sf.solve_sde(LINEAR, V2, T=0.3, num_samples=10, key=key, dt0=0.075, save_times=3)
    assert compiles.count == before
    # progress within a batch is a host callback in the solver: its own program, same paths
    again = sf.solve_sde(LINEAR, V2, T=0.2, num_samples=10, batch_size=4, progress=True, **kwargs)
    np.testing.assert_array_equal(again.vs, one.vs)
    assert "SDE paths" in capsys.readouterr().err
    np.testing.assert_allclose(later.ts, [0.0, 0.15, 0.3], rtol=1e-6)


def test_memory_estimate_and_too_large_paths():
    """`sde_memory_estimate` within 2x of XLA's memory analysis of the compiled batch solver;
    a path that cannot fit the budget is refused before anything is allocated."""
    from sdeformer.sde import sde_memory_estimate
    from sdeformer.sde._batch import solve_batch

    cfg = sf.ShapedConfig()
    m, batch, k = 40, 4, 11
    sde = sf.CovarianceSDE(cfg)
    f32 = jnp.float32
    args = (
        sde,
        jnp.eye(m),
        jnp.linspace(0.0, 1.0, k),
        f32(1.0),
        f32(0.1),
        f32(1e3),
        f32(1e-4),
        jnp.zeros(2, jnp.uint32),
        jnp.arange(batch, dtype=jnp.uint32),
        "euler",
        16,
        False,
    )
    stats = solve_batch.lower(*args).compile().compiled.memory_analysis()
    used = stats.temp_size_in_bytes + stats.output_size_in_bytes + stats.argument_size_in_bytes
    estimate = sde_memory_estimate(m, k, batch)
    assert used / 2 <= estimate <= 2 * used, (estimate, used)
    with pytest.raises(ValueError, match=r"m = 40 tokens .* MiB .* memory_budget"):
        sf.solve_sde(cfg, jnp.eye(m), T=1.0, num_samples=4, key=jr.key(0), memory_budget=10_000)


def test_heun_from_the_identity_and_causal_stack(key):
    """Heun from V0 = I (repeated eigenvalues) takes finite steps (the Stratonovich correction
    differentiates the Cholesky factor, not an eigendecomposition); the causal stack with heads,
    Wo and an MLP ratio solves; the finite-width drift enters through `width`."""
    cfg = sf.ShapedConfig(tau0=1.0, gamma=0.5, heads=2, out_proj=True, mlp_ratio=2.0, causal=True)
    sol = sf.solve_sde(
        cfg, jnp.eye(3), T=0.1, num_samples=200, key=key, num_steps=10, solver="heun"
    )
    summary = sol.summary()
    assert summary["non_finite"] == 0 and summary["survived"] >= 190
    assert bool(jnp.all(jnp.isfinite(sol.vs)))
    v = jnp.array([[1.0, 0.3], [0.3, 0.8]])
    plain = sf.ShapedConfig(c_plus=0.5, c_minus=-2.0)
    c = sf.blocks.shaped_mlp.relu_slopes(plain, 64)[2]
    want = sf.ShapedAttention.drift(plain, v) + c * sf.ShapedMLP.drift(plain, v)
    np.testing.assert_allclose(sf.CovarianceSDE(plain, width=64).drift(v), want, rtol=1e-6)


def test_many_tokens_smoke(key):
    """m = 64: a few paths of the full layer run, stay finite and report their exits."""
    m = 64
    v0 = 0.5 * jnp.eye(m) + 0.5 * jnp.ones((m, m)) / m
    sol = sf.solve_sde(
        sf.ShapedConfig(), v0, T=0.01, num_samples=3, key=key, num_steps=5, save_times=2
    )
    assert sol.vs.shape == (3, 2, m, m) and bool(jnp.all(jnp.isfinite(sol.vs)))
    assert sol.summary()["survived"] == 3
