"""Every `sdeformer ...` command line of the docs parses with the real parser (no stale flag), and
every command line of a code block of README.md and docs/*.md runs, at a small size.

Where commands are found, in README.md, docs/*.md and the notebooks' markdown cells:
- code blocks: fenced (```console, ```bash, or no language) and indented (four spaces) ones; a
  line `sdeformer ...` or `$ sdeformer ...`, with `\\` continuations joined and a trailing
  `# comment` dropped;
- inline code spans that begin with `sdeformer ` (e.g. `sdeformer compare --devices K`).

Each command goes through `sdeformer.cli.build_parser().parse_args` (what `sdeformer` itself
parses with), so a removed or misspelt flag, a removed command or a value of the wrong type or
outside a flag's choices fails here. Placeholders in capitals are replaced by a value of the
right kind (`PLACEHOLDERS`); `sdeformer COMMAND --help` stands for every command and is skipped.
Parsing runs nothing: the values' own checks (ranges, combinations) are the commands' tests
(tests/test_cli.py). The TOML example of docs/scaling.md goes through the `--config` reader
with the option names of its command.

Running (`test_documented_command_runs`, marked slow): each block command runs in-process
(`sdeformer.cli.main`) in its own temporary folder, its sizes capped by `SMALL` and `FIRST` and
full-size defaults shrunk by `ADDED` (all listed below; nothing else of the line changes), and
must exit with status 0 and print its table. `SKIPPED` names the one line not run and why. By
default the first line of each command of `DEFAULT_KINDS` runs (about 35 s); SDEFORMER_FULL=1
runs every line (about 3 minutes on the 2-core CPU).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import time
from pathlib import Path

import nbformat
import pytest

from sdeformer.cli import build_parser
from sdeformer.cli.common import config_defaults, read_config_file

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PLACEHOLDERS = {"K": "2", "N": "2", "T": "1", "FILE": "options.toml"}
"""Capitalised placeholders of the docs' commands, and the value each is parsed with."""

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[ \t]*$")
INLINE = re.compile(r"(?<!`)`(sdeformer [^`]+)`(?!`)")


def _code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line inside a fenced or indented code block."""
    lines = text.splitlines()
    out, fence, previous_blank = [], None, True
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match["lang"]
        elif fence is not None and line.strip() == "```":
            fence = None
        elif fence is not None:
            if fence != "python":  # python blocks run in tests/test_docs.py
                out.append((number, line))
        elif line.startswith("    ") and (previous_blank or (out and out[-1][0] == number - 1)):
            out.append((number, line))
        previous_blank = line.strip() == ""
    return out


def commands_in(text: str, where: str) -> list[tuple[str, str]]:
    """(where:line, command) for each `sdeformer ...` command of a markdown text."""
    found = []
    pending: tuple[int, str] | None = None
    for number, line in _code_lines(text):
        stripped = line.strip().removeprefix("$ ")
        if pending is not None:
            start, head = pending
            stripped = head + " " + stripped
        elif not stripped.startswith("sdeformer "):
            continue
        else:
            start = number
        if stripped.endswith("\\"):
            pending = (start, stripped[:-1].rstrip())
            continue
        pending = None
        found.append((f"{where}:{start}", stripped))
    prose = "\n".join(line for line in text.splitlines() if not line.startswith("    "))
    for match in INLINE.finditer(prose):
        number = prose[: match.start()].count("\n") + 1
        found.append((f"{where}:{number} (inline)", " ".join(match[1].split())))
    return found


def _all_commands() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        found += commands_in(path.read_text(), path.name)
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        text = "\n\n".join(c.source for c in cells if c.cell_type == "markdown")
        found += commands_in(text, path.name)
    return found


COMMANDS = _all_commands()


def argv_of(command: str) -> list[str] | None:
    """The arguments after `sdeformer`, placeholders replaced; None for `sdeformer COMMAND`."""
    words = shlex.split(command, comments=True)
    assert words[0] == "sdeformer", command
    if "COMMAND" in words:
        return None
    unknown = [w for w in words if re.fullmatch(r"[A-Z][A-Z_]*", w) and w not in PLACEHOLDERS]
    assert not unknown, f"{command!r}: add the placeholders {unknown} to PLACEHOLDERS"
    return [PLACEHOLDERS.get(word, word) for word in words[1:]]


def parse(argv: list[str]) -> str:
    """Parse `argv` like `sdeformer` does; '' when it parses, else argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as stop:
        return "" if stop.code == 0 else err.getvalue().strip() or f"exit {stop.code}"
    return ""


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where, command):
    argv = argv_of(command)
    if argv is None:
        return  # `sdeformer COMMAND --help`: a placeholder for every command
    message = parse(argv)
    assert message == "", f"{where}: `{command}` is refused by the parser:\n{message}"


