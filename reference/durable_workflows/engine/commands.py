"""Client commands of ``dwf``: start, submit, cancel, inspect, runs.

They act like any client of the protocol: they append to the run index or to a
run's inbox and read histories; they never write a history (SEC-001, SEC-001).
Exit codes: 0 done, 1 refused (or the run is not there), 2 usage or connection error.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, TextIO

from ..schemas import SchemaError, identify
from ..streams import StreamClient, StreamClosed, StreamError, StreamNotFound
from ..streams.errors import StreamHTTPError
from .namespace import (
    Namespace,
    first_requests,
    is_run_id,
    resolve_namespace_url,
    strip_read_annotations,
    untrusted_reason,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_REFUSED",
    "cancel",
    "inspect",
    "namespace_from",
    "runs",
    "start",
    "submit",
    "summarize",
]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_ERROR = 2
ENV_URL = "DWF_URL"
DEFAULT_URL = "http://127.0.0.1:4437"


class CommandError(Exception):
    """A usage or connection problem (exit 2)."""


def namespace_from(url: str | None) -> Namespace:
    """``--url``, else ``$DWF_URL``, else the local default server."""
    try:
        return Namespace(resolve_namespace_url(url or os.environ.get(ENV_URL) or DEFAULT_URL))
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


@dataclass(frozen=True)
class Auth:
    """The credential options of a command: ``--token`` and ``--keys`` (see
    :func:`~durable_workflows.access.resolve_credential` for the fallbacks)."""

    token: str | None = None
    keys: str | None = None


def _client(ns: Namespace, auth: Auth | None) -> StreamClient:
    """A stream client that presents the command's credential, if it has one."""
    from ..access import KeyFileError, resolve_credential

    auth = auth or Auth()
    try:
        credential = resolve_credential(ns.url, token=auth.token, keys=auth.keys)
    except KeyFileError as exc:
        raise CommandError(str(exc)) from exc
    return StreamClient(timeout=10, auth=None if credential is None else credential.auth())


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{what} is not JSON: {exc}") from exc


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def _check_id(value: str, what: str) -> None:
    if not is_run_id(value):
        raise CommandError(f"{what} {value!r} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$")


def _emit(out: TextIO | None, as_json: bool, data: dict[str, Any], text: str) -> None:
    out = out or sys.stdout
    if as_json:
        out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(text + "\n")


def _append_to_inbox(client: StreamClient, ns: Namespace, run_id: str, message: Any) -> None:
    inbox = client.stream(ns.inbox_url(run_id), content_type="application/json")
    try:
        inbox.append_json(message)
    except StreamNotFound as exc:
        # A client never creates an inbox: the engine does when the run starts.
        raise NotStarted(f"run {run_id} has not started: it has no inbox yet") from exc


class NotStarted(Exception):
    """The run has no inbox: not started (yet), or no such run (exit 1)."""


def _send_to_inbox(
    client: StreamClient,
    ns: Namespace,
    run_id: str,
    message: Any,
    data: dict[str, Any],
    out: TextIO | None,
    as_json: bool,
) -> bool:
    """Append ``message`` to the run's inbox and mark ``data`` sent; on a closed inbox
    report the refusal instead and return False (INPUT-040: final, never retried)."""
    try:
        _append_to_inbox(client, ns, run_id, message)
    except StreamClosed:
        data |= {"status": "refused", "reason": "run-finished"}
        _emit(out, as_json, data, f"refused: run {run_id} has ended (inbox closed)")
        return False
    data["status"] = "sent"
    return True


# ------------------------------------------------------------------ start


