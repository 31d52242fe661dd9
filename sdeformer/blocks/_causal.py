"""Limit of causal shaped attention: drift and noise of the covariance SDE.

docs/theory.md, section "Causal attention".

Causal shaped attention (`ShapedConfig(causal=True)`): row `a` of the attention matrix is

    A_a. = e_a + softmax_{j <= a}(G_a. / (tau0 sqrt n)) - 1_{<= a}^T / k_a,    k_a = a (1-based)

so every row has its own centring. Notation (0-based code index `a` is token `a + 1`):

    p_a     = 1_{<= a}                       (indicator of the positions row a sees)
    C^(a)   = diag(p_a) - p_a p_a^T / k_a    (centring of the first k_a positions, 0 elsewhere)
    w^(a)   = diag(C^(a) V C^(a)),  u^(a)_j = (w^(a)_j - mean_{i <= a} w^(a)_i) 1[j <= a]
    S_ac    = tr(C^(a) V C^(c) V),  K^(ac) = V C^(a) V C^(c) V

Drift and the attention part of the noise (per unit time t = l / n):

    b_ac  = (gam^2/tau0^2) [ V_ac S_ac / (k_a k_c) + V_aa (u^(a)T V)_c / (2 k_a)
                             + V_cc (u^(c)T V)_a / (2 k_c) ]
    Sigma_att = kappa_att Lin + gam^4/(tau0^2 H) * causal_mix_tensor(V)
    causal_mix_tensor_{ab,cd} = V_ac K^(ac)_bd/(k_a k_c) + V_ad K^(ad)_bc/(k_a k_d)
                                + V_bc K^(bc)_ad/(k_b k_c) + V_bd K^(bd)_ac/(k_b k_d)

With every `k_a = m` and `C^(a) = C` this is the non-causal limit (`_limit.attention_drift` and
`_limit.mix_tensor(V, V C V C V) / m^2`). Token 1 (`a = 0`) gets no attention term (`C^(1) = 0`).

Code map: k_a -> `ks`, p_a -> `mask[a]` (row a of the lower-triangular ones), S -> `s`,
u^(a) -> `u[a]`.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..config import ShapedConfig


def _ks_mask(m: int, dtype) -> tuple[Float[Array, " m"], Float[Array, "m m"]]:
    """k_a = a + 1 (0-based a) and mask[a, j] = 1[j <= a]."""
    ks = jnp.arange(1, m + 1, dtype=dtype)
    mask = jnp.tril(jnp.ones((m, m), dtype))
    return ks, mask


def causal_centrings(m: int, dtype) -> Float[Array, "m m m"]:
    """The m matrices C^(a) = diag(p_a) - p_a p_a^T / k_a (dense, O(m^3): tests / small m)."""
    ks, mask = _ks_mask(m, dtype)
    return (
        jnp.einsum("aj,ij->aij", mask, jnp.eye(m, dtype=dtype))
        - jnp.einsum("ai,aj->aij", mask, mask) / ks[:, None, None]
    )


def _trace_table(v: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """S_ac = tr(C^(a) V C^(c) V) for all (a, c) in O(m^2) time and memory.

    With C^(a) = P_a - p_a p_a^T / k_a (P_a = diag(p_a)), R = V [p_0 ... p_{m-1}]
    (R_ic = sum_{j <= c} V_ij), B_ac = p_a^T V p_c, F_ac = sum_{i <= a, j <= c} V_ij^2 and
    Q_ac = p_c^T V P_a V p_c = sum_{i <= a} R_ic^2:

        S_ac = F_ac - Q_ac / k_c - Q_ca / k_a + B_ac^2 / (k_a k_c)

    (all four are two-dimensional prefix sums).
    """
    m = v.shape[-1]
    ks, _ = _ks_mask(m, v.dtype)
    f = jnp.cumsum(jnp.cumsum(v * v, axis=0), axis=1)
    r = jnp.cumsum(v, axis=1)
    b = jnp.cumsum(r, axis=0)
    q = jnp.cumsum(r * r, axis=0)
    return f - q / ks[None, :] - q.T / ks[:, None] + b * b / (ks[:, None] * ks[None, :])


def _u_rows(v: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """u[a, j] = u^(a)_j in O(m^2): w^(a)_j = V_jj - 2 (V p_a)_j / k_a + B_aa / k_a^2 (j <= a)."""
    m = v.shape[-1]
    ks, mask = _ks_mask(m, v.dtype)
    r = jnp.cumsum(v, axis=1)  # r[j, a] = (V p_a)_j
    b_diag = jnp.diagonal(jnp.cumsum(r, axis=0))  # B_aa = p_a^T V p_a
    w = jnp.diagonal(v)[None, :] - 2.0 * r.T / ks[:, None] + (b_diag / ks**2)[:, None]
    w = w * mask
    mean = w.sum(axis=1) / ks
    return (w - mean[:, None]) * mask


def causal_attention_drift(config: ShapedConfig, v: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """b_att of causal shaped attention (module docstring), O(m^3) time, O(m^2) memory.

    Derived from the second-order expansion of each row's Softmax (docs/theory.md): with
    eps = 1/(tau0 sqrt n) and y_a = C^(a) G_a. (row a's centred logits),
    softmax = p_a/k_a + eps y_a/k_a + eps^2 (y_a^2 - mean_{j<=a} y_aj^2) p_a/(2 k_a) + O(eps^3);
    E[G_ai G_cj] = V_ac V_ij gives E[D V D^T]_ac = V_ac S_ac/(k_a k_c) (first order D) and
    E[second order]_aj = V_aa u^(a)_j / (2 k_a).
    """
    m = v.shape[-1]
    ks, _ = _ks_mask(m, v.dtype)
    s = _trace_table(v)
    uv = _u_rows(v) @ v  # uv[a, c] = (u^(a)T V)_c
    d = jnp.diagonal(v)
    half = d[:, None] * uv / (2.0 * ks[:, None])  # V_aa (u^(a)T V)_c / (2 k_a)
    inner = v * s / (ks[:, None] * ks[None, :]) + half + half.T
    return (config.gamma**2 / config.tau0**2) * inner


def causal_mix_tensor(v: Float[Array, "m m"]) -> Float[Array, "m m m m"]:
    """The bracket of the causal attention noise (module docstring), dense O(m^4) memory.

    For tests and small m. Sigma_att = kappa_att Lin + gam^4/(tau0^2 H) causal_mix_tensor(V).

    J_{ab,cd} = V_ac K^(ac)_bd / (k_a k_c) is Cov(Y_ab, Y_cd) of Y = D V (first-order causal
    attention times V); the bracket is the covariance of Y + Y^T: J_abcd + J_abdc + J_bacd + J_badc.
    """
    m = v.shape[-1]
    ks, _ = _ks_mask(m, v.dtype)
    mv = jnp.einsum("ij,ajk->aik", v, causal_centrings(m, v.dtype))  # M^(a) = V C^(a)
    k = jnp.einsum("aij,jk,clk->acil", mv, v, mv)  # K^(ac) = M^(a) V M^(c)^T
    j = jnp.einsum("ac,acbd->abcd", v / (ks[:, None] * ks[None, :]), k)
    return (
        j
        + jnp.swapaxes(j, 2, 3)
        + jnp.swapaxes(j, 0, 1)
        + jnp.swapaxes(jnp.swapaxes(j, 0, 1), 2, 3)
    )


def causal_mix_noise(
    v: Float[Array, "m m"], factor: Float[Array, "m m"], e: Float[Array, "m m"]
) -> Float[Array, "m m"]:
    """Y + Y^T with Cov = causal_mix_tensor(V) for `e` iid N(0, 1) and `factor` L, L L^T = V.

    O(m^3) time, O(m^2) memory, symmetric. Construction: G = L E L^T has E[G_ai G_cj] =
    V_ac V_ij, the law of the logits; row a of the first-order attention is
    D_a. = G_a. C^(a) / k_a, and Y = D V, i.e. Y_ab = (G C^(a) V)_ab / k_a. With
    P = L E^T L^T = G^T, column a of P is row a of G; centring its first a entries (zeroing the
    rest) and dividing by k_a gives Z[:, a] = C^(a) P[:, a] / k_a, and Y = (V Z)^T.
    Non-causal special case (every C^(a) = C): Y = L E L^T C V / m = L E M^T / m, M = V C L.
    """
    m = v.shape[-1]
    ks, mask = _ks_mask(m, v.dtype)
    p = factor @ e.T @ factor.T  # P = G^T
    mask_t = mask.T  # mask_t[i, a] = 1[i <= a]
    col_mean = (p * mask_t).sum(axis=0) / ks
    z = (p - col_mean[None, :]) * mask_t / ks[None, :]
    y = (v @ z).T
    return y + y.T
