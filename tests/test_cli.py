"""The command line: tables, JSON reports, figures, resuming and clear errors."""

import json

import pytest

from sdeformer.cli import main

TINY = ["--n", "8", "--depth", "4", "--tokens", "3", "--samples", "2", "--no-progress"]


def test_rank_collapse_writes_and_resumes(tmp_path, capsys):
    out = tmp_path / "rc"
    assert main(["rank-collapse", *TINY, "--out", str(out), "--kinds", "shaped,unshaped"]) == 0
    printed = capsys.readouterr().out
    assert "| model | layer |" in printed and str(out) in printed
    report = json.loads((out / "rank_collapse.json").read_text())
    assert set(report["curves"]) == {"shaped", "unshaped"}
    assert len(report["curves"]["shaped"]["mean_correlation_mean"]) == 5
    assert (out / "rank_collapse.png").stat().st_size > 1000
    before = (out / "units" / "shaped.json").read_text()
    # A rerun resumes: the finished units are loaded, not recomputed, and the report is identical.
    assert (
        main(["rank-collapse", *TINY, "--out", str(out), "--kinds", "shaped,unshaped", "--json"])
        == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert again["curves"] == report["curves"]
    assert (out / "units" / "shaped.json").read_text() == before


def test_foreign_results_are_refused(tmp_path, capsys):
    out = tmp_path / "rc"
    assert main(["rank-collapse", *TINY, "--out", str(out), "--kinds", "shaped"]) == 0
    capsys.readouterr()
    assert (
        main(["rank-collapse", *TINY, "--out", str(out), "--kinds", "shaped", "--gamma", "0.3"])
        == 2
    )
    assert "another configuration" in capsys.readouterr().err
    (out / "units" / "shaped.json").write_text("{not json")
    assert main(["rank-collapse", *TINY, "--out", str(out), "--kinds", "shaped"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--gamma", "1.2"], "gamma=1.2"),
        (["--blocks", "attention,foo"], "unknown block 'foo'"),
        (["--kinds", "shaped,bogus"], "unknown model kind 'bogus'"),
        (["--tokens", "1"], "at least 2 tokens"),
        (["--rho0", "1.0"], "rho=1.0"),
    ],
)
def test_bad_options(args, fragment, tmp_path, capsys):
    assert main(["rank-collapse", *TINY, "--out", str(tmp_path / "x"), *args]) == 2
    assert fragment in capsys.readouterr().err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "rank-collapse" in text and "run" in text
