"""Training: the LM wrapper matches the blocks, schedules, the loop (learning, no recompilation,
divergence) and the resumable sweep. One small setting shared by all tests, so that the compiled
train step is reused across them (the step is cached by its static part)."""

from __future__ import annotations

import dataclasses
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from sdeformer import ShapedConfig, ShapedTransformer
from sdeformer.cli import main
from sdeformer.results import ResultStore
from sdeformer.train import (
    LaneTrainer,
    Shaping,
    ShapingSchedule,
    TrainConfig,
    loop,
    train,
)
from sdeformer.train.data import CopyTask
from sdeformer.train.lm import plain_stack, shaped_stack
from sdeformer.train.lr_sweep import ModelSpec, run_sweep

SPEC = ModelSpec(width=16, depth=2, vocab=16, seq_len=16)
CFG = TrainConfig(steps=40, batch_size=16, lr=0.03, warmup=5, eval_every=20, eval_batch_size=64)
TASK = CopyTask(16, 16)


def _x(key, m=6, n=16):
    return jr.normal(key, (m, n))


def test_fixed_shaping_is_exactly_the_shaped_blocks(key):
    config = ShapedConfig(causal=True, tau0=0.7, c_plus=0.5, c_minus=-2.0, heads=2)
    body = ShapedTransformer(config, 16, 3, key=key)
    x = _x(jr.fold_in(key, 1))
    shaped = jax.jit(shaped_stack)(body, Shaping.shaped(config, 16, 3), x)
    reference = jax.jit(plain_stack)(body, x)
    np.testing.assert_allclose(shaped, reference, rtol=1e-5, atol=1e-5)


def test_standard_shaping_is_softmax_attention_and_relu(key):
    n = 16
    config = ShapedConfig(causal=True, heads=2)
    body = ShapedTransformer(config, n, 3, key=key)
    # The same weights (same key, same shapes) as standard attention + a ReLU MLP:
    # s_minus = 1 + c_minus / sqrt(n) = 0 and s_plus = 1.
    standard = config.replace(blocks=("standard_attention", "mlp"), c_plus=0.0, c_minus=-4.0)
    reference_body = ShapedTransformer(standard, n, 3, key=key)
    x = _x(jr.fold_in(key, 2))
    out = jax.jit(shaped_stack)(body, Shaping.standard(3), x)
    reference = jax.jit(plain_stack)(reference_body, x)
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, jax.jit(plain_stack)(body, x), atol=1e-2)


def test_schedules():
    config = ShapedConfig()
    initial = Shaping.shaped(config, 16, 2)
    model_scalars = jax.tree.map(lambda a: a + 0.25, initial)
    recover = ShapingSchedule("recover", 0.2, 0.6)
    at = {s: recover.apply(model_scalars, initial, jnp.asarray(s), 100) for s in (0, 20, 40, 60)}
    np.testing.assert_allclose(at[0].beta, 1.0 / math.sqrt(16))
    np.testing.assert_allclose(at[20].identity, 1.0)
    np.testing.assert_allclose(at[40].identity, 0.5)
    np.testing.assert_allclose(at[40].s_minus, 0.5 * (1 - 1 / 4))
    for name, value in (("identity", 0.0), ("beta", 1.0), ("s_plus", 1.0), ("s_minus", 0.0)):
        np.testing.assert_allclose(getattr(at[60], name), value)
    fixed = ShapingSchedule("fixed").apply(model_scalars, initial, jnp.asarray(50), 100)
    assert jax.tree.all(jax.tree.map(jnp.array_equal, fixed, initial))
    learn = ShapingSchedule("learn").apply(model_scalars, initial, jnp.asarray(50), 100)
    assert learn is model_scalars
    with pytest.raises(ValueError, match="start < end"):
        ShapingSchedule("recover", 0.5, 0.5)


def _initial_val_loss(model, schedule):
    trainer = LaneTrainer(model, CFG, [CFG.lr], data_key=jr.key(1), schedule=schedule)
    state, _ = trainer.run(None, TASK, TASK, stop_after=0)  # only the evaluation at step 0
    return float(state["val_loss"][0, 0])


@pytest.mark.parametrize("kind", list(loop.MODEL_KINDS))
def test_a_few_steps_reduce_the_loss(kind):
    model, schedule = SPEC.build(kind, key=jr.key(0))
    before = _initial_val_loss(model, schedule)
    result = train(model, TASK, TASK, CFG, key=jr.key(1), schedule=schedule)
    assert not result.diverged and result.traces <= 1
    # Copy task, vocab 16: symbols uniform on 14 values, so ln(14) = 2.64 is the loss of the
    # best prediction that does not copy; an untrained model is well above it.
    assert before > math.log(14) + 0.15
    assert result.final_val_loss < before - 0.15
    assert [e["step"] for e in result.evals] == [20, 40]
    assert {"loss", "grad_norm", "lr"} <= set(result.history[0])
    assert 0.0 < result.final_token_correlation < 1.0
    if kind == "shaped-recover":
        assert result.final_shaping == {"identity": 0, "beta": 1, "s_plus": 1, "s_minus": 0}
    if kind == "shaped-learn":
        assert result.final_shaping["beta"] != pytest.approx(0.25, abs=1e-4)  # it was trained


