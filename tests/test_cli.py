"""The command line: tables, JSON reports, figures, resuming and clear errors."""

import json

import pytest

from sdeformer.cli import main

TINY = ["--width", "8", "--depth", "4", "--tokens", "3", "--samples", "2", "--no-progress"]
COMMANDS = (
    "run",
    "compare",
    "sweep-width",
    "rank-collapse",
    "ntk",
    "train",
    "train-sweep",
    "train-study",
    "train-edges",
    "design",
)


def _assert_figure(path, *, panels: int) -> None:
    """A real PNG of a figure with `panels` side by side: wide, and not a blank canvas."""
    import matplotlib.image

    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert width > panels * 0.8 * height, (width, height)
    assert image[..., :3].std() > 0.05  # lines, labels and bands, not an empty canvas


def test_rank_collapse_writes_and_resumes(tmp_path, capsys):
    out = tmp_path / "rc"
    assert main(["rank-collapse", *TINY, "--out", str(out), "--kinds", "shaped,unshaped"]) == 0
    printed = capsys.readouterr().out
    assert "| model | layer |" in printed and str(out) in printed
    report = json.loads((out / "rank_collapse.json").read_text())
    assert set(report["curves"]) == {"shaped", "unshaped"}
    assert len(report["curves"]["shaped"]["mean_correlation_mean"]) == 5
    # Layer 0 is the input: equicorrelated, m = 3 tokens, rho0 = 0.3 (the default). Its
    # correlation eigenvalues are 1 + 2 rho0 = 1.6 and 1 - rho0 = 0.7 (twice), so the stable rank
    # is tr^2 / tr(V^2) = 9 / (1.6^2 + 2 * 0.7^2) and the smallest eigenvalue 0.7, in every
    # network (standard error 0). float32 Grams of n = 8 exact inputs: rtol 1e-4.
    for kind in ("shaped", "unshaped"):
        curve = report["curves"][kind]
        assert curve["mean_correlation_mean"][0] == pytest.approx(0.3, rel=1e-4)
        assert curve["stable_rank_mean"][0] == pytest.approx(9 / (1.6**2 + 2 * 0.49), rel=1e-4)
        assert curve["min_eigenvalue_mean"][0] == pytest.approx(0.7, rel=1e-4)
        assert curve["mean_correlation_se"][0] == pytest.approx(0.0, abs=1e-5)
        assert all(-1.0 <= r <= 1.0 for r in curve["mean_correlation_mean"])
        assert curve["mean_correlation_se"][-1] > 0  # the networks differ after layer 0
    assert report["settings"]["n"] == 8 and report["settings"]["samples"] == 2
    _assert_figure(out / "rank_collapse.png", panels=3)
    before = (out / "units" / "shaped.json").read_text()
    # A rerun resumes: the finished units are loaded, not recomputed, and the report is identical.
    assert (
        main(["rank-collapse", *TINY, "--out", str(out), "--kinds", "shaped,unshaped", "--json"])
        == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert again["curves"] == report["curves"]
    assert (out / "units" / "shaped.json").read_text() == before
    assert report["resumed"] is None
    assert again["resumed"] == (
        f"resumed: reused shaped, unshaped from the earlier run in {out}; computed nothing new"
    )
    # The table says so too.
    assert main(["rank-collapse", *TINY, "--out", str(out), "--kinds", "shaped,unshaped"]) == 0
    assert "resumed: reused shaped, unshaped from the earlier run" in capsys.readouterr().out


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


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_help_lists_commands(capsys):
    from sdeformer.cli import build_parser

    text = " ".join(_help(capsys).split())
    # Every command is listed with its one-line description.
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    assert tuple(sub.choices) == COMMANDS
    for action in sub._choices_actions:
        assert action.dest in text and action.help.split("(")[0].strip()[:40] in text
    # Each command's help lists --config and its own options with their defaults.
    rank = " ".join(_help(capsys, "rank-collapse").split())  # argparse wraps lines
    for option in ("--config FILE", "--width", "--kinds", "--devices", "--accept-changed"):
        assert option in rank, option
    assert "(default: 128)" in rank and "do not depend on --devices" in rank
    for command in COMMANDS:
        assert "--config FILE" in _help(capsys, command), command


# ----------------------------------------------------------------------------------- seeds


def test_rank_collapse_numbers_do_not_depend_on_other_kinds(tmp_path, capsys):
    """`--kinds unshaped` gives the unshaped numbers of `--kinds shaped,unshaped`."""
    both, alone = tmp_path / "both", tmp_path / "alone"
    assert main(["rank-collapse", *TINY, "--kinds", "shaped,unshaped", "--out", str(both)]) == 0
    assert main(["rank-collapse", *TINY, "--kinds", "unshaped", "--out", str(alone)]) == 0
    capsys.readouterr()
    a = json.loads((both / "rank_collapse.json").read_text())["curves"]
    b = json.loads((alone / "rank_collapse.json").read_text())["curves"]
    assert a["unshaped"] == b["unshaped"]
    assert a["shaped"] != a["unshaped"]  # power: the kinds do draw different networks


# ----------------------------------------------------------------------------- config files


def test_config_file_sets_options_flags_win_and_config_is_written(tmp_path, capsys):
    out = tmp_path / "rc"
    config = tmp_path / "sweep.toml"
    config.write_text(
        'kinds = ["shaped"]\nwidth = 8\ndepth = 4\ntokens = 3\nsamples = 3\n'
        "gamma = 0.4\ncausal = true\nno-progress = true\n"
    )
    argv = ["rank-collapse", "--config", str(config), "--samples", "2", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    settings = json.loads((out / "rank_collapse.json").read_text())["settings"]
    assert settings["samples"] == 2  # the flag wins over the file
    assert settings["n"] == 8 and settings["depth"] == 4 and settings["tokens"] == 3
    assert settings["config"]["gamma"] == 0.4 and settings["config"]["causal"] is True
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["kinds"] == "shaped" and resolved["samples"] == 2 and resolved["width"] == 8
    assert resolved["gamma"] == 0.4 and "n" not in resolved
    assert "overwrite" not in resolved and "config" not in resolved
    # The resolved config reproduces the run: a rerun from it resumes the same directory.
    assert main(["rank-collapse", "--config", str(out / "config.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"] == settings
    # YAML, the same fields.
    yaml_file = tmp_path / "sweep.yaml"
    yaml_file.write_text("kinds: [shaped]\nwidth: 8\ndepth: 4\ntokens: 3\nsamples: 2\n")
    argv = ["rank-collapse", "--config", str(yaml_file), "--out", str(tmp_path / "y"), "--json"]
    assert main([*argv, "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["n"] == 8


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("sampels = 3\n", ["unknown option 'sampels'", "valid options:", "samples", "kinds"]),
        ("samples = 0\n", ["samples = 0", "not a positive integer"]),
        ("causal = 3\n", ["causal = 3 must be true or false"]),
        ("samples = [\n", ["cannot parse"]),
    ],
)
def test_config_file_errors_name_the_key(text, fragments, tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["rank-collapse", "--config", str(config), "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# ---------------------------------------------------------------------------------- figures


def _curves(kinds=("shaped", "unshaped"), layers=5):
    import numpy as np

    return {
        kind: {
            f"{m}_{s}": np.linspace(0.3, 0.9, layers) * (1 + i) * (0.1 if s == "se" else 1)
            for m in ("mean_correlation", "stable_rank", "min_eigenvalue")
            for s in ("mean", "se")
        }
        for i, kind in enumerate(kinds)
    }


def test_plots_draw_into_given_axes_and_return_the_figure():
    import matplotlib.pyplot as plt
    import numpy as np

    from sdeformer import plot

    fig, axes = plt.subplots(2, 3)
    assert plot.rank_collapse_figure(_curves(), n=8, ax=axes[1]) is fig
    assert [len(ax.lines) for ax in axes[1]] == [2, 2, 2]  # one line per kind and panel
    assert [len(ax.lines) for ax in axes[0]] == [0, 0, 0]
    with pytest.raises(ValueError, match="has 3 panel"):
        plot.rank_collapse_figure(_curves(), n=8, ax=axes[0, 0])
    rows = [
        {
            "kind": "shaped",
            "lr": lr,
            "val_loss_mean": 2.0 / lr,
            "val_loss_min": 1.0 / lr,
            "val_loss_max": 3.0 / lr,
        }
        for lr in (1.0, 2.0)
    ]
    assert plot.train_sweep_figure(rows, ax=axes[0, 0]) is fig
    assert axes[0, 0].get_xscale() == "log" and len(axes[0, 0].containers) == 1
    widths = np.array([8.0, 16.0, 32.0])
    distances = {"KS": (1.0 / widths, 0.1 / widths, None)}
    assert plot.distance_vs_width_figure(widths, distances, {}, ax=axes[0, 1]) is fig
    plt.close(fig)
    # Without ax: a new figure each call.
    new = plot.rank_collapse_figure(_curves(), n=8)
    assert new is not fig and len(new.axes) == 3
    plt.close(new)


def test_library_keeps_the_users_backend_and_the_cli_picks_agg(tmp_path, monkeypatch, capsys):
    import matplotlib
    import matplotlib.pyplot as plt

    from sdeformer import plot

    monkeypatch.delenv("MPLBACKEND", raising=False)
    previous = matplotlib.get_backend()
    try:
        matplotlib.use("pdf")
        plt.close(plot.rank_collapse_figure(_curves(), n=8))
        assert matplotlib.get_backend() == "pdf"  # plt.show() would still use the user's
        argv = ["rank-collapse", *TINY, "--kinds", "shaped", "--out", str(tmp_path / "rc")]
        assert main(argv) == 0
        assert matplotlib.get_backend().lower() == "agg"  # the command line writes files
    finally:
        matplotlib.use(previous)
    capsys.readouterr()


def test_config_file_missing_or_of_unknown_kind(tmp_path, capsys):
    for path, fragment in (
        (tmp_path / "absent.toml", "no such file"),
        (tmp_path / "sweep.ini", "unknown suffix '.ini'"),
        (tmp_path / "list.json", "expected a mapping of options, got list"),
    ):
        if path.suffix != ".toml":
            path.write_text("[1, 2]" if path.suffix == ".json" else "samples = 2")
        with pytest.raises(SystemExit) as info:
            main(["ntk", "--config", str(path)])
        assert info.value.code == 2
        assert fragment in capsys.readouterr().err


# ------------------------------------------------------------------------------ vocabulary


def _visible_options(command) -> set[str]:
    import argparse

    return {
        flag
        for action in command._actions
        if action.help != argparse.SUPPRESS
        for flag in action.option_strings
    }


def test_one_vocabulary_for_sample_counts_and_width():
    """Sample counts are --samples (others --<source>-samples) and width is --width.

    No command has --n, --paths, --num-paths or --num-samples (the old spellings are removed).
    """
    from sdeformer.cli import build_parser

    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    banned = {"--n", "--paths", "--num-paths", "--num-samples", "--law-samples", "--d-model"}
    for name, command in sub.choices.items():
        visible = _visible_options(command)
        assert not visible & banned, (name, visible & banned)
        for flag in visible:  # every other count of samples is named after its source
            assert not flag.endswith(("-paths", "-inputs")), (name, flag)
    expected = {
        "compare": {"--width", "--samples", "--explicit-samples", "--sde-samples", "--devices"},
        "sweep-width": {"--widths", "--samples", "--sde-samples", "--devices"},
        "rank-collapse": {"--width", "--samples", "--devices"},
        "ntk": {"--widths", "--samples"},
        "train": {"--width"},
        "train-sweep": {"--width"},
    }
    for name, flags in expected.items():
        assert flags <= _visible_options(sub.choices[name]), name


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--n", "16"],
        ["compare", "--paths", "5"],
        ["compare", "--law-samples", "5"],
        ["sweep-width", "--paths", "5"],
        ["rank-collapse", "--n", "16"],
        ["compare", "--samp", "5"],
    ],
)
def test_old_spellings_and_abbreviations_are_refused(argv, capsys):
    """The removed aliases (CHANGELOG.md) and prefixes of an option exit 2, naming the flag."""
    from sdeformer.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {argv[1]}" in capsys.readouterr().err


def test_config_json_records_the_documented_names(tmp_path, capsys):
    """The resolved options use the documented names (`width`, not the destination `n`)."""
    out = tmp_path / "rc"
    argv = ["rank-collapse", *TINY, "--kinds", "shaped", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    assert config["width"] == 8 and "n" not in config and config["devices"] == 1


# ------------------------------------------------------------- errors before any file


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (
            ["compare", "--width", "2", "--tokens", "3"],
            ["n=2, m=3", "pass n >= m"],
        ),
        (
            ["compare", "--devices", "64"],
            ["--devices 64", "XLA_FLAGS=--xla_force_host_platform_device_count=64"],
        ),
        (
            ["sweep-width", "--widths", "2,4", "--v0", "1,1;1,1", "--solver", "exponential"],
            ["solver='exponential'", "singular", "solver='euler'"],
        ),
        (
            ["rank-collapse", "--devices", "64"],
            ["--devices 64", "pass --devices 1..", "device_count=64"],
        ),
        (["ntk", "--scalings", "sqrt,-1"], ["'-1'", "number > 0"]),
        (["train", "--steps", "30", "--eval-every", "20"], ["--steps 30", "--eval-every"]),
        (
            ["train", "--recover-start", "0.6", "--recover-end", "0.5"],
            ["--recover-start 0.6", "start < end"],
        ),
        (["compare", "--moment-samples", "1"], ["--moment-samples 1", "pass 0"]),
        (
            ["train-sweep", "--steps", "30", "--eval-every", "20"],
            ["--steps 30", "--eval-every"],
        ),
        (["train-study", "--profile", "tiny", "--steps", "7"], ["steps=7", "eval_every"]),
    ],
)
def test_invalid_combinations_exit_2_and_write_nothing(argv, fragments, tmp_path, capsys):
    """Each command checks every input before creating --out.

    Status 2, a message naming the value and the fix, and no output directory.
    """
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not out.exists()
