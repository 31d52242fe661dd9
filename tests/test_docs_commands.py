"""Every `sdeformer ...` command line of the docs parses with the real parser (no stale flag).

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
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
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
