"""Stream URLs of a namespace, and the creations and reads the engine makes of them.

A namespace is one URL prefix on a Durable Streams server (MODEL-001); every stream
of the engine is ``{ns}/`` + a relative path: ``index``, ``status``,
``runs/{id}/history``, ``runs/{id}/inbox``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..core.inbox import encodable
from ..schemas import SchemaError, identify
from ..streams import AsyncStream, AsyncStreamClient, CreateResult, ReadResult, StreamNotFound
from .bridge import create_chained

__all__ = [
    "DEFAULT_NAMESPACE",
    "RUN_ID_PATTERN",
    "STREAM_ROOT_PATH",
    "Namespace",
    "NamespaceIO",
    "first_requests",
    "is_run_id",
    "resolve_namespace_url",
    "strip_read_annotations",
    "untrusted_reason",
]

#: The namespace used when a URL names only a server (``http://host:port``).
DEFAULT_NAMESPACE = "workflows"
#: Where Durable Streams servers (ours and the Node one) put streams.
STREAM_ROOT_PATH = "/v1/stream"
#: EVT-014; also the pattern of submission and cancel ids (INPUT-014).
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_run_id(value: object) -> bool:
    return isinstance(value, str) and RUN_ID_PATTERN.fullmatch(value) is not None


def resolve_namespace_url(url: str) -> str:
    """A namespace URL from ``--url``/``DWF_URL``: a namespace URL as it is, or a
    server base (``http://127.0.0.1:4437``, or ``.../v1/stream``) plus the default
    namespace ``workflows``."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL")
    path = parts.path.rstrip("/")
    if path == "":
        path = f"{STREAM_ROOT_PATH}/{DEFAULT_NAMESPACE}"
    elif path == STREAM_ROOT_PATH:
        path = f"{path}/{DEFAULT_NAMESPACE}"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass(frozen=True)
class Namespace:
    """The URLs of one namespace (MODEL-001)."""

    url: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", self.url.rstrip("/"))

    @property
    def index_url(self) -> str:
        return f"{self.url}/index"

    @property
    def status_url(self) -> str:
        """The run-status stream (MODEL-040)."""
        return f"{self.url}/status"

    def history_url(self, run_id: str) -> str:
        return f"{self.url}/{self.history_path(run_id)}"

    def inbox_url(self, run_id: str) -> str:
        return f"{self.url}/{self.inbox_path(run_id)}"

    @staticmethod
    def history_path(run_id: str) -> str:
        _check_run_id(run_id)
        return f"runs/{run_id}/history"

    @staticmethod
    def inbox_path(run_id: str) -> str:
        _check_run_id(run_id)
        return f"runs/{run_id}/inbox"

    def split_root(self) -> tuple[str, str]:
        """(stream root, namespace path below it), for subscriptions (waking.md):
        ``http://h/v1/stream/workflows`` -> (``http://h/v1/stream``, ``workflows``)."""
        parts = urlsplit(self.url)
        marker = STREAM_ROOT_PATH + "/"
        if marker not in parts.path:
            raise ValueError(f"cannot tell the stream root of {self.url!r}")
        head, _, rest = parts.path.partition(marker)
        root = urlunsplit((parts.scheme, parts.netloc, head + STREAM_ROOT_PATH, "", ""))
        return root, rest

    def run_id_of_inbox(self, relative: str) -> str | None:
        """The run id of ``runs/{id}/inbox`` (relative to the namespace), else None."""
        pieces = relative.strip("/").split("/")
        if len(pieces) == 3 and pieces[0] == "runs" and pieces[2] == "inbox":
            return pieces[1] if is_run_id(pieces[1]) else None
        return None


def _check_run_id(run_id: str) -> None:
    # SEC-006: a run id becomes a URL segment; never build a URL from anything else.
    if not is_run_id(run_id):
        raise ValueError(f"{run_id!r} is not a valid run id (EVT-014)")


def strip_read_annotations(items: list[Any]) -> list[Any]:
    """Messages as their writer sent them.

    The Node reference server (0.3.7) adds ``headers.offset`` to State Protocol
    messages on JSON reads; no writer of this protocol sends it (EVT-004), and the
    schemas close ``headers``, so the engine drops it before it validates or replays.
    """
    cleaned: list[Any] = []
    for item in items:
        headers = item.get("headers") if isinstance(item, dict) else None
        if isinstance(headers, dict) and "offset" in headers:
            item = {**item, "headers": {k: v for k, v in headers.items() if k != "offset"}}
        cleaned.append(item)
    return cleaned


def first_requests(messages: list[Any]) -> dict[str, dict[str, Any]]:
    """The first valid ``run-requested`` per run id, in index order (MODEL-014/015)."""
    found: dict[str, dict[str, Any]] = {}
    for message in strip_read_annotations(messages):
        run_id = _valid_request(message)
        if run_id is not None and run_id not in found:
            found[run_id] = message
    return found


