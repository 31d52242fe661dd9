"""Train one model kind at one depth and one seed for a whole grid of learning rates at once.

A group is one (kind, depth, seed); its runs differ only in their learning rate and are the lanes
of one `LaneTrainer` (`sdeformer.train.engine`): they start from the same weights (one
initialisation key per (depth, seed)), see the same batches (one data key per seed), and are
trained by one compiled program. One compilation per (kind, depth) serves every learning rate and
seed. Divergence stops a lane, not the group (see the engine).

The data position and the random state are functions of the step, so a group resumed from a
checkpoint (`state_to_bytes` / `state_from_bytes`) runs the same compiled chunks on the same
inputs as an uninterrupted one and ends with bitwise equal weights on the same machine (tested).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import jax
import jax.random as jr
import numpy as np

from .engine import REASONS, LaneTrainer
from .engine import state_from_bytes as state_from_bytes
from .engine import state_to_bytes as state_to_bytes
from .spec import ModelSpec, TrainConfig, kind_spec


def stable_hash(text: str) -> int:
    """A 31-bit hash of a string that is the same on every run and machine (crc32)."""
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def init_key(depth: int, seed: int, base: int = 0) -> jax.Array:
    """Initialisation key of every run at (depth, seed), shared by the kinds and learning rates.

    Runs are thus paired (common random numbers); the key is folded from a stable id, not an
    index.
    """
    return jr.fold_in(jr.key(base), stable_hash(f"init:d{depth}:s{seed}"))


def data_key(seed: int, base: int = 0) -> jax.Array:
    """Data key of every run with `seed` (batch t is drawn with `fold_in(data_key, t)`)."""
    return jr.fold_in(jr.key(base), stable_hash(f"data:s{seed}"))


def group_id(kind: str, depth: int, seed: int) -> str:
    """Stable id of a group (kind, depth, seed), e.g. `shaped_d16_s0`."""
    kind_spec(kind)
    return f"{kind}_d{depth}_s{seed}"


def run_id(kind: str, depth: int, lr: float, seed: int) -> str:
    """Stable id of one run, e.g. `shaped_d16_lr=0.1_s0` (a `ResultStore` unit name)."""
    return f"{kind}_d{depth}_lr={float(lr):.6g}_s{seed}"


class GroupTrainer(LaneTrainer):
    """Trains the runs (kind, depth, seed, lr) for every lr of `lrs` together (see module doc).

    `cfg.steps` must be a multiple of `cfg.eval_every`, which is also the chunk of steps run by
    one call of the compiled program; the validation loss and the last layer's mean token
    correlation are evaluated at step 0 (initialisation), after every chunk, and at the end.
    `keys` = (initialisation key, data key) replaces the keys of (depth, seed).
    """

    def __init__(
        self,
        spec: ModelSpec,
        kind: str,
        cfg: TrainConfig,
        lrs: Sequence[float],
        seed: int,
        *,
        base_seed: int = 0,
        keys: tuple[jax.Array, jax.Array] | None = None,
    ):
        if keys is None:
            keys = (init_key(spec.depth, seed, base_seed), data_key(seed, base_seed))
        self.spec, self.kind, self.seed = spec, kind, seed
        self.id = group_id(kind, spec.depth, seed)
        model, schedule = spec.build(kind, key=keys[0])
        super().__init__(model, cfg, lrs, data_key=keys[1], schedule=schedule, name=self.id)

    def tokens_per_step(self) -> int:
        """Training tokens one step of one lane processes."""
        return self.cfg.batch_size * self.spec.seq_len

    def results(self, state: dict, timing: dict | None = None, block: int = 10) -> list[dict]:
        """One JSON-ready record per lane (learning rate).

        Losses of diverged steps are dropped (never NaN): `loss_blocks` are the means of the
        training loss over consecutive blocks of `block` steps, up to the divergence; `evals` are
        (step, val_loss, token_correlation) before it.
        """
        host = jax.tree.map(np.asarray, {k: state[k] for k in state if k not in ("params",)})
        tps = None
        if timing and timing.get("steady_steps"):
            tps = self.lanes * self.tokens_per_step() * timing["steady_steps"] / timing["steady_s"]
        out = []
        every = self.cfg.eval_every
        for lane, lr in enumerate(self.lrs):
            div_at = int(host["div_at"][lane])
            diverged = div_at >= 0
            done = div_at if diverged else int(host["step"])
            losses = host["losses"][:done, lane]
            nblocks = len(losses) // block
            blocks = losses[: nblocks * block].reshape(nblocks, block).mean(axis=1)
            evals = []
            for i, (v, c) in enumerate(
                zip(host["val_loss"][:, lane], host["token_correlation"][:, lane], strict=True)
            ):
                if np.isfinite(v) and np.isfinite(c):
                    evals.append(
                        {"step": i * every, "val_loss": float(v), "token_correlation": float(c)}
                    )
            finished = not diverged and int(host["step"]) >= self.cfg.steps
            final = (
                evals[-1] if finished and evals and evals[-1]["step"] == self.cfg.steps else None
            )
            out.append(
                {
                    "kind": self.kind,
                    "depth": self.spec.depth,
                    "lr": lr,
                    "seed": self.seed,
                    "id": run_id(self.kind, self.spec.depth, lr, self.seed),
                    "steps": self.cfg.steps,
                    "steps_done": done,
                    "diverged": diverged,
                    "diverged_at": div_at if diverged else None,
                    "divergence_reason": REASONS[int(host["reason"][lane])],
                    "final_val_loss": None if final is None else final["val_loss"],
                    "init_token_correlation": evals[0]["token_correlation"] if evals else None,
                    "final_token_correlation": None
                    if final is None
                    else final["token_correlation"],
                    "final_train_loss": float(blocks[-1]) if len(blocks) else None,
                    "loss_blocks": [float(x) for x in blocks],
                    "loss_block": block,
                    "evals": evals,
                    "tokens_per_second": tps,
                    "group_tokens_per_second": tps,
                    "lanes": self.lanes,
                    "compile_and_first_chunk_s": None if not timing else timing["first_chunk_s"],
                }
            )
        return out
