"""Result objects as labelled data: xarray and pandas views, and markdown tables."""

from __future__ import annotations

from typing import Any

SOLUTION_DIMS: dict[str, tuple[str, ...]] = {
    "ts": ("time",),
    "vs": ("sample", "time", "token_a", "token_b"),
    "alive": ("sample", "time"),
    "exit_time": ("sample",),
    "exit_reason": ("sample",),
    "v_exit": ("sample", "token_a", "token_b"),
}
"""Labelled dimensions of `sde.SDESolution` (with coords={"time": "ts"})."""

SAMPLES_DIMS: dict[str, tuple[str, ...]] = {
    "ts": ("time",),
    "vs": ("sample", "time", "token_a", "token_b"),
    "alive": ("sample", "time"),
    "failed": ("sample", "time"),
}
"""Labelled dimensions of `compare.CovarianceSamples` (with coords={"time": "ts"})."""


def _labelled(obj: Any, dims: dict[str, tuple[str, ...]], coords: dict[str, Any] | None):
    import numpy as np

    data = {}
    for field, names in dims.items():
        array = np.asarray(getattr(obj, field))
        if array.ndim != len(names):
            raise ValueError(
                f"dims[{field!r}] = {tuple(names)} names {len(names)} axes but {field} has "
                f"shape {array.shape}; give one name per axis"
            )
        data[field] = (tuple(names), array)
    resolved = {}
    for name, value in (coords or {}).items():
        resolved[name] = np.asarray(getattr(obj, value) if isinstance(value, str) else value)
    return data, resolved


def to_xarray(
    obj: Any,
    dims: dict[str, tuple[str, ...]],
    *,
    coords: dict[str, Any] | None = None,
):
    """An `xarray.Dataset` of the array fields of `obj`, with labelled dimensions.

    `dims[field]` names the axes of that array field (fields not listed are left out);
    `coords[dim]` gives the coordinate values of a dimension, either an array or the name of a
    field of `obj` (e.g. `{"time": "ts"}`). The string, number and boolean fields of `obj`
    become attributes.

    >>> import dataclasses, numpy as np
    >>> @dataclasses.dataclass
    ... class Paths:
    ...     label: str
    ...     ts: np.ndarray
    ...     vs: np.ndarray
    >>> p = Paths("sde", np.array([0.0, 0.5]), np.zeros((3, 2, 2, 2)))
    >>> ds = to_xarray(p, {"vs": ("sample", "time", "token_a", "token_b")}, coords={"time": "ts"})
    >>> dict(ds.sizes), ds.attrs["label"], ds.time.values.tolist()
    ({'sample': 3, 'time': 2, 'token_a': 2, 'token_b': 2}, 'sde', [0.0, 0.5])
    """
    import dataclasses

    import xarray as xr

    data, resolved = _labelled(obj, dims, coords)
    attrs = {
        f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if isinstance(getattr(obj, f.name), str | int | float | bool)
    }
    return xr.Dataset(data, coords=resolved, attrs=attrs)


def to_dataframe(
    obj: Any,
    *,
    field: str | None = None,
    dims: tuple[str, ...] | None = None,
    coords: dict[str, Any] | None = None,
    records: str | None = None,
):
    """A `pandas.DataFrame` of one array field (long format) or of a field of records.

    - `field` and `dims`: one row per element of the array field, a column per dimension (with
      its coordinate values from `coords`, else the index) and a column named after the field.
    - `records`: a field holding a sequence of dataclasses (e.g. a comparison's rows): one row
      per record, one column per record field, plus the string fields of `obj`.

    >>> import dataclasses, numpy as np
    >>> @dataclasses.dataclass
    ... class Curve:
    ...     ts: np.ndarray
    ...     mean: np.ndarray
    >>> df = to_dataframe(Curve(np.array([0.0, 1.0]), np.array([[1.0, 2.0]])),
    ...                   field="mean", dims=("sample", "time"), coords={"time": "ts"})
    >>> df.to_dict("records")
    [{'sample': 0, 'time': 0.0, 'mean': 1.0}, {'sample': 0, 'time': 1.0, 'mean': 2.0}]
    """
    import dataclasses

    import numpy as np
    import pandas as pd

    if records is not None:
        if field is not None:
            raise ValueError("to_dataframe: pass either field= or records=, not both")
        labels = {
            f.name: getattr(obj, f.name)
            for f in dataclasses.fields(obj)
            if isinstance(getattr(obj, f.name), str)
        }
        rows = [
            {**labels, **{f.name: getattr(r, f.name) for f in dataclasses.fields(r)}}
            for r in getattr(obj, records)
        ]
        return pd.DataFrame(rows)
    if field is None or dims is None:
        raise ValueError("to_dataframe: pass field= and dims= (or records=)")
    data, resolved = _labelled(obj, {field: tuple(dims)}, coords)
    array = data[field][1]
    grids = np.meshgrid(*[np.arange(s) for s in array.shape], indexing="ij")
    columns = {}
    for name, grid in zip(dims, grids, strict=True):
        index = grid.ravel()
        columns[name] = resolved[name][index] if name in resolved else index
    columns[field] = array.ravel()
    return pd.DataFrame(columns)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A markdown table of `rows` under `headers` (floats with 4 significant digits).

    >>> print(markdown_table(["n", "KS"], [[8, 0.123456]]))
    | n | KS |
    |---|---|
    | 8 | 0.1235 |
    """

    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
