"""The request-driven handler (waking.md, request-driven handler), as an ASGI app.

- ``POST /wake`` with ``{"run_id": ...}`` (WAKE-014): one activation, then
  ``200`` with the outcome; ``404`` for a run that is neither requested nor started;
  ``400`` for a body that is not such an object; ``500`` when the activation failed,
  ``503`` when it was fenced or gave up on an append (WAKE-011: not every append was
  acknowledged, so the waker wakes again).
- ``POST /webhook``: a ``__ds/subscriptions`` webhook (WAKE-015..019). The
  ``Webhook-Signature`` is checked first (SEC-013: Ed25519 over ``t.body`` with the
  key ``kid`` of the stream server's JWKS, ``t`` within 300 s, our subscription id);
  then the index range is served and each pending inbox's run is activated; the
  answer is ``{"done": true}`` once every append is acknowledged (WAKE-011, 017, 018).

Timed wakes (WAKE-023) are kept as in-process timers: they are lost when the
process stops, and then a run past its deadline moves on at its next wake (the
``dwf serve`` worker, or any plain wake). WAKE-024 asks to say so: this is it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..core import WorkflowRegistry
from ..streams.server.app import BodyError, Disconnected, read_bounded
from .bridge import stream_client
from .namespace import Namespace, NamespaceIO, first_requests, is_run_id
from .runner import ActivationOutcome, LimitsOption, Runner, utc_now

__all__ = ["SIGNATURE_TOLERANCE_SECONDS", "WakeHandler", "verify_signature"]

log = logging.getLogger("durable_workflows.engine.handler")

#: SEC-013: a webhook whose ``t`` is further than this from our clock is refused.
SIGNATURE_TOLERANCE_SECONDS = 300

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


#: A wake is ``{"run_id": ...}`` and a webhook a few hundred bytes: far more is refused.
MAX_BODY_BYTES = 64 * 1024
#: A body that has not fully arrived by then is refused (a slow client holds nothing).
BODY_SECONDS = 10.0


class SignatureError(Exception):
    """A webhook that must not be acted on (SEC-013)."""


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_signature(header: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for piece in header.split(","):
        name, sep, value = piece.strip().partition("=")
        if sep:
            parts[name.strip()] = value.strip()
    return parts


def verify_signature(
    header: str | None, body: bytes, keys: Mapping[str, Ed25519PublicKey], now: float
) -> None:
    """Raise :class:`SignatureError` unless ``header`` signs ``body`` (SEC-013)."""
    if not header:
        raise SignatureError("no Webhook-Signature header")
    parts = parse_signature(header)
    try:
        timestamp = int(parts["t"])
        kid = parts["kid"]
        signature = _b64url_decode(parts["ed25519"])
    except (KeyError, ValueError) as exc:
        raise SignatureError("malformed Webhook-Signature header") from exc
    if abs(now - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
        raise SignatureError("Webhook-Signature timestamp is too far from our clock")
    key = keys.get(kid)
    if key is None:
        raise SignatureError(f"unknown signing key {kid!r}")
    try:
        key.verify(signature, f"{timestamp}.".encode() + body)
    except InvalidSignature as exc:
        raise SignatureError("Webhook-Signature does not match the body") from exc


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys") or []:
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and "kid" in jwk:
            keys[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk["x"]))
    return keys


class WakeHandler:
    """ASGI app serving ``/wake`` and ``/webhook`` for one namespace.

    Call :meth:`start` inside the event loop that serves it (``dwf serve`` does this
    in its lifespan) and :meth:`stop` at shutdown.
    """

    def __init__(
        self,
        namespace_url: str,
        registry: WorkflowRegistry,
        *,
        subscription_id: str | None = None,
        name: str = "handler",
        clock: Callable[[], float] = time.time,
        limits: LimitsOption = None,
        auth: httpx.Auth | None = None,
        wake_gate: Callable[[str | None, str | None], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.namespace = Namespace(namespace_url)
        self.transport = transport
        self.auth = auth
        #: Checks a plain wake's Authorization header for its run (SEC-015); raises
        #: :class:`~durable_workflows.access.Refusal`. None: wakes need no credential.
        self.wake_gate = wake_gate
        self.limits = limits
        self.registry = registry
        self.subscription_id = subscription_id
        self.name = name
        self.clock = clock
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self.runner: Runner | None = None

    async def start(self) -> None:
        self._http = httpx.AsyncClient(auth=self.auth, transport=self.transport)
        self.io = NamespaceIO(
            self.namespace, stream_client(self._http, self.transport, headers=None)
        )
        self.runner = Runner(
            self.io, self.registry, worker=self.name, clock=utc_now, limits=self.limits
        )

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        if self.runner is not None:
            self.runner.close()
        if self._http is not None:
            await self._http.aclose()

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/")
        raw = scope.get("headers", [])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
        # Routed before the body is read, so a request for nothing costs nothing.
        if not (path.endswith("/wake") or path.endswith("/webhook")):
            await _reply(send, 404, {"error": "not found: this server answers POST /wake, "
                                     "POST /webhook and /v1/stream/..."})  # fmt: skip
            return
        if scope["method"] != "POST":
            await _reply(send, 405, {"error": "use POST"})
            return
        try:
            body = await read_bounded(receive, MAX_BODY_BYTES, BODY_SECONDS)
        except BodyError as error:
            await _reply(send, error.status, {"error": str(error)})
            return
        except Disconnected:
            return
        if path.endswith("/wake"):
            await _reply(send, *await self.wake_request(body, headers.get("authorization")))
        else:
            await _reply(send, *await self.webhook(headers.get("webhook-signature"), body))

    # ------------------------------------------------------------------ plain wakes

    async def wake_request(
        self, body: bytes, authorization: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """WAKE-014; with a ``wake_gate``, only for a credential that names the run."""
        if self.wake_gate is not None:
            from ..access import Refusal

            try:  # the credential first: a stranger learns nothing from the body check
                self.wake_gate(authorization, None)
            except Refusal as refusal:
                return refusal.status, {"error": refusal.message, "code": refusal.code}
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
            return 400, {"error": 'the body must be a JSON object {"run_id": "..."}'}
        run_id = data["run_id"]
        if self.wake_gate is not None:
            from ..access import Refusal

            try:
                self.wake_gate(authorization, run_id)
            except Refusal as refusal:
                return refusal.status, {"error": refusal.message, "code": refusal.code}
        if not is_run_id(run_id):
            return 404, {"error": "no such run", "run_id": run_id}  # SEC-006
        outcome = await self.activate(run_id)
        if outcome.kind == "absent":
            return 404, {"error": "no such run", "run_id": run_id}
        if outcome.kind == "error":
            return 500, {"error": outcome.error, "run_id": run_id}
        if outcome.kind == "untrusted":  # SEC-029: a history the engine did not write
            return 409, {"error": f"history not trusted: {outcome.error}", "run_id": run_id}
        if outcome.kind == "refused":  # SEC-035: the server refuses what the run must record
            return 409, {"error": outcome.error, "run_id": run_id, "outcome": "refused"}
        if outcome.kind == "fenced":
            # An append was refused or its outcome stayed unknown (FENCE-015): not every
            # append is acknowledged, so no success (WAKE-011); a wake again is harmless.
            return 503, {"error": outcome.error, "run_id": run_id, "outcome": "fenced"}
        return 200, _outcome_json(outcome)

    async def activate(
        self, run_id: str, request: dict[str, Any] | None = None
    ) -> ActivationOutcome:
        assert self.runner is not None, "WakeHandler.start() was not called"
        try:
            outcome = await self.runner.activate(run_id, request)
        except Exception as exc:
            log.warning("run %s: activation failed: %r", run_id, exc)
            return ActivationOutcome(run_id, "error", error=str(exc))
        if outcome.kind == "suspended" and outcome.wake_at is not None:
            self._arm(run_id, outcome.wake_at.timestamp())  # WAKE-023
        return outcome

    def _arm(self, run_id: str, when: float) -> None:
        loop = asyncio.get_running_loop()
        old = self._timers.pop(run_id, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, when - self.clock()) + 0.005

        def fire() -> None:
            self._timers.pop(run_id, None)
            task = loop.create_task(self.activate(run_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._timers[run_id] = loop.call_later(delay, fire)

    # ------------------------------------------------------------------ subscriptions

    def subscription_body(self, webhook_url: str) -> dict[str, Any]:
        """WAKE-015: the index and every inbox of the namespace, never histories."""
        _, path = self.namespace.split_root()
        return {
            "type": "webhook",
            "pattern": f"{path}/runs/*/inbox",
            "streams": [f"{path}/index"],
            "webhook": {"url": webhook_url},
            "lease_ttl_ms": 60_000,
            "description": f"Durable Workflows engine, namespace {path}",
        }

    async def subscribe(self, webhook_url: str) -> None:
        """Create (or re-confirm) the subscription, then serve every open run once
        (WAKE-016)."""
        assert self._http is not None and self.subscription_id is not None
        root, _ = self.namespace.split_root()
        await self.io.ensure_index()
        response = await self._http.put(
            f"{root}/__ds/subscriptions/{self.subscription_id}",
            json=self.subscription_body(webhook_url),
        )
        response.raise_for_status()
        index = await self.io.read_index()
        assert self.runner is not None
        await self.runner.status.ensure(index.items)  # MODEL-046/048
        await asyncio.gather(*(self.activate(r, q) for r, q in first_requests(index.items).items()))

    async def _jwks(self, refresh: bool = False) -> dict[str, Ed25519PublicKey]:
        if refresh or not self._keys:
            assert self._http is not None
            root, _ = self.namespace.split_root()
            response = await self._http.get(f"{root}/__ds/jwks.json")
            response.raise_for_status()
            self._keys = keys_from_jwks(response.json())
        return self._keys

    async def webhook(self, signature: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        """Handle one subscription webhook (waking.md, handling a webhook)."""
        try:
            keys = await self._jwks()
            kid = parse_signature(signature or "").get("kid")
            if kid is not None and kid not in keys:
                keys = await self._jwks(refresh=True)  # the server rotated its key
            verify_signature(signature, body, keys, self.clock())
            data = json.loads(body)
        except (SignatureError, ValueError) as exc:
            return 401, {"error": str(exc)}
        except httpx.HTTPError as exc:
            return 503, {"error": f"cannot fetch the stream server's keys: {exc}"}
        if not isinstance(data, dict) or data.get("subscription_id") != self.subscription_id:
            return 401, {"error": "not a subscription of this engine"}
        _, ns_path = self.namespace.split_root()
        jobs: list[Awaitable[ActivationOutcome]] = []
        for info in data.get("streams") or []:
            if not isinstance(info, dict) or not info.get("has_pending"):
                continue
            path = str(info.get("path", "")).strip("/")
            if path == f"{ns_path}/index":
                jobs.append(self._serve_index(str(info.get("acked_offset") or "-1")))
            elif path.startswith(ns_path + "/"):
                run_id = self.namespace.run_id_of_inbox(path[len(ns_path) + 1 :])
                if run_id is not None:
                    jobs.append(self.activate(run_id))
        outcomes = await asyncio.gather(*jobs)
        failed = [o for o in outcomes if o.kind in ("error", "fenced")]
        if failed:
            # No ack: the server delivers the wake again (WAKE-017/018). A fenced
            # activation may not have processed the inbox up to the wake's offset.
            return 500, {"error": failed[0].error, "outcome": failed[0].kind}
        return 200, {"done": True}

    async def _serve_index(self, acked_offset: str) -> ActivationOutcome:
        """Start each run requested after ``acked_offset`` (WAKE-017)."""
        index = await self.io.read_index(acked_offset)
        outcomes = await asyncio.gather(
            *(self.activate(r, q) for r, q in first_requests(index.items).items())
        )
        failed = [o for o in outcomes if o.kind in ("error", "fenced")]
        return failed[0] if failed else ActivationOutcome("index", "suspended")


def _outcome_json(outcome: ActivationOutcome) -> dict[str, Any]:
    return {
        "run_id": outcome.run_id,
        "outcome": outcome.kind,
        "status": outcome.status,
        "wake_at": None if outcome.wake_at is None else outcome.wake_at.isoformat(),
        "appends": outcome.appends,
    }


async def _reply(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
