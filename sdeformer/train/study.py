"""The training-stability study: model kinds x depths x learning rates x seeds, in profiles.

A **group** is one (kind, depth, seed); its runs are every learning rate of the grid, trained
together by `GroupTrainer` (one compiled program per (kind, depth), reused by every seed and
learning rate). A **run** (kind, depth, lr, seed) is one result unit, named by `run_id`. Ids are
built from the values, never from positions in the option lists, and the study's settings are
canonical (kinds in `MODEL_KINDS` order, depths and learning rates sorted), so listing the
options in another order names the same units and opens the same result directory.

Groups run seed by seed (all cells for seed 0 first, then seed 1, ...), so a study stopped early
has every (kind, depth) cell with fewer seeds rather than some cells with none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from ..config import ShapedConfig
from .group import group_id, run_id
from .spec import MODEL_KINDS, ModelSpec, TrainConfig, kind_spec

STUDY_KINDS = ("shaped", "shaped-recover", "shaped-learn", "preln", "standard")


def half_decades(low_exp: float, count: int) -> tuple[float, ...]:
    """`count` learning rates 10^(low_exp + k/2), rounded to 4 significant digits."""
    return tuple(float(f"{10 ** (low_exp + k / 2):.4g}") for k in range(count))


@dataclasses.dataclass(frozen=True)
class StudyProfile:
    """Sizes of a study. `steps` must be a multiple of `eval_every` (one compiled chunk)."""

    name: str
    width: int
    depths: tuple[int, ...]
    seq_len: int
    batch_size: int
    steps: int
    warmup: int
    eval_every: int
    eval_batch_size: int
    lrs: tuple[float, ...]
    seeds: int
    kinds: tuple[str, ...] = STUDY_KINDS
    max_bytes: int = 1_000_000
    heads: int = 1

    def replace(self, **changes) -> StudyProfile:
        """A copy with some fields changed, in canonical form."""
        return canonical(dataclasses.replace(self, **changes))

    def model_spec(self, depth: int, vocab: int) -> ModelSpec:
        """The `ModelSpec` of the study's runs at `depth` with a vocabulary of `vocab` tokens."""
        config = ShapedConfig(heads=self.heads)
        return ModelSpec(
            width=self.width, depth=depth, vocab=vocab, seq_len=self.seq_len, config=config
        )

    def train_config(self) -> TrainConfig:
        """The `TrainConfig` of the study's runs (their learning rate is set per run)."""
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            warmup=self.warmup,
            eval_every=self.eval_every,
            eval_batch_size=self.eval_batch_size,
        )

    def settings(self) -> dict:
        """JSON-ready canonical settings (what the result directory's manifest records)."""
        out = dataclasses.asdict(self)
        out["train"] = self.train_config().to_dict()
        return out


def canonical(profile: StudyProfile) -> StudyProfile:
    """The profile with kinds in `MODEL_KINDS` order and depths and lrs sorted, deduplicated."""
    for kind in profile.kinds:
        kind_spec(kind)
    kinds = tuple(k for k in MODEL_KINDS if k in set(profile.kinds))
    lrs = tuple(sorted({float(lr) for lr in profile.lrs}))
    depths = tuple(sorted({int(d) for d in profile.depths}))
    if profile.steps % profile.eval_every:
        raise ValueError(
            f"profile {profile.name!r}: steps={profile.steps} is not a multiple of "
            f"eval_every={profile.eval_every}; choose eval_every dividing steps"
        )
    if not (kinds and lrs and depths) or profile.seeds < 1:
        raise ValueError(f"profile {profile.name!r}: needs kinds, lrs, depths and seeds >= 1")
    if any(lr <= 0 for lr in lrs):
        raise ValueError(f"profile {profile.name!r}: learning rates must be > 0, got {lrs}")
    return dataclasses.replace(profile, kinds=kinds, lrs=lrs, depths=depths)


PROFILES = {
    "cpu": canonical(
        StudyProfile(
            name="cpu",
            width=32,
            depths=(4, 16, 32),
            seq_len=32,
            batch_size=8,
            steps=300,
            warmup=30,
            eval_every=25,
            eval_batch_size=32,
            lrs=half_decades(-2.5, 8),
            seeds=3,
        )
    ),
    "gpu": canonical(
        StudyProfile(
            name="gpu",
            width=256,
            depths=(4, 16, 32, 64),
            seq_len=256,
            batch_size=32,
            steps=2000,
            warmup=200,
            eval_every=100,
            eval_batch_size=64,
            lrs=half_decades(-3.0, 9),
            seeds=3,
            max_bytes=4_000_000,
            heads=4,
        )
    ),
    "tiny": canonical(
        StudyProfile(
            name="tiny",
            width=16,
            depths=(2, 4),
            seq_len=16,
            batch_size=4,
            steps=20,
            warmup=4,
            eval_every=10,
            eval_batch_size=8,
            lrs=(0.01, 0.1, 1.0, 10.0),
            seeds=2,
            max_bytes=100_000,
        )
    ),
}
"""Study profiles: "cpu" (the committed study, <= 45 min on 2 unloaded cores), "gpu" (for a GPU
session), "tiny" (tests and the notebook's small scale)."""


@dataclasses.dataclass(frozen=True)
class Group:
    """One group of the study: the runs of a (kind, depth, seed) at every learning rate."""

    kind: str
    depth: int
    seed: int

    @property
    def id(self) -> str:
        """The stable id of the group (`group_id`), e.g. `shaped_d16_s0`."""
        return group_id(self.kind, self.depth, self.seed)

    def run_ids(self, lrs: Sequence[float]) -> list[str]:
        """The stable ids of the group's runs (`run_id`), one per learning rate in `lrs`."""
        return [run_id(self.kind, self.depth, lr, self.seed) for lr in lrs]


def groups(profile: StudyProfile, base_seed: int = 0) -> Iterator[Group]:
    """Every group of the study in run order: seed, then depth, then kind."""
    profile = canonical(profile)
    for seed in range(base_seed, base_seed + profile.seeds):
        for depth in profile.depths:
            for kind in profile.kinds:
                yield Group(kind, depth, seed)
