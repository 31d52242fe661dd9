"""Every benchmark summary table is rendered from a single JSON run (benchmarks.check_summaries).

The committed results pass the check; the check catches a summary that reads another file,
one that shows a stored quotient, a ratio between different batches or between numbers that
are not in its JSON, and a table that does not name its machine and load.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_laws, bench_sde, bench_tokens, check_summaries, run_all
from benchmarks._common import DEFAULT_RESULTS
from benchmarks._ratios import UnequalBatch, ratio, ratio_cell, recording, run_line

MACHINE = {"backend": "cpu", "cpu_model": "Test CPU", "cpu_count": 2, "jax": "0", "platform": "p"}


def _data(**extra) -> dict:
    return {
        "machine": MACHINE,
        "load": {"before": [1.0], "after": [1.5]},
        "commit": "abc1234",
        "rows": [{"a_rate": 6.0, "b_rate": 3.0, "a_batch": 8, "b_batch": 8, "a_over_b": 2.0}],
        **extra,
    }


def _good(data: dict) -> list[str]:
    r = data["rows"][0]
    q = ratio(r["a_rate"], r["b_rate"], num_batch=r["a_batch"], den_batch=r["b_batch"], what="a/b")
    return ["**T**", run_line(data, "toy"), f"a / b = {q}"]


def test_committed_summaries_pass_the_check():
    for results in check_summaries.default_directories():
        assert check_summaries.check_directory(results) == [], results


def test_a_correct_summary_passes():
    assert check_summaries.check_summary("toy", _good, _data()) == []


@pytest.mark.parametrize(
    ("summary", "words"),
    [
        # reads another file of the results directory
        (lambda d: [*_good(d), (DEFAULT_RESULTS / "init.json").read_text()[:10]], "failed"),
        # shows the quotient stored in the JSON instead of computing it
        (lambda d: [*_good(d), str(d["rows"][0].get("a_over_b"))], "stored quotients"),
        # divides two numbers that are not values of the JSON
        (
            lambda d: [*_good(d), str(ratio(12.0, 3.0, num_batch=8, den_batch=8, what="x"))],
            "not a value",
        ),
        # does not say where it was measured
        (lambda d: ["**T**", "a / b = 2"], "does not name"),
    ],
)
def test_the_check_catches(summary, words):
    problems = check_summaries.check_summary("toy", summary, _data())
    assert problems and any(words in p for p in problems), problems


def test_unequal_batches_are_refused_and_shown_as_such():
    with pytest.raises(UnequalBatch, match="500.*1"):
        ratio(10.0, 2.0, num_batch=500, den_batch=1)
    assert ratio_cell(10.0, 2.0, num_batch=(500, 8), den_batch=(1, 8)) == (
        "unequal batch 500 x 8 / 1 x 8"
    )
    with recording() as calls:
        assert ratio_cell(10.0, 2.0, num_batch=4, den_batch=4) == 5.0
    assert calls == [{"what": "", "num": 10.0, "den": 2.0, "num_batch": 4, "den_batch": 4}]


def test_a_summary_that_divides_unequal_batches_fails_the_check():
    data = _data()
    data["rows"][0]["b_batch"] = 1
    problems = check_summaries.check_summary("toy", _good, data)
    assert problems and "UnequalBatch" in problems[0]


def test_old_unequal_batch_json_shows_no_speedup():
    """The committed GPU laws.json (law chain at 20,000 samples, explicit network at 1): its
    summary shows the two batches, not the 2,363x of that run."""
    data = json.loads((DEFAULT_RESULTS / "gpu-nvidia-h200" / "laws.json").read_text())
    text = "\n".join(bench_laws.summary(data))
    assert "unequal batch 20000 x 8 / 1 x 8" in text
    assert "2,363" not in text and "4,556" not in text


def test_rows_without_a_commit_are_not_shown():
    """The GPU sde.json names no commit: its rows (from before the faster SDE step) are
    dropped; the same rows with a commit are shown with that commit."""
    data = json.loads((DEFAULT_RESULTS / "gpu-nvidia-h200" / "sde.json").read_text())
    assert "Rows not shown" in "\n".join(bench_sde.summary(data))
    text = "\n".join(bench_sde.summary({**data, "commit": "0123456789"}))
    assert "commit 0123456" in text and "| 32 | 20000 | 200 |" in text


def test_tokens_plan_runs_law_and_explicit_at_one_batch():
    p = bench_tokens.PROFILES["cpu"]
    for m in (2, 64, 256):
        plan = bench_tokens.plan_size(m, None, {}, p)
        for kind in ("attention", "full"):
            assert plan[f"law_{kind}"]["size"] == plan[f"explicit_{kind}"]["size"], (m, plan)


def test_run_all_summary_names_no_single_machine():
    """The combined summary has no machine line of its own: each table names its JSON's."""
    body = run_all.summary_markdown(None)
    assert "Machine:" not in body
    for name, data in run_all.read_results().items():
        if data is not None:
            assert f"`{name}.json`" in body, name
