"""Every notebook runs top to bottom at the reduced size, and is stored without outputs.

The notebooks execute in fresh kernels started from this interpreter (`sys.executable`, through a
kernel spec written to a temporary directory, so no "python3" kernel needs to be installed) with
`SDEFORMER_NOTEBOOK_SCALE=small` and `PYTHONPATH` set to this checkout. They run concurrently
(separate kernel processes; most of their time is single-threaded XLA compilation), once per test
session, and each notebook is one test.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "sdeformer-notebook-test"
TIMEOUT_S = 600  # per cell


def write_kernel_spec(directory: Path) -> KernelSpecManager:
    """A kernel spec that runs ipykernel under this interpreter with the small notebook scale."""
    spec_dir = directory / "kernels" / KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sdeformer notebook test",
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


async def _execute(path: Path, specs: KernelSpecManager) -> dict:
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
    except Exception as err:  # reported by the notebook's own test
        error = err
    return {"nb": nb, "error": error, "seconds": time.perf_counter() - started}


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[str, dict]:
    """Execute every notebook once, concurrently; {file name: {nb, error, seconds}}."""
    specs = write_kernel_spec(tmp_path_factory.mktemp("kernelspec"))

    async def run_all():
        return await asyncio.gather(*(_execute(p, specs) for p in NOTEBOOKS))

    results = asyncio.run(run_all())
    for path, result in zip(NOTEBOOKS, results, strict=True):
        print(f"{path.name}: {result['seconds']:.1f} s")
    return {path.name: result for path, result in zip(NOTEBOOKS, results, strict=True)}


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 4, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell has outputs; clear them"
            assert cell.execution_count is None, f"{path.name}: clear the execution counts"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_reads_the_scale_in_its_first_code_cell(path):
    nb = nbformat.read(path, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "SDEFORMER_NOTEBOOK_SCALE" in first.source


FIGURES = {"01_finite_vs_sde": 3, "02_rank_collapse": 3, "03_training": 3, "04_ntk": 2}
"""Figures each notebook draws (one per `plt.show()` cell)."""


def _figures(outputs) -> list:
    """The PNG outputs, decoded to RGB(A) arrays."""
    import base64

    import matplotlib.image

    images = []
    for out in outputs:
        png = out.get("data", {}).get("image/png")
        if png is not None:
            images.append(matplotlib.image.imread(io.BytesIO(base64.b64decode(png))))
    return images


def _numbers(pattern: str, text: str) -> list[float]:
    return [float(x) for x in re.findall(pattern, text)]


def _check_rank_collapse(text: str) -> None:
    last = dict(re.findall(r"(\w+)\s+mean correlation at the last layer: (-?[\d.]+)", text))
    assert set(last) == {"shaped", "unshaped", "preln"}, text
    last = {k: float(v) for k, v in last.items()}
    assert all(-1.0 <= v <= 1.0 for v in last.values())
    # Rank collapse: unshaped attention drives the tokens to correlation ~1 by t = 2 (0.99 at
    # the small size), shaped attention keeps them apart (0.13); 32 networks give standard
    # errors of a few 0.01, so a gap of 0.3 is many standard errors and not a fluke.
    assert last["unshaped"] > 0.9 and last["unshaped"] > last["shaped"] + 0.3, last


def _check_ntk(text: str) -> None:
    lams = _numbers(r"lambda_min\(K\) = (-?[\d.eE+-]+)", text)
    assert lams and all(lam > 0 for lam in lams), text  # positive-definite kernels
    rates = _numbers(r"predicted bound (-?[\d.]+)", text)
    assert rates and all(0 < r < 1 for r in rates), text  # GD contracts the loss
    assert "slope" in text and "mean errors" in text


def _check_finite_vs_sde(text: str) -> None:
    assert "SDE exits:" in text and "survival_fraction" in text, text
    assert re.search(r"KS=\d", text), text


def _check_training(text: str) -> None:
    # small scale: 3 kinds x 2 depths x 4 learning rates x 2 seeds, then the committed CPU study
    assert "48 runs" in text, text
    assert "complete: 360/360 runs" in text, text


CONTENT = {
    "01_finite_vs_sde": _check_finite_vs_sde,
    "02_rank_collapse": _check_rank_collapse,
    "03_training": _check_training,
    "04_ntk": _check_ntk,
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, executed):
    result = executed[path.name]
    if result["error"] is not None:
        raise AssertionError(f"{path.name} failed:\n{result['error']}")
    outputs = [
        out for cell in result["nb"].cells if cell.cell_type == "code" for out in cell.outputs
    ]
    assert not [o for o in outputs if o.output_type == "error"]
    # the notebook really ran at the small size, printed sensible numbers and drew its figures
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "scale: small" in text
    images = _figures(outputs)
    assert len(images) >= FIGURES.get(path.stem, 1), f"{path.name}: {len(images)} figures"
    for image in images:
        assert min(image.shape[:2]) > 100  # a real figure, not an icon
        assert image[..., :3].std() > 0.05  # with lines and labels, not a blank canvas
    CONTENT.get(path.stem, lambda text: None)(text)
