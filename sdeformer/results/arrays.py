"""Saving result objects (equinox modules, dataclasses of arrays) to one `.npz` file each.

One .npz file per object: its array fields as arrays, everything else (strings, numbers, tuples,
dicts, nested dataclasses) in a JSON header stored as the string entry `__header__`, with the
class name, the field names and the provenance. No pickle: a file from elsewhere cannot run code
when it is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .files import ResultsError, atomic_path
from .origin import provenance

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

    if dataclasses.is_dataclass(path) and isinstance(obj, str | os.PathLike):
        raise TypeError(
            f"save_arrays_module(path, obj): the arguments look swapped (path is a "
            f"{type(path).__name__}, obj a {type(obj).__name__}); call "
            "save_arrays_module(path, obj), the file first"
        )
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(
            f"save_arrays_module(path, obj) takes an equinox module or a dataclass instance as "
            f"obj, not {type(obj).__name__}"
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
