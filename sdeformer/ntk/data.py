"""Data sets for the NTK experiments: a synthetic token task and scikit-learn's digits.

Both return `num_inputs` (N) inputs `xs` of shape (N, tokens, d) with entries of order one (what
the LeCun and He initialisations assume) and scalar targets `ys` of shape (N,) with mean 0 and
variance 1.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..config import check_width

DATASETS = ("synthetic", "digits")

DIGITS_SIZE = 1797
"""Number of images in scikit-learn's digits data set."""


def _standardise(y: np.ndarray) -> np.ndarray:
    y = y - y.mean()
    sd = y.std()
    return y / sd if sd > 0 else y


def synthetic_data(
    num_inputs: int, *, tokens: int = 8, d: int = 8, key: PRNGKeyArray, dtype=jnp.float32
) -> tuple[Float[Array, "num_inputs tokens d"], Float[Array, " num_inputs"]]:
    """`num_inputs` (N) inputs with iid N(0, 1) entries and a smooth nonlinear teacher target.

    `y = sin(sqrt(tokens) ubar.b) + mean_t tanh(x_t.c)`, with `ubar` the mean token and
    b, c ~ N(0, I/d) fixed by `key`, then standardised over the N inputs.
    """
    num_inputs = check_width(num_inputs, name="num_inputs")
    tokens = check_width(tokens, name="tokens")
    d = check_width(d, name="d (token dimension)")
    xkey, bkey, ckey = jr.split(key, 3)
    xs = np.asarray(jr.normal(xkey, (num_inputs, tokens, d)), dtype=np.float64)
    b = np.asarray(jr.normal(bkey, (d,)), dtype=np.float64) / math.sqrt(d)
    c = np.asarray(jr.normal(ckey, (d,)), dtype=np.float64) / math.sqrt(d)
    y = np.sin(math.sqrt(tokens) * xs.mean(axis=1) @ b) + np.tanh(xs @ c).mean(axis=1)
    return jnp.asarray(xs, dtype), jnp.asarray(_standardise(y), dtype)


def digits_data(
    num_inputs: int, *, key: PRNGKeyArray, dtype=jnp.float32
) -> tuple[Float[Array, "num_inputs 8 8"], Float[Array, " num_inputs"]]:
    """`num_inputs` (N) images of scikit-learn's digits (shipped with it; nothing is downloaded).

    Each 8 x 8 image is 8 tokens (its rows) of dimension 8: the pixel-wise mean image of the whole
    data set is subtracted (otherwise all pooled inputs point the same way and the NTK is badly
    conditioned), then each image is scaled so that ||X||_F^2 = 64 (entries of order one).
    The target is the parity of the digit, +1 for even and -1 for odd, then standardised.
    `key` picks which N of the 1797 images (without replacement).
    """
    num_inputs = check_width(num_inputs, name="num_inputs")
    if num_inputs > DIGITS_SIZE:
        raise ValueError(
            f"num_inputs={num_inputs} is more than the {DIGITS_SIZE} digits images; "
            f"pass num_inputs <= {DIGITS_SIZE}"
        )
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits data set needs scikit-learn: pip install 'sdeformer[data]' "
            "(or pip install scikit-learn), or use the synthetic data"
        ) from err
    bunch = load_digits()
    pick = np.asarray(jr.permutation(key, DIGITS_SIZE))[:num_inputs]
    images = bunch.images.astype(np.float64)
    images = (images - images.mean(axis=0))[pick]
    norms = np.linalg.norm(images.reshape(num_inputs, -1), axis=1)
    images = images * (8.0 / np.maximum(norms, 1e-12))[:, None, None]
    y = np.where(bunch.target[pick] % 2 == 0, 1.0, -1.0)
    return jnp.asarray(images, dtype), jnp.asarray(_standardise(y), dtype)


def load_data(name: str, num_inputs: int, *, key: PRNGKeyArray, dtype=jnp.float32):
    """`synthetic_data` (8 tokens of dimension 8) or `digits_data` by name, `num_inputs` inputs.

    >>> import jax.random as jr
    >>> xs, ys = load_data("synthetic", 5, key=jr.key(0))
    >>> xs.shape, ys.shape
    ((5, 8, 8), (5,))
    """
    if name == "synthetic":
        return synthetic_data(num_inputs, key=key, dtype=dtype)
    if name == "digits":
        return digits_data(num_inputs, key=key, dtype=dtype)
    raise ValueError(f"data={name!r} is unknown; choose one of {DATASETS}")
