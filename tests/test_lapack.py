"""Batched LAPACK calls that cannot deadlock (sdeformer/_lapack.py) and the SDE that used them.

The hang (docs/usage.md, "Known problems"): jaxlib 0.10 on a CPU splits a batched LAPACK call
over the intra-op pool and blocks a pool thread until it is done; two such calls side by side in
a compiled loop on a 2-thread pool wait for each other forever. Every program that could hang
runs in a subprocess with a wall-clock limit, so a hang fails the test instead of stalling CI.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from sdeformer import _lapack

ROOT = pathlib.Path(__file__).resolve().parents[1]
FULL = os.environ.get("SDEFORMER_FULL") == "1"


def _run(code: str, limit: float) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with the package; fail (not hang) past `limit` s."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=limit,
            env=env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the program did not finish within {limit} s (a hang):\n{code}")


# The minimal reproduction: a loop whose body takes two independent batched Cholesky
# factorisations (125 matrices of 32 x 32, indefinite after a few steps). With
# jax.lax.linalg.cholesky it hangs at 0 % CPU on a 2-core machine (jaxlib 0.10.2); with
# `_lapack.cholesky` it finishes in well under a second.
MINIMAL = """
    import jax, jax.numpy as jnp, numpy as np
    from sdeformer import _lapack
    chol = {chol}
    m = 32
    def body(i, v):
        a = chol(v)
        b = chol(v + 0.01 * jnp.eye(m))
        s = jnp.where(jnp.isfinite(a), a, 0.0) + jnp.where(jnp.isfinite(b), b, 0.0)
        return v + 1e-3 * (s @ jnp.swapaxes(s, -1, -2)) - 1e-3 * i * jnp.eye(m)
    A = np.random.default_rng(0).standard_normal((125, m, m)).astype(np.float32)
    v = jnp.asarray(A @ A.transpose(0, 2, 1) / m)
    jax.jit(lambda v: jax.lax.fori_loop(0, 200, body, v))(v).block_until_ready()
    print("finished")
