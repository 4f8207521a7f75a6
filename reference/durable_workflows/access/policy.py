"""Who may do what to which stream: the rules of security.md, as a pure function.

Sans-IO: :func:`authorize` takes a verified grant (or None) and a description of the
request, and either returns or raises :class:`Refusal` with the status to answer
(401: no credential; 403: a credential that does not allow this; 400/413: a client
append that is not a well-formed message). Nothing here reads a socket or a clock.

The streams of a namespace ``{ns}`` (model.md): ``{ns}/index``,
``{ns}/runs/{run_id}/history``, ``{ns}/runs/{run_id}/inbox``, the run-status stream
``{ns}/status`` and the engine's own streams (``{ns}/wake``). The engine may do
anything in its namespace. A client may only do what the table below lets its rights
do, on the runs its grant names:

=========  ========================  ==========================================
right      request                   stream
=========  ========================  ==========================================
read       GET, HEAD                 history and inbox of its runs
submit     POST ``input-submitted``  inbox of its runs (SEC-003)
cancel     POST ``cancel-requested`` inbox of its runs (SEC-003)
start      POST ``run-requested``    index, for run ids and workflows in scope
list       GET, HEAD                 the run-status stream: every run's row (SEC-037)
=========  ========================  ==========================================

Never: PUT, DELETE, a close (``Stream-Closed``), a ``Stream-Seq`` (INPUT-009), any
write to a history (SEC-001) or to the run-status stream (SEC-036), a read of the
index (PRIV-005).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.inbox import compact_size, depth
from ..schemas import SchemaError, identify
from .tokens import Grant

__all__ = [
    "MAX_CLIENT_MESSAGES",
    "Location",
    "Refusal",
    "StreamRequest",
    "authorize",
    "authorize_control",
    "locate",
]

#: A client append carries a few messages (a submission, a cancel); each is checked
#: against its schema here, so the count is bounded before any of that work.
MAX_CLIENT_MESSAGES = 16
#: Deeper JSON than a form answer needs; far from where a JSON codec recurses too deep
#: once the engine nests the value in a history message.
MAX_CLIENT_DEPTH = 32

#: Which right an inbox event needs.
_INBOX_RIGHTS = {"input-submitted": "submit", "cancel-requested": "cancel"}


class Refusal(Exception):
    """A request that must not be carried out; nothing of it may be stored."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class StreamRequest:
    """The parts of a stream request that decide whether it is allowed."""

    method: str
    path: str  # below the stream root: "workflows/runs/r-1/inbox"
    closes: bool = False  # Stream-Closed: true (a close, or a PUT that creates closed)
    stream_seq: bool = False  # a Stream-Seq header
    body: bytes = b""


@dataclass(frozen=True)
class Location:
    """Where a stream path sits in a namespace."""

    kind: str  # "index", "status", "history", "inbox", or "other" (the engine's own)
    run_id: str | None = None


def locate(path: str, namespace: str) -> Location | None:
    """The place of ``path`` in ``namespace``; None when it lies outside it."""
    if namespace == "*":
        return Location("other")
    if not path.startswith(namespace + "/"):
        return None
    rest = path[len(namespace) + 1 :]
    if rest in ("index", "status"):
        return Location(rest)
    parts = rest.split("/")
    if len(parts) == 3 and parts[0] == "runs" and parts[2] in ("history", "inbox"):
        return Location(parts[2], parts[1])
    return Location("other")


def authorize(grant: Grant | None, request: StreamRequest) -> None:
    """Return when ``grant`` allows ``request``; raise :class:`Refusal` otherwise."""
    if grant is None:
        raise Refusal(401, "unauthorized", "this server needs a credential: Authorization: Bearer")
    where = locate(request.path, grant.namespace)
    if where is None:
        raise Refusal(403, "forbidden", f"the credential is for namespace {grant.namespace!r} only")
    if grant.is_engine:
        return
    _authorize_client(grant, where, request)


