"""`forecast`: the law of a shaped Transformer's token covariance at initialisation, summarised.

At initialisation a network of width n, depth d and m tokens maps the input covariance V_0 to a
random V_d. A forecast samples V_d (and V_l at chosen depths l) num_samples times and reports
the quantiles q05, q50, q95 of three features of V_l with distribution-free 95 % intervals, and
the probabilities of near-collapse (mean_rho >= threshold) and blow-up with exact 95 %
intervals. See docs/design.md.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax.numpy as jnp
import numpy as np

from .._convention import follows_convention, resolve_depth
from ..config import ShapedConfig, check_width
from ._features import DEFINITIONS, FEATURES, QUANTILES, sample_features
from ._intervals import Estimate, proportion_interval, quantile_interval
from ._paths import check_method, depth_states

METHOD_NAMES = {
    "law": "exact finite-width law chain",
    "explicit": "explicit networks",
    "sde": "limit covariance SDE",
    "finite-width-sde": "finite-width covariance SDE",
}


@dataclasses.dataclass(frozen=True)
class DepthForecast:
    """The forecast at one depth l (time t = l / n).

    `features[name][q]`: the `Estimate` of quantile q ("q05", "q50", "q95") of feature `name`;
    `p_collapse`, `p_blowup`: `Estimate`s of the events' probabilities (blow-up by depth l);
    `p_left_psd_cone`: the fraction of SDE paths that stopped by leaving the PSD cone by depth
    l (a discretisation failure of the scheme, counted in `p_blowup`; 0 for finite networks).
    """

    depth: int
    t: float
    features: dict[str, dict[str, Estimate]]
    p_collapse: Estimate
    p_blowup: Estimate
    p_left_psd_cone: float

    def to_dict(self) -> dict:
        """Plain JSON-ready dictionary."""
        return {
            "depth": self.depth,
            "t": self.t,
            "features": {
                name: {q: est.to_dict() for q, est in qs.items()}
                for name, qs in self.features.items()
            },
            "p_collapse": self.p_collapse.to_dict(),
            "p_blowup": self.p_blowup.to_dict(),
            "p_left_psd_cone": self.p_left_psd_cone,
        }


@dataclasses.dataclass(frozen=True, eq=False)
class Forecast:
    """The result of `forecast`: one `DepthForecast` per reported depth, the last at depth d.

    `samples[name]` (samples, k) holds each sample's feature at the k reported depths (numpy;
    left out of the printed summary and of `to_dict`). `str(forecast)` is a short table.
    """

    method: str
    config: ShapedConfig
    width: int
    depth: int
    tokens: int
    num_samples: int
    collapse_threshold: float
    bound: float
    seconds: float
    num_steps: int | None
    at: tuple[DepthForecast, ...]
    samples: dict[str, np.ndarray] = dataclasses.field(repr=False)

    @property
    def final(self) -> DepthForecast:
        """The forecast at depth d."""
        return self.at[-1]

    def settings(self) -> dict:
        """The settings of the forecast, JSON-ready."""
        return {
            "method": self.method,
            "config": self.config.to_dict(),
            "width": self.width,
            "depth": self.depth,
            "T": self.depth / self.width,
            "tokens": self.tokens,
            "samples": self.num_samples,
            "collapse_threshold": self.collapse_threshold,
            "bound": self.bound if math.isfinite(self.bound) else None,
            "sde_num_steps": self.num_steps,
            "depths": [d.depth for d in self.at],
        }

    def to_dict(self) -> dict:
        """One JSON-ready dictionary: depth d's numbers at the top, every depth in `at_depths`."""
        final = self.final.to_dict()
        return {
            "settings": self.settings(),
            "definitions": dict(DEFINITIONS),
            "features": final["features"],
            "p_collapse": final["p_collapse"],
            "p_blowup": final["p_blowup"],
            "p_left_psd_cone": final["p_left_psd_cone"],
            "at_depths": [d.to_dict() for d in self.at],
            "seconds": self.seconds,
        }

    def __str__(self) -> str:
        return summary_text(self)

    __repr__ = __str__


def _cell(est: Estimate) -> str:
    return f"{est.value:.4g} [{est.lower:.4g}, {est.upper:.4g}]"


def summary_text(fc: Forecast) -> str:
    """A short readable summary: per depth, the quantile table and the two events."""
    lines = [
        f"Forecast by the {METHOD_NAMES[fc.method]}: width n={fc.width}, depth d={fc.depth} "
        f"(T = d/n = {fc.depth / fc.width:.4g}), m={fc.tokens} tokens, {fc.num_samples} "
        f"samples, {fc.seconds:.2f} s"
    ]
    for d in fc.at:
        lines.append(f"depth {d.depth} (t = {d.t:.4g}); quantile [95 % order-statistic interval]")
        lines.append(f"  {'feature':<13}" + "".join(f"  {q:<32}" for q in QUANTILES).rstrip())
        for name in FEATURES:
            row = "".join(f"  {_cell(d.features[name][q]):<32}" for q in QUANTILES)
            lines.append(f"  {name:<13}{row}".rstrip())
        lines.append(
            f"  P(collapse: mean_rho >= {fc.collapse_threshold:g}) = {_cell(d.p_collapse)}; "
            f"P(blow-up) = {_cell(d.p_blowup)} (Clopper-Pearson 95 %)"
        )
        if d.p_left_psd_cone:
            lines.append(f"  of which left the PSD cone (SDE discretisation): {d.p_left_psd_cone}")
    return "\n".join(lines)