"""


def test_minimal_reproduction_finishes_with_the_workaround():
    out = _run(MINIMAL.format(chol="_lapack.cholesky"), limit=90)
    assert out.returncode == 0, out.stderr
    assert "finished" in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="documents the jaxlib bug itself: 40 s of a hung process")
def test_minimal_reproduction_hangs_without_the_workaround():
    """The upstream bug this module works around; fails once jaxlib no longer has it.

    Seen with jaxlib 0.10.2 on a 2-core CPU. When this test fails (the plain call finishes),
    the jaxlib in use no longer splits LAPACK batches and `sdeformer._lapack` can be retired.
    """
    code = textwrap.dedent(
        MINIMAL.format(chol="lambda a: jax.lax.linalg.cholesky(a, symmetrize_input=False)")
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=40, env=env)


def _stack(key, b, m, *, indefinite=0):
    a = jr.normal(key, (b, m, m))
    v = a @ jnp.swapaxes(a, -1, -2) / m + 0.1 * jnp.eye(m)
    if indefinite:
        v = v.at[:indefinite].add(-10.0 * jnp.eye(m))
    return v


@pytest.mark.parametrize("m", [3, 32])
def test_same_results_as_jax_in_chunks_and_under_vmap(m):
    """Chunked calls (batch over jaxlib's split size) give jax.numpy's numbers, batched or not."""
    chunk = _lapack.safe_chunk(m**3 // 3)
    b = 2 * chunk + 3 if m == 32 else 7  # several chunks and a remainder at m = 32
    v = _stack(jr.key(m), b, m, indefinite=2)
    expected = jnp.linalg.cholesky(v)
    got = jax.jit(_lapack.cholesky)(v)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))  # NaN where it fails
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    nested = jax.jit(jax.vmap(jax.vmap(_lapack.cholesky)))(v[: (b // 2) * 2].reshape(2, -1, m, m))
    np.testing.assert_array_equal(nested.reshape(-1, m, m), got[: (b // 2) * 2])
    w, u = jax.jit(_lapack.eigh)(v)
    np.testing.assert_allclose(w, jnp.linalg.eigvalsh(v), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose((u * w[..., None, :]) @ jnp.swapaxes(u, -1, -2), v, atol=1e-3)
    np.testing.assert_allclose(jax.vmap(_lapack.eigvalsh)(v), w, rtol=1e-5, atol=1e-5)
    pd = v[2:]
    low = jnp.linalg.cholesky(pd)
    x = jax.vmap(lambda l_, b_: _lapack.solve_triangular(l_, b_, lower=True))(low, pd)
    np.testing.assert_allclose(low @ x, pd, rtol=1e-3, atol=1e-3)
    x_up = _lapack.solve_triangular(jnp.swapaxes(low, -1, -2), pd, lower=False)
    np.testing.assert_allclose(jnp.swapaxes(low, -1, -2) @ x_up, pd, rtol=1e-3, atol=1e-3)
    g = jr.normal(jr.key(1), (b, 2 * m, m))
    r = _lapack.qr_r(g)
    np.testing.assert_allclose(jnp.abs(r), jnp.abs(jnp.linalg.qr(g, mode="r")), atol=1e-4)


def test_chunks_stay_below_the_split_size():
    """The chunk times jaxlib's cost per matrix is below its split threshold; never 0."""
    for cost in [1, 21, 10_922, 163_840, 199_999, 200_000, 10**8]:
        chunk = _lapack.safe_chunk(cost)
        assert chunk >= 1
        assert chunk == 1 or chunk * cost < _lapack.LAPACK_MIN_WORK


def test_forward_mode_derivative_goes_through():
    """jax.jvp of a chunked factorisation equals the plain one's (the SDE uses forward mode)."""
    v = _stack(jr.key(3), 40, 32)
    dv = _stack(jr.key(4), 40, 32)
    _, got = jax.jvp(_lapack.cholesky, (v,), (dv,))
    _, expected = jax.jvp(jnp.linalg.cholesky, (v,), (dv,))
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_no_factorisation_outside_the_module():
    """Every batched LAPACK call of the package goes through sdeformer._lapack."""
    pattern = re.compile(
        r"jnp\.linalg\.(cholesky|eigh|eigvalsh|qr|solve|inv)\b|solve_triangular|cho_solve"
        r"|lax\.linalg\.|jsl\.|jax\.scipy\.linalg"
    )
    offenders = []
    for path in sorted((ROOT / "sdeformer").rglob("*.py")):
        if path.name == "_lapack.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and "_lapack." not in code and "`" not in code:
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "call sdeformer._lapack instead:\n" + "\n".join(offenders)


# solve_sde at the sizes and steps that hung (issue "Nothing hangs"): m, paths, T, steps, solver,
# config. Coarse steps make paths leave the PSD cone, which runs the factorisation's fallback.
SHAPED = "tau0=1.0, gamma=0.4, c_plus=0.0, c_minus=-1.0"
ORDINARY = "tau0=1.2, gamma=0.6, c_plus=0.3, c_minus=-0.8"
CASES = [
    (4, 12000, 1.0, 25, "euler", ORDINARY),  # coarse: m T / steps = 0.16
    (8, 2000, 1.0, 20, "euler", SHAPED),
    (32, 125, 1.0, 100, "euler", SHAPED),  # the call of the issue
    (32, 64, 0.5, 400, "euler", SHAPED),  # a stable step
    (64, 64, 1.0, 50, "euler", SHAPED),
    (32, 64, 1.0, 50, "exponential", SHAPED),
]
if FULL:
    CASES += [
        (4, 12000, 1.0, 25, "euler", ORDINARY + ", causal=True"),
        (8, 2000, 1.0, 20, "heun", SHAPED),
        (32, 125, 0.2, 20, "euler", SHAPED),
        (4, 20000, 1.0, 400, "euler", ORDINARY),  # stable: m T / steps = 0.01
        (4, 12000, 1.0, 400, "euler", ORDINARY + ", causal=True"),
        (64, 256, 1.0, 200, "euler", SHAPED),
    ]


@pytest.mark.parametrize("m, paths, T, steps, solver, config", CASES)
def test_solve_sde_returns_with_the_exits_counted(m, paths, T, steps, solver, config):
    code = f"""
        import json, numpy as np, jax.numpy as jnp, jax.random as jr, sdeformer as sdf
        c = sdf.ShapedConfig({config})
        m = {m}
        A = np.random.default_rng(m).standard_normal((m, 2 * m))
        v0 = jnp.asarray(A @ A.T / (4 * m) + 0.5 * np.eye(m), jnp.float32)
        s = sdf.solve_sde(c, v0, T={T}, num_samples={paths}, key=jr.key(1), num_steps={steps},
                          save_times=2, solver={solver!r})
        codes = np.bincount(np.asarray(s.exit_reason), minlength=5)
        print(json.dumps([int(x) for x in codes]))
    """
    out = _run(code, limit=240)
    assert out.returncode == 0, out.stderr
    codes = np.asarray(json.loads(out.stdout.strip().splitlines()[-1]))
    assert codes.sum() == paths
    assert codes[4] == 0  # no path stopped by the step budget
    if solver == "exponential":
        assert codes[1] == 0  # positive definite by construction