def test_commands_are_found():
    """The extraction finds the commands the docs are known to show (fenced, indented,
    continued and inline), so an empty list cannot pass the test above."""
    places = {where.split(":")[0] for where, _ in COMMANDS}
    assert {"README.md", "usage.md", "design.md", "training.md"} <= places, places
    assert len(COMMANDS) >= 40, len(COMMANDS)
    text = (
        "Run `sdeformer compare --devices K`.\n\n"
        "```console\n$ sdeformer compare --width 8 \\\n    --samples 10  # small\n```\n\n"
        "    sdeformer rank-collapse --depth 4\n"
    )
    assert [c for _, c in commands_in(text, "x.md")] == [
        "sdeformer compare --width 8 --samples 10  # small",
        "sdeformer rank-collapse --depth 4",
        "sdeformer compare --devices K",
    ]


def test_parser_refuses_stale_flags():
    """Power: a removed flag, a removed command, a wrong type and a prefix are refused."""
    assert parse(["compare", "--width", "8"]) == ""
    assert "unrecognized arguments: --n" in parse(["compare", "--n", "8"])  # removed spelling
    assert "invalid choice" in parse(["no-such-command"])
    assert "not a positive integer" in parse(["compare", "--width", "eight"])
    assert parse(["compare", "--samp", "10"]) != ""  # prefixes are refused
    assert argv_of("sdeformer compare --devices K") == ["compare", "--devices", "2"]
    with pytest.raises(AssertionError, match="PLACEHOLDERS"):
        argv_of("sdeformer compare --width WIDTH")


def test_toml_config_example_is_read(tmp_path):
    """The `--config` example of docs/scaling.md: every key is an option of its command."""
    text = (ROOT / "docs" / "scaling.md").read_text()
    block = re.search(r"```toml\n(?P<body>.*?)```", text, flags=re.S)["body"]
    command = re.search(r"sdeformer ([\w-]+) --config", block)[1]
    path = tmp_path / "example.toml"
    path.write_text(block)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    data = read_config_file(str(path))
    defaults = config_defaults(sub, data, str(path))
    assert len(defaults) == len(data) >= 5 and 128 in defaults.values(), defaults
    path.write_text(block + "no_such_option = 1\n")  # power: an unknown key is refused
    with pytest.raises(ValueError, match="no_such_option"):
        config_defaults(sub, read_config_file(str(path)), str(path))


# ------------------------------------------------------------------------ names in the prose

NAME = re.compile(
    r"`(?P<name>(?:sdf|sdeformer|compare|plot|metrics|train|ntk|design|lr_sweep)"
    r"(?:\.[A-Za-z_]\w*)+)"
)
ALIASES = {"sdf": "sdeformer", "lr_sweep": "sdeformer.train.lr_sweep"}
"""How the docs abbreviate: `sdf.X` is `sdeformer.X`, `compare.X` is `sdeformer.compare.X`."""


def resolve(name: str) -> object:
    """The object a dotted name of the docs refers to (AttributeError/ImportError if none)."""
    import importlib

    head, _, rest = name.partition(".")
    full = ALIASES.get(head, head if head == "sdeformer" else f"sdeformer.{head}") + "." + rest
    parts = full.split(".")
    for cut in range(len(parts), 0, -1):  # the longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(full)


def _names() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in NAME.finditer(line):
                name = match["name"]
                if not name.endswith((".json", ".png", ".md")):  # file names, not objects
                    found.append((f"{path.name}:{number}", name))
    return found


NAMES = _names()


def test_documented_names_exist():
    """Every `sdf.X`, `sdeformer.a.b`, `compare.X`, ... named in the docs' prose exists."""
    assert len(NAMES) >= 40, len(NAMES)
    missing = []
    for where, name in NAMES:
        try:
            resolve(name)
        except (AttributeError, ImportError) as err:
            missing.append(f"{where}: `{name}` ({err})")
    assert not missing, "\n".join(missing)
    with pytest.raises(AttributeError):  # power: a removed name is caught
        resolve("sdf.num_paths")
    assert resolve("compare.finite_source").__name__ == "finite_source"


# ------------------------------------------------------------------------ running the commands

SMALL = {
    "--samples": 48,
    "--explicit-samples": 16,
    "--width": 16,
    "--depth": 16,
    "--tokens": 8,
    "--at-depths": 8,
    "--steps": 4,
    "--stop-after": 2,
}
"""Caps: an option of a documented command line runs with min(its value, the cap). The docs show
the sizes a study needs (thousands of samples, widths of hundreds); the test runs the same
command at a size that takes seconds. Values already below a cap are kept as written."""

FIRST = {"--widths": 3, "--lrs": 2, "--depths": 2}
"""List options: only the first k items of the documented list are run."""

