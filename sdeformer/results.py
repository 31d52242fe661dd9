"""Writing and resuming result files: atomic writes, a manifest, one file per finished unit.

A long run (a comparison, a sweep) is a set of units (one width, one learning rate, ...). Each
finished unit is written at once, atomically (to a temporary file, then renamed), so a run killed
at any moment loses at most the unit in progress, and a rerun with the same configuration skips
the units already on disk.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
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


class ResultStore:
    """A directory of results for one run configuration, resumable unit by unit.

    `directory/manifest.json` records the kind of run, its full configuration and the package
    version; `directory/units/<name>.json` holds one finished unit each. Opening a directory whose
    manifest has another kind or configuration raises `ResultsError` (pass `overwrite=True` to
    start afresh, or choose another directory).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        kind: str,
        config: dict,
        *,
        overwrite: bool = False,
    ):
        self.directory = Path(directory)
        self.kind = kind
        self.config = json.loads(json.dumps(config, default=_to_jsonable))
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
                    f"  on disk: {found.get('config')}\n  now:     {self.config}"
                )
        else:
            if overwrite and units.exists():
                for old in units.iterdir():
                    if old.is_file() and old.suffix in (".json", ".npz", ".tmp"):
                        old.unlink()
            write_json(
                manifest,
                {"kind": kind, "config": self.config, "version": package_version()},
            )

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