def test_no_recompilation_after_the_first_step():
    cfg = dataclasses.replace(CFG, steps=14, eval_every=7)  # a static setting no other test has
    model, schedule = SPEC.build("shaped", key=jr.key(3))
    trainer = LaneTrainer(model, cfg, [cfg.lr], data_key=jr.key(0), schedule=schedule)
    state, _ = trainer.run(None, TASK, TASK, stop_after=7)
    assert int(state["step"]) == 7 and trainer.traces == 1
    state, _ = trainer.run(state, TASK, TASK)
    assert int(state["step"]) == 14 and math.isfinite(float(state["losses"][-1, 0]))
    assert trainer.traces == 1
    # Another learning rate, other weights and other data reuse the same compiled chunk.
    other_model, _ = SPEC.build("shaped", key=jr.key(4))
    other = LaneTrainer(other_model, cfg, [0.5], data_key=jr.key(9), schedule=schedule)
    other.run(None, TASK, TASK)
    assert other.traces == 0


def test_divergence_is_detected_and_recorded():
    model, schedule = SPEC.build("preln", key=jr.key(0))
    result = train(model, TASK, TASK, dataclasses.replace(CFG, lr=1e4), key=jr.key(1))
    assert result.diverged and result.diverged_at is not None and result.diverged_at < CFG.steps
    assert result.final_val_loss is None and "above" in result.divergence_reason
    json.dumps(result.summary(), allow_nan=False)  # no NaN anywhere in the record
    # A NaN loss (here from a NaN weight) stops the run at the first step.
    broken = eqx.tree_at(lambda m: m.readout, model, model.readout.at[0, 0].set(jnp.nan))
    result = train(broken, TASK, TASK, CFG, key=jr.key(1))
    assert result.diverged_at == 0 and result.divergence_reason.startswith("non-finite")
    assert result.steps_done == 0 and result.history == []


class _Stop(Exception):
    pass


def test_interrupted_sweep_resumes_without_losing_runs(tmp_path):
    grid = {"kinds": ["shaped"], "lrs": [0.01, 0.03, 0.1], "seeds": [0]}
    full = run_sweep(SPEC, CFG, TASK, TASK, **grid, store=ResultStore(tmp_path / "a", "t", {}))
    trained = []

    def stop_after_two(name, result, cached):
        if not cached:
            trained.append(name)
        if len(trained) == 2:
            raise _Stop

    with pytest.raises(_Stop):
        run_sweep(
            SPEC, CFG, TASK, TASK, **grid, store=ResultStore(tmp_path / "b", "t", {}),
            on_run=stop_after_two,
        )  # fmt: skip
    assert ResultStore(tmp_path / "b", "t", {}).names() == sorted(trained)
    events = []
    resumed = run_sweep(
        SPEC, CFG, TASK, TASK, **grid, store=ResultStore(tmp_path / "b", "t", {}),
        on_run=lambda name, result, cached: events.append(cached),
    )  # fmt: skip
    assert events == [True, True, False]  # the two finished runs were loaded, not retrained
    assert resumed.keys() == full.keys()
    for name in full:
        assert resumed[name]["final_val_loss"] == full[name]["final_val_loss"]
        assert resumed[name]["history"] == full[name]["history"]


def test_cli_train_sweep_and_errors(tmp_path, capsys):
    args = ["--data", "copy", "--seq-len", "16", "--width", "16", "--depth", "2", "--steps",
            "40", "--warmup", "5", "--eval-every", "20", "--no-progress"]  # fmt: skip
    out = tmp_path / "sweep"
    code = main(["train-sweep", *args, "--kinds", "shaped,preln", "--lrs", "0.03,10000",
                 "--out", str(out), "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(r["kind"], r["lr"]): r for r in report["rows"]}
    assert rows[("preln", 10000.0)]["diverged"] == 1
    assert rows[("shaped", 0.03)]["diverged"] == 0
    assert (out / "train_sweep.png").stat().st_size > 0
    code = main(["train", "--data", "file", "--text-file", str(tmp_path / "nope.txt"),
                 "--out", str(tmp_path / "t")])  # fmt: skip
    assert code == 2 and "does not exist" in capsys.readouterr().err