def _check_inputs(v0, width, depth, num_samples, collapse_threshold, bound, at_depths, dtype):
    """Validated (v0, width, depth, num_samples, depths) or a ValueError naming value and fix."""
    from ..config import check_covariance

    width = check_width(width, name="width")
    depth = check_width(depth, name="depth")
    num_samples = check_width(num_samples, name="num_samples")
    v0 = check_covariance(v0).astype(dtype)
    if np.any(np.diagonal(np.asarray(v0)) <= 0):
        raise ValueError(
            "v0 has a zero variance on its diagonal; token correlations need V_aa > 0: pass a "
            "v0 with positive diagonal"
        )
    if not (math.isfinite(collapse_threshold) and -1.0 < collapse_threshold <= 1.0):
        raise ValueError(
            f"collapse_threshold={collapse_threshold!r} is invalid; pass a correlation in (-1, 1]"
        )
    if not bound > 0:  # also refuses NaN
        raise ValueError(f"bound={bound!r} is invalid; pass a bound > 0 (inf: none)")
    depths = {depth}
    for d in () if at_depths is None else at_depths:
        if not (isinstance(d, int | np.integer) and 1 <= d <= depth):
            raise ValueError(f"at_depths contains {d!r}; pass integers in 1..depth={depth}")
        depths.add(int(d))
    return v0, width, depth, num_samples, tuple(sorted(depths))


@follows_convention
def forecast(
    config: ShapedConfig,
    v0,
    *,
    width: int,
    depth: int | None = None,
    T: float | None = None,
    num_samples: int,
    key,
    method: str = "law",
    collapse_threshold: float = 0.9,
    bound: float = 1e3,
    at_depths=None,
    dtype=jnp.float32,
) -> Forecast:
    """Forecast the token covariance of networks of `config` at initialisation.

    Arguments: `v0` (m, m) the input covariance (symmetric PSD, positive diagonal); `width` n,
    `depth` d (or `T`: d = round(T n)); `num_samples` independent networks (or paths); `key` a
    JAX key; `method` one of
    "law" (exact in law at width n), "explicit" (networks with their weights), "sde" (the limit
    SDE at T = d / n) or "finite-width-sde" (the SDE with width n's exact drifts); "auto" is
    refused (not available yet). `collapse_threshold`: near-collapse is mean_rho >= it. `bound`:
    a path stops where some |V_ab| exceeds it (blow-up). `at_depths`: further depths 1..d to
    report (d is always reported).

    Every sample enters every statistic: a stopped path with its state at the exit (see
    `sdeformer.design._paths`). Raises ValueError for bad sizes, a non-PSD v0, an unknown method
    or a method without a face for `config.blocks` (Pre-LN blocks have neither a law chain nor
    an SDE limit: use "explicit").
    """
    width, depth = resolve_depth(width, depth, T)
    v0, width, depth, num_samples, depths = _check_inputs(
        v0, width, depth, num_samples, collapse_threshold, bound, at_depths, dtype
    )
    m = int(v0.shape[-1])
    check_method(config, method, width, m)
    if method in ("law", "explicit") and width < m:
        raise ValueError(f"width={width} is below m={m} tokens; pass a width >= {m}")
    started = time.perf_counter()
    states = depth_states(
        config,
        v0,
        width=width,
        depths=depths,
        num_samples=num_samples,
        key=key,
        method=method,
        bound=float(bound),
    )
    per_depth, samples = [], {name: [] for name in FEATURES}
    for i, d in enumerate(depths):
        values = sample_features(states.vs[:, i], np.asarray(v0))
        for name in FEATURES:
            samples[name].append(values[name])
        per_depth.append(_depth_forecast(d, width, values, states, i, collapse_threshold))
    return Forecast(
        method=method,
        config=config,
        width=width,
        depth=depth,
        tokens=m,
        num_samples=num_samples,
        collapse_threshold=float(collapse_threshold),
        bound=float(bound),
        seconds=time.perf_counter() - started,
        num_steps=states.num_steps,
        at=tuple(per_depth),
        samples={k: np.stack(v, axis=1) for k, v in samples.items()},
    )


def _depth_forecast(depth, width, values, states, i, threshold) -> DepthForecast:
    n = values["mean_rho"].size
    features = {
        name: {q: quantile_interval(values[name], p) for q, p in QUANTILES.items()}
        for name in FEATURES
    }
    collapsed = int((values["mean_rho"] >= threshold).sum())
    blown = int(states.stopped[:, i].sum())
    return DepthForecast(
        depth=depth,
        t=depth / width,
        features=features,
        p_collapse=proportion_interval(collapsed, n),
        p_blowup=proportion_interval(blown, n),
        p_left_psd_cone=float(states.left_cone[:, i].mean()),
    )
