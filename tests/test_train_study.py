"""The training study: stability criterion, bitwise resume from checkpoints, unit bookkeeping.

One tiny setting (width 16, depth 2, 16 tokens) so that each compiled group program is built once
per test session."""

from __future__ import annotations

import json
import zlib

import jax
import jax.random as jr
import numpy as np
import pytest

from sdeformer.cli import main
from sdeformer.cli.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from sdeformer.cli.train_study import run_group_with_checkpoints
from sdeformer.results import ResultsError
from sdeformer.train.criterion import classify, mean_interval, spike_ratio, summarise_study
from sdeformer.train.data import CopyTask
from sdeformer.train.group import GroupTrainer, data_key, init_key, run_id
from sdeformer.train.loop import TrainConfig
from sdeformer.train.lr_sweep import ModelSpec
from sdeformer.train.study import PROFILES, canonical, groups

SPEC = ModelSpec(width=16, depth=2, vocab=16, seq_len=16)
CFG = TrainConfig(steps=40, batch_size=4, warmup=4, eval_every=10, eval_batch_size=8)
TASK = CopyTask(16, 16)
LRS = (0.03, 1e4)  # a trainable lr and one that diverges at once


# ------------------------------------------------------------------------------- criterion


def _run(lr, seed, loss, *, diverged=False, blocks=(5.0, 4.0, 3.0), kind="shaped", depth=4):
    return {
        "kind": kind,
        "depth": depth,
        "lr": lr,
        "seed": seed,
        "diverged": diverged,
        "final_val_loss": None if diverged else loss,
        "loss_blocks": list(blocks),
        "init_token_correlation": 0.3,
        "final_token_correlation": None if diverged else 0.5,
        "tokens_per_second": 1000.0,
    }


def test_spike_ratio():
    assert spike_ratio([]) == 1.0
    assert spike_ratio([3.0]) == 1.0
    assert spike_ratio([5.0, 3.0, 2.0]) == 1.0  # decreasing: no spike
    assert spike_ratio([5.0, 2.0, 2.5, 3.2]) == pytest.approx(1.6)  # against the running min


def test_criterion_classifies_divergence_spike_and_margin():
    runs = []
    for seed in range(3):
        runs += [
            _run(0.01, seed, 2.60),  # more than 5 % above the best (2.40): margin
            _run(0.1, seed, 2.40 + 0.01 * seed),  # the best lr (median 2.41)
            _run(0.3, seed, 2.50),  # 3.7 % above: stable
            _run(1.0, seed, 2.45, blocks=(5.0, 2.5, 3.9)),  # 3.9 / 2.5 = 1.56 > 1.5: spike
            _run(3.0, seed, None, diverged=True),
        ]
    # A spiked run with a low loss must not set the best loss of the kind.
    runs[3]["final_val_loss"] = 1.0
    out = {(r["lr"], r["seed"]): r for r in classify(runs)}
    assert out[(0.1, 0)]["best_of_kind"] == pytest.approx(2.41)
    assert out[(0.01, 0)]["unstable_reasons"] == ["margin"]
    assert not out[(0.1, 2)]["unstable"] and not out[(0.3, 1)]["unstable"]
    assert out[(1.0, 0)]["unstable_reasons"] == ["spike"]
    assert out[(3.0, 0)]["unstable_reasons"] == ["diverged"]
    summary = summarise_study(runs)
    (cell,) = summary["cells"]
    assert cell["largest_stable_lr"]["per_seed"] == {"0": 0.3, "1": 0.3, "2": 0.3}
    assert cell["largest_stable_lr"]["median"] == 0.3
    assert cell["best_lr"] == 0.1
    # mean 2.41, sd 0.01, 95 % t half-width 4.303 * 0.01 / sqrt(3)
    assert cell["best_val_loss"]["mean"] == pytest.approx(2.41)
    assert cell["best_val_loss"]["ci95"] == pytest.approx(4.303 * 0.01 / np.sqrt(3))


def test_paired_difference_against_shaped():
    runs = [_run(0.1, s, 2.5 + 0.01 * s) for s in range(3)]
    runs += [_run(0.1, s, 2.4 + 0.01 * s, kind="shaped-learn") for s in range(3)]
    (pair,) = summarise_study(runs)["vs_shaped"]
    assert pair["kind"] == "shaped-learn"
    assert pair["minus_shaped"]["mean"] == pytest.approx(-0.1)
    assert pair["minus_shaped"]["ci95"] == pytest.approx(0.0, abs=1e-9)
    assert mean_interval([None]) is None


# --------------------------------------------------------------------------- bookkeeping