ADDED = {
    "train": ["--steps", "4", "--eval-every", "2", "--warmup", "1"],
    "train-sweep": ["--steps", "4", "--eval-every", "2", "--warmup", "1", "--lrs", "0.01,0.1"],
    "train-study": ["--steps", "50", "--max-groups", "1", "--seeds", "1", "--lrs", "0.01,0.1"],
    "ntk": ["--samples", "16", "--steps", "4"],
}
"""Options a command runs with when its documented line does not give them: these commands'
defaults are full size (250 training steps, 8 learning rates x 3 seeds per study group, 200 GD
steps). train-study's steps must be a multiple of its profile's eval_every (25 for cpu, 10 for
tiny)."""

SKIPPED = {
    "sdeformer train-study --profile cpu": "the committed CPU study: 9 groups of 360 runs; "
    "the same command with --depths and --max-groups runs below",
}
"""Documented commands not run, with the reason (none may be skipped without one)."""

FILES = ("my.txt", "my_corpus.txt")
"""Placeholder text files the docs' `--data file --text-file` examples read (written with this
test module's own source, a few kilobytes of text)."""


def small_argv(command: str) -> list[str]:
    """The documented command's arguments at the small size (SMALL, FIRST, ADDED)."""
    argv = argv_of(command)
    assert argv is not None, command
    out = []
    for i, word in enumerate(argv):
        option = argv[i - 1] if i else ""
        if option in SMALL and word.isdigit():
            word = str(min(int(word), SMALL[option]))
        elif option in FIRST:
            word = ",".join(word.split(",")[: FIRST[option]])
        out.append(word)
    for option, value in zip(*[iter(ADDED.get(argv[0], []))] * 2, strict=True):
        if option not in out:
            out += [option, value]
    return out


BLOCK_COMMANDS = [
    (where, command)
    for path in DOCS
    for where, command in commands_in(path.read_text(), path.name)
    if "(inline)" not in where
]
"""The command lines of the docs' code blocks (inline spans name commands, not runs)."""


def test_small_argv_substitutes_only_sizes():
    """Power and minimality of the substitution: sizes are capped, lists cut, the rest kept."""
    assert small_argv("sdeformer compare --width 64 --T 1 --samples 8000 --rho0 0.3") == [
        "compare", "--width", "16", "--T", "1", "--samples", "48", "--rho0", "0.3",
    ]  # fmt: skip
    assert small_argv("sdeformer compare --width 8 --samples 10") == [
        "compare", "--width", "8", "--samples", "10",
    ]  # fmt: skip
    assert small_argv("sdeformer sweep-width --widths 4,8,16,32") == [
        "sweep-width", "--widths", "4,8,16",
    ]  # fmt: skip
    assert small_argv("sdeformer train --steps 250")[:3] == ["train", "--steps", "4"]
    assert small_argv("sdeformer train --steps 250").count("--steps") == 1
    assert set(SKIPPED) <= {c.split("  #")[0].strip() for _, c in BLOCK_COMMANDS}, SKIPPED
    assert len(BLOCK_COMMANDS) >= 20, BLOCK_COMMANDS


DEFAULT_KINDS = ("compare", "design", "rank-collapse", "train", "train-study")
"""Without SDEFORMER_FULL=1 only the first block command of each of these commands runs (about
35 s on the 2-core CPU); the others, and every further line of a command, are skipped as slow.
With SDEFORMER_FULL=1 every block command runs (about 3 min)."""


def _runs_by_default(where: str) -> bool:
    firsts: dict[str, str] = {}
    for place, command in BLOCK_COMMANDS:
        firsts.setdefault(argv_of(command)[0], place)
    return where in {firsts[kind] for kind in DEFAULT_KINDS if kind in firsts}


@pytest.mark.slow
@pytest.mark.parametrize("where, command", BLOCK_COMMANDS, ids=[w for w, _ in BLOCK_COMMANDS])
def test_documented_command_runs(where, command, tmp_path, monkeypatch, capsys, full):
    """Each `sdeformer ...` line of a code block runs at the small size and exits with 0."""
    from sdeformer.cli import main

    bare = command.split("  #")[0].strip()
    if bare in SKIPPED:
        pytest.skip(f"{where}: {SKIPPED[bare]}")
    if not full and not _runs_by_default(where):
        pytest.skip("slow: not in DEFAULT_KINDS' first lines (SDEFORMER_FULL=1 runs it)")
    monkeypatch.chdir(tmp_path)
    for name in FILES:
        (tmp_path / name).write_text(Path(__file__).read_text() * 4)
    argv = small_argv(command)
    start = time.perf_counter()
    status = main(argv)
    captured = capsys.readouterr()
    print(f"{where}: sdeformer {' '.join(argv)}: {time.perf_counter() - start:.1f} s")
    assert status == 0, f"{where}: `sdeformer {' '.join(argv)}` exited {status}:\n{captured.err}"
    assert captured.out.strip(), f"{where}: printed nothing"
