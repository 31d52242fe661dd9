"""Training data without downloads: the stdlib as a corpus, any text file, synthetic tasks.

The Python standard library as a byte corpus, any text file, and synthetic tasks (copying,
associative recall).

Every task is an `eqx.Module` whose `sample(key, batch_size)` draws a batch inside `jax.jit`
(the corpus lives on the device as an int32 array), and whose `eval_batch(batch_size)` is a fixed,
deterministic batch for evaluation. A batch is `(inputs, targets, mask)`, each of shape
(batch, seq_len): `targets` are the next tokens and `mask` (float) says which positions count in
the loss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sysconfig
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

BYTE_VOCAB = 256
"""Vocabulary of the byte-level corpora."""

Batch = tuple[Int[Array, "batch m"], Int[Array, "batch m"], Float[Array, "batch m"]]


# ------------------------------------------------------------------------------------ corpora


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A byte corpus split into train and validation (uint8 arrays) and where it came from."""

    train: np.ndarray
    val: np.ndarray
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]
    source: str

    def summary(self) -> dict:
        """Where the corpus came from and its train and validation sizes (bytes and files)."""
        return {
            "source": self.source,
            "train_bytes": int(self.train.size),
            "val_bytes": int(self.val.size),
            "train_files": len(self.train_files),
            "val_files": len(self.val_files),
        }


def stdlib_root() -> Path:
    """The directory of the running Python's standard library (`sysconfig`'s "stdlib" path)."""
    return Path(sysconfig.get_paths()["stdlib"])


def _unit_hash(name: str) -> float:
    """A fixed hash of a string mapped to [0, 1) (sha256: the same on every machine and run)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) / 16.0**12


def stdlib_files(root: str | os.PathLike | None = None) -> list[str]:
    """Sorted relative paths of the `.py` files of the standard library (no site-packages)."""
    root = stdlib_root() if root is None else Path(root)
    if not root.is_dir():
        raise ValueError(f"standard library directory {root} does not exist; pass another root")
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.py")
        if not {"site-packages", "dist-packages", "__pycache__"} & set(p.parts) and p.is_file()
    )
    if not files:
        raise ValueError(f"no .py files found under {root}")
    return files


def stdlib_corpus(
    max_bytes: int = 2_000_000,
    val_fraction: float = 0.1,
    *,
    root: str | os.PathLike | None = None,
) -> Corpus:
    """A byte-level corpus of the standard library's Python sources, split by file.

    Each file goes to validation when the sha256 of its relative path, mapped to [0, 1), is below
    `val_fraction`, otherwise to training: the split depends only on the file names, so it is the
    same on every run and machine with the same Python, and no file is in both splits. Within a
    split, files are taken in the order of their hashes (a fixed pseudo-random order, so a small
    cap still samples the whole library) and concatenated, separated by a newline, until the
    split's share of `max_bytes` is reached (`val_fraction * max_bytes` for validation).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r}: pass a number in (0, 1), e.g. 0.1")
    if max_bytes < 2:
        raise ValueError(f"max_bytes={max_bytes!r}: pass a byte cap >= 2 (e.g. 2_000_000)")
    root = stdlib_root() if root is None else Path(root)
    files = stdlib_files(root)
    split = {"train": [], "val": []}
    for name in files:
        split["val" if _unit_hash(name) < val_fraction else "train"].append(name)
    caps = {"val": max(1, int(max_bytes * val_fraction))}
    caps["train"] = max(1, max_bytes - caps["val"])
    arrays, used = {}, {}
    for part, names in split.items():
        chunks, size, taken = [], 0, []
        for name in sorted(names, key=lambda s: (_unit_hash("order:" + s), s)):
            if size >= caps[part]:
                break
            data = (root / name).read_bytes() + b"\n"
            if len(data) <= 1:
                continue
            data = data[: caps[part] - size]
            chunks.append(data)
            taken.append(name)
            size += len(data)
        if not chunks:
            raise ValueError(
                f"the {part} split of {root} is empty; raise val_fraction/max_bytes or add files"
            )
        arrays[part] = np.frombuffer(b"".join(chunks), dtype=np.uint8)
        used[part] = tuple(taken)
    return Corpus(
        arrays["train"], arrays["val"], used["train"], used["val"], f"python-stdlib:{root}"
    )


