"""The study's stability figure keeps seeds with no stable lr, and the write-up's tables are
generated from the committed JSON (benchmarks/train_study_report.py)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

from benchmarks.train_study_report import REPORT, RUNS, first_divergence, report
from sdeformer.train.figures import stability_figure


def _cell(kind, depth, per_seed):
    return {"kind": kind, "depth": depth, "largest_stable_lr": {"per_seed": per_seed}}


def test_stability_figure_marks_seeds_without_a_stable_lr():
    cells = [
        _cell("shaped", 4, {"0": 0.1, "1": 0.1, "2": 0.3}),
        _cell("shaped", 16, {"0": 0.03, "1": None, "2": 0.03}),
        _cell("standard", 4, {"0": 0.1, "1": 0.1, "2": 0.1}),
        _cell("standard", 16, {"0": None, "1": None, "2": None}),  # no seed stable at all
    ]
    fig = stability_figure(cells)
    ax = fig.axes[0]
    marks = [line for line in ax.get_lines() if line.get_marker() == "v"]
    ys = [y for line in marks for y in line.get_ydata()]
    xs = [x for line in marks for x in line.get_xdata()]
    assert len(ys) == 4  # one mark per seed with no stable lr
    assert all(abs(x / 16 - 1) < 0.1 for x in xs)  # at depth 16
    assert max(ys) < 0.03 and ax.get_ylim()[0] < min(ys)  # below every stable lr, inside
    assert "standard" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "no stable lr" in ax.get_title()


def test_stability_figure_without_missing_seeds_has_no_marks():
    fig = stability_figure([_cell("shaped", 4, {"0": 0.1, "1": 0.3})])
    assert not [line for line in fig.axes[0].get_lines() if line.get_marker() == "v"]


def test_report_reads_the_committed_study():
    summary = json.loads(REPORT.read_text())
    runs = json.loads(RUNS.read_text())
    first = first_divergence(runs)
    assert first[("shaped", 16, 0)]["lr"] == first[("standard", 16, 0)]["lr"]
    text = report(summary, runs)
    assert "| 32 | preln | 3.16 (27) |" in text
    assert "every larger lr of the grid also diverged: yes." in text
