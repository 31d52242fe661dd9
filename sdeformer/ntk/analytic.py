"""The NTK of `ShallowEncoder` with uniform attention: arc-cosine kernels of the pooled inputs.

Under tau0 = d_m^{-1} the logits are O(d_m^{-1/2}), so the attention tends to the uniform average
and every token of `A V` equals `a ubar^T W_V` with `ubar` the mean token. The model becomes the
two-layer ReLU network `f = tau1 w_O^T relu(a W_V^T ubar)`, whose expected NTK is exact at every
width (derivation in docs/ntk.md):

    Kbar(u, u') = tau1^2 d_m [ s_V kappa1(u, u') + a^2 s_O (u.u') kappa0(u, u') ]

with s_V = a^2 var_in and s_O = var_out the effective variances of the V and O weights and

    kappa0(u, u') = (pi - theta) / (2 pi)
    kappa1(u, u') = |u| |u'| (sin theta + (pi - theta) cos theta) / (2 pi),
    cos theta = u.u' / (|u| |u'|).

The gradients of W_Q and W_K vanish relative to this as d_m grows (O(d_m^{-1}) under "ntk").
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..config import check_width
from .encoder import check_init, init_constants


def pooled(xs: Float[Array, "N tokens d"]) -> Float[Array, "N d"]:
    """The mean token of each input (what uniform attention followed by pooling sees)."""
    return jnp.mean(xs, axis=1)


def arccos_kernels(u: Float[Array, "N d"]) -> tuple[Float[Array, "N N"], Float[Array, "N N"]]:
    """(kappa0, kappa1): the degree-0 and degree-1 arc-cosine kernels with E over w ~ N(0, I).

    kappa0(u, u') = P[w.u > 0, w.u' > 0], kappa1(u, u') = E[relu(w.u) relu(w.u')].
    """
    norms = jnp.linalg.norm(u, axis=1)
    outer = norms[:, None] * norms[None, :]
    dots = u @ u.T
    safe = jnp.where(outer > 0, outer, jnp.ones((), u.dtype))
    cos = jnp.clip(dots / safe, -1.0, 1.0)
    theta = jnp.arccos(cos)
    kappa0 = jnp.where(outer > 0, (math.pi - theta) / (2 * math.pi), jnp.zeros((), u.dtype))
    kappa1 = outer * (jnp.sqrt(1.0 - cos**2) + (math.pi - theta) * cos) / (2 * math.pi)
    return kappa0, kappa1


def ntk_scale(init: str, width: int) -> float:
    """The width growth of the NTK: d_m for "lecun" and "he", 1 for "ntk".

    "lecun" and "he" are the standard parameterisation. `Kbar / ntk_scale` has a finite limit as
    d_m grows (`limit_ntk`).
    """
    width = check_width(width, name="width (d_m)")
    return 1.0 if check_init(init) == "ntk" else float(width)


def analytic_ntk(xs: Float[Array, "N tokens d"], *, init: str, width: int) -> Float[Array, "N N"]:
    """Expected NTK (N, N) of `ShallowEncoder(d, width, init=init)` under uniform attention.

    Exact at every width for the two-layer network of the pooled inputs (V and O gradients);
    the empirical NTK under tau0 = d_m^{-1} converges to it at the rate d_m^{-1/2}.
    """
    width = check_width(width, name="width (d_m)")
    d = xs.shape[-1]
    c = init_constants(init, d, width)
    u = pooled(xs)
    kappa0, kappa1 = arccos_kernels(u)
    s_v = c["a_in"] ** 2 * c["var_in"]
    s_o = c["var_out"]
    return (c["tau1"] ** 2 * width) * (s_v * kappa1 + c["a_in"] ** 2 * s_o * (u @ u.T) * kappa0)


def limit_ntk(xs: Float[Array, "N tokens d"], *, init: str) -> Float[Array, "N N"]:
    """lim_{d_m -> inf} Kbar / ntk_scale.

    kappa1/d (LeCun), 2 kappa1/d (He), (kappa1 + u.u' kappa0)/d (NTK). Under LeCun and He only
    the output layer's gradients survive this limit.
    """
    init = check_init(init)
    d = xs.shape[-1]
    u = pooled(xs)
    kappa0, kappa1 = arccos_kernels(u)
    if init == "lecun":
        return kappa1 / d
    if init == "he":
        return 2.0 * kappa1 / d
    return (kappa1 + (u @ u.T) * kappa0) / d