def text_corpus(
    path: str | os.PathLike, val_fraction: float = 0.1, *, max_bytes: int | None = None
) -> Corpus:
    """A byte corpus from one text file: the last `val_fraction` of its bytes is validation."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"text file {path} does not exist; pass the path of a text file")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file; pass the path of a text file")
    data = path.read_bytes()
    if max_bytes is not None:
        data = data[:max_bytes]
    if not data:
        raise ValueError(f"text file {path} is empty; pass a file with some text")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r}: pass a number in (0, 1), e.g. 0.1")
    cut = int(round(len(data) * (1.0 - val_fraction)))
    if cut < 2 or len(data) - cut < 2:
        raise ValueError(
            f"text file {path} has only {len(data)} bytes; too few to split into train and "
            "validation: pass a longer file"
        )
    arr = np.frombuffer(data, dtype=np.uint8)
    return Corpus(arr[:cut], arr[cut:], (str(path),), (str(path),), f"file:{path}")


# -------------------------------------------------------------------------------------- tasks


class TextTask(eqx.Module):
    """Next-byte prediction on random windows of a byte array (one split of a `Corpus`)."""

    data: Int[Array, " size"]
    seq_len: int = eqx.field(static=True)
    vocab: int = eqx.field(static=True, default=BYTE_VOCAB)

    def __init__(self, data: np.ndarray, seq_len: int, *, name: str = "text"):
        data = np.asarray(data)
        if data.size < seq_len + 1:
            raise ValueError(
                f"{name} data has {data.size} bytes, fewer than seq_len + 1 = {seq_len + 1}; "
                "use a larger corpus (--max-bytes) or a shorter --seq-len"
            )
        self.data = jnp.asarray(data.astype(np.int32))
        self.seq_len = seq_len

    def _windows(self, starts: Int[Array, " batch"]) -> Batch:
        windows = jax.vmap(lambda s: jax.lax.dynamic_slice(self.data, (s,), (self.seq_len + 1,)))(
            starts
        )
        mask = jnp.ones((starts.shape[0], self.seq_len), jnp.float32)
        return windows[:, :-1], windows[:, 1:], mask

    def sample(self, key: PRNGKeyArray, batch_size: int) -> Batch:
        """Windows starting at uniformly random offsets."""
        high = self.data.shape[0] - self.seq_len
        return self._windows(jr.randint(key, (batch_size,), 0, high))

    def eval_batch(self, batch_size: int) -> Batch:
        """Windows at evenly spaced offsets covering the whole array (deterministic)."""
        high = self.data.shape[0] - self.seq_len - 1
        starts = np.linspace(0, high, batch_size).round().astype(np.int32)
        return self._windows(jnp.asarray(starts))


class CopyTask(eqx.Module):
    """Copying: `x_1..x_k SEP x_1..x_k`; the loss counts only the second copy.

    Symbols are uniform on {2, ..., vocab - 1}; token 1 is the separator, 0 pads the front
    when `seq_len` is odd.
    """

    seq_len: int = eqx.field(static=True)
    vocab: int = eqx.field(static=True)

    def __init__(self, seq_len: int, vocab: int = 16):
        if seq_len < 2 or vocab < 3:
            raise ValueError(f"CopyTask needs seq_len >= 2 and vocab >= 3, got {seq_len}, {vocab}")
        self.seq_len, self.vocab = seq_len, vocab

    def sample(self, key: PRNGKeyArray, batch_size: int) -> Batch:
        """A random batch (inputs, targets, mask) of `batch_size` copying sequences."""
        k = self.seq_len // 2
        pad = self.seq_len + 1 - (2 * k + 1)
        x = jr.randint(key, (batch_size, k), 2, self.vocab)
        parts = [jnp.zeros((batch_size, pad), x.dtype), x, jnp.ones((batch_size, 1), x.dtype), x]
        seq = jnp.concatenate(parts, axis=1)
        positions = jnp.arange(self.seq_len)
        mask = (positions >= pad + k).astype(jnp.float32)
        return seq[:, :-1], seq[:, 1:], jnp.broadcast_to(mask, (batch_size, self.seq_len))

    def eval_batch(self, batch_size: int) -> Batch:
        """A fixed evaluation batch (the same for every call with the same size)."""
        return self.sample(jr.key(123456789), batch_size)


class RecallTask(eqx.Module):
    """Associative recall: `k_1 v_1 ... k_P v_P k_j v_j`; the loss counts only the last `v_j`.

    Keys are distinct, drawn from {2, ..., 2 + K - 1} and values from the rest of the vocabulary
    (K = (vocab - 2) // 2); the query key k_j is one of the P keys, chosen uniformly.
    """

    seq_len: int = eqx.field(static=True)
    vocab: int = eqx.field(static=True)

    def __init__(self, seq_len: int, vocab: int = 32):
        pairs = (seq_len - 1) // 2
        if seq_len < 3 or pairs > (vocab - 2) // 2:
            raise ValueError(
                f"RecallTask(seq_len={seq_len}, vocab={vocab}): need seq_len >= 3 and at least "
                f"{pairs} distinct keys, i.e. vocab >= {2 * pairs + 2}"
            )
        self.seq_len, self.vocab = seq_len, vocab

    def _one(self, key: PRNGKeyArray) -> Int[Array, " total"]:
        pairs = (self.seq_len - 1) // 2
        num_keys = (self.vocab - 2) // 2
        kkey, vkey, qkey = jr.split(key, 3)
        keys = jr.permutation(kkey, num_keys)[:pairs] + 2
        values = jr.randint(vkey, (pairs,), 2 + num_keys, self.vocab)
        j = jr.randint(qkey, (), 0, pairs)
        body = jnp.stack([keys, values], axis=1).reshape(-1)
        pad = jnp.zeros((self.seq_len + 1 - 2 * pairs - 2,), body.dtype)
        return jnp.concatenate([pad, body, keys[j][None], values[j][None]])

    def sample(self, key: PRNGKeyArray, batch_size: int) -> Batch:
        """A random batch (inputs, targets, mask) of `batch_size` recall sequences."""
        seq = jax.vmap(self._one)(jr.split(key, batch_size))
        mask = (jnp.arange(self.seq_len) == self.seq_len - 1).astype(jnp.float32)
        return seq[:, :-1], seq[:, 1:], jnp.broadcast_to(mask, (batch_size, self.seq_len))

    def eval_batch(self, batch_size: int) -> Batch:
        """A fixed evaluation batch (the same for every call with the same size)."""
        return self.sample(jr.key(987654321), batch_size)


Task = TextTask | CopyTask | RecallTask

DATASETS = ("stdlib", "file", "copy", "recall")


def make_tasks(
    dataset: str,
    seq_len: int,
    *,
    max_bytes: int = 2_000_000,
    val_fraction: float = 0.1,
    path: str | os.PathLike | None = None,
    vocab: int | None = None,
) -> tuple[Task, Task, dict]:
    """(train task, validation task, summary) for one of `DATASETS`.

    "stdlib": the standard library corpus; "file": the text file `path`; "copy" and "recall":
    synthetic tasks (the same task for training and validation; validation uses a fixed batch).
    """
    if dataset in ("stdlib", "file"):
        if dataset == "file":
            if path is None:
                raise ValueError("dataset 'file' needs a path: pass --text-file PATH")
            corpus = text_corpus(path, val_fraction, max_bytes=max_bytes)
        else:
            corpus = stdlib_corpus(max_bytes, val_fraction)
        train = TextTask(corpus.train, seq_len, name="training")
        val = TextTask(corpus.val, seq_len, name="validation")
        return train, val, corpus.summary()
    if dataset == "copy":
        task = CopyTask(seq_len, vocab or 16)
    elif dataset == "recall":
        task = RecallTask(seq_len, vocab or 32)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    return task, task, {"source": dataset, "vocab": task.vocab}
