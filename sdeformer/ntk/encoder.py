"""The shallow encoder-only Transformer of Wu, Liu, Chrysos & Cevher (2023)."""

from __future__ import annotations

import math
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..config import check_width

SCALINGS = ("sqrt", "linear")
"""Named logit scalings: "sqrt" is tau0 = d_m^{-1/2}, "linear" is tau0 = d_m^{-1}."""

INITS = ("lecun", "he", "ntk")
"""Initialisation / parameterisation schemes (see `ShallowEncoder`)."""


def check_init(init: object) -> str:
    """`init` if it is one of `INITS`; else a ValueError that lists them."""
    if init not in INITS:
        raise ValueError(f"init={init!r} is not a known initialisation; choose one of {INITS}")
    return str(init)


def resolve_tau0(scaling: str | float, width: int) -> float:
    """The logit factor tau0 for a named scaling ("sqrt", "linear") or a given positive number."""
    if isinstance(scaling, str):
        if scaling == "sqrt":
            return 1.0 / math.sqrt(width)
        if scaling == "linear":
            return 1.0 / width
        raise ValueError(
            f"scaling={scaling!r} is unknown; choose {SCALINGS[0]!r} (tau0 = d_m^-1/2), "
            f"{SCALINGS[1]!r} (tau0 = d_m^-1) or pass tau0 as a positive float"
        )
    if isinstance(scaling, bool) or not isinstance(scaling, numbers.Real):
        raise ValueError(f"scaling={scaling!r} is invalid; pass 'sqrt', 'linear' or a float > 0")
    if not (math.isfinite(scaling) and scaling > 0):
        raise ValueError(f"scaling (tau0) = {scaling!r} is invalid; tau0 must be finite and > 0")
    return float(scaling)


def init_constants(init: str, d: int, width: int) -> dict[str, float]:
    """Per-scheme constants: trained-entry variances, forward multipliers and tau1.

    Returns `var_in` (variance of the trained entries of W_Q, W_K, W_V), `var_out` (of w_O),
    `a_in` (forward multiplier on X W_{Q,K,V}) and `tau1` (forward multiplier of the output).
    The effective weights a_in * W have variance `a_in^2 var_in` = 1/d (LeCun, NTK) or 2/d (He).
    """
    init = check_init(init)
    if init == "lecun":
        return {"var_in": 1.0 / d, "var_out": 1.0 / width, "a_in": 1.0, "tau1": 1.0}
    if init == "he":
        return {"var_in": 2.0 / d, "var_out": 2.0 / width, "a_in": 1.0, "tau1": 1.0}
    return {
        "var_in": 1.0,
        "var_out": 1.0,
        "a_in": 1.0 / math.sqrt(d),
        "tau1": 1.0 / math.sqrt(width),
    }


