"""Where a result came from (package, commit, libraries, devices) and which key each unit used.

Every `ResultStore` manifest, every file written by `save_arrays_module` and every command report
records `provenance()`; `fold_in_name` gives each unit of a run a key that does not depend on
which other units run, or in which order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def package_version() -> str:
    """The version of the installed sdeformer package (from its metadata, as `__version__`)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("sdeformer")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "0+unknown"


_LIBRARIES = ("jax", "jaxlib", "equinox", "diffrax", "optax", "numpy")

RESULT_FOLDERS = ("benchmarks/results", "docs/results", "docs/figures")
"""Folders that runs write their results into: a change there does not make the code "+dirty"
(a benchmark that writes its JSON must not mark the next benchmark of the same run dirty)."""


def _git_commit(root: Path | None = None) -> str | None:
    """The commit of the checkout at `root` (default: the package's), or None (no git, no checkout).

    "+dirty" marks uncommitted changes to tracked files outside `RESULT_FOLDERS`.
    """
    import subprocess

    root = Path(__file__).resolve().parents[2] if root is None else root
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
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "."]
            + [f":(exclude){folder}" for folder in RESULT_FOLDERS],
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
