"""The validated parameter object shared by the finite, law and limit faces of every block.

Also the input checks every layer above uses: `check_width` and `check_covariance`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from . import _block_registry, _lapack

BLOCK_NAMES = (
    "attention",
    "mlp",
    "standard_attention",
    "preln_attention",
    "preln_mlp",
)
"""The built-in block types; `sdeformer.register_block` adds more (see `sdeformer.blocks`)."""


def _block_names() -> tuple[str, ...]:
    """The names of the registered block types (built-in and the user's), at call time."""
    return tuple(_block_registry.REGISTRY)


def _fail(name: str, value: object, fix: str) -> None:
    raise ValueError(f"ShapedConfig: {name}={value!r} is invalid; {fix}")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@typing.no_type_check  # it validates its own fields, with messages that name the fix
@dataclasses.dataclass(frozen=True)
class ShapedConfig:
    """Parameters of a shaped Transformer (docs/theory.md sections 1-3).

    One immutable, hashable object (it can be a static argument of `jax.jit`) shared by the three
    faces of every block: the finite Equinox module, the exact finite-width law and the limiting
    SDE coefficients.

    Map from "The Shaped Transformer" (Noci et al., 2023) to these fields:

    | paper                               | here                                        |
    |-------------------------------------|---------------------------------------------|
    | tau_0 (temperature tau = tau_0 sqrt(n n_k)) | `tau0`                              |
    | gamma, lambda (lambda^2 + gamma^2 = 1)      | `gamma`, `lam` (derived)            |
    | c_+, c_- (ReLU slopes 1 + c/sqrt(n))        | `c_plus`, `c_minus`                 |
    | number of heads                     | `heads`                                     |
    | n_k (key/query width)               | `key_width` or `key_ratio * n`              |
    | MLP hidden width n_h = r n          | `mlp_ratio` (r)                             |
    | output projection W^O               | `out_proj`                                  |
    | causal mask (language models)       | `causal`                                    |
    | block order inside one layer        | `blocks`                                    |

    Block names in `blocks`: "attention" (shaped attention), "mlp" (shaped-ReLU MLP),
    "standard_attention" (unshaped Softmax attention with the same residual), "preln_attention"
    and "preln_mlp" (a standard Pre-LN Transformer block), and any name registered with
    `sdeformer.register_block` (docs/usage.md, "Your own block type"); an unknown name raises
    `ValueError` listing the registered ones. The names are validated when the config is built:
    register a block type before building a config that uses it.
    """

    tau0: float = 1.0
    gamma: float = 0.5
    c_plus: float = 0.0
    c_minus: float = -1.0
    heads: int = 1
    key_width: int | None = None
    key_ratio: float | None = None
    mlp_ratio: float = 1.0
    out_proj: bool = False
    causal: bool = False
    blocks: tuple[str, ...] = ("attention", "mlp")

    def __post_init__(self) -> None:
        def real(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                _fail(name, value, "pass a real number")
            if not math.isfinite(value):
                _fail(name, value, "pass a finite number")
            return float(value)

        if real("tau0") <= 0:
            _fail("tau0", self.tau0, "the attention temperature tau0 must be > 0 (e.g. tau0=1.0)")
        gamma = real("gamma")
        if not 0 < gamma < 1:
            _fail(
                "gamma",
                self.gamma,
                "need 0 < gamma < 1 (the skip weight lam = sqrt(1 - gamma^2) is derived)",
            )
        real("c_plus")
        real("c_minus")
        if not _is_int(self.heads) or self.heads < 1:
            _fail("heads", self.heads, "the number of heads must be an integer >= 1")
        if self.key_width is not None and self.key_ratio is not None:
            _fail(
                "key_width",
                self.key_width,
                f"give either key_width or key_ratio (got key_ratio={self.key_ratio!r}), not both",
            )
        if self.key_width is not None and (not _is_int(self.key_width) or self.key_width < 1):
            _fail("key_width", self.key_width, "the key/query width n_k must be an integer >= 1")
        if self.key_ratio is not None and real("key_ratio") <= 0:
            _fail("key_ratio", self.key_ratio, "the key/query width ratio n_k / n must be > 0")
        if real("mlp_ratio") <= 0:
            _fail("mlp_ratio", self.mlp_ratio, "the MLP hidden ratio n_h / n must be > 0")
        for flag in ("out_proj", "causal"):
            if not isinstance(getattr(self, flag), bool):
                _fail(flag, getattr(self, flag), "pass True or False")
        blocks = self.blocks
        if isinstance(blocks, str):
            blocks = (blocks,)
        try:
            blocks = tuple(blocks)
        except TypeError:
            _fail("blocks", self.blocks, f"pass a sequence of block names from {_block_names()}")
        if not blocks:
            _fail("blocks", self.blocks, f"a layer needs at least one block from {_block_names()}")
        for name in blocks:
            if not isinstance(name, str) or name not in _block_names():
                _fail(
                    "blocks",
                    self.blocks,
                    f"unknown block {name!r}; the registered blocks are {_block_names()} (a "
                    "block type of your own must be registered first: sdeformer.register_block)",
                )
        object.__setattr__(self, "blocks", blocks)

    @property
    def lam(self) -> float:
        """The skip weight lambda = sqrt(1 - gamma^2)."""
        return math.sqrt(1.0 - self.gamma**2)

    def n_k(self, n: int) -> int:
        """Key/query width at model width `n` (default: n_k = n)."""
        if self.key_width is not None:
            return self.key_width
        ratio = 1.0 if self.key_ratio is None else self.key_ratio
        return max(1, round(ratio * n))

    def n_h(self, n: int) -> int:
        """MLP hidden width n_h = round(mlp_ratio * n), at least 1."""
        return max(1, round(self.mlp_ratio * n))

    def replace(self, **changes) -> ShapedConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def is_shaped(self) -> bool:
        """True when every block defines the limit faces of the covariance SDE.

        Among the built-in blocks: shaped attention and shaped MLP.
        """
        types = _block_registry.REGISTRY
        faces = _block_registry.LIMIT_FACES
        return all(all(types[b].has_face(f) for f in faces) for b in self.blocks)

    def to_dict(self) -> dict:
        """Plain JSON-ready dictionary of the fields."""
        out = dataclasses.asdict(self)
        out["blocks"] = list(self.blocks)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ShapedConfig:
        """Inverse of `to_dict`; unknown keys raise a ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"ShapedConfig: unknown field(s) {unknown}; the fields are {sorted(names)}"
            )
        data = dict(data)
        if "blocks" in data:
            data["blocks"] = tuple(data["blocks"])
        return cls(**data)


TRACEABLE_FIELDS = ("tau0", "gamma", "c_plus", "c_minus")
"""The fields of `ShapedConfig` that the covariance SDE can take as JAX values (`with_values`)."""


class _ValuedConfig(ShapedConfig):
    """A `ShapedConfig` whose real parameters are JAX scalars (see `with_values`)."""

    @property
    def lam(self):
        """The skip weight sqrt(1 - gamma^2), as a JAX value."""
        return jnp.sqrt(1.0 - self.gamma**2)


def _check_traceable(values: dict) -> None:
    unknown = sorted(set(values) - set(TRACEABLE_FIELDS))
    if unknown:
        raise ValueError(
            f"{unknown} cannot be JAX values; only {list(TRACEABLE_FIELDS)} can (the other "
            "fields of ShapedConfig set the structure of the computation)"
        )


def with_values(config: ShapedConfig, values: dict) -> ShapedConfig:
    """`config` with some of `TRACEABLE_FIELDS` replaced by JAX scalars (traced under jit/vmap).

    The limit faces of the blocks read `tau0`, `gamma`, `c_plus` and `c_minus` only in
    arithmetic, so they run unchanged on such a config: one compiled SDE solver then serves
    every value of the parameters (phase maps), and derivatives in them are pathwise
    (`jax.jvp`). The structure (blocks, heads, causal, out_proj, mlp_ratio) stays static. The
    values are not validated here (they may be tracers): check them where they are concrete
    (`check_values`). The result is not hashable; use it only inside the computation.
    """
    _check_traceable(values)
    out = object.__new__(_ValuedConfig)
    for field in dataclasses.fields(config):
        object.__setattr__(out, field.name, getattr(config, field.name))
    for name, value in values.items():
        object.__setattr__(out, name, jnp.asarray(value))
    return out


def check_values(config: ShapedConfig, values: dict) -> dict[str, np.ndarray]:
    """Validate concrete parameter values (arrays of any shape) by the rules of `ShapedConfig`.

    Returns them as float64 NumPy arrays; a `ValueError` names the first bad value and the fix.
    """
    _check_traceable(values)
    out = {}
    for name, value in values.items():
        array = np.asarray(value, dtype=np.float64)
        for item in np.unique(array.ravel()):
            config.replace(**{name: float(item)})  # the ShapedConfig rules, one message
        out[name] = array
    return out


def check_width(n: object, *, minimum: int = 1, name: str = "n") -> int:
    """Validate a width (or another positive integer size) and return it as an int."""
    if not _is_int(n) or n < minimum:
        raise ValueError(f"{name}={n!r} is invalid; pass an integer >= {minimum}")
    return int(n)


def _check_square(shape: tuple[int, ...], name: str) -> None:
    """Refuse a covariance shape that is not (m, m) with m >= 2 tokens."""
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name} has shape {shape}; pass a square (m, m) covariance matrix")
    if shape[0] < 2:
        raise ValueError(f"{name} is {shape[0]} x {shape[0]}; need m >= 2 tokens")


def check_covariance(v0, *, name: str = "v0", tol: float = 1e-6) -> Array:
    """Validate an input covariance (host-side): square m x m with m >= 2, finite, symmetric, PSD.

    Returns it as a JAX array (float32 unless it already is float64 under x64).

    Under `jax.jit` (a traced `v0`) the shape checks still run at trace time and the value
    checks (finite, symmetric, PSD) run on the device with `eqx.error_if`: a bad matrix raises
    an `EquinoxRuntimeError` with the same message when the jitted function runs, never NaNs.
    """
    if isinstance(v0, jax.core.Tracer):
        return _check_traced_covariance(v0, name=name, tol=tol)
    arr = np.asarray(v0)
    _check_square(arr.shape, name)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite entries (NaN or Inf); pass a finite matrix")
    scale = max(float(np.abs(arr).max()), 1e-30)
    if np.abs(arr - arr.T).max() > tol * scale * 10:
        raise ValueError(
            f"{name} is not symmetric (max |V - V^T| = {np.abs(arr - arr.T).max():.3g}); "
            "pass (V + V^T) / 2"
        )
    smallest = float(np.linalg.eigvalsh(0.5 * (arr + arr.T).astype(np.float64)).min())
    if smallest < -tol * scale * 10:
        raise ValueError(
            f"{name} is not positive semi-definite (smallest eigenvalue {smallest:.3g}); "
            "pass a covariance matrix X X^T / n"
        )
    return jnp.asarray(arr)


def _check_traced_covariance(v0, *, name: str, tol: float) -> Array:
    """`check_covariance` for a traced matrix: static shape checks, value checks on device."""
    _check_square(v0.shape, name)
    if not jnp.issubdtype(v0.dtype, jnp.floating):
        v0 = v0.astype(jnp.float32)
    finite = jnp.all(jnp.isfinite(v0))
    v0 = eqx.error_if(
        v0, ~finite, f"{name} has non-finite entries (NaN or Inf); pass a finite matrix"
    )
    safe = jnp.where(finite, v0, 0.0)
    scale = jnp.maximum(jnp.max(jnp.abs(safe)), 1e-30)
    asym = jnp.max(jnp.abs(safe - safe.T))
    v0 = eqx.error_if(v0, asym > tol * scale * 10, f"{name} is not symmetric; pass (V + V^T) / 2")
    smallest = _lapack.eigvalsh(0.5 * (safe + safe.T))[0]
    return eqx.error_if(
        v0,
        smallest < -tol * scale * 10,
        f"{name} is not positive semi-definite (negative eigenvalue); pass a covariance "
        "matrix X X^T / n",
    )
