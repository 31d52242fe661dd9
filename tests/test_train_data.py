"""Training data: the standard-library corpus split, text files, synthetic tasks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from sdeformer.train import data


def _jit_sample(task, key, batch_size):
    # One compiled call instead of dozens of eagerly dispatched (and shape-checked) operations.
    return jax.jit(lambda t, k: t.sample(k, batch_size))(task, key)


def test_stdlib_split_is_deterministic_and_disjoint():
    first = data.stdlib_corpus(max_bytes=200_000, val_fraction=0.1)
    second = data.stdlib_corpus(max_bytes=200_000, val_fraction=0.1)
    assert first.train_files == second.train_files and first.val_files == second.val_files
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)
    assert not set(first.train_files) & set(first.val_files)
    assert first.train.size == 180_000 and first.val.size == 20_000  # the cap is honoured
    # Every file of the library is in exactly one split, fixed by the hash of its name alone.
    files = data.stdlib_files()
    in_val = {f for f in files if data._unit_hash(f) < 0.1}
    assert set(first.val_files) <= in_val and not set(first.train_files) & in_val
    assert 0.05 < len(in_val) / len(files) < 0.15  # ~10% of ~1800 files


def test_split_depends_on_names_not_on_creation_order(tmp_path):
    names = [f"pkg{i % 3}/mod{i}.py" for i in range(60)]
    for order, root in ((names, tmp_path / "a"), (names[::-1], tmp_path / "b")):
        for name in order:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(f"x = {name!r}\n" * 20)
    a = data.stdlib_corpus(max_bytes=10**6, val_fraction=0.25, root=tmp_path / "a")
    b = data.stdlib_corpus(max_bytes=10**6, val_fraction=0.25, root=tmp_path / "b")
    assert a.val_files == b.val_files and np.array_equal(a.train, b.train)
    assert set(a.train_files) | set(a.val_files) == set(names)  # no cap reached: all files used
    assert not set(a.train_files) & set(a.val_files) and a.val_files


def test_text_corpus_errors_and_split(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        data.text_corpus(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        data.text_corpus(empty)
    with pytest.raises(ValueError, match="not a regular file"):
        data.text_corpus(tmp_path)
    text = tmp_path / "t.txt"
    text.write_bytes(bytes(range(100)))
    corpus = data.text_corpus(text, val_fraction=0.2)
    assert corpus.train.tolist() == list(range(80)) and corpus.val.tolist() == list(range(80, 100))
    with pytest.raises(ValueError, match="seq_len"):
        data.TextTask(corpus.val, 32, name="validation")
    with pytest.raises(ValueError, match="--text-file"):
        data.make_tasks("file", 8)


def test_text_windows_are_shifted_by_one():
    task = data.TextTask(np.arange(200) % 256, 16)
    inputs, targets, mask = _jit_sample(task, jr.key(0), 8)
    assert inputs.shape == targets.shape == mask.shape == (8, 16)
    assert jnp.array_equal(inputs[:, 1:], targets[:, :-1])
    assert jnp.array_equal(targets, inputs + 1)  # the data are consecutive integers
    ev1, ev2 = task.eval_batch(4), task.eval_batch(4)
    assert jnp.array_equal(ev1[0], ev2[0]) and int(ev1[0][-1, -1]) == 198


@pytest.mark.parametrize("seq_len", [15])  # odd: one pad token in front
def test_copy_task(seq_len):
    inputs, targets, mask = _jit_sample(data.CopyTask(seq_len, 10), jr.key(1), 4)
    k = seq_len // 2
    seq = jnp.concatenate([inputs, targets[:, -1:]], axis=1)
    assert jnp.array_equal(seq[:, -k:], seq[:, -2 * k - 1 : -k - 1])  # the second copy
    assert jnp.all(seq[:, -k - 1] == 1)  # the separator
    assert float(mask.sum()) == 4 * k and jnp.all(mask[:, -k:] == 1)


@pytest.mark.parametrize("seq_len", [10])  # even: one pad token in front
def test_recall_task(seq_len):
    inputs, targets, mask = _jit_sample(data.RecallTask(seq_len, 20), jr.key(2), 16)
    seq = np.asarray(jnp.concatenate([inputs, targets[:, -1:]], axis=1))
    pairs = (seq_len - 1) // 2
    for row in seq:
        body = row[-2 * pairs - 2 : -2].reshape(pairs, 2)
        assert len(set(body[:, 0])) == pairs  # distinct keys
        assert dict(body.tolist())[row[-2]] == row[-1]  # the answer is the queried key's value
    assert float(mask.sum()) == 16 and jnp.all(mask[:, -1] == 1)