def start(
    workflow: str,
    input_value: Any,
    *,
    run_id: str | None,
    url: str | None,
    as_json: bool,
    wait: float = 0.0,
    out: TextIO | None = None,
    auth: Auth | None = None,
) -> int:
    """Append ``run-requested`` to the index (model.md, starting a run)."""
    ns = namespace_from(url)
    run_id = run_id or _new_id("run")
    _check_id(run_id, "run id")
    message = {
        "type": "start",
        "key": run_id,
        "value": {"run_id": run_id, "workflow": workflow, "input": input_value},
        "headers": {"operation": "insert"},
    }
    identify(message, "index")
    with _client(ns, auth) as client:
        index = client.stream(ns.index_url, content_type="application/json")
        try:
            index.append_json(message)
        except StreamNotFound as exc:  # the engine creates it (MODEL-011); clients never do
            raise CommandError(
                f"there is no run index at {ns.index_url}: no engine serves this namespace"
            ) from exc
        except StreamClosed as exc:
            raise CommandError(
                f"the run index {ns.index_url} is closed: no run can be requested there"
            ) from exc
        data: dict[str, Any] = {"run_id": run_id, "workflow": workflow, "requested": True}
        text = f"requested run {run_id} of {workflow}"
        if wait > 0:
            started = _wait_history(client, ns, run_id, wait, lambda items: bool(items))
            data["started"] = started is not None
            if started is None:
                text += f"; not started within {wait:g} s (is a worker serving {ns.url}?)"
                _emit(out, as_json, data, text)
                return EXIT_REFUSED
            run = started[0]["value"]
            data["workflow"] = run.get("workflow")
            text += f"; started ({run.get('workflow')})"
            if run.get("workflow") != workflow:
                text += " (an earlier request for this run id won, MODEL-014)"
            # A run that fails at once (an unknown workflow, an input the code cannot
            # take) ends in the first append or soon after: say so instead of "ok".
            ended = summarize(started).run or {}
            if ended.get("status") == "failed":
                error = ended.get("error") or {}
                data |= {"status": "failed", "error": error}
                text += f"; failed at once: {error.get('type')}: {error.get('message')}"
                _emit(out, as_json, data, text)
                return EXIT_REFUSED
    _emit(out, as_json, data, text)
    return EXIT_OK


# ------------------------------------------------------------------ submit / cancel


def submit(
    run_id: str,
    request: str,
    value: Any,
    *,
    submission_id: str | None,
    url: str | None,
    as_json: bool,
    wait: float = 0.0,
    out: TextIO | None = None,
    auth: Auth | None = None,
) -> int:
    """Append ``input-submitted`` to the run's inbox (inputs.md, submissions).

    With ``wait`` > 0, follow the history until the engine decided the submission:
    accepted (``input-received`` naming it) or rejected (``input-rejected`` keyed by it).
    """
    ns = namespace_from(url)
    _check_id(run_id, "run id")
    submission_id = submission_id or _new_id("s")  # INPUT-012: one id per user action
    _check_id(submission_id, "submission id")
    message = {
        "type": "submission",
        "key": submission_id,
        "value": {"submission_id": submission_id, "request": request, "value": value},
        "headers": {"operation": "insert"},
    }
    data: dict[str, Any] = {"run_id": run_id, "submission_id": submission_id, "request": request}
    with _client(ns, auth) as client:
        if not _send_to_inbox(client, ns, run_id, message, data, out, as_json):
            return EXIT_REFUSED
        if wait <= 0:
            _emit(out, as_json, data, f"sent submission {submission_id} for {request}")
            return EXIT_OK
        outcome = _wait_outcome(client, ns, run_id, submission_id, wait)
    data |= outcome
    status = outcome["status"]
    if status == "accepted":
        text = f"accepted: submission {submission_id} answered {request}"
    elif status == "rejected":
        text = f"rejected ({outcome['reason']}): {outcome.get('message') or ''}".rstrip()
    else:
        text = f"sent submission {submission_id}; no decision within {wait:g} s"
        pending = _pending_inputs(ns, run_id, auth)
        if request not in pending:
            # Kept for a request the run may make later (INPUT-020), but nothing
            # decided it: say what the run does wait for.
            data["pending_inputs"] = pending
            names = ", ".join(pending) or "none"
            text += f"; the run waits for no input {request!r} (pending: {names})"
    _emit(out, as_json, data, text)
    return EXIT_OK if status == "accepted" else EXIT_REFUSED


def _pending_inputs(ns: Namespace, run_id: str, auth: Auth | None) -> list[str]:
    with _client(ns, auth) as client:
        try:
            items = client.stream(ns.history_url(run_id)).read().items
        except StreamError:
            return []
    waiting = summarize(strip_read_annotations(items)).waiting() or {}
    return [item["request"] for item in waiting.get("inputs") or []]


