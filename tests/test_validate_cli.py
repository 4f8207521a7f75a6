"""``dwf validate``: exit status and report on valid, invalid and unreadable files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from durable_workflows import schemas
from durable_workflows.cli import main

EXAMPLES = schemas.schema_root() / "examples"


def _example(event: str, kind: str, name: str) -> Any:
    return json.loads((EXAMPLES / event / kind / f"{name}.json").read_text(encoding="utf-8"))


def _write(path: Path, document: Any) -> str:
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def _history() -> list[Any]:
    return [
        _example("run-started", "valid", "expense-approval"),
        _example("step-started", "valid", "expense-sum"),
        _example("step-completed", "valid", "expense-sum"),
        _example("input-requested", "valid", "expense-manager-approval"),
        _example("run-suspended", "valid", "expense-waiting-for-manager"),
    ]


def test_every_valid_example_passes(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*/valid/*.json"))
    assert main(["validate", *files]) == 0
    out = capsys.readouterr().out
    assert out.count("\nok ") + out.startswith("ok ") == len(files)
    assert f"{len(files)} files, {len(files)} messages: {len(files)} valid, 0 invalid" in out


def test_a_history_dump_is_checked_message_by_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "history.json", _history())
    assert main(["validate", path]) == 0
    out = capsys.readouterr().out
    assert f"ok    {path}: 5 messages" in out
    assert "run-started" in out and "run-suspended" in out


def test_an_empty_array_is_a_valid_empty_history(tmp_path: Path) -> None:
    assert main(["validate", _write(tmp_path / "empty.json", [])]) == 0


def test_an_invalid_message_names_file_index_event_and_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = _history()
    history[2]["value"]["finished_at"] = None
    path = _write(tmp_path / "history.json", history)
    assert main(["validate", path]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {path}: message 2 (step-completed): invalid step-completed message" in out
    assert "at /value/finished_at: None is not of type 'string'" in out
    assert "schema: step-completed.json#/properties/value/" in out
    assert "5 messages: 4 valid, 1 invalid" in out


def test_a_single_invalid_message_is_reported_without_an_index(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = str(EXAMPLES / "input-received" / "invalid" / "missing-txid.json")
    assert main(["validate", path]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {path}: the message (input-received)" in out
    assert "at /headers: 'txid' is a required property" in out


def test_a_message_of_no_known_event_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "odd.json", [{"type": "workflow", "key": "w", "value": {}}, 7])
    assert main(["validate", path]) == 1
    out = capsys.readouterr().out
    assert "message 0: no event has type 'workflow', no headers.operation" in out
    assert "at /: 'headers' is a required property" in out
    assert "message 1: a message is a JSON object, not a number" in out


def test_every_invalid_example_fails() -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*/invalid/*.json"))
    for path in files:
        assert main(["validate", path]) == 1, path


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken.json", "{not json", "not JSON"),
        ("nan.json", '{"type": NaN}', "not JSON"),
        ("latin1.json", b"\xff\xfe{", "cannot read"),
    ],
)
def test_an_unreadable_file_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str | bytes,
    reason: str,
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    assert f"ERROR {path}: {reason}" in capsys.readouterr().out


def test_a_missing_file_exits_2_even_beside_invalid_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = str(EXAMPLES / "step-started" / "invalid" / "seq-zero.json")
    missing = str(tmp_path / "missing.json")
    assert main(["validate", bad, missing]) == 2
    out = capsys.readouterr().out
    assert f"ERROR {missing}: cannot read: No such file or directory" in out
    assert "1 file unreadable" in out


def test_json_report_for_scripts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = _history()
    history[1]["value"]["attempt"] = 2
    path = _write(tmp_path / "history.json", history)
    assert main(["validate", "--json", path, str(tmp_path / "missing.json")]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == 2
    first, second = report["files"]
    assert first["status"] == "invalid" and second["status"] == "unreadable"
    failing = [m for m in first["messages"] if not m["valid"]]
    assert failing == [
        {
            "index": 1,
            "event": "step-started",
            "stream": None,
            "valid": False,
            "reason": "invalid step-started message",
            "violations": [
                {
                    "path": "/value/attempt",
                    "schema_path": "/properties/value/allOf/1/properties/attempt/const",
                    "message": "1 was expected",
                    "requirement": None,
                }
            ],
        }
    ]
    assert first["messages"][0] == {
        "index": 0,
        "event": "run-started",
        "stream": "history",
        "valid": True,
        "reason": None,
        "violations": [],
    }


def test_the_dwf_command_exits_with_the_status(tmp_path: Path) -> None:
    good = str(EXAMPLES / "run-requested" / "valid" / "expense-approval.json")
    bad = str(EXAMPLES / "run-requested" / "invalid" / "missing-input.json")
    command = [sys.executable, "-m", "durable_workflows.cli", "validate"]
    runs = [
        subprocess.run([*command, *files], capture_output=True, text=True, check=False)
        for files in ([good], [good, bad], [good, str(tmp_path / "gone.json")])
    ]
    assert [r.returncode for r in runs] == [0, 1, 2]
    assert "ok    " in runs[0].stdout
    assert (
        "(run-requested)" in runs[1].stdout and "'input' is a required property" in runs[1].stdout
    )
