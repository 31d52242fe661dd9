"""The second training study: model kinds, edge location by grid + bisection, the command."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from sdeformer.cli import main
from sdeformer.config import ShapedConfig
from sdeformer.train.edge_report import claim_decision
from sdeformer.train.edge_study import EDGE_PROFILES, Cell, flops_per_token
from sdeformer.train.edges import (
    bracket,
    geometric_grid,
    locate_edge,
    next_probe,
    probes_needed,
)
from sdeformer.train.lm import layer_norm
from sdeformer.train.spec import ModelSpec

SPEC = ModelSpec(
    width=16, depth=3, vocab=32, seq_len=8, config=ShapedConfig(heads=2, out_proj=True)
)
TOKENS = jnp.arange(8) % 5


def test_bracket_censoring_and_non_monotone():
    assert bracket({0.1: False, 0.4: False}).to_dict()["censored"] == "above"
    below = bracket({0.1: True, 0.4: True})
    assert below.lo is None and below.hi == 0.1 and below.censored == "below"
    b = bracket({0.1: False, 0.4: True, 1.6: False})
    assert (b.lo, b.hi, b.non_monotone) == (0.1, 0.4, True)
    with pytest.raises(ValueError, match="no runs"):
        bracket({})


def test_probes_bisect_a_factor_4_grid_to_sqrt2():
    assert probes_needed(4.0, math.sqrt(2)) == 2
    assert probes_needed(2.0, math.sqrt(2)) == 1
    assert probes_needed(math.sqrt(2), math.sqrt(2)) == 0
    assert next_probe({0.1: False, 0.4: True}, math.sqrt(2)) == 0.2
    assert next_probe({0.1: False, 0.2: True, 0.4: True}, math.sqrt(2)) == pytest.approx(0.1414)
    assert next_probe({0.1: False, 0.1414: True}, math.sqrt(2)) is None
    with pytest.raises(ValueError, match="factor"):
        next_probe({0.1: False}, 1.0)


@pytest.mark.parametrize("edge", [0.003, 0.05, 0.3, 0.9999, 3.0, 40.0])
def test_locate_edge_brackets_a_known_edge(edge):
    grid = geometric_grid(4.0**-4, 4.0, 7)
    calls = []

    def diverges(lr, role):
        calls.append((lr, role))
        return lr > edge

    seen, done = locate_edge(grid, math.sqrt(2), diverges)
    b = bracket(seen)
    assert done
    if edge < grid[0]:
        assert b.censored == "below" and len(calls) == 1
    elif edge >= grid[-1]:
        assert b.censored == "above" and len(calls) == len(grid)
    else:
        assert b.lo <= edge < b.hi and b.ratio <= math.sqrt(2) * 1.001
        grid_calls = [lr for lr, role in calls if role == "grid"]
        assert grid_calls == [lr for lr in grid if lr <= b.hi * 4.01][: len(grid_calls)]
        assert max(grid_calls) > edge  # stopped at the first divergence, nothing above it
        assert sum(role == "probe" for _, role in calls) == 2


def test_locate_edge_stops_when_the_run_says_so():
    seen, done = locate_edge((0.1, 0.4), math.sqrt(2), lambda lr, role: None if lr > 0.2 else False)
    assert seen == {0.1: False} and not done


def test_profile_checks_name_the_value():
    with pytest.raises(ValueError, match="multiple of eval_every"):
        EDGE_PROFILES["tiny"].replace(steps=7)
    with pytest.raises(ValueError, match="heads"):
        EDGE_PROFILES["tiny"].replace(widths=(9,))
    assert EDGE_PROFILES["cpu"].depths(64) == (16, 64)
    assert EDGE_PROFILES["cpu"].probes == 2


def test_postln_layers_end_normalised_and_gpt2_scales_the_residual_outputs():
    postln, _ = SPEC.build("postln", key=jr.key(1))
    h = postln.hidden(TOKENS)
    np.testing.assert_allclose(h.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(h.var(axis=-1), 1.0, rtol=1e-3)
    assert postln.final_gain is None
    preln, _ = SPEC.build("preln", key=jr.key(1))
    gpt2, _ = SPEC.build("gpt2-preln", key=jr.key(1))
    scale = 1.0 / math.sqrt(2 * SPEC.depth)
    attn, mlp = preln.body.layers
    g_attn, g_mlp = gpt2.body.layers
    np.testing.assert_allclose(g_attn.wo, attn.wo * scale, rtol=1e-6)
    np.testing.assert_allclose(g_mlp.wpost, mlp.wpost * scale, rtol=1e-6)
    np.testing.assert_array_equal(g_attn.wq, attn.wq)


def test_postln_matches_a_direct_post_ln_layer():
    spec = ModelSpec(
        width=16, depth=1, vocab=32, seq_len=8, config=ShapedConfig(heads=2, out_proj=True)
    )
    model, _ = spec.build("postln", key=jr.key(2))
    attn, mlp = (jax_tree_first(b) for b in model.body.layers)
    x = model.embed(TOKENS)
    z = layer_norm(x + attn.branch(x), attn.ln_gain, attn.ln_bias)
    hidden = jnp.maximum(z @ mlp.wpre / 4.0, 0.0)
    expected = layer_norm(z + math.sqrt(2 / 16) * hidden @ mlp.wpost, mlp.ln_gain, mlp.ln_bias)
    np.testing.assert_allclose(model.hidden(TOKENS), expected, atol=1e-5)


def jax_tree_first(block):
    import equinox as eqx
    import jax

    params, static = eqx.partition(block, eqx.is_array)
    return eqx.combine(jax.tree.map(lambda x: x[0], params), static)


def test_shaped_ln_is_shaped_with_a_final_layer_norm():
    shaped, _ = SPEC.build("shaped", key=jr.key(3))
    ln, _ = SPEC.build("shaped-ln", key=jr.key(3))
    np.testing.assert_array_equal(shaped.hidden(TOKENS), ln.hidden(TOKENS))
    logits, h = ln(TOKENS)
    np.testing.assert_allclose(
        logits, layer_norm(h, ln.final_gain, ln.final_bias) @ ln.readout / 4.0, atol=1e-5
    )


def test_cells_share_keys_across_kinds_and_flops_grow_with_depth():
    a, b = Cell("shaped", 32, 8, 0).keys(), Cell("postln", 32, 8, 0).keys()
    assert bool(jnp.all(jr.key_data(a[0]) == jr.key_data(b[0])))
    assert not bool(jnp.all(jr.key_data(a[0]) == jr.key_data(Cell("shaped", 64, 8, 0).keys()[0])))
    assert flops_per_token(64, 64, 64, 256) > 3.9 * flops_per_token(64, 16, 64, 256)


def _row(kind, ratios):
    return {
        "kind": kind,
        "width": 64,
        "depth": 16,
        "log2_edge_ratio_per_seed": dict(enumerate(ratios)),
    }


def test_claim_rule_as_registered():
    depths = {64: (16,)}
    holds = claim_decision(
        [_row("standard", [-1, -0.5]), _row("gpt2-preln", [-2, -1])], (64,), depths
    )
    assert holds["overall"] == "holds"
    mixed = claim_decision([_row("standard", [-1, 0]), _row("gpt2-preln", [-2, -1])], (64,), depths)
    assert mixed["overall"] == "not supported"
    against = claim_decision([_row("standard", [0, 0]), _row("gpt2-preln", [1, 2])], (64,), depths)
    assert against["overall"] == "contradicted"
    missing = claim_decision(
        [_row("standard", [-1, None]), _row("gpt2-preln", [-1, -1])], (64,), depths
    )
    assert missing["overall"] == "not supported"


def _edges(out):
    report = json.loads((out / "train_edges.json").read_text())
    return report, {(r["kind"], r["depth"]): r["per_seed"] for r in report["edges"]}


def test_command_resumes_to_the_same_edges(tmp_path, capsys):
    args = [
        "train-edges",
        "--profile",
        "tiny",
        "--kinds",
        "postln",
        "--seeds",
        "1",
        "--no-progress",
    ]
    assert main(args + ["--out", str(tmp_path / "a"), "--max-runs", "2"]) == 0
    partial, _ = _edges(tmp_path / "a")
    assert not partial["complete"] and partial["claim"] is None
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    resumed, edges_a = _edges(tmp_path / "a")
    fresh, edges_b = _edges(tmp_path / "b")
    assert resumed["complete"] and edges_a == edges_b
    assert resumed["runs_done"] == fresh["runs_done"]
    row = resumed["edges"][0]
    assert {"divergence_edge_lr", "per_seed", "loss", "seeds_diverged_at_initialisation"} <= set(
        row
    )
    assert (tmp_path / "a" / "train_edges.png").exists()
    assert not (tmp_path / "a" / "checkpoints").exists() or not any(
        (tmp_path / "a" / "checkpoints").iterdir()
    )


def test_command_refuses_steps_that_are_not_a_multiple(tmp_path, capsys):
    code = main(["train-edges", "--profile", "tiny", "--steps", "7", "--out", str(tmp_path)])
    assert code == 2
    assert "multiple" in capsys.readouterr().err


def test_gpu_profile_runs_at_a_tiny_size(tmp_path, monkeypatch):
    """The gpu profile's structure (4 heads, its grid and bisection) at a tiny width and length."""
    from sdeformer.cli import train_edges

    gpu = EDGE_PROFILES["gpu"]
    assert gpu.heads == 4 and gpu.seq_len == 256 and gpu.seeds >= 5
    assert gpu.widths == (128, 256, 512) and max(gpu.ratios) == 1.0
    tiny_gpu = gpu.replace(
        widths=(8,), ratios=(0.25,), seq_len=8, batch_size=2, steps=10, warmup=2, eval_every=5,
        eval_batch_size=4, seeds=1, kinds=("shaped", "gpt2-preln"), max_bytes=100_000,
    )  # fmt: skip
    monkeypatch.setitem(train_edges.EDGE_PROFILES, "gpu", tiny_gpu)
    assert main(["train-edges", "--profile", "gpu", "--out", str(tmp_path), "--no-progress"]) == 0
    report, edges = _edges(tmp_path)
    assert report["complete"] and set(edges) == {("shaped", 2), ("gpt2-preln", 2)}
    assert report["settings"]["profile"]["heads"] == 4
