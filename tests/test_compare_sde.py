"""The SDE unit of `sdeformer compare` (sdeformer/cli/_compare_sde.py): `--steps auto` doubles
the steps while too many paths leave the PSD cone, and each refusal names options that fix it.

The solver is replaced by a stand-in whose failed fraction is a given function of the steps, so
the decision logic is tested exactly and in milliseconds; tests/test_sde_steps.py runs the real
command (refusal before any finite sample, reuse of the finite samples after an SDE change).
"""

from __future__ import annotations

import argparse
import re
from types import SimpleNamespace

import numpy as np
import pytest

from sdeformer.cli import _compare_sde
from sdeformer.compare import DiscretisationError
from sdeformer.sde import rule_z


class _Source:
    """A stand-in for CovarianceSamples: `fraction` of the paths failed by t = T."""

    def __init__(self, fraction: float):
        self.failed_fraction = np.array([0.0, fraction])

    def index_of(self, t: float) -> int:
        return int(t > 0)


def _args(steps: int, chosen_by: str = "auto", solver: str = "euler") -> argparse.Namespace:
    s2, T = 8.0, 1.0
    choice = {"steps": steps, "chosen_by": chosen_by, "z": rule_z(s2, T, steps), "s2": s2}
    return argparse.Namespace(
        steps=steps,
        steps_choice={**choice, "T": T, "coarse": False},
        solver=solver,
        max_failed_fraction=0.01,
        width=16,
    )


@pytest.fixture
def solves(monkeypatch):
    """Replace the solver: `solves.fraction(steps)` is the failed fraction; `solves.steps` the
    step counts it was called with."""
    record = SimpleNamespace(steps=[], fraction=lambda steps: 0.0)

    def fake_solve(config, v0, times, num_samples, key, args, width, label):
        record.steps.append(args.steps)
        return _Source(record.fraction(args.steps)), {"paths": num_samples}

    monkeypatch.setattr(_compare_sde, "_solve_sde", fake_solve)
    return record


PLAN = SimpleNamespace(config=None, v0=None, sizes={"sde": 300})


def _solve(args):
    return _compare_sde.solve_checked(PLAN, None, [0.5, 1.0], None, args, "SDE")


def test_auto_doubles_the_steps_until_the_paths_stay_in_the_cone(solves, capsys):
    solves.fraction = lambda steps: {128: 0.03, 256: 0.013}.get(steps, 0.0067)
    args = _args(128)
    sde, _ = _solve(args)
    assert solves.steps == [128, 256, 512]
    assert args.steps == 512 and args.steps_choice["steps"] == 512
    assert args.steps_choice["z"] == pytest.approx(rule_z(8.0, 1.0, 512))
    err = capsys.readouterr().err
    assert "3.00% of the paths left the PSD cone at 128 euler steps" in err
    assert "solving again with 256 steps" in err and "solving again with 512 steps" in err
    assert sde.failed_fraction[1] == pytest.approx(0.0067)


def test_auto_stops_doubling_and_names_the_exponential_solver(solves):
    solves.fraction = lambda steps: 0.05  # the SDE's own exits: more steps do not help
    with pytest.raises(DiscretisationError) as caught:
        _solve(_args(100))
    assert solves.steps == [100, 200, 400, 800]  # AUTO_DOUBLINGS = 3
    message = str(caught.value)
    assert "after doubling the step rule's steps 3 times" in message
    assert "--solver exponential" in message and "--steps" not in message.split(";")[1]
    assert _accepted(message) >= 0.05  # the named --max-failed-fraction admits this run


@pytest.mark.parametrize(
    "chosen_by, solver, named, not_named",
    [
        ("user", "euler", ["--steps auto", "--steps 256", "--solver exponential"], []),
        ("auto", "exponential", [], ["--solver", "--steps"]),  # only the accepted fraction
    ],
)
def test_one_solve_without_doubling_and_the_refusal_names_the_fixes(
    solves, chosen_by, solver, named, not_named
):
    """Explicit steps are never changed, the exponential solver never doubled."""
    solves.fraction = lambda steps: 0.03
    with pytest.raises(DiscretisationError) as caught:
        _solve(_args(128, chosen_by=chosen_by, solver=solver))
    assert solves.steps == [128]
    message = str(caught.value)
    assert f"at 128 {solver} steps" in message
    assert all(text in message for text in named), message
    assert not any(text in message.split("; ")[1] for text in not_named), message
    assert _accepted(message) >= 0.03


def test_a_run_inside_the_threshold_is_solved_once(solves, capsys):
    solves.fraction = lambda steps: 0.01  # at the threshold: accepted
    args = _args(128)
    _solve(args)
    assert solves.steps == [128] and args.steps == 128
    assert capsys.readouterr().err == ""


def _accepted(message: str) -> float:
    """The --max-failed-fraction a refusal names."""
    return float(re.search(r"--max-failed-fraction (\d[\d.e-]*) to exclude", message)[1])


def test_sde_settings_hold_what_only_the_sde_depends_on():
    args = argparse.Namespace(
        steps_choice={"chosen_by": "auto", "steps": 512},
        solver="heun",
        finite_width_sde=True,
    )
    assert _compare_sde.sde_settings(args, 300) == {
        "steps": "auto", "solver": "heun", "num_samples": 300, "finite_width_sde": True,
    }  # fmt: skip
    args.steps_choice["chosen_by"] = "user"
    assert _compare_sde.sde_settings(args, 300)["steps"] == 512
