"""The second training study: divergence edges of seven model kinds across width and depth.

A **cell** is one (kind, width, depth, seed). Its runs are a coarse learning-rate grid (factor
`grid_factor` between points, trained together as the lanes of one `GroupTrainer`), then probes
that bisect the divergence edge until it is known to within `edge_factor`
(`sdeformer.train.edges`); each probe is a one-lane group. Depths are `round(T n)` for the
profile's depth-to-width ratios `T = d / n`. Every run is one result unit, named by `unit_id`
from its values. Cells run seed by seed, so a study stopped early has every (kind, width, depth)
with fewer seeds rather than some with none.

Pairing: the runs of a (width, depth, seed) start from one initialisation key and see one data
stream, whatever the kind and learning rate (the shaped-architecture kinds share their initial
weights exactly; the LayerNorm kinds draw theirs from the same key).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import jax
import jax.random as jr

from ..config import ShapedConfig
from .edges import geometric_grid, probes_needed
from .group import data_key, stable_hash
from .spec import MODEL_KINDS, ModelSpec, TrainConfig, kind_spec

EDGE_KINDS = (
    "shaped",
    "shaped-ln",
    "standard",
    "gpt2-preln",
    "postln",
    "shaped-recover",
    "shaped-learn",
)
"""The kinds of the second study (docs/training.md, "The second study")."""


@dataclasses.dataclass(frozen=True)
class EdgeProfile:
    """Sizes of an edge study. `steps` must be a multiple of `eval_every`."""

    name: str
    widths: tuple[int, ...]
    ratios: tuple[float, ...]
    heads: int
    seq_len: int
    batch_size: int
    steps: int
    warmup: int
    eval_every: int
    eval_batch_size: int
    grid_low: float
    grid_factor: float
    grid_count: int
    edge_factor: float
    seeds: int
    kinds: tuple[str, ...] = EDGE_KINDS
    max_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        for kind in self.kinds:
            kind_spec(kind)
        if self.steps % self.eval_every:
            raise ValueError(
                f"profile {self.name!r}: steps={self.steps} is not a multiple of "
                f"eval_every={self.eval_every}; choose eval_every dividing steps"
            )
        if not (self.widths and self.ratios and self.kinds) or self.seeds < 1:
            raise ValueError(f"profile {self.name!r}: needs widths, ratios, kinds and seeds >= 1")
        bad = [w for w in self.widths if w % self.heads]
        if bad:
            raise ValueError(
                f"profile {self.name!r}: widths {bad} are not multiples of heads={self.heads}; "
                "the output projection needs n / heads value columns per head"
            )
        if any(not r > 0 for r in self.ratios):
            raise ValueError(f"profile {self.name!r}: ratios d/n must be > 0, got {self.ratios}")
        geometric_grid(self.grid_low, self.grid_factor, self.grid_count)
        probes_needed(self.grid_factor, self.edge_factor)

    def replace(self, **changes) -> EdgeProfile:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    @property
    def grid(self) -> tuple[float, ...]:
        """The coarse learning-rate grid."""
        return geometric_grid(self.grid_low, self.grid_factor, self.grid_count)

    @property
    def probes(self) -> int:
        """Probes per cell that bisect a grid bracket to within `edge_factor`."""
        return probes_needed(self.grid_factor, self.edge_factor)

    def depths(self, width: int) -> tuple[int, ...]:
        """The depths round(T n) of the profile's ratios at `width` (at least 1)."""
        return tuple(max(1, round(r * width)) for r in self.ratios)

    def model_spec(self, width: int, depth: int, vocab: int) -> ModelSpec:
        """The `ModelSpec` of the runs at (width, depth): heads with an output projection."""
        config = ShapedConfig(heads=self.heads, out_proj=True)
        return ModelSpec(width=width, depth=depth, vocab=vocab, seq_len=self.seq_len, config=config)

    def train_config(self) -> TrainConfig:
        """The `TrainConfig` of the runs (AdamW, cosine, clip 1; lr set per run)."""
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            warmup=self.warmup,
            eval_every=self.eval_every,
            eval_batch_size=self.eval_batch_size,
        )

    def settings(self) -> dict:
        """JSON-ready settings (what the result directory's manifest records)."""
        out = dataclasses.asdict(self)
        out["grid"] = list(self.grid)
        out["probes_per_cell"] = self.probes
        out["train"] = self.train_config().to_dict()
        return out

    def cells(self, base_seed: int = 0) -> Iterator[Cell]:
        """Every cell in run order: seed, then width, then depth, then kind."""
        kinds = [k for k in MODEL_KINDS if k in self.kinds]
        for seed in range(base_seed, base_seed + self.seeds):
            for width in self.widths:
                for depth in self.depths(width):
                    for kind in kinds:
                        yield Cell(kind, width, depth, seed)

    def tokens_per_run(self) -> int:
        """Training tokens of one run that does not diverge."""
        return self.steps * self.batch_size * self.seq_len


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (kind, width, depth, seed) of an edge study."""

    kind: str
    width: int
    depth: int
    seed: int

    @property
    def id(self) -> str:
        """Stable id, e.g. `shaped_n64_d16_s0`."""
        return f"{self.kind}_n{self.width}_d{self.depth}_s{self.seed}"

    def unit_id(self, lr: float) -> str:
        """Stable id of the cell's run at `lr`, e.g. `shaped_n64_d16_lr=0.125_s0`."""
        return f"{self.kind}_n{self.width}_d{self.depth}_lr={float(lr):.6g}_s{self.seed}"

    def keys(self, base: int = 0) -> tuple[jax.Array, jax.Array]:
        """(initialisation key of (width, depth, seed), data key of seed): shared by kinds."""
        init = jr.fold_in(
            jr.key(base), stable_hash(f"init:n{self.width}:d{self.depth}:s{self.seed}")
        )
        return init, data_key(self.seed, base)