def _valid_request(message: Any) -> str | None:
    if not encodable(message):  # its input could never be recorded in run-started
        return None
    try:
        identify(message, "index")
    except SchemaError:
        return None
    run_id = message["key"]
    return run_id if is_run_id(run_id) else None


class NamespaceIO:
    """Creations and catch-up reads of a namespace's streams (async).

    Creation follows MODEL-004/005: ``PUT`` with ``Content-Type: application/json``
    and nothing else, so every party's ``PUT`` has the same configuration.
    """

    def __init__(self, namespace: Namespace, client: AsyncStreamClient) -> None:
        self.namespace = namespace
        self.client = client

    def index(self) -> AsyncStream:
        return self.client.stream(self.namespace.index_url, content_type="application/json")

    def status(self) -> AsyncStream:
        return self.client.stream(self.namespace.status_url, content_type="application/json")

    def history(self, run_id: str) -> AsyncStream:
        return self.client.stream(
            self.namespace.history_url(run_id), content_type="application/json"
        )

    def inbox(self, run_id: str) -> AsyncStream:
        return self.client.stream(self.namespace.inbox_url(run_id), content_type="application/json")

    async def ensure_index(self) -> None:
        await self.index().create_json()  # MODEL-011

    async def ensure_status(self) -> None:
        await self.status().create_json()  # MODEL-040

    async def ensure_inbox(self, run_id: str) -> ReadResult | None:
        """Create the run's inbox (MODEL-016); what a read would return when this call
        created it (nothing yet, at its tail), else None."""
        return _as_read(await self.inbox(run_id).create_json())

    async def create_run(
        self, run_id: str, first: Sequence[Any] = ()
    ) -> tuple[ReadResult | None, ReadResult | None]:
        """Create the run's inbox, then its history (MODEL-016): what
        :meth:`ensure_inbox` and :meth:`create_history` return. The history holds
        ``first``, the run's first append, only if the inbox is new: ``first`` was
        decided without reading the inbox, so an inbox that was there already (a worker
        that stopped between the two creations) leaves the history empty (FENCE-001)."""
        if first:
            # dwf serve's own worker: both in one transaction, ``first`` stored only if
            # that transaction made the inbox (so it held nothing): the same outcome
            # with one commit fewer.
            chained = await create_chained(
                self.client, self.inbox(run_id), self.history(run_id), list(first)
            )
            if chained is not None:
                inbox = _as_read(chained[0])
                return inbox, _as_read(chained[1], first if inbox is not None else ())
        inbox = await self.ensure_inbox(run_id)
        return inbox, await self.create_history(run_id, first if inbox is not None else ())

    async def create_history(self, run_id: str, first: Sequence[Any] = ()) -> ReadResult | None:
        """Create the run's history (FENCE-001), holding ``first`` if given: what a read
        would return when this call created it, else None. Only one creator is told it
        created the stream, so only one may skip reading it, and only one creator's
        ``first`` is ever stored (a ``PUT`` that finds the stream writes nothing)."""
        return _as_read(await self.history(run_id).create_json(first or None), first)

    async def read_history(self, run_id: str, offset: str = "-1") -> ReadResult | None:
        """The history from ``offset`` (the whole of it by default) to its tail
        (FENCE-003), or None when it does not exist."""
        return await _read_or_none(self.history(run_id), offset)

    async def read_inbox(self, run_id: str, offset: str = "-1") -> ReadResult | None:
        return await _read_or_none(self.inbox(run_id), offset)

    async def read_index(self, offset: str = "-1") -> ReadResult:
        return _clean(await self.index().read(offset))


def _as_read(made: CreateResult, items: Sequence[Any] = ()) -> ReadResult | None:
    if not made.created or made.closed or made.next_offset is None:
        return None
    return ReadResult(
        items=list(items), next_offset=made.next_offset, up_to_date=True, closed=False
    )


async def _read_or_none(stream: AsyncStream, offset: str = "-1") -> ReadResult | None:
    try:
        return _clean(await stream.read(offset))
    except StreamNotFound:
        return None


def _clean(result: ReadResult) -> ReadResult:
    return replace(result, items=strip_read_annotations(result.items))


def untrusted_reason(first: Any, request: Mapping[str, Any] | None) -> str | None:
    """Why a history whose first message is ``first`` was not started by an engine from
    ``request`` (the run's first ``run-requested``, when known), else None (SEC-029)."""
    try:
        if identify(first, "history") != "run-started":
            return "its first message is not run-started"
    except SchemaError:
        return "its first message is not a valid run-started"
    if request is None:
        return "the run index holds no run-requested for it"
    asked = request.get("value", request)
    started = first["value"]
    for name in ("workflow", "input"):
        if started.get(name) != asked.get(name):
            return f"its run-started {name} differs from the run's first run-requested"
    return None
