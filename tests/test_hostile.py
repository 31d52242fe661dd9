"""Hostile input: each refused with a clear error, under jit too, and nothing written half-way.

(Host-side checks of V0 and sizes are in test_model.py, test_laws.py, test_sde.py and
test_cli.py; this file adds the traced V0, the command-line cases and disk-full.)
"""

import errno
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

from sdeformer import ShapedConfig, law_covariance_paths, solve_sde
from sdeformer.cli import main
from sdeformer.config import check_covariance

RUNTIME_ERRORS = (RuntimeError, ValueError)
TINY = ["--width", "8", "--depth", "4", "--tokens", "3", "--samples", "2", "--no-progress"]
GOOD = jnp.array([[1.0, 0.3], [0.3, 1.0]])
BAD = [
    (jnp.array([[1.0, jnp.nan], [jnp.nan, 1.0]]), "non-finite"),
    (jnp.array([[1.0, jnp.inf], [jnp.inf, 1.0]]), "non-finite"),
    (jnp.array([[1.0, 0.5], [0.1, 1.0]]), "not symmetric"),
    (jnp.array([[1.0, 2.0], [2.0, 1.0]]), "not positive semi-definite"),
]


def test_traced_covariance_checked_at_run_time():
    """A traced V0 cannot be checked on the host: the checks run on device (eqx.error_if) and
    raise when the jitted function runs, with the host check's message."""
    for checked in (eqx.filter_jit(check_covariance), jax.jit(check_covariance)):
        assert jnp.array_equal(checked(GOOD), GOOD)
        for v0, fragment in BAD:
            # EquinoxRuntimeError under eqx.filter_jit; under jax.jit JAX wraps the message in
            # its own error (JaxRuntimeError, or ValueError "CpuCallback error" on some paths)
            with pytest.raises(RUNTIME_ERRORS, match=fragment):
                jax.block_until_ready(checked(v0))
    with pytest.raises(ValueError, match="need m >= 2"):
        jax.jit(check_covariance)(jnp.ones((1, 1)))


def test_jitted_sampler_refuses_bad_traced_v0():
    config = ShapedConfig(blocks=("mlp",))

    @jax.jit
    def final(v0):
        return law_covariance_paths(config, v0, width=4, depth=1, num_samples=2, key=jr.key(0))[
            :, -1
        ]

    assert bool(jnp.all(jnp.isfinite(final(GOOD))))
    for v0, fragment in BAD[::2]:
        with pytest.raises(RUNTIME_ERRORS, match=fragment):
            jax.block_until_ready(final(v0))


def test_sde_refuses_bad_stopping_rule():
    for kwargs, fragment in [
        ({"bound": float("nan")}, "bound=nan"),
        ({"bound": 0.0}, "bound=0.0"),
        ({"psd_tol": -1.0}, "psd_tol=-1.0"),
        ({"psd_tol": float("inf")}, "psd_tol=inf"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            solve_sde(ShapedConfig(), GOOD, T=1.0, num_samples=2, key=jr.key(0), **kwargs)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["sweep-width", "--v0", "1,0.5;0.1,1"], "not symmetric"),
        (["sweep-width", "--v0", "1,nan;nan,1"], "non-finite"),
        (["sweep-width", "--v0", "1,2;2,1"], "not positive semi-definite"),
        (["sweep-width", "--v0", "1,2;2"], "is not a matrix"),
        (["sweep-width", "--v0", "1"], "need m >= 2"),
        (["sweep-width", "--widths", "2,4", "--T", "0.1"], "gives round(T n) = 0 layers"),
        (["sweep-width", "--widths", "8,16", "--T", "nan"], "T=nan"),
        (["sweep-width", "--widths", "1,8"], "each >= the number of tokens"),
        (["compare", "--bound", "nan"], "--bound nan"),
        (["compare", "--T", "inf"], "T=inf"),
    ],
)
def test_bad_command_lines_write_nothing(argv, fragment, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out), "--no-progress"]) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["rank-collapse", "--bogus"],
        ["rank-collapse", "--width", "0"],
        ["rank-collapse", "--depth", "0"],
        ["sweep-width", "--samples", "-3"],
        ["nonsense"],
    ],
)
def test_unknown_or_nonpositive_options(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_disk_full_mid_sweep(tmp_path, monkeypatch, capsys):
    """The disk fills up while the second unit is written: a clear message, exit status 1, the
    first unit intact, no temporary left; once there is space the rerun resumes."""
    out = tmp_path / "rc"
    argv = ["rank-collapse", *TINY, "--out", str(out), "--kinds", "shaped,unshaped"]
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.startswith(".unshaped.json."):
            real(self, "{")
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "rerun the same command to resume" in err
    assert sorted(p.name for p in (out / "units").iterdir()) == ["shaped.json"]
    assert [p for p in out.rglob("*") if p.name.endswith(".tmp")] == []
    assert not (out / "rank_collapse.json").exists()
    monkeypatch.undo()
    assert main(argv) == 0
    assert (out / "units" / "unshaped.json").exists()


def test_one_step_moments_key_impl_is_explicit():
    """The key conversion is a documented keyword, and key_impl=None keeps the user's key."""
    from sdeformer import one_step_moments

    cfg = ShapedConfig(blocks=("attention",))
    v = GOOD
    key = jr.key(5)  # threefry
    default = one_step_moments(cfg, v, width=8, num_samples=2, key=key)
    rbg = jr.wrap_key_data(jr.bits(key, (4,), jnp.uint32), impl="rbg")
    same = one_step_moments(cfg, v, width=8, num_samples=2, key=rbg, key_impl=None)
    assert jnp.array_equal(default.drift, same.drift)  # the documented conversion, exactly
    kept = one_step_moments(cfg, v, width=8, num_samples=2, key=key, key_impl=None)
    assert not jnp.array_equal(default.drift, kept.drift)  # threefry draws: other networks
    assert jnp.all(jnp.isfinite(kept.drift))
    with pytest.raises(ValueError, match="key_impl='threefry'"):
        one_step_moments(cfg, v, width=8, num_samples=2, key=key, key_impl="threefry")