def _submission_outcome(items: list[Any], submission_id: str) -> dict[str, Any] | None:
    for message in items:
        if not isinstance(message, dict):
            continue
        value = message.get("value") or {}
        kind = message.get("type")
        if (
            kind == "input"
            and value.get("submission_id") == submission_id
            and value.get("status") == "received"
        ):
            return {"status": "accepted", "value": value.get("value")}
        if kind == "submission" and message.get("key") == submission_id:
            return {
                "status": "rejected",
                "reason": value.get("reason"),
                "message": value.get("message"),
            }
        if (
            kind == "run"
            and value.get("status") == "cancelled"
            and (message.get("headers") or {}).get("txid") == submission_id
        ):
            return {"status": "accepted", "cancelled": True}
    return None


def _wait_outcome(
    client: StreamClient, ns: Namespace, run_id: str, inbox_id: str, wait: float
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def decided(items: list[Any]) -> bool:
        outcome = _submission_outcome(items, inbox_id)
        if outcome is not None:
            found.update(outcome)
        return outcome is not None

    if _wait_history(client, ns, run_id, wait, decided) is None:
        return {"status": "pending"}
    return found


def _wait_history(
    client: StreamClient, ns: Namespace, run_id: str, wait: float, done: Any
) -> list[Any] | None:
    """Follow the history (404 until the engine creates it) until ``done(items)``."""
    history = client.stream(ns.history_url(run_id), content_type="application/json")
    deadline = time.monotonic() + wait
    items: list[Any] = []
    offset = "-1"
    while time.monotonic() < deadline:
        try:
            part = history.read(offset)
        except StreamNotFound:
            time.sleep(0.05)
            continue
        items += strip_read_annotations(part.items)
        offset = part.next_offset
        if done(items):
            return items
        if part.closed:
            return None
        time.sleep(0.02)  # catch-up polling keeps the wait bounded by ``wait``
    return None


def cancel(
    run_id: str,
    *,
    reason: str | None,
    cancel_id: str | None,
    url: str | None,
    as_json: bool,
    wait: float = 0.0,
    out: TextIO | None = None,
    auth: Auth | None = None,
) -> int:
    """Append ``cancel-requested`` to the run's inbox (retries.md, cancellation)."""
    ns = namespace_from(url)
    _check_id(run_id, "run id")
    cancel_id = cancel_id or _new_id("c")  # CANCEL-002
    _check_id(cancel_id, "cancel id")
    message = {
        "type": "cancel",
        "key": cancel_id,
        "value": {"cancel_id": cancel_id, "reason": reason},
        "headers": {"operation": "insert"},
    }
    data: dict[str, Any] = {"run_id": run_id, "cancel_id": cancel_id}
    with _client(ns, auth) as client:
        if not _send_to_inbox(client, ns, run_id, message, data, out, as_json):
            return EXIT_REFUSED
        text = f"sent cancel {cancel_id}"
        if wait > 0:
            outcome = _wait_outcome(client, ns, run_id, cancel_id, wait)
            data |= outcome
            if outcome.get("cancelled"):
                data["status"], text = "cancelled", f"run {run_id} cancelled"
            elif outcome["status"] == "rejected":
                data["status"] = "rejected"
                text = f"rejected ({outcome['reason']}): run {run_id} had already ended"
    _emit(out, as_json, data, text)
    return EXIT_REFUSED if data["status"] in ("refused", "rejected") else EXIT_OK


# ------------------------------------------------------------------ inspect


@dataclass
class Summary:
    run: dict[str, Any] | None
    events: list[dict[str, Any]]
    closed: bool
    #: Why the history is not the engine's (SEC-030), when the index could be checked.
    untrusted: str | None = None

    def as_dict(self) -> dict[str, Any]:
        run = self.run or {}
        return {
            "run_id": run.get("run_id"),
            "workflow": run.get("workflow"),
            "status": run.get("status"),
            "waiting_for": self.waiting(),
            "output": run.get("output"),
            "error": run.get("error"),
            "closed": self.closed,
            "untrusted": self.untrusted,
            "events": self.events,
        }

    def waiting(self) -> dict[str, Any] | None:
        """What the run waits for, from the run row and the input rows (model.md)."""
        run = self.run or {}
        waiting_for = run.get("waiting_for")
        if not waiting_for:
            return None
        inputs = []
        rows = {e["key"]: e["value"] for e in self.events if e["type"] == "input"}
        for key in waiting_for.get("inputs") or []:
            row = rows.get(key) or {}
            inputs.append(
                {
                    "request": key,
                    "prompt": row.get("prompt"),
                    "schema": row.get("schema"),
                    "expires_at": row.get("expires_at"),
                }
            )
        return {"inputs": inputs, "until": waiting_for.get("until")}


_TIME_FIELDS = {
    "run-started": "started_at",
    "run-completed": "finished_at",
    "run-failed": "finished_at",
    "run-cancelled": "finished_at",
    "step-started": "started_at",
    "step-attempt-started": "started_at",
    "step-completed": "finished_at",
    "step-failed": "finished_at",
    "sleep-scheduled": "scheduled_at",
    "sleep-completed": "fired_at",
    "input-requested": "requested_at",
    "input-received": "received_at",
    "input-expired": "expired_at",
    "input-rejected": "rejected_at",
    "value-recorded": "recorded_at",
    "patch-recorded": "recorded_at",
}


def summarize(items: list[Any], closed: bool = False) -> Summary:
    """The timeline of a history: one entry per message, and the latest run row."""
    events: list[dict[str, Any]] = []
    run: dict[str, Any] | None = None
    for position, message in enumerate(items):
        try:
            event = identify(message, "history")
        except SchemaError:
            event = "invalid"
        value = message.get("value") if isinstance(message, dict) else None
        value = value if isinstance(value, dict) else {}
        if isinstance(message, dict) and message.get("type") == "run":
            run = value
        events.append(
            {
                "position": position,
                "event": event,
                "type": message.get("type") if isinstance(message, dict) else None,
                "key": message.get("key") if isinstance(message, dict) else None,
                "time": value.get(_TIME_FIELDS.get(event, ""), None),
                "detail": _detail(event, value),
                "value": value,
            }
        )
    return Summary(run, events, closed)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _detail(event: str, value: dict[str, Any]) -> str:
    error = value.get("error") or {}
    match event:
        case "run-started":
            return f"{value.get('workflow')} input={_short(value.get('input'))}"
        case "run-suspended":
            wf = value.get("waiting_for") or {}
            return f"{value.get('status')} inputs={wf.get('inputs')} until={wf.get('until')}"
        case "run-completed":
            return f"output={_short(value.get('output'))}"
        case "run-failed" | "run-cancelled" | "step-failed" | "step-attempt-failed":
            text = f"{error.get('type')}: {error.get('message')}"
            if event == "step-attempt-failed":
                text += f" (attempt {value.get('attempt')}, retry at {value.get('retry_at')})"
            return text
        case "step-started" | "step-attempt-started":
            return f"attempt {value.get('attempt')}/{value.get('max_attempts')}"
        case "step-completed":
            return f"result={_short(value.get('result'))}"
        case "sleep-scheduled":
            return f"until {value.get('wake_at')}"
        case "input-requested":
            expires = value.get("expires_at")
            return f"prompt={_short(value.get('prompt'))}" + (
                f" expires {expires}" if expires else ""
            )
        case "input-received":
            return f"value={_short(value.get('value'))} from {value.get('submission_id')}"
        case "input-rejected":
            return f"{value.get('reason')} ({value.get('request')}): {value.get('message')}"
        case "value-recorded":
            return f"{value.get('kind')}={_short(value.get('value'))}"
        case _:
            return ""


def render(summary: Summary) -> str:
    data = summary.as_dict()
    lines = [
        f"run {data['run_id']}  workflow {data['workflow']}  status {data['status']}"
        + ("  (history closed)" if summary.closed else "")
    ]
    if summary.untrusted:
        lines.append(f"NOT TRUSTED: the engine did not write this history: {summary.untrusted}")
    for event in summary.events:
        time_text = (event["time"] or "").replace("T", " ").rstrip("Z")
        lines.append(
            f"  {event['position']:>4}  {time_text:23}  {event['event']:21} "
            f"{event['key'] or ''}  {event['detail']}".rstrip()
        )
    waiting = data["waiting_for"]
    if waiting is not None:
        lines.append("waiting for:")
        for item in waiting["inputs"]:
            expires = f" (expires {item['expires_at']})" if item["expires_at"] else ""
            lines.append(f"  input {item['request']}: {item['prompt'] or ''}{expires}")
            if item["schema"] is not None:  # what an answer must match
                lines.append(f"    answer schema: {_short(item['schema'], 300)}")
        if waiting["until"]:
            lines.append(f"  time: until {waiting['until']}")
    elif data["status"] == "completed":
        lines.append(f"output: {_short(data['output'], 200)}")
    elif data["status"] in ("failed", "cancelled"):
        error = data["error"] or {}
        lines.append(f"error: {error.get('type')}: {error.get('message')}")
    return "\n".join(lines)


def inspect(
    run_id: str,
    *,
    url: str | None,
    as_json: bool,
    out: TextIO | None = None,
    auth: Auth | None = None,
) -> int:
    """Read the run's history and show its timeline and what it waits for."""
    ns = namespace_from(url)
    _check_id(run_id, "run id")
    with _client(ns, auth) as client:
        history = client.stream(ns.history_url(run_id), content_type="application/json")
        try:
            result = history.read()
        except StreamNotFound:
            _emit(
                out,
                as_json,
                {"run_id": run_id, "status": None, "error": "no history"},
                f"run {run_id} has no history (not started yet, or unknown)",
            )
            return EXIT_REFUSED
        items = strip_read_annotations(result.items)
        summary = summarize(items, result.closed)
        if items:
            summary.untrusted = _check_trust(client, ns, run_id, items[0])
    _emit(out, as_json, summary.as_dict(), render(summary))
    return EXIT_OK


def runs(
    *,
    url: str | None,
    status: str | None,
    as_json: bool,
    out: TextIO | None = None,
    auth: Auth | None = None,
) -> int:
    """List the runs of the namespace from the run-status stream (MODEL-040): the last
    row of each run, oldest start first, optionally only those with ``status``."""
    ns = namespace_from(url)
    with _client(ns, auth) as client:
        try:
            result = client.stream(ns.status_url, content_type="application/json").read()
        except StreamNotFound:
            result = None
    latest: dict[str, dict[str, Any]] = {}
    for row in strip_read_annotations(result.items if result is not None else []):
        value = row.get("value") if isinstance(row, dict) else None
        if row.get("type") == "run-status" and isinstance(value, dict):
            latest[str(row.get("key"))] = value
    rows = sorted(latest.values(), key=lambda v: (str(v.get("started_at")), str(v.get("run_id"))))
    if status is not None:
        rows = [v for v in rows if v.get("status") == status]
    lines = [
        f"{v.get('run_id')}  {v.get('workflow')}  {v.get('status')}"
        + (f"  waiting for: {', '.join(i['name'] for i in v['inputs'])}" if v.get("inputs") else "")
        for v in rows
    ]
    text = "\n".join(lines) if lines else "no runs" + (f" with status {status}" if status else "")
    _emit(out, as_json, {"runs": rows}, text)
    return EXIT_OK


def _check_trust(client: StreamClient, ns: Namespace, run_id: str, first: Any) -> str | None:
    """SEC-030: compare the history's run-started with the run's first request, when
    this credential may read the index (an engine's or operator's; a client's may not)."""
    try:
        index = client.stream(ns.index_url, content_type="application/json").read()
    except StreamHTTPError:
        return None
    return untrusted_reason(first, first_requests(strip_read_annotations(index.items)).get(run_id))


def run_command(fn: Any, *args: Any, **kwargs: Any) -> int:
    """Run a command; usage and connection errors are one line on stderr, exit 2."""
    try:
        result: int = fn(*args, **kwargs)
    except (CommandError, SchemaError) as exc:
        print(f"dwf: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except NotStarted as exc:
        print(f"dwf: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except StreamHTTPError as exc:
        if exc.status in (401, 403):
            print(f"dwf: the stream server refused it ({exc.status}): {exc.body}", file=sys.stderr)
            return EXIT_ERROR if exc.status == 401 else EXIT_REFUSED
        print(f"dwf: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except StreamError as exc:
        print(f"dwf: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return result
