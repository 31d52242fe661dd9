"""Execute the notebooks at the small scale, for the docs site and the tests.

`python notebooks/render.py` (what `make docs` runs first) executes every `notebooks/*.ipynb`
in fresh kernels started from this interpreter, with `SDEFORMER_NOTEBOOK_SCALE=small` and
`PYTHONPATH` set to this checkout, each in the `notebooks/` folder (the notebooks read
`../docs/results`), all concurrently (separate kernel processes; most of their time is
single-threaded XLA compilation). The executed copies, with their outputs and figures, go to
`build/notebooks/` (`--out`); the sources stay without outputs. It exits with status 1, naming
the notebook and the error, if one fails.

This file is also the mkdocs hook of `mkdocs.yml` (`hooks:`): `on_config` adds a "Notebooks"
section to the navigation with every executed notebook found in `build/notebooks/` (or
`$SDEFORMER_NOTEBOOKS_DIR`, a folder named `notebooks`), in name order, and `on_files` hands
them to mkdocs-jupyter as pages `notebooks/<name>/`. Every notebook of `notebooks/` is picked
up: none is listed by hand. If the folder exists but lacks a notebook of `notebooks/` (or holds
one that is gone), the build warns, which `mkdocs build --strict` turns into a failure; without
the folder the site is built without notebooks (the API-reference test does that).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_OUT = ROOT / "build" / "notebooks"
KERNEL = "sdeformer-notebook"
TIMEOUT_S = 600  # per cell
ENV_DIR = "SDEFORMER_NOTEBOOKS_DIR"
log = logging.getLogger("mkdocs.hooks.notebooks")


def sources() -> list[Path]:
    """The notebooks of `notebooks/`, in name order."""
    return sorted(NOTEBOOKS.glob("*.ipynb"))


# ------------------------------------------------------------------------ execution


def write_kernel_spec(directory: Path):
    """A kernel spec that runs ipykernel under this interpreter with the small notebook scale."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = directory / "kernels" / KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sdeformer notebook (small scale)",
        "language": "python",
        "env": {
            "PYTHONPATH": pythonpath,
            "SDEFORMER_NOTEBOOK_SCALE": "small",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            # At the small scale the notebooks' time is mostly XLA compilation; skipping most of
            # XLA's optimisation passes roughly halves it (the numbers only need to be finite).
            "JAX_DISABLE_MOST_OPTIMIZATIONS": "true",
        },
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(directory / "kernels")])


async def _execute(path: Path, specs) -> dict:
    import nbclient
    import nbformat
    from jupyter_client.manager import AsyncKernelManager

    nb = nbformat.read(path, as_version=4)
    km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=TIMEOUT_S,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    try:
        await client.async_execute()
        error = None
    except Exception as err:  # reported by the caller, per notebook
        error = err
    return {"nb": nb, "error": error, "seconds": time.perf_counter() - started}


def execute_all(paths: list[Path]) -> dict[str, dict]:
    """Execute `paths` concurrently at the small scale; {file name: {nb, error, seconds}}."""
    with tempfile.TemporaryDirectory() as tmp:
        specs = write_kernel_spec(Path(tmp))

        async def run_all():
            return await asyncio.gather(*(_execute(p, specs) for p in paths))

        results = asyncio.run(run_all())
    return {path.name: result for path, result in zip(paths, results, strict=True)}


def write_executed(results: dict[str, dict], out: Path) -> None:
    """Write the executed notebooks to `out`, replacing what it held (no stale notebook)."""
    import nbformat

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, result in results.items():
        nbformat.write(result["nb"], out / name)


def main(argv: list[str] | None = None) -> int:
    """Execute every notebook and write the executed copies; 1 if one failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the copies")
    args = parser.parse_args(argv)
    results = execute_all(sources())
    failed = {name: r["error"] for name, r in results.items() if r["error"] is not None}
    for name, result in results.items():
        status = "FAILED" if name in failed else "ok"
        print(f"{name}: {status}, {result['seconds']:.1f} s", file=sys.stderr)
    if failed:
        for name, error in failed.items():
            print(f"{name} failed:\n{error}", file=sys.stderr)
        return 1
    write_executed(results, args.out)
    print(f"executed notebooks written to {args.out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------ the mkdocs hook


def executed_dir() -> Path:
    """Where the hook looks for executed notebooks (`$SDEFORMER_NOTEBOOKS_DIR` or build/).

    The folder's name is the pages' URL prefix, so it is refused unless it is `notebooks`.
    """
    folder = Path(os.environ.get(ENV_DIR) or DEFAULT_OUT)
    if folder.name != "notebooks":
        raise ValueError(f"{ENV_DIR}={folder} must name a folder called notebooks")
    return folder


def _executed() -> list[Path]:
    folder = executed_dir()
    if not folder.is_dir():
        log.info("no executed notebooks in %s: the site has no notebook pages", folder)
        return []
    found = sorted(folder.glob("*.ipynb"))
    expected = {p.name for p in sources()}
    names = {p.name for p in found}
    for name in sorted(expected - names):
        log.warning(
            "notebook %s is not executed in %s: run python notebooks/render.py", name, folder
        )
    for name in sorted(names - expected):
        log.warning("%s in %s has no source in notebooks/: rerun notebooks/render.py", name, folder)
    return [p for p in found if p.name in expected]


def _title(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] == "markdown":
            first = "".join(cell["source"]).strip().splitlines()[0]
            return first.lstrip("#").strip()
    return path.stem


def on_config(config):
    """Add a "Notebooks" section with every executed notebook to the navigation."""
    pages = [{_title(p): f"{p.parent.name}/{p.name}"} for p in _executed()]
    if pages and config["nav"] is not None:
        config["nav"].append({"Notebooks": pages})
    return config


def _on_files(files, config):
    """Add the executed notebooks as files `<folder name>/<name>.ipynb` of the site."""
    from mkdocs.structure.files import File

    for path in _executed():  # a real file: mkdocs-jupyter reads it from src_dir / src_uri
        files.append(
            File(
                f"{path.parent.name}/{path.name}",
                src_dir=str(path.parent.parent),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


try:  # before mkdocs-jupyter's own on_files, which turns .ipynb files into pages
    from mkdocs.plugins import event_priority

    on_files = event_priority(50)(_on_files)
except ImportError:  # executing notebooks needs no mkdocs
    on_files = _on_files


if __name__ == "__main__":
    sys.exit(main())
