"""A pull-wake subscription shared by a pool of workers (waking.md, pull-wake).

The stream server keeps one cursor per linked stream (the run index and every
inbox of the namespace, WAKE-015) and writes a wake event to the namespace's wake
stream when any of them moves past its cursor. Workers follow that one stream; the
one whose claim succeeds serves the wake, so the runs are divided between them
(WAKE-010) and a waiting run costs the worker no live read of its own (WAKE-025).

This module is the HTTP side only: create, claim, heartbeat, acknowledge, release.
What a claim obliges the worker to do before it acknowledges is the worker's job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..streams import AsyncStreamClient, StreamHTTPError
from ..streams.client._core import Request, Response
from .namespace import Namespace

__all__ = ["Claim", "PullWake", "Unsupported", "WakeFenced"]

#: PROTOCOL.md 6.2 allows 1 s to 10 min. A worker that dies holding a wake delays
#: the next one by up to this long, so it is short; holders renew it every third.
LEASE_TTL_MS = 10_000


class Unsupported(Exception):
    """The stream server offers no pull-wake subscriptions."""


class WakeFenced(Exception):
    """The server refused an ack or release as stale (409 FENCED, WAKE-019)."""


@dataclass(frozen=True)
class PendingStream:
    """A linked stream with data past its cursor, relative to the namespace."""

    path: str
    acked_offset: str
    tail_offset: str


@dataclass(frozen=True)
class Claim:
    wake_id: str
    generation: int
    token: str
    lease_ttl_ms: int
    pending: tuple[PendingStream, ...]


class PullWake:
    """The namespace's pull-wake subscription, as seen by one worker."""

    def __init__(
        self, namespace: Namespace, client: AsyncStreamClient, *, worker: str, lease_ttl_ms: int
    ) -> None:
        self.namespace = namespace
        #: the worker's stream client: in ``dwf serve`` its requests skip HTTP
        self.client = client
        self.worker = worker
        self.lease_ttl_ms = lease_ttl_ms
        self.root, self.ns_path = namespace.split_root()
        # Every worker of the pool must send the same configuration (PROTOCOL.md 6.2:
        # a different one is a 409), so the id and body depend on the namespace only.
        self.id = "dwf-workers-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.ns_path)
        self.url = f"{self.root}/__ds/subscriptions/{self.id}"
        self.wake_stream_url = f"{namespace.url}/wake"

    def body(self) -> dict[str, Any]:
        """WAKE-015: the index and the inboxes; never a history, never the wake stream."""
        return {
            "type": "pull-wake",
            "pattern": f"{self.ns_path}/runs/*/inbox",
            "streams": [f"{self.ns_path}/index"],
            "wake_stream": f"{self.ns_path}/wake",
            "lease_ttl_ms": self.lease_ttl_ms,
            "description": f"Durable Workflows workers, namespace {self.ns_path}",
        }

    async def create(self) -> None:
        """Create the wake stream, then the subscription (idempotent for the pool)."""
        response = await self._send("PUT", self.wake_stream_url, None)
        if response.status not in (200, 201, 204):
            raise Unsupported(f"cannot create the wake stream: HTTP {response.status}")
        response = await self._send("PUT", self.url, self.body())
        if response.status in (200, 201):
            return
        raise Unsupported(
            f"the stream server refused the pull-wake subscription: HTTP "
            f"{response.status} {response.text[:200]}"
        )

    def covers(self, path: str) -> bool:
        """Whether an append to ``path`` (relative to the stream root) is work for this
        subscription: the run index or an inbox of the namespace (WAKE-015)."""
        prefix = self.ns_path + "/"
        if not path.startswith(prefix):
            return False
        relative = path[len(prefix) :]
        return relative == "index" or self.namespace.run_id_of_inbox(relative) is not None

    def is_ours(self, event: Any) -> bool:
        return isinstance(event, dict) and event.get("subscription_id") == self.id

    async def claim(self) -> Claim | None:
        """The current wake, or None when another worker holds it or nothing is pending."""
        response = self._checked(
            "claim", await self._send("POST", f"{self.url}/claim", {"worker": self.worker})
        )
        if response.status == 409:
            return None  # ALREADY_CLAIMED (WAKE-021) or NO_PENDING_WORK
        data = json.loads(response.content)
        pending: list[PendingStream] = []
        prefix = self.ns_path + "/"
        for info in data.get("streams") or []:
            path = str(info.get("path", "")).strip("/")
            if not info.get("has_pending") or not path.startswith(prefix):
                continue
            relative = path[len(prefix) :]
            pending.append(
                PendingStream(
                    relative, str(info.get("acked_offset") or "-1"), str(info["tail_offset"])
                )
            )
        return Claim(
            wake_id=str(data["wake_id"]),
            generation=int(data["generation"]),
            token=str(data["token"]),
            lease_ttl_ms=int(data.get("lease_ttl_ms") or self.lease_ttl_ms),
            pending=tuple(pending),
        )

    async def ack(self, claim: Claim, done: dict[str, str] | None = None) -> bool:
        """Acknowledge ``done`` (namespace-relative path -> offset) and end the wake;
        with ``done`` None, only extend the lease (the heartbeat of WAKE-021).
        Returns the server's ``next_wake``."""
        body: dict[str, Any] = {"wake_id": claim.wake_id, "generation": claim.generation}
        if done is not None:
            body["acks"] = [
                {"stream": f"{self.ns_path}/{path}", "offset": offset}
                for path, offset in sorted(done.items())
            ]
            body["done"] = True
        response = await self._settle("ack", claim, body)
        return bool(json.loads(response.content).get("next_wake"))

    async def release(self, claim: Claim) -> None:
        """Give the wake back unacknowledged (WAKE-022)."""
        await self._settle(
            "release", claim, {"wake_id": claim.wake_id, "generation": claim.generation}
        )

    async def _settle(self, action: str, claim: Claim, body: dict[str, Any]) -> Response:
        url = f"{self.url}/{action}"
        response = self._checked(action, await self._send("POST", url, body, claim.token))
        if response.status == 409:
            raise WakeFenced(f"{action} refused: {response.text[:200]}")
        return response

    async def _send(
        self, method: str, url: str, body: dict[str, Any] | None, token: str | None = None
    ) -> Response:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            # the wake's own token, in place of the worker's credential
            headers["Authorization"] = f"Bearer {token}"
        content = b"" if body is None else json.dumps(body).encode()
        return await self.client.send(Request(method, url, headers, content))

    def _checked(self, action: str, response: Response) -> Response:
        """``response`` unless it is an error other than 409 (which callers read)."""
        if response.status < 400 or response.status == 409:
            return response
        raise StreamHTTPError(
            f"{action} failed",
            status=response.status,
            method="POST",
            url=f"{self.url}/{action}",
            headers=response.headers,
            body=response.text,
        )
