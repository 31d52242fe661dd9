"""Every notebook runs top to bottom at the reduced size, and is stored without outputs.

The notebooks execute as `make docs` executes them (`notebooks/render.py`): in fresh kernels
started from this interpreter (`sys.executable`, through a kernel spec written to a temporary
directory, so no "python3" kernel needs to be installed) with `SDEFORMER_NOTEBOOK_SCALE=small`
and `PYTHONPATH` set to this checkout, concurrently, once per test session; each notebook is one
test. The executed notebooks are then rendered into the docs site (`mkdocs build --strict`) as
`make docs` renders them.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from notebooks import render  # noqa: E402  (notebooks/render.py: also what `make docs` runs)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = render.sources()


@pytest.fixture(scope="module")
def executed() -> dict[str, dict]:
    """Execute every notebook once, concurrently; {file name: {nb, error, seconds}}."""
    results = render.execute_all(NOTEBOOKS)
    for name, result in results.items():
        print(f"{name}: {result['seconds']:.1f} s")
    return results


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


FIGURES = {
    "01_finite_vs_sde": 3,
    "02_rank_collapse": 3,
    "03_training": 3,
    "04_ntk": 2,
    "05_design": 2,
}
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


def _check_design(text: str) -> None:
    assert "Forecast by the exact finite-width law chain" in text, text
    assert "Forecast by the explicit networks" in text, text
    assert re.search(r"Phase map \(sde\) over tau0 \(\d+ values", text), text
    assert "certified by the exact law chain" in text and "converged" in text, text
    rho = _numbers(r"median mean_rho (-?[\d.]+) \[", text)
    assert len(rho) == 2 and all(-1.0 <= r <= 1.0 for r in rho), text


CONTENT = {
    "01_finite_vs_sde": _check_finite_vs_sde,
    "02_rank_collapse": _check_rank_collapse,
    "03_training": _check_training,
    "04_ntk": _check_ntk,
    "05_design": _check_design,
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


# ------------------------------------------------------------------------ public API, takeaways

PRIVATE = re.compile(r"\bsdeformer(?:\.\w+)*\.(?:cli\b|_\w+)")
TAKEAWAY = "## What to take away"


def _code(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_uses_public_api_only(path):
    """No `sdeformer.cli` (the commands) and no private module (`sdeformer.x._y`)."""
    found = PRIVATE.findall(_code(nbformat.read(path, as_version=4)))
    assert not found, f"{path.name} imports {found}: use the public API"
    assert PRIVATE.search("from sdeformer.cli.train_study import study_table")  # power
    assert PRIVATE.search("from sdeformer.sde._steps import x")
    assert not PRIVATE.search("from sdeformer.train import study_table")


def _takeaway(nb) -> tuple[int, str]:
    """(index of the code cell after the take-away heading, the heading cell's text)."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.startswith(TAKEAWAY):
            return i + 1, cell.source
    raise AssertionError(f"no {TAKEAWAY!r} cell")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_takeaway_is_computed(path):
    """The take-away's text is built from the results (a code cell displaying Markdown), and
    its heading cell states no number of its own."""
    nb = nbformat.read(path, as_version=4)
    index, heading = _takeaway(nb)
    assert not re.search(r"\d", heading.removeprefix(TAKEAWAY)), heading
    cell = nb.cells[index]
    assert cell.cell_type == "code" and "Markdown(" in cell.source, cell.source[:200]
    assert "hide-input" in cell.metadata.get("tags", []), "tag it hide-input (docs site)"


def _markdown_output(cell) -> str:
    texts = [
        o["data"]["text/markdown"] for o in cell.outputs if "text/markdown" in o.get("data", {})
    ]
    assert len(texts) == 1, cell.outputs
    return texts[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_takeaway_cites_the_run(path, executed):
    """The displayed take-away holds the numbers the notebook printed in this run."""
    result = executed[path.name]
    if result["error"] is not None:
        pytest.fail(f"{path.name} failed (see test_notebook_runs)")
    nb = result["nb"]
    index, _ = _takeaway(nb)
    text = _markdown_output(nb.cells[index])
    assert len(re.findall(r"\d+\.\d+", text)) >= 3, text
    printed = "".join(
        o.get("text", "")
        for cell in nb.cells[:index]
        for o in cell.get("outputs", [])
        if "text" in o
    )
    for pattern in CITED.get(path.stem, ()):
        values = re.findall(pattern, printed)
        assert values, f"{pattern!r} not printed"
        for value in values[-2:]:
            assert value in text, f"{path.name}: printed {value} is not in the take-away:\n{text}"


CITED = {
    "02_rank_collapse": [r"mean correlation at the last layer: (-?[\d.]+)"],
    "04_ntk": [r"lambda_min\(K\) = (-?[\d.]+)", r"predicted bound ([\d.]+)"],
    "03_training": [r"(\d+) runs\n"],
    "05_design": [r"P\(collapse\) ([\d.]+)\n", r"certified mean_rho:mean = ([\d.]+)"],
}
"""Printed numbers each take-away must repeat (the last two matches of each pattern)."""


# ------------------------------------------------------------------------ the docs site


def test_docs_site_renders_the_executed_notebooks(executed, tmp_path):
    """`make docs`: the executed notebooks become pages with their figures and take-aways
    (`mkdocs build --strict`, the hook of notebooks/render.py, mkdocs-jupyter)."""
    pytest.importorskip("mkdocs_jupyter", reason="pip install -e '.[docs]'")
    import os
    import subprocess
    import sys

    failed = [name for name, r in executed.items() if r["error"] is not None]
    if failed:
        pytest.fail(f"{failed} failed (see test_notebook_runs)")
    render.write_executed(executed, tmp_path / "notebooks")
    env = dict(os.environ, **{render.ENV_DIR: str(tmp_path / "notebooks")})
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for path in NOTEBOOKS:
        page = (tmp_path / "site" / "notebooks" / path.stem / "index.html").read_text()
        assert page.count("data:image/png;base64") >= FIGURES.get(path.stem, 1), path.name
        nb = executed[path.name]["nb"]
        index, _ = _takeaway(nb)
        cited = re.findall(r"\d+\.\d+", _markdown_output(nb.cells[index]))
        assert "What to take away" in page and all(x in page for x in cited), path.name
        hidden = _own_names(nb, index)  # names only the take-away's (hidden) input has
        assert hidden and not [n for n in hidden if n in page], (path.name, hidden)
    home = (tmp_path / "site" / "index.html").read_text()
    assert all(f"notebooks/{p.stem}/" in home for p in NOTEBOOKS)  # in the navigation


def _own_names(nb, index: int) -> set[str]:
    """Snake-case names of cell `index`'s source that no other cell, source or output, has
    (words such as `return` or `narrow` also occur in the page's prose, names like `ks_text` no)."""
    others = "\n".join(
        [c.source for i, c in enumerate(nb.cells) if i != index]
        + [str(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    )
    return {n for n in re.findall(r"[a-z]+_\w+", nb.cells[index].source) if n not in others}


def test_docs_hook_warns_about_a_missing_notebook(tmp_path, monkeypatch, caplog):
    """Power: an executed folder without one of the notebooks makes the build warn (and so
    fail under --strict); a folder that is absent builds the site without notebooks."""
    import logging

    folder = tmp_path / "notebooks"
    folder.mkdir()
    for path in NOTEBOOKS[1:]:
        (folder / path.name).write_text(path.read_text())
    monkeypatch.setenv(render.ENV_DIR, str(folder))
    with caplog.at_level(logging.INFO, logger=render.log.name):
        found = render._executed()
    assert [p.name for p in found] == [p.name for p in NOTEBOOKS[1:]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and NOTEBOOKS[0].name in warnings[0], warnings
    monkeypatch.setenv(render.ENV_DIR, str(tmp_path / "absent" / "notebooks"))
    assert render._executed() == []
    config = render.on_config({"nav": [{"Home": "index.md"}]})
    assert config["nav"] == [{"Home": "index.md"}]