def flops_per_token(width: int, depth: int, seq_len: int, vocab: int, mlp_ratio: float = 1.0):
    """Approximate training flops per token (forward + backward = 3 x forward).

    Forward per token: 2 x (4 n^2 attention projections + 2 n n_h MLP) per layer, 4 m n per
    layer for the scores and the mixing (m = seq_len), 2 n vocab for the readout. LayerNorms,
    softmax and the optimiser are left out (a few percent at these sizes).
    """
    nh = max(1, round(mlp_ratio * width))
    layer = 2 * (4 * width * width + 2 * width * nh) + 4 * seq_len * width
    return 3.0 * (depth * layer + 2 * width * vocab)


def planned_flops(profile: EdgeProfile, vocab: int) -> float:
    """Flops of the whole study if no run diverges early (grid and probes; an upper bound)."""
    total = 0.0
    runs_per_cell = profile.grid_count + profile.probes
    for width in profile.widths:
        for depth in profile.depths(width):
            per_token = flops_per_token(width, depth, profile.seq_len, vocab)
            total += per_token * profile.tokens_per_run() * runs_per_cell
    return total * len(profile.kinds) * profile.seeds


SQRT2 = math.sqrt(2.0)

EDGE_PROFILES = {
    "cpu": EdgeProfile(
        name="cpu",
        widths=(32, 64),
        ratios=(0.25, 1.0),
        heads=2,
        seq_len=64,
        batch_size=4,
        steps=200,
        warmup=20,
        eval_every=20,
        eval_batch_size=16,
        grid_low=4.0**-4,
        grid_factor=4.0,
        grid_count=7,
        edge_factor=SQRT2,
        seeds=5,
    ),
    "gpu": EdgeProfile(
        name="gpu",
        widths=(128, 256, 512),
        ratios=(0.25, 1.0),
        heads=4,
        seq_len=256,
        batch_size=32,
        steps=2000,
        warmup=200,
        eval_every=100,
        eval_batch_size=64,
        grid_low=4.0**-4,
        grid_factor=4.0,
        grid_count=7,
        edge_factor=SQRT2,
        seeds=5,
        max_bytes=4_000_000,
    ),
    "tiny": EdgeProfile(
        name="tiny",
        widths=(8,),
        ratios=(0.25, 1.0),
        heads=2,
        seq_len=8,
        batch_size=2,
        steps=10,
        warmup=2,
        eval_every=5,
        eval_batch_size=4,
        grid_low=0.01,
        grid_factor=4.0,
        grid_count=4,
        edge_factor=SQRT2,
        seeds=2,
        max_bytes=100_000,
    ),
}
"""Edge-study profiles: "cpu" (the registered study, docs/training.md), "gpu" (for a device
session; 2000 steps x 32 x 256 = 1.6e7 tokens per run), "tiny" (tests)."""