class ShallowEncoder(eqx.Module):
    r"""One self-attention layer, a ReLU feature layer, token pooling and a linear head.

    For one input `X` in R^{N_tokens x d` (rows are tokens; batch with `jax.vmap`):

        Q = a X W_Q,  K = a X W_K,  V = a X W_V            W_Q, W_K, W_V in R^{d x d_m}
        A = softmax_rows(tau0 Q K^T)                       (N_tokens x N_tokens)
        H = relu(A V)                                      (N_tokens x d_m), the feature layer
        f(X) = tau1 * w_O^T (1/N_tokens) sum_i H_i        w_O in R^{d_m}, f(X) a scalar

    Scalings (`scaling`): "sqrt" gives tau0 = d_m^{-1/2}, the logits tau0 q_i.k_j stay O(1) as
    d_m grows; "linear" gives tau0 = d_m^{-1}, the logits are O(d_m^{-1/2}) and A tends to the
    uniform average (1/N) 1 1^T in the wide limit; a positive float is used as tau0 directly.

    Initialisations (`init`), all entries iid Gaussian:

    | init    | W_Q, W_K, W_V entries | w_O entries  | a          | tau1         |
    |---------|-----------------------|--------------|------------|--------------|
    | "lecun" | N(0, 1/d)             | N(0, 1/d_m)  | 1          | 1            |
    | "he"    | N(0, 2/d)             | N(0, 2/d_m)  | 1          | 1            |
    | "ntk"   | N(0, 1)               | N(0, 1)      | d^{-1/2}   | d_m^{-1/2}   |

    LeCun and NTK give the same function at initialisation (in law); they differ in the
    gradients: under LeCun/He the NTK grows like d_m (its leading part comes from w_O alone),
    under "ntk" it has an O(1) limit with w_O and W_V contributing equally (docs/ntk.md).
    Inputs are expected with entries of order one (token norms about sqrt(d)).

    Map from the paper (Wu, Liu, Chrysos & Cevher, NeurIPS 2023, "On the convergence of
    encoder-only shallow Transformers"; their weights act on the right, ours on the left):

    | paper                              | here                                      |
    |------------------------------------|-------------------------------------------|
    | X in R^{d_s x d}, d_s tokens       | `x` of shape (N_tokens, d)                |
    | W_Q, W_K, W_V in R^{d_m x d}       | `wq`, `wk`, `wv` (transposed: d x d_m)    |
    | tau0 in {d_m^{-1/2}, d_m^{-1}}     | `tau0` from `scaling` ("sqrt", "linear")  |
    | sigma_s (row softmax), sigma_r     | `jax.nn.softmax` over rows, ReLU          |
    | varphi (pooling over tokens)       | mean over the tokens                      |
    | w_O, tau1                          | `wo`, `tau1`                              |
    | LeCun / He / NTK initialisation    | `init` = "lecun" / "he" / "ntk"           |

    The paper's NTK initialisation draws N(0, 1) weights and puts tau1 = d_m^{-1/2} on the
    output; ours adds the input factor a = d^{-1/2} so that it needs no normalised inputs.
    """

    wq: Float[Array, "d dm"]
    wk: Float[Array, "d dm"]
    wv: Float[Array, "d dm"]
    wo: Float[Array, " dm"]
    tau0: Float[Array, ""]
    tau1: Float[Array, ""]
    a_in: Float[Array, ""]
    init: str = eqx.field(static=True)
    scaling: str | float = eqx.field(static=True)

    def __init__(
        self,
        d: int,
        width: int,
        *,
        scaling: str | float = "sqrt",
        init: str = "lecun",
        key: PRNGKeyArray,
        dtype=jnp.float32,
    ):
        d = check_width(d, name="d (token dimension)")
        width = check_width(width, name="width (d_m)")
        consts = init_constants(init, d, width)
        # Scale factors are arrays (not static fields) so that one compiled function serves every
        # scaling and initialisation; `trainable_spec` keeps them out of the parameters.
        self.tau0 = jnp.asarray(resolve_tau0(scaling, width), dtype)
        self.tau1 = jnp.asarray(consts["tau1"], dtype)
        self.a_in = jnp.asarray(consts["a_in"], dtype)
        self.init = init
        self.scaling = scaling
        qkey, kkey, vkey, okey = jr.split(key, 4)
        sd_in, sd_out = math.sqrt(consts["var_in"]), math.sqrt(consts["var_out"])
        self.wq = sd_in * jr.normal(qkey, (d, width), dtype)
        self.wk = sd_in * jr.normal(kkey, (d, width), dtype)
        self.wv = sd_in * jr.normal(vkey, (d, width), dtype)
        self.wo = sd_out * jr.normal(okey, (width,), dtype)

    def trainable_spec(self):
        """Filter spec (same structure, booleans): True on W_Q, W_K, W_V and w_O only."""
        spec = jax.tree.map(lambda _: False, self)
        return eqx.tree_at(
            lambda m: (m.wq, m.wk, m.wv, m.wo), spec, replace=(True, True, True, True)
        )

    @property
    def width(self) -> int:
        """The width d_m of the attention layer (columns of W_V)."""
        return self.wv.shape[1]

    @property
    def d(self) -> int:
        """The input dimension d (rows of W_V)."""
        return self.wv.shape[0]

    def attention(self, x: Float[Array, "tokens d"]) -> Float[Array, "tokens tokens"]:
        """The attention matrix A = softmax_rows(tau0 Q K^T) of one input."""
        q = self.a_in * (x @ self.wq)
        k = self.a_in * (x @ self.wk)
        return jax.nn.softmax(self.tau0 * (q @ k.T), axis=-1)

    def features(self, x: Float[Array, "tokens d"]) -> Float[Array, " dm"]:
        """The pooled ReLU features (1/N) sum_i relu(A V)_i of one input."""
        v = self.a_in * (x @ self.wv)
        return jnp.mean(jax.nn.relu(self.attention(x) @ v), axis=0)

    def __call__(self, x: Float[Array, "tokens d"]) -> Float[Array, ""]:
        """The scalar output tau1 <features(x), w_O> of one input."""
        return self.tau1 * jnp.dot(self.features(x), self.wo)
