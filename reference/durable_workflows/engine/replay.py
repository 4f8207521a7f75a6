"""``dwf replay HISTORY --workflow MODULE:FUNCTION``: the offline replay check
(REPLAY-028..030). Runs no step body and writes nothing (REPLAY-029).

Exit codes: 0 deterministic, 1 non-determinism (or the code now ends differently),
2 unreadable history or workflow.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from ..core import HistoryError, Workflow, replay_check

__all__ = ["describe_side", "load_workflow", "run_replay"]


def load_workflow(spec: str) -> Workflow:
    """``package.module:name`` -> the :class:`Workflow` bound to ``name``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--workflow must be MODULE:FUNCTION, not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    value: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        value = getattr(value, part)
    if not isinstance(value, Workflow):
        raise ValueError(f"{spec} is not a workflow (decorate it with @workflow(name))")
    return value


def describe_side(side: Any) -> str:
    if not isinstance(side, dict):
        return "nothing"
    return f"{side.get('kind')} {side.get('name')!r}"


def run_replay(
    history_path: str, workflow_spec: str, *, as_json: bool, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    try:
        history = json.loads(Path(history_path).read_text(encoding="utf-8"))
        if not isinstance(history, list):
            raise ValueError("a history file holds a JSON array of messages")
        workflow = load_workflow(workflow_spec)
    except (OSError, ValueError, ImportError, AttributeError) as exc:
        print(f"dwf replay: {exc}", file=sys.stderr)
        return 2
    try:
        report = replay_check(workflow, history)
    except HistoryError as exc:
        print(f"dwf replay: {history_path}: {exc}", file=sys.stderr)
        return 2
    details = (report.error or {}).get("details") or {}
    data = {
        "ok": report.ok,
        "run_id": report.run_id,
        "workflow": report.workflow,
        "matched": report.matched,
        "recorded": report.recorded,
        "stopped": report.stopped,
        "error": report.error,
        "outcome_mismatch": report.outcome_mismatch,
    }
    if as_json:
        out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    elif report.ok:
        out.write(f"{report.message}\n")
    elif report.error is not None:
        out.write(
            f"non-determinism in run {report.run_id} at seq {details.get('seq')}: "
            f"history recorded {describe_side(details.get('recorded'))}, "
            f"code requested {describe_side(details.get('requested'))}\n"
            f"  {report.message}\n"
        )
    else:
        out.write(f"mismatch in run {report.run_id}: {report.message}\n")
    return 0 if report.ok else 1
