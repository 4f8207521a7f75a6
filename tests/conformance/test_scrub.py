"""Scrubbing keeps what the spec fixes and drops what differs between runs."""

from __future__ import annotations

import json

from durable_workflows import schemas as protocol
from durable_workflows_conformance.scrub import differences, scrub

EXAMPLES = protocol.schema_root() / "examples"


def _example(event: str, name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((EXAMPLES / event / "valid" / name).read_text())
    return loaded


def test_timestamps_and_run_ids_are_dropped() -> None:
    started = _example("run-started", "expense-approval.json")
    scrubbed = scrub(started, started["key"])  # type: ignore[arg-type]
    assert scrubbed["key"] == "<run>" and scrubbed["txid"] == "<run>"
    assert "started_at" not in scrubbed["value"]
    assert scrubbed["value"]["status"] == "running"


def test_every_valid_history_example_scrubs_without_error() -> None:
    for event in protocol.STREAM_EVENTS["history"]:
        for path in sorted((EXAMPLES / event / "valid").glob("*.json")):
            out = scrub(json.loads(path.read_text()))
            assert not any(k.endswith("_at") for k in out["value"]), path


def test_differences_compare_per_entity_unless_exact() -> None:
    a = {"type": "step", "key": "a", "op": "insert", "txid": None, "value": {}}
    b = {"type": "step", "key": "b", "op": "insert", "txid": None, "value": {}}
    c = {"type": "step", "key": "a", "op": "update", "txid": None, "value": {"status": "x"}}
    d = {"type": "step", "key": "b", "op": "update", "txid": None, "value": {"status": "x"}}
    assert differences([a, b, c, d], [a, b, d, c], exact=False) == []
    assert differences([a, b, c, d], [a, b, d, c], exact=True) != []
    assert differences([a, b], [b, a], exact=False) != []  # inserts keep position order