def _authorize_client(grant: Grant, where: Location, request: StreamRequest) -> None:
    method = request.method
    if method in ("PUT", "DELETE"):
        verb = "create" if method == "PUT" else "delete"
        raise Refusal(403, "forbidden", f"clients may not {verb} streams; only the engine does")
    if where.kind == "history" and method == "POST":
        raise Refusal(403, "forbidden", "only the engine writes a run's history (SEC-001)")
    if where.kind == "other":
        raise Refusal(403, "forbidden", "this stream belongs to the engine")
    if where.kind == "status":
        if method not in ("GET", "HEAD"):
            raise Refusal(403, "forbidden", "only the engine writes the run-status stream")
        if not grant.may("list"):
            raise Refusal(403, "forbidden", "reading the run-status stream takes the list right")
        return
    if where.kind == "index" and method in ("GET", "HEAD"):
        raise Refusal(403, "forbidden", "the run index is read by the engine only (PRIV-005)")
    if where.run_id is not None and not grant.covers_run(where.run_id):
        raise Refusal(403, "forbidden", f"the credential does not name run {where.run_id!r}")
    if method in ("GET", "HEAD"):
        if not grant.may("read"):
            raise Refusal(403, "forbidden", "the credential has no read right")
        return
    if method != "POST":
        raise Refusal(403, "forbidden", f"clients may not send {method}")
    if request.closes:
        raise Refusal(403, "forbidden", "clients may not close streams; the engine closes them")
    if request.stream_seq:
        raise Refusal(403, "forbidden", "clients may not send Stream-Seq (INPUT-009)")
    messages = _messages(request.body)
    if where.kind == "inbox":
        for message in messages:
            _check_inbox_message(grant, message)
    else:
        for message in messages:
            _check_index_message(grant, message)


def _messages(body: bytes) -> list[Any]:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Refusal(400, "invalid-message", "the body is not JSON (or nests too deep)") from exc
    messages = value if isinstance(value, list) else [value]
    if len(messages) > MAX_CLIENT_MESSAGES:
        raise Refusal(
            413, "too-many-messages", f"a client append carries at most {MAX_CLIENT_MESSAGES}"
        )
    if depth(value) > MAX_CLIENT_DEPTH + 1:  # +1: the array around the messages
        raise Refusal(400, "invalid-message", f"messages nest at most {MAX_CLIENT_DEPTH} deep")
    if compact_size(value) is None:  # parses in Python, but not every reader holds it
        raise Refusal(
            400,
            "invalid-message",
            "the body is not I-JSON (EVT-100): it holds NaN or an infinity, a number too "
            "large for a double (such as 1e400), an integer beyond +-(2^53 - 1), or text "
            "with a lone UTF-16 surrogate",
        )
    return messages


def _check_inbox_message(grant: Grant, message: Any) -> None:
    if not isinstance(message, dict) or message.get("type") not in ("submission", "cancel"):
        raise Refusal(
            403,
            "forbidden",
            "clients append only input-submitted (type submission) and cancel-requested "
            "(type cancel) messages to an inbox",
        )
    event = _identify(message, "inbox")
    right = _INBOX_RIGHTS[event]
    if not grant.may(right):
        raise Refusal(403, "forbidden", f"the credential has no {right} right")


def _check_index_message(grant: Grant, message: Any) -> None:
    if not isinstance(message, dict) or message.get("type") != "start":
        raise Refusal(
            403, "forbidden", "clients append only run-requested (type start) messages to the index"
        )
    _identify(message, "index")
    if not grant.may("start"):
        raise Refusal(403, "forbidden", "the credential has no start right")
    run_id, workflow = message["key"], message["value"].get("workflow")
    if not grant.covers_run(run_id):
        raise Refusal(403, "forbidden", f"the credential does not name run {run_id!r}")
    if not grant.may_start(workflow):
        raise Refusal(403, "forbidden", f"the credential may not start workflow {workflow!r}")


def _identify(message: dict[str, Any], stream: str) -> str:
    try:
        return identify(message, stream)
    except SchemaError as exc:
        detail = "; ".join(str(v) for v in exc.violations[:3])
        raise Refusal(400, "invalid-message", f"{exc}{': ' + detail if detail else ''}") from exc


def authorize_control(grant: Grant | None, paths: Iterable[str] | None) -> None:
    """A ``__ds/subscriptions`` request that manages a subscription: the engine only,
    and a namespace's engine only for subscriptions whose streams lie in it (``paths``:
    the streams the subscription names, None when unknown)."""
    if grant is None:
        raise Refusal(401, "unauthorized", "this server needs a credential: Authorization: Bearer")
    if not grant.is_engine:
        raise Refusal(403, "forbidden", "only the engine manages subscriptions")
    if grant.namespace == "*" or paths is None:
        return
    outside = [p for p in paths if locate(p.strip("/"), grant.namespace) is None]
    if outside:
        raise Refusal(
            403, "forbidden", f"the subscription names streams outside {grant.namespace!r}"
        )
