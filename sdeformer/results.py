"""Writing and resuming result files: atomic writes, a manifest, one file per finished unit.

A long run (a comparison, a sweep) is a set of units (one width, one learning rate, ...). Each
finished unit is written at once, atomically (to a temporary file, then renamed), so a run killed
at any moment loses at most the unit in progress, and a rerun with the same configuration skips
the units already on disk.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
_UNIT_NAME = re.compile(r"^[A-Za-z0-9_.=+-]+$")


class ResultsError(ValueError):
    """A result directory that cannot be resumed (foreign, corrupted) or a unit name that is bad."""


def package_version() -> str:
    from . import __version__

    return __version__


_LIBRARIES = ("jax", "jaxlib", "equinox", "diffrax", "optax", "numpy")


def _git_commit() -> str | None:
    """The commit of the checkout the package is imported from, or None (no git, no checkout)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    commit = done.stdout.strip()
    return commit + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def provenance(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where a result came from: package, git commit, library versions, devices, Python.

    Every `ResultStore` manifest and every command report records this, so a number can be
    traced to the code and the machine that produced it. `git_commit` is None outside a git
    checkout (an installed wheel); a `+dirty` suffix marks uncommitted changes. `extra` adds
    run-specific entries (the training command adds the hash of its corpus).

    >>> info = provenance(extra={"corpus_sha256": "abc"})
    >>> sorted(info["versions"]) == sorted(["jax", "jaxlib", "equinox", "diffrax", "optax",
    ...                                      "numpy"])
    True
    >>> info["corpus_sha256"], info["device_count"] >= 1
    ('abc', True)
    """
    import importlib.metadata
    import platform

    import jax

    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    info: dict[str, Any] = {
        "package": "sdeformer",
        "version": package_version(),
        "git_commit": _git_commit(),
        "versions": versions,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind if devices else None,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "x64": bool(jax.config.read("jax_enable_x64")),
    }
    if extra:
        clash = sorted(set(extra) & set(info))
        if clash:
            raise ValueError(f"provenance(extra=...): keys {clash} are reserved; rename them")
        info.update(extra)
    return info


def fold_in_name(key, name: str):
    """`key` folded with a stable 31-bit id of `name` (CRC-32), independent of any list order.

    Use it to give each unit of a run (a model kind, a width) its own key, so that running a
    subset of the units, in any order, reproduces the same numbers for each unit.

    >>> import jax.random as jr
    >>> a = fold_in_name(jr.key(0), "shaped")
    >>> bool((jr.key_data(a) == jr.key_data(fold_in_name(jr.key(0), "shaped"))).all())
    True
    """
    import zlib

    import jax.random as jr

    return jr.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as JSON atomically (NaN and Inf are refused: no silent non-numbers)."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False, default=_to_jsonable)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a corrupted one raises ResultsError naming the file and the fix."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(
            f"{path} is not valid JSON ({err}); delete it to recompute that unit"
        ) from err


def _to_jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


_ACCEPT_CHANGED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sdeformer_accept_changed", default=False
)


@contextlib.contextmanager
def accepting_changed(accept: bool = True) -> Iterator[None]:
    """Within this block, `ResultStore`s resume results written by another package version.

    The command line's `--accept-changed` flag sets this around a command, so that every store
    the command opens accepts the change without each command passing a flag through.
    """
    token = _ACCEPT_CHANGED.set(accept)
    try:
        yield
    finally:
        _ACCEPT_CHANGED.reset(token)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 25] + f"... ({len(text)} chars)"


def config_difference(old: Any, new: Any) -> str:
    """The keys whose values differ between two configurations, one line each, long values
    abbreviated (an m x m input covariance at m = 256 would fill a screen)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return f"  on disk: {_short(old)}\n  now:     {_short(new)}"
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
        if a != b:
            lines.append(f"  {key}: on disk {_short(a)}, now {_short(b)}")
    return "\n".join(lines)


class ResultStore:
    """A directory of results for one run configuration, resumable unit by unit.

    `directory/manifest.json` records the kind of run, its full configuration, the package
    version and the `provenance()` of the run that created it; `directory/units/<name>.json`
    holds one finished unit each. Opening a directory whose manifest has another kind or
    configuration raises `ResultsError` (pass `overwrite=True` to start afresh, or choose another
    directory): its units would silently mix two configurations. A manifest written by another
    package version is refused too, unless `accept_changed=True` (`--accept-changed` on the
    command line): the resumed run is then recorded in the manifest's `resumes` list, with its
    provenance. Other provenance differences (library versions, devices, commit) are recorded the
    same way but never refused.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        kind: str,
        config: dict,
        *,
        overwrite: bool = False,
        accept_changed: bool | None = None,
        extra_provenance: dict[str, Any] | None = None,
    ):
        if accept_changed is None:
            accept_changed = _ACCEPT_CHANGED.get()
        self.directory = Path(directory)
        self.kind = kind
        self.config = json.loads(json.dumps(config, default=_to_jsonable))
        self.provenance = provenance(extra_provenance)
        manifest = self.directory / MANIFEST
        units = self.directory / "units"
        if not manifest.exists() and not overwrite and units.is_dir() and any(units.iterdir()):
            raise ResultsError(
                f"{self.directory} has result units but no {MANIFEST}, so their configuration "
                "is unknown; choose another output directory or pass --overwrite to discard them"
            )
        if manifest.exists() and not overwrite:
            found = read_json(manifest)
            if not isinstance(found, dict) or found.get("kind") != kind:
                raise ResultsError(
                    f"{self.directory} holds results of another kind "
                    f"({found.get('kind') if isinstance(found, dict) else found!r}, not {kind!r}); "
                    "choose another output directory or pass --overwrite"
                )
            if found.get("config") != self.config:
                raise ResultsError(
                    f"{self.directory} holds results of another configuration; choose another "
                    "output directory or pass --overwrite to discard them.\n"
                    + config_difference(found.get("config"), self.config)
                )
            if found.get("version") != self.provenance["version"] and not accept_changed:
                raise ResultsError(
                    f"{self.directory} holds results of sdeformer {found.get('version')}, "
                    f"this is {self.provenance['version']}; pass --overwrite to recompute them, "
                    "or --accept-changed (accept_changed=True) to resume with them anyway"
                )
            self.manifest = found
            # Record a resume by different code or on a different machine, once per change.
            latest = ([found.get("provenance")] + found.get("resumes", []))[-1]
            if latest != self.provenance:
                found = dict(found)
                found["resumes"] = [*found.get("resumes", []), self.provenance]
                write_json(manifest, found)
                self.manifest = found
        else:
            if overwrite and units.exists():
                for old in units.iterdir():
                    if old.is_file() and old.suffix in (".json", ".npz", ".tmp"):
                        old.unlink()
            self.manifest = {
                "kind": kind,
                "config": self.config,
                "version": self.provenance["version"],
                "provenance": self.provenance,
            }
            write_json(manifest, self.manifest)

        self.remove_stale_temporaries()

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files a killed run left behind (`atomic_path` temporaries).

        A run killed by SIGKILL (or a power cut) can leave `.<name>.*.tmp` beside the files it
        was writing; they are never read (only finished, renamed files count), and are removed
        when the directory is opened again. One writer per directory at a time.
        """
        removed = []
        for folder in (self.directory, self.directory / "units"):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        return removed

    def _unit_path(self, name: str) -> Path:
        if not _UNIT_NAME.match(name):
            raise ResultsError(f"unit name {name!r} may use only letters, digits and _.=+-")
        return self.directory / "units" / f"{name}.json"

    def has(self, name: str) -> bool:
        return self._unit_path(name).exists()

    def load(self, name: str) -> Any:
        return read_json(self._unit_path(name))

    def save(self, name: str, data: Any) -> Path:
        return write_json(self._unit_path(name), data)

    def _array_path(self, name: str) -> Path:
        return self._unit_path(name).with_suffix(".npz")

    def has_arrays(self, name: str) -> bool:
        """Whether the array unit `name` (an .npz file, see `save_arrays`) is finished."""
        return self._array_path(name).exists()

    def save_arrays(self, name: str, arrays: dict[str, Any]) -> Path:
        """Write a dict of arrays as one unit `units/<name>.npz`, atomically."""
        import numpy as np

        path = self._array_path(name)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})
        return path

    def load_arrays(self, name: str) -> dict[str, Any]:
        """Read an array unit; a corrupted file raises ResultsError naming it and the fix."""
        import zipfile

        import numpy as np

        path = self._array_path(name)
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            if isinstance(err, FileNotFoundError):
                raise
            raise ResultsError(
                f"{path} is not a readable .npz file ({err}); delete it to recompute that unit"
            ) from err

    def names(self) -> list[str]:
        return sorted(p.stem for p in (self.directory / "units").glob("*.json"))

    def load_all(self) -> dict[str, Any]:
        return {name: self.load(name) for name in self.names()}