def test_unit_ids_are_stable_and_independent_of_option_order():
    base = PROFILES["tiny"]
    shuffled = canonical(
        base.replace(kinds=tuple(reversed(base.kinds)), lrs=tuple(reversed(base.lrs)))
    )
    assert shuffled.settings() == base.settings()
    ids = [g.run_ids(base.lrs) for g in groups(base)]
    assert ids == [g.run_ids(shuffled.lrs) for g in groups(shuffled)]
    assert run_id("shaped", 16, 0.1, 2) == "shaped_d16_lr=0.1_s2"
    # Seeds are folded from stable string ids (crc32), not from positions in the lists.
    expected = jr.fold_in(jr.key(0), zlib.crc32(b"init:d4:s1") & 0x7FFFFFFF)
    assert np.array_equal(jr.key_data(init_key(4, 1)), jr.key_data(expected))
    assert not np.array_equal(jr.key_data(init_key(4, 1)), jr.key_data(init_key(16, 1)))
    assert not np.array_equal(jr.key_data(data_key(0)), jr.key_data(data_key(1)))
    # Run order: seed by seed, so a partial study has every cell with fewer seeds.
    seeds = [g.seed for g in groups(base)]
    assert seeds == sorted(seeds)


# ------------------------------------------------------------------- checkpoint and resume


def _same(a, b) -> bool:
    same = jax.tree.map(
        lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)), a, b
    )
    return jax.tree.all(same)


@pytest.mark.parametrize("kind", ["shaped-learn"])
def test_interrupted_group_resumes_bitwise(tmp_path, kind):
    trainer = GroupTrainer(SPEC, kind, CFG, LRS, 0)
    full, _ = trainer.run(None, TASK, TASK)
    # "Killed" after 20 of 40 steps (the last checkpoint is at step 20), then resumed by a
    # fresh trainer, as a new process would.
    part, _, resumed = run_group_with_checkpoints(
        trainer, TASK, TASK, tmp_path, every=1, stop_after=20
    )
    assert resumed is None and int(part["step"]) == 20
    again = GroupTrainer(SPEC, kind, CFG, LRS, 0)
    state, _, resumed = run_group_with_checkpoints(again, TASK, TASK, tmp_path, every=1)
    assert resumed == 20
    # Bitwise: the same compiled chunks on the same inputs (data and keys are functions of the
    # step), so weights, optimiser state and every record are identical, not just close.
    assert _same(full, state)
    results = again.results(state)
    assert not results[0]["diverged"] and results[1]["diverged"]
    assert results[1]["divergence_reason"] is not None
    assert results[0]["final_val_loss"] < results[0]["evals"][0]["val_loss"]
    json.dumps(results, allow_nan=False)  # no NaN ever reaches a result


def test_checkpoint_of_another_group_is_refused(tmp_path):
    trainer = GroupTrainer(SPEC, "shaped-learn", CFG, LRS, 0)
    save_checkpoint(tmp_path, trainer, trainer.init_state())
    other = GroupTrainer(SPEC, "shaped-learn", CFG, (0.01, 1e4), 0)  # same id, other lrs
    assert checkpoint_path(tmp_path, other) == checkpoint_path(tmp_path, trainer)
    with pytest.raises(ResultsError, match="another run"):
        load_checkpoint(tmp_path, other)


def test_study_cli_resumes_and_skips_finished_units(tmp_path, capsys):
    args = ["train-study", "--profile", "tiny", "--kinds", "shaped", "--depths", "2",
            "--lrs", "10,0.1", "--seeds", "2", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main([*args, "--max-groups", "1"]) == 0
    units = sorted((tmp_path / "units").glob("*.json"))
    assert [u.name for u in units] == ["shaped_d2_lr=0.1_s0.json", "shaped_d2_lr=10_s0.json"]
    first = {u.name: u.stat().st_mtime_ns for u in units}
    report = json.loads((tmp_path / "train_study.json").read_text())
    assert not report["complete"] and report["runs_done"] == 2
    # The lrs in another order name the same units; finished units are not recomputed.
    args[args.index("10,0.1")] = "0.1,10"
    assert main(args) == 0
    units = sorted((tmp_path / "units").glob("*.json"))
    assert len(units) == 4
    assert all(u.stat().st_mtime_ns == first[u.name] for u in units if u.name in first)
    report = json.loads((tmp_path / "train_study.json").read_text())
    assert report["complete"]
    (cell,) = report["cells"]
    assert cell["largest_stable_lr"]["per_seed"] == {"0": 0.1, "1": 0.1}
    assert (tmp_path / "train_study_stability.png").stat().st_size > 0
    assert "largest stable lr" in capsys.readouterr().out
