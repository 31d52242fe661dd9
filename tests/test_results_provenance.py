"""Every committed result JSON names the commit and the command it came from (or says legacy).

A JSON object passes with a commit ("commit" or "provenance.git_commit") and a command ("command"
or "provenance.command"), or with the explicit marker {"legacy": {"reason": "..."}} for a file
that predates provenance and cannot be regenerated here. A JSON array of records (the runs table
`X_runs.json`) belongs to its report `X.json`, which must pass. A result store's folder (a
`manifest.json` with its kind and provenance, as `sdeformer.results.ResultStore` writes) holds
bookkeeping (`manifest.json`, `config.json`, `provenance.json`, `units/`) that belongs to the
report at its top, which must pass.
"""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORE_BOOKKEEPING = ("manifest.json", "config.json", "provenance.json")


def _is_store(folder: Path) -> bool:
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return False
    data = json.loads(manifest.read_text())
    return isinstance(data, dict) and "kind" in data and "provenance" in data


def _is_bookkeeping(path: Path) -> bool:
    """A result store's manifest, config, provenance or unit: it belongs to the store's report."""
    if path.parent.name == "units" and _is_store(path.parent.parent):
        return True
    return path.name in STORE_BOOKKEEPING and _is_store(path.parent)


ALL = sorted(
    p.relative_to(ROOT)
    for folder in ("docs/results", "benchmarks/results")
    for p in (ROOT / folder).rglob("*.json")
)
FILES = [p for p in ALL if not _is_bookkeeping(ROOT / p)]
STORES = sorted({p.parent for p in ALL if p.name == "manifest.json" and _is_store(ROOT / p.parent)})


def names_origin(data) -> str | None:
    """None when `data` names a commit and a command or carries the legacy marker, else why not."""
    if not isinstance(data, dict):
        return "not a JSON object"
    legacy = data.get("legacy")
    if legacy is not None:
        if isinstance(legacy, dict) and isinstance(legacy.get("reason"), str) and legacy["reason"]:
            return None
        return 'the legacy marker must be {"reason": "<why it cannot be regenerated>"}'
    info = data.get("provenance") if isinstance(data.get("provenance"), dict) else {}
    commit = data.get("commit") or info.get("git_commit")
    command = data.get("command") or info.get("command")
    missing = [name for name, v in (("commit", commit), ("command", command)) if not v]
    return f"no {' and no '.join(missing)}" if missing else None


def test_there_are_results_to_check():
    assert any(str(p).startswith("docs/results") for p in FILES)
    assert any(str(p).startswith("benchmarks/results") for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=str)
def test_result_names_commit_and_command(path):
    data = json.loads((ROOT / path).read_text())
    if isinstance(data, list) and path.stem.endswith("_runs"):
        report = path.with_name(path.stem[: -len("_runs")] + ".json")
        assert (ROOT / report).exists(), f"{path}: a runs table without its report {report}"
        data = json.loads((ROOT / report).read_text())
    why = names_origin(data)
    assert why is None, f"{path}: {why}; record them (sdeformer.results.provenance) or mark legacy"


@pytest.mark.parametrize("folder", STORES, ids=str)
def test_result_store_has_a_report(folder):
    """A committed result store's folder has a report at its top, checked above."""
    reports = [p for p in FILES if p.parent == folder]
    assert reports, f"{folder}: a result store without a report JSON beside its manifest"


def test_store_bookkeeping_is_recognised(tmp_path):
    store = tmp_path / "run"
    (store / "units").mkdir(parents=True)
    (store / "manifest.json").write_text(json.dumps({"kind": "k", "provenance": {}}))
    (store / "units" / "a.json").write_text("{}")
    assert _is_bookkeeping(store / "units" / "a.json") and _is_bookkeeping(store / "manifest.json")
    assert not _is_bookkeeping(store / "report.json")
    (store / "manifest.json").write_text(json.dumps({"kind": "k"}))  # not a store's manifest
    assert not _is_bookkeeping(store / "units" / "a.json")


def test_the_rule_refuses_what_it_should():
    assert names_origin({"commit": "abc", "command": "python -m x"}) is None
    assert names_origin({"provenance": {"git_commit": "abc", "command": "x"}}) is None
    assert names_origin({"commit": "abc"}) == "no command"
    assert names_origin({"legacy": True}) is not None
    assert names_origin({"legacy": {"reason": ""}}) is not None
    assert names_origin([1, 2]) == "not a JSON object"