# ------------------------------------------------------------------- saving result objects
#
# One .npz file per object: its array fields as arrays, everything else (strings, numbers,
# tuples, dicts, nested dataclasses) in a JSON header stored as the string entry `__header__`,
# with the class name, the field names and the provenance. No pickle: a file from elsewhere
# cannot run code when it is loaded.

ARRAYS_FORMAT = "sdeformer.arrays/1"


def _is_array(value: Any) -> bool:
    import numpy as np

    return isinstance(value, np.ndarray) or type(value).__module__.startswith(("jax", "jaxlib"))


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _encode(value: Any, where: str, arrays: dict[str, Any]) -> Any:
    """JSON form of `value`; arrays go to `arrays` under the key `where` (tagged encoding)."""
    import dataclasses
    import math

    import numpy as np

    if _is_array(value):
        kind = "jax" if not isinstance(value, np.ndarray) else "numpy"
        arrays[where] = np.asarray(value)
        return {"__array__": where, "kind": kind}
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "__dataclass__": _class_name(type(value)),
            "fields": {
                f.name: _encode(getattr(value, f.name), f"{where}.{f.name}", arrays)
                for f in dataclasses.fields(value)
                if f.init
            },
        }
    if isinstance(value, tuple | list):
        items = [_encode(v, f"{where}.{i}", arrays) for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {
            "__dict__": [
                [_encode(k, f"{where}.key{i}", arrays), _encode(v, f"{where}.{i}", arrays)]
                for i, (k, v) in enumerate(value.items())
            ]
        }
    raise TypeError(
        f"cannot save field {where} of type {type(value).__name__}: save_arrays_module takes "
        "arrays, numbers, strings, None, tuples, lists, dicts and dataclasses"
    )


def _decode(value: Any, arrays: dict[str, Any], allowed: dict[str, type]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays, allowed) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        array = arrays[value["__array__"]]
        if value.get("kind") == "jax":
            import jax.numpy as jnp

            return jnp.asarray(array)
        return array
    if "__float__" in value:
        return float(value["__float__"])
    if "__tuple__" in value:
        return tuple(_decode(v, arrays, allowed) for v in value["__tuple__"])
    if "__dict__" in value:
        return {
            _decode(k, arrays, allowed): _decode(v, arrays, allowed) for k, v in value["__dict__"]
        }
    if "__dataclass__" in value:
        name = value["__dataclass__"]
        if name not in allowed:
            allowed[name] = _import_class(name)
        fields = {k: _decode(v, arrays, allowed) for k, v in value["fields"].items()}
        return allowed[name](**fields)
    raise ResultsError(f"unknown entry {sorted(value)} in a saved header")


def _import_class(name: str) -> type:
    """A nested dataclass named in a header: only classes of sdeformer may be imported."""
    import importlib

    module, _, qualname = name.rpartition(".")
    if not module.startswith("sdeformer"):
        raise ResultsError(
            f"the file names class {name}, which is not part of sdeformer; pass it to "
            "load_arrays_module(..., classes=[...]) to allow it"
        )
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def save_arrays_module(path: str | os.PathLike, obj: Any) -> Path:
    """Save an equinox module or dataclass of arrays to one `.npz` file, atomically.

    Array fields (NumPy or JAX) are stored as arrays; other fields (strings, numbers, tuples,
    dicts, nested dataclasses such as the rows of a comparison) in a JSON header with the class
    name, the field names and the `provenance()`. No pickle is used. Read it back with
    `load_arrays_module(cls, path)`.

    >>> import dataclasses, tempfile, numpy as np
    >>> @dataclasses.dataclass
    ... class Paths:
    ...     label: str
    ...     vs: np.ndarray
    >>> path = Path(tempfile.mkdtemp()) / "paths.npz"
    >>> _ = save_arrays_module(path, Paths("sde", np.eye(2)))
    >>> back = load_arrays_module(Paths, path)
    >>> back.label, back.vs.tolist()
    ('sde', [[1.0, 0.0], [0.0, 1.0]])
    """
    import dataclasses

    import numpy as np

    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(
            f"save_arrays_module takes an equinox module or a dataclass instance, "
            f"not {type(obj).__name__}"
        )
    arrays: dict[str, Any] = {}
    fields = {
        f.name: _encode(getattr(obj, f.name), f.name, arrays)
        for f in dataclasses.fields(obj)
        if f.init
    }
    header = {
        "format": ARRAYS_FORMAT,
        "class": _class_name(type(obj)),
        "field_names": list(fields),
        "fields": fields,
        "provenance": provenance(),
    }
    text = json.dumps(header, allow_nan=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, __header__=np.array(text), **arrays)
    return path


def read_arrays_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a file written by `save_arrays_module` (class, fields, provenance)."""
    return _read_arrays_file(path)[0]


def _read_arrays_file(path):
    import zipfile

    import numpy as np

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, EOFError) as err:
        raise ResultsError(f"{path} is not a readable .npz file ({err})") from err
    if "__header__" not in contents:
        raise ResultsError(f"{path} has no __header__: it was not written by save_arrays_module")
    header = json.loads(str(contents.pop("__header__")))
    if header.get("format") != ARRAYS_FORMAT:
        raise ResultsError(f"{path} has format {header.get('format')!r}, not {ARRAYS_FORMAT!r}")
    return header, contents


def load_arrays_module(cls: type, path: str | os.PathLike, *, classes: tuple[type, ...] = ()):
    """Read an object of class `cls` saved by `save_arrays_module`.

    The file must name `cls` and hold exactly its fields (else `ResultsError` names the class or
    the missing and extra fields). The object is built as `cls(**fields)`, so its validation
    (`__post_init__`, `__check_init__`) runs again. Arrays saved from JAX come back as JAX
    arrays, NumPy ones as NumPy. Nested dataclasses must be sdeformer classes or listed in
    `classes`.
    """
    import dataclasses

    header, arrays = _read_arrays_file(path)
    if header["class"] != _class_name(cls):
        raise ResultsError(
            f"{path} holds a {header['class']}, not a {_class_name(cls)}; load it with that class"
        )
    expected = [f.name for f in dataclasses.fields(cls) if f.init]
    if sorted(header["field_names"]) != sorted(expected):
        missing = sorted(set(expected) - set(header["field_names"]))
        extra = sorted(set(header["field_names"]) - set(expected))
        raise ResultsError(
            f"{path}: the fields of {cls.__qualname__} changed since it was saved (missing "
            f"{missing}, extra {extra}); load it with the version that wrote it "
            f"({header.get('provenance', {}).get('version')})"
        )
    allowed = {_class_name(c): c for c in (cls, *classes)}
    fields = {k: _decode(v, arrays, allowed) for k, v in header["fields"].items()}
    return cls(**fields)


# ------------------------------------------------------------------- xarray and pandas views

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
