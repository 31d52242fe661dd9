"""The SDE step rule (sdeformer/sde/_steps.py) and `--steps auto` on the command line."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdeformer as sdf
from sdeformer.cli import main
from sdeformer.sde import MAX_DT, STEP_RULE_Z, rule_steps, rule_z, step_noise_scale

DEFAULT = sdf.ShapedConfig(tau0=1.0, gamma=0.4, c_minus=-1.0)


def _v0(m, rho=0.5):
    return jnp.asarray((1 - rho) * np.eye(m) + rho, jnp.float32)


def test_noise_scale_is_deterministic_and_grows_with_the_tokens():
    """s2 is the same every call (fixed draws) and grows about linearly in m (GOE edge)."""
    s = [step_noise_scale(DEFAULT, _v0(m)) for m in (2, 4, 8)]
    assert s[0] == step_noise_scale(DEFAULT, _v0(2))
    assert s[0] < s[1] < s[2]
    assert 1.5 < s[2] / s[1] < 3.5  # linear growth would be 2


def test_rule_steps_and_z_agree():
    """The suggested count is the fewest inside the rule (z >= 4) and takes no step above MAX_DT."""
    for s2, T in [(1.7, 1.0), (67.4, 1.0), (13.3, 2.0), (0.01, 3.0)]:
        steps = rule_steps(s2, T)
        assert rule_z(s2, T, steps) >= STEP_RULE_Z - 1e-9
        assert T / steps <= MAX_DT + 1e-12
        if steps > math.ceil(T / MAX_DT):  # the rule binds: one step fewer is outside it
            assert rule_z(s2, T, steps - 1) < STEP_RULE_Z
    with pytest.raises(ValueError, match="T=0.0"):
        sdf.suggest_num_steps(DEFAULT, _v0(2), 0.0)


def test_suggested_steps_leave_the_cone_no_more_than_finer_steps():
    """At the suggested step the fraction of Euler paths that leave the PSD cone is that of a 4x
    finer step within 3 binomial standard errors (what is left is the SDE reaching a singular V,
    not discretisation); a step 8x coarser than the suggestion (z = 1.4) loses far more."""
    config = sdf.ShapedConfig(tau0=1.2, gamma=0.6, c_plus=0.3, c_minus=-0.8)
    v0, paths = _v0(4), 3000
    steps = sdf.suggest_num_steps(config, v0, 1.0)

    def left(k):
        sol = sdf.solve_sde(
            config, v0, T=1.0, num_samples=paths, key=jr.key(5), num_steps=k, save_times=2
        )
        return float(np.mean(np.asarray(sol.exit_reason) == 1))

    at_rule, finer, coarse = left(steps), left(4 * steps), left(max(steps // 8, 2))
    se = math.sqrt(max(finer, 1 / paths) * (1 - finer) / paths)
    assert abs(at_rule - finer) <= 3 * math.sqrt(2) * se, (at_rule, finer)
    assert coarse > finer + 10 * se, (coarse, finer)


def test_compare_refuses_a_coarse_step_before_any_work(tmp_path, capsys):
    """--steps outside the rule exits 2 naming the rule, the count needed and the exponential
    solver, and writes nothing; the count it names runs in the same folder."""
    out = tmp_path / "c"
    small = ["compare", "--tokens", "8", "--width", "8", "--method", "law", "--no-progress"]
    small += ["--gamma", "0.4"]  # DEFAULT's gamma
    small += ["--samples", "64", "--moment-samples", "0", "--out", str(out)]
    assert main([*small, "--steps", "10"]) == 2
    err = capsys.readouterr().err
    assert "--steps 10 is outside the step rule" in err and "--solver exponential" in err
    assert "--allow-coarse-steps" in err
    assert not out.exists()
    needed = int(err.split("the rule's ")[1].split()[0])
    assert f"--steps {needed} or more" in err
    assert needed == rule_steps(step_noise_scale(DEFAULT, _v0(8, 0.3)), 1.0)
    assert main([*small, "--steps", str(needed), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sde_steps"]["chosen_by"] == "user" and report["sde_steps"]["steps"] == needed
    auto = tmp_path / "auto"
    small[-1] = str(auto)
    both = ["--method", "both"]  # --samples counts the explicit networks too (64 < 400)
    assert main([*small, *both, "--json"]) == 0  # --steps auto is the default
    report = json.loads(capsys.readouterr().out)
    assert report["sde_steps"] == {**report["sde_steps"], "chosen_by": "auto", "steps": needed}
    assert report["settings"]["num_samples"] == {"law": 64, "explicit": 64}
    assert report["settings"]["sde"] == {
        "steps": "auto", "solver": "euler", "num_samples": 64, "finite_width_sde": False,
    }  # fmt: skip
    config = json.loads((auto / "config.json").read_text())
    assert config["steps"] == needed  # the choice is recorded
    coarse = tmp_path / "coarse"
    small[-1] = str(coarse)
    code = main([*small, "--steps", "10", "--allow-coarse-steps", "--json"])
    # it runs, and at z = 0.87 every path leaves the cone: refused above --max-failed-fraction
    # after the SDE alone (before any finite sample), and the folder it created is removed
    assert code == 2
    err = capsys.readouterr().err
    assert "100.00% of the paths left the PSD cone" in err and "--steps auto" in err
    assert "--solver exponential" in err and "suggest_num_steps" not in err  # flags, not API
    assert not coarse.exists()
    assert main([*small, "--json"]) == 0  # the fix (the rule's steps) works in the same folder
    assert json.loads(capsys.readouterr().out)["sde_steps"]["steps"] == needed
    small[-1] = str(out)  # the first run's folder: everything is reused, and it says so
    assert main([*small, "--steps", str(needed)]) == 0
    assert "resumed: reused sde, law from the earlier run" in capsys.readouterr().out
    # a changed SDE setting solves the SDE again and reuses the finite samples
    assert main([*small, "--steps", str(needed), "--solver", "exponential"]) == 0
    captured = capsys.readouterr()
    assert "the SDE's settings changed (solver 'euler' -> 'exponential')" in captured.err
    assert "resumed: reused law from the earlier run" in captured.out
    assert "computed sde" in captured.out
