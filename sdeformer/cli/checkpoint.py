"""Checkpoint files of a training group (`sdeformer.train.group`), written and read here.

The library does no file I/O.

One file per group, `<dir>/<group id>.ckpt`: a one-line JSON header (group id, step, learning
rates, seed, format) followed by the group state serialised with `eqx.tree_serialise_leaves`
(weights, optax states, step, divergence bookkeeping, loss records; the data position and the
random state are functions of the step). Written atomically (never half-written); a file whose
header does not match the group is refused with a message naming the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..results import ResultsError, atomic_path
from ..train.group import GroupTrainer, state_from_bytes, state_to_bytes

FORMAT = "sdeformer-train-group-v1"


def checkpoint_path(directory: str | Path, trainer: GroupTrainer) -> Path:
    """The checkpoint file of the group of `trainer`: `<directory>/<group id>.ckpt`."""
    return Path(directory) / f"{trainer.id}.ckpt"


def _header(trainer: GroupTrainer, step: int) -> dict:
    return {
        "format": FORMAT,
        "group": trainer.id,
        "lrs": list(trainer.lrs),
        "seed": trainer.seed,
        "steps": trainer.cfg.steps,
        "step": step,
    }


def save_checkpoint(directory: str | Path, trainer: GroupTrainer, state: dict) -> Path:
    """Write the state of `trainer`'s group atomically; returns the path."""
    path = checkpoint_path(directory, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps(_header(trainer, int(state["step"]))).encode()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(header + b"\n")
            handle.write(state_to_bytes(state))
    return path


def load_checkpoint(directory: str | Path, trainer: GroupTrainer) -> dict | None:
    """The saved state of `trainer`'s group, or None when there is no checkpoint."""
    path = checkpoint_path(directory, trainer)
    if not path.exists():
        return None
    data = path.read_bytes()
    line, _, payload = data.partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError as err:
        raise ResultsError(f"{path} has no readable header ({err}); delete it to restart") from err
    expected = _header(trainer, header.get("step", -1))
    if header != expected:
        raise ResultsError(
            f"{path} belongs to another run (header {header}, expected {expected}); delete it "
            "to restart that group"
        )
    try:
        return state_from_bytes(payload, trainer.init_state())
    except Exception as err:  # a truncated or foreign payload
        raise ResultsError(f"{path} cannot be read ({err}); delete it to restart") from err


def remove_checkpoint(directory: str | Path, trainer: GroupTrainer) -> None:
    """Delete the group's checkpoint file, if there is one (the group is finished)."""
    checkpoint_path(directory, trainer).unlink(missing_ok=True)
