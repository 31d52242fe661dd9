"""Writing and resuming result directories: a manifest, one file per finished unit.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .files import ResultsError, _to_jsonable, atomic_path, read_json, write_json
from .origin import provenance

MANIFEST = "manifest.json"
_UNIT_NAME = re.compile(r"^[A-Za-z0-9_.=+-]+$")


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
    """The keys whose values differ between two configurations, one line each.

    Long values are abbreviated (an m x m input covariance at m = 256 would fill a screen).
    """
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

        self.reused: list[str] = []  # units read back from an earlier run, in order
        self.computed: list[str] = []  # units written by this run, in order
        self.remove_stale_temporaries()

    def resumed_text(self) -> str | None:
        """'resumed: reused a, b from the earlier run in DIR; computed c' (None: nothing reused).

        What a rerun reused and what it computed, from the units this store read and wrote.
        """
        if not self.reused:
            return None
        computed = [u for u in self.computed if u not in self.reused]
        return f"resumed: reused {', '.join(self.reused)} from the earlier run in " + (
            f"{self.directory}; computed {', '.join(computed) if computed else 'nothing new'}"
        )

    def _note(self, names: list[str], name: str) -> None:
        if name not in names and not (names is self.reused and name in self.computed):
            names.append(name)  # a unit this run wrote and reads back is not reused

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files a killed run left behind (`atomic_path` temporaries).

        A run killed by SIGKILL (or a power cut) can leave `.<name>.*.tmp` beside the files it
        was writing; they are never read (only finished, renamed files count), and are removed
        when the directory is opened again, in it and in its folders one level down (`units/`,
        `checkpoints/`). One writer per directory at a time.
        """
        removed = []
        folders = [self.directory]
        if self.directory.is_dir():
            folders += sorted(p for p in self.directory.iterdir() if p.is_dir())
        for folder in folders:
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
        """Whether the JSON unit `name` is finished (its file exists)."""
        return self._unit_path(name).exists()

    def load(self, name: str) -> Any:
        """The data of the JSON unit `name` (`ResultsError` if its file is corrupted)."""
        data = read_json(self._unit_path(name))
        self._note(self.reused, name)
        return data

    def save(self, name: str, data: Any) -> Path:
        """Write `data` as the JSON unit `units/<name>.json`, atomically; returns its path."""
        path = write_json(self._unit_path(name), data)
        self._note(self.computed, name)
        return path

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
        self._note(self.computed, name)
        return path

    def load_arrays(self, name: str) -> dict[str, Any]:
        """Read an array unit; a corrupted file raises ResultsError naming it and the fix."""
        import zipfile

        import numpy as np

        path = self._array_path(name)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            self._note(self.reused, name)
            return arrays
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            if isinstance(err, FileNotFoundError):
                raise
            raise ResultsError(
                f"{path} is not a readable .npz file ({err}); delete it to recompute that unit"
            ) from err

    def names(self) -> list[str]:
        """The names of the finished JSON units, sorted."""
        return sorted(p.stem for p in (self.directory / "units").glob("*.json"))

    def load_all(self) -> dict[str, Any]:
        """Every finished JSON unit, as a dict from its name to its data."""
        return {name: self.load(name) for name in self.names()}
