"""The reserved ``__ds`` subscription APIs (PROTOCOL.md sections 6 and 7).

A subscription links streams (by glob ``pattern`` and explicit ``streams``)
and keeps one acked offset per link. When a linked stream has data past its
acked offset and the subscription is idle, a *wake* is issued: a new
``generation`` (the fencing token) and ``wake_id``. Webhook subscriptions get a
signed POST; pull-wake subscriptions get a wake event appended to their wake
stream and workers race to ``claim`` it. A callback, ack or release counts only
with a valid bearer token whose generation, and the request's generation and
wake_id, match the current wake; anything older is ``409 FENCED``.

Keys: webhook bodies are signed with an Ed25519 key published at
``__ds/jwks.json`` (``kid`` = ``ds_`` + the RFC 7638 thumbprint); tokens are
HMAC-signed. With SQLite storage both keys, and each subscription's
configuration, links and generation, are kept in the database, so a restart
keeps subscriptions and signatures verifiable; an in-flight wake or lease does
not survive a restart (pending work is woken again at start-up).

What a wake costs the database: issuing one writes nothing (generations are
reserved :data:`GENERATION_BLOCK` at a time), a claim nothing, and an ack only the
links it moves, without an fsync (a lost ack means one more wake, never a missed
one). Each link has a key of its own, so no write grows with the number of links.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import protocol as p
from .app import Reply, Request
from .core import ProtocolError, StreamCore

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL_MS = 30_000
MIN_LEASE_TTL_MS = 1_000
MAX_LEASE_TTL_MS = 600_000
TOKEN_TTL_SECONDS = 3600
MAX_RETRY_DELAY_SECONDS = 60.0
#: The acked offset of a stream discovered by an append: before its first byte.
BEFORE_FIRST = "-1"
#: Generations are reserved on disk this many at a time, so that issuing a wake writes
#: nothing; after a restart they go on from the reserved ceiling (gaps are allowed:
#: generations only increase).
GENERATION_BLOCK = 1024


class KeyValue(Protocol):
    """Small persistent settings (the SQLite storage provides one)."""

    def get_value(self, key: str) -> str | None: ...

    def set_value(self, key: str, value: str) -> None: ...

    def values_under(self, prefix: str) -> dict[str, str]: ...

    def write(self, values: Mapping[str, str | None], *, sync: bool = True) -> None:
        """One transaction; None deletes; ``sync=False`` may be undone by a power loss."""


class _MemoryKeyValue:
    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def get_value(self, key: str) -> str | None:
        return self._values.get(key)

    def set_value(self, key: str, value: str) -> None:
        self._values[key] = value

    def values_under(self, prefix: str) -> dict[str, str]:
        return {k: v for k, v in self._values.items() if k.startswith(prefix)}

    def write(self, values: Mapping[str, str | None], *, sync: bool = True) -> None:
        for key, value in values.items():
            if value is None:
                self._values.pop(key, None)
            else:
                self._values[key] = value


class SubscriptionError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"code": code, "message": message, **extra}}


@dataclass
class Link:
    path: str
    kinds: set[str]  # "glob" and/or "explicit"
    acked_offset: str


@dataclass
class Subscription:
    id: str
    type: str  # "webhook" | "pull-wake"
    config: dict[str, Any]  # normalised request, also the re-confirmation hash input
    config_hash: str
    created_at: str
    links: dict[str, Link] = field(default_factory=dict)
    generation: int = 0
    #: the generation stored on disk: every generation issued is at most this
    reserved: int = 0
    status: str = "active"
    #: links with data past their acked offset, in the order they became so (kept up
    #: to date on every change, so that a wake never scans every link)
    pending: dict[str, None] = field(default_factory=dict)
    # The current wake (not persisted):
    wake_id: str | None = None
    snapshot: dict[str, str] = field(default_factory=dict)
    holder: str | None = None
    lease: asyncio.TimerHandle | None = None
    retry: asyncio.TimerHandle | None = None
    retry_count: int = 0

    @property
    def lease_seconds(self) -> float:
        return float(self.config["lease_ttl_ms"]) / 1000.0


def glob_match(pattern: str, path: str) -> bool:
    """``*`` matches one path segment, ``**`` zero or more (section 6.2)."""

    @functools.cache  # "**" backtracking stays polynomial
    def match(pi: int, si: int) -> bool:
        if pi == len(pat):
            return si == len(parts)
        if pat[pi] == "**":
            return any(match(pi + 1, i) for i in range(si, len(parts) + 1))
        if si == len(parts):
            return False
        return (pat[pi] == "*" or pat[pi] == parts[si]) and match(pi + 1, si + 1)

    pat = [s for s in pattern.strip("/").split("/") if s]
    parts = [s for s in path.strip("/").split("/") if s]
    return match(0, 0)


def validate_webhook_url(url: str) -> str | None:
    """Why ``url`` is refused (SSRF rules of section 6.2 / 12.8), or None if fine."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "webhook.url must be a valid URL"
    host = (parts.hostname or "").lower()
    if not host:
        return "webhook.url must be a valid URL"
    local_dev = host == "localhost" or (
        host.startswith("127.0.0.") and _is_ip(host) and ipaddress.ip_address(host).version == 4
    )
    if parts.scheme == "http":
        return None if local_dev else "http webhook URLs are allowed only for localhost/127.0.0.x"
    if parts.scheme != "https":
        return "webhook.url must use https"
    if host == "localhost":
        return "localhost webhook URLs must use http"
    if _is_ip(host):
        address = ipaddress.ip_address(host)
        if address.version == 6:
            return "IPv6 webhook hosts are not accepted"
        if (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_unspecified
        ):
            return "webhook.url must not target private, loopback or link-local hosts"
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SubscriptionManager:
    """Subscriptions of one server; the routes under ``/v1/stream/__ds/``."""

    def __init__(
        self,
        core: StreamCore,
        kv: KeyValue | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self._kv: KeyValue = kv if kv is not None else _MemoryKeyValue()
        self._clock = clock
        self._subs: dict[str, Subscription] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._closing = False
        #: Told (subscription id, generation) of each pull wake started, in this
        #: process (``dwf serve``'s own worker claims it without reading the wake stream).
        self.wake_observers: list[Callable[[str, int], None]] = []
        self._signing_key = self._load_signing_key()
        public = self._signing_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._x = _b64url(public)
        thumbprint = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": self._x}, separators=(",", ":")
        )
        self.kid = "ds_" + _b64url(hashlib.sha256(thumbprint.encode()).digest())
        self._token_key = self._load_secret("subscriptions.token-key")
        self._load_subscriptions()

    # ------------------------------------------------------------ persistence

    def _load_signing_key(self) -> Ed25519PrivateKey:
        stored = self._kv.get_value("subscriptions.signing-key")
        if stored is not None:
            return Ed25519PrivateKey.from_private_bytes(_unb64url(stored))
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self._kv.set_value("subscriptions.signing-key", _b64url(raw))
        return key

    def _load_secret(self, key: str) -> bytes:
        stored = self._kv.get_value(key)
        if stored is None:
            stored = _b64url(secrets.token_bytes(32))
            self._kv.set_value(key, stored)
        return _unb64url(stored)

    def _load_subscriptions(self) -> None:
        index = json.loads(self._kv.get_value("subscriptions.index") or "[]")
        migrate: list[Subscription] = []
        for sub_id in index:
            raw = self._kv.get_value(_config_key(sub_id))
            if raw is None:
                continue
            data = json.loads(raw)
            stored = data.get("links")  # before links had a key each
            if stored is None:
                prefix = _link_prefix(sub_id)
                stored = {
                    key[len(prefix) :]: json.loads(value)
                    for key, value in self._kv.values_under(prefix).items()
                }
            sub = Subscription(
                id=sub_id,
                type=data["config"]["type"],
                config=data["config"],
                config_hash=data["config_hash"],
                created_at=data["created_at"],
                generation=data["generation"],
                reserved=data["generation"],
                links={
                    path: Link(path, set(link["kinds"]), link["acked_offset"])
                    for path, link in stored.items()
                },
            )
            self._subs[sub_id] = sub
            for path in sub.links:
                self._refresh(sub, path)
            # Both, always: a database in the old form is pruned as it is rewritten.
            spent = self._unlink_spent(sub, list(sub.links))
            if "links" in data or spent:
                migrate.append(sub)
        for sub in migrate:
            self._save(sub)

    def _save(self, sub: Subscription) -> None:
        """Store ``sub`` whole: its configuration, every link, the index."""
        self._kv.write(
            {
                **self._stored_links_gone(sub.id),
                **self._config_values(sub),
                **self._link_values(sub, sub.links),
                **self._index_value(),
            }
        )

    def _stored_links_gone(self, sub_id: str) -> dict[str, str | None]:
        """Every stored link of ``sub_id``, to delete (a write may set some again)."""
        return {key: None for key in self._kv.values_under(_link_prefix(sub_id))}

    def _index_value(self) -> dict[str, str | None]:
        return {"subscriptions.index": json.dumps(sorted(self._subs))}

    def _config_values(self, sub: Subscription) -> dict[str, str | None]:
        data = {
            "config": sub.config,
            "config_hash": sub.config_hash,
            "created_at": sub.created_at,
            "generation": max(sub.generation, sub.reserved),
        }
        return {_config_key(sub.id): json.dumps(data)}

    def _link_values(self, sub: Subscription, paths: Iterable[str]) -> dict[str, str | None]:
        """The stored form of ``sub``'s links at ``paths`` (None for a link gone)."""
        values: dict[str, str | None] = {}
        for path in paths:
            link = sub.links.get(path)
            values[_link_prefix(sub.id) + path] = (
                None
                if link is None
                else json.dumps({"kinds": sorted(link.kinds), "acked_offset": link.acked_offset})
            )
        return values

    def _save_links(self, sub: Subscription, paths: Iterable[str], *, sync: bool = True) -> None:
        self._kv.write(self._link_values(sub, paths), sync=sync)

    # ------------------------------------------------------------------ hooks

    def on_stream_change(self, path: str, appended: bool) -> None:
        """Called by the core after each change: link by pattern, wake if idle."""
        if self._closing:
            return
        if not appended:
            gone = self.core.find(path) is None
            for sub in self._subs.values():
                if path not in sub.links:
                    continue
                if gone:
                    del sub.links[path]
                    sub.pending.pop(path, None)
                    self._save_links(sub, [path])
                else:  # created (again), perhaps with a body, or closed
                    self._refresh(sub, path)
                    if self._unlink_spent(sub, [path]):
                        self._save_links(sub, [path])
                    self._soon(self._maybe_wake, sub)
            return
        for sub in list(self._subs.values()):
            if _globbed(sub, path):
                link = sub.links.get(path)
                if link is None:
                    sub.links[path] = Link(path, {"glob"}, BEFORE_FIRST)
                    self._save_links(sub, [path])
                else:
                    link.kinds.add("glob")
            if path in sub.links:
                self._refresh(sub, path)
                # Deferred: a pull wake appends to the wake stream, and we are
                # inside the core's append here.
                self._soon(self._maybe_wake, sub)

    def _soon(self, fn: Callable[[Subscription], None], sub: Subscription) -> None:
        try:
            asyncio.get_running_loop().call_soon(fn, sub)
        except RuntimeError:
            fn(sub)

    async def aclose(self) -> None:
        self._closing = True
        for sub in self._subs.values():
            self._clear_timers(sub)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def start(self) -> None:
        """Issue wakes for subscriptions with pending work (at start-up)."""
        for sub in self._subs.values():
            self._maybe_wake(sub)

    # ----------------------------------------------------------------- routes

    async def handle(self, request: Request) -> Reply:
        # Callback URLs use the address clients reach us by.
        self._base_url = request.base_url()
        try:
            return await self._route(request)
        except SubscriptionError as error:
            return _json_reply(error.status, error.body)

    async def _route(self, request: Request) -> Reply:
        parts = request.path.split("/")
        if parts == ["__ds", "jwks.json"]:
            if request.method != "GET":
                return Reply(405)
            body = {"keys": [self._jwk()]}
            headers = {
                p.CONTENT_TYPE: "application/jwk-set+json",
                "cache-control": "public, max-age=300",
            }
            return Reply(200, headers, json.dumps(body).encode())
        if len(parts) < 3 or parts[1] != "subscriptions" or not parts[2]:
            raise SubscriptionError(404, "SUBSCRIPTION_NOT_FOUND", "Control route not found")
        sub_id, rest, method = parts[2], parts[3:], request.method
        base = request.base_url()
        if not rest:
            if method == "PUT":
                created, sub = self._create(sub_id, _json_body(request))
                return _json_reply(201 if created else 200, self._serialize(sub, base))
            if method == "GET":
                return _json_reply(200, self._serialize(self._get(sub_id), base))
            if method == "DELETE":
                gone = self._subs.pop(sub_id, None)
                if gone is not None:
                    self._clear_timers(gone)
                    self._kv.write(
                        {
                            **self._stored_links_gone(sub_id),
                            _config_key(sub_id): None,
                            **self._index_value(),
                        }
                    )
                return Reply(204)
            return Reply(405)
        action = rest[0]
        if action == "streams" and len(rest) == 1 and method == "POST":
            streams = _json_body(request).get("streams")
            if not isinstance(streams, list) or not all(isinstance(s, str) and s for s in streams):
                raise SubscriptionError(400, "INVALID_REQUEST", "streams must be non-empty strings")
            sub = self._get(sub_id)
            paths = [stream.strip("/") for stream in streams]
            for path in paths:
                self._link(sub, path, "explicit")
            self._save_links(sub, paths)
            return Reply(204)
        if action == "streams" and len(rest) > 1 and method == "DELETE":
            sub = self._get(sub_id)
            link = sub.links.get("/".join(rest[1:]).strip("/"))
            if link is not None:
                link.kinds.discard("explicit")
                if not link.kinds:
                    del sub.links[link.path]
                    sub.pending.pop(link.path, None)
                self._save_links(sub, [link.path])
            return Reply(204)
        if len(rest) == 1 and method == "POST" and action in ("callback", "ack", "release"):
            return self._settle(self._get(sub_id), action, request)
        if len(rest) == 1 and method == "POST" and action == "claim":
            return self._claim(self._get(sub_id), _json_body(request))
        raise SubscriptionError(404, "SUBSCRIPTION_NOT_FOUND", "Control route not found")

    def paths_of(self, sub_id: str) -> list[str] | None:
        """The streams a subscription names (pattern, streams, wake stream), for an
        access check; None when there is no such subscription."""
        sub = self._subs.get(sub_id)
        return None if sub is None else config_paths(sub.config)

    def _get(self, sub_id: str) -> Subscription:
        sub = self._subs.get(sub_id)
        if sub is None:
            raise SubscriptionError(404, "SUBSCRIPTION_NOT_FOUND", "Subscription not found")
        return sub

    # --------------------------------------------------------- create, link

    def _create(self, sub_id: str, body: dict[str, Any]) -> tuple[bool, Subscription]:
        config = _normalise_config(body)
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
        existing = self._subs.get(sub_id)
        if existing is not None:
            if existing.config_hash != digest:
                raise SubscriptionError(
                    409, "SUBSCRIPTION_ALREADY_EXISTS", "Subscription exists with another config"
                )
            return False, existing
        if config["type"] == "webhook":
            problem = validate_webhook_url(config["webhook"]["url"])
            if problem is not None:
                raise SubscriptionError(400, "WEBHOOK_URL_REJECTED", problem)
        sub = Subscription(sub_id, config["type"], config, digest, _iso(self._clock()))
        for stream in config["streams"]:
            self._link(sub, stream, "explicit")
        if config.get("pattern"):
            # Backfill (section 6.2): existing matches are linked at their tail.
            for path in self.core.paths():
                if _globbed(sub, path):
                    self._link(sub, path, "glob")
        self._subs[sub_id] = sub
        self._save(sub)
        return True, sub

    def _link(self, sub: Subscription, path: str, kind: str) -> None:
        link = sub.links.get(path)
        if link is None:
            sub.links[path] = Link(path, {kind}, self._tail(path))
        else:
            link.kinds.add(kind)
        self._refresh(sub, path)

    def _refresh(self, sub: Subscription, path: str) -> None:
        """Whether link ``path`` of ``sub`` has data past its acked offset."""
        link = sub.links.get(path)
        if link is not None and self._tail(path) > link.acked_offset:
            sub.pending[path] = None
        else:
            sub.pending.pop(path, None)

    def _unlink_spent(self, sub: Subscription, paths: Iterable[str]) -> bool:
        """Drop the pattern links among ``paths`` whose stream is closed and acked to its
        tail: it can never have pending work again, and each link costs every claim and
        wake payload (a namespace's ended runs would otherwise pile up). A stream
        created again at the path is linked again. Whether any was dropped."""
        dropped = False
        for path in paths:
            link = sub.links.get(path)
            meta = self.core.find(path)
            if (
                link is not None
                and link.kinds == {"glob"}
                and path not in sub.pending
                and meta is not None
                and meta.closed
            ):
                del sub.links[path]
                dropped = True
        return dropped

    def _tail(self, path: str) -> str:
        meta = self.core.find(path)
        return p.OFFSET_ZERO if meta is None else meta.tail

    def _infos(self, sub: Subscription) -> list[dict[str, Any]]:
        infos = []
        for link in sub.links.values():
            tail = self._tail(link.path)
            infos.append(
                {
                    "path": link.path,
                    "link_type": "explicit" if "explicit" in link.kinds else "glob",
                    "acked_offset": link.acked_offset,
                    "tail_offset": tail,
                    "has_pending": tail > link.acked_offset,
                }
            )
        return infos

    def _serialize(self, sub: Subscription, base: str) -> dict[str, Any]:
        config = sub.config
        webhook = None
        if sub.type == "webhook":
            webhook = {
                "url": config["webhook"]["url"],
                "signing": {
                    "alg": "ed25519",
                    "kid": self.kid,
                    "jwks_url": f"{base}/v1/stream/__ds/jwks.json",
                },
            }
        return {
            "id": sub.id,
            "subscription_id": sub.id,
            "type": sub.type,
            "pattern": config.get("pattern"),
            "streams": [
                {k: info[k] for k in ("path", "link_type", "acked_offset")}
                for info in self._infos(sub)
            ],
            "webhook": webhook,
            "wake_stream": config.get("wake_stream"),
            "lease_ttl_ms": config["lease_ttl_ms"],
            "created_at": sub.created_at,
            "status": sub.status,
            "description": config.get("description"),
        }

    def _jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self._x,
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }

    # ------------------------------------------------------------------ wakes

    def _maybe_wake(self, sub: Subscription) -> None:
        """Start a wake when there is pending work and none is in flight (section 7)."""
        if self._closing or self._subs.get(sub.id) is not sub:
            return
        if sub.wake_id is not None or sub.holder is not None:
            return
        if sub.pending:
            self._start_wake(sub, next(iter(sub.pending)))

    def _start_wake(self, sub: Subscription, trigger: str) -> None:
        sub.generation += 1
        if sub.generation > sub.reserved:
            sub.reserved = sub.generation + GENERATION_BLOCK
            self._kv.write(self._config_values(sub))
        sub.wake_id = "w_" + secrets.token_hex(12)
        # What a webhook's {"done": true} acks: the other links are acked to their tail.
        sub.snapshot = {path: self._tail(path) for path in sub.pending}
        if sub.type == "webhook":
            self._extend_lease(sub)
            self._spawn(self._deliver(sub, sub.wake_id))
        else:
            self._write_wake_event(sub, trigger)
            for observer in self.wake_observers:
                try:
                    observer(sub.id, sub.generation)
                except Exception:
                    log.exception("wake observer failed for %s", sub.id)

    def _write_wake_event(self, sub: Subscription, stream: str) -> None:
        wake_stream = sub.config["wake_stream"]
        meta = self.core.find(wake_stream)
        if meta is None or meta.closed:
            return  # the application owns the wake stream (section 7.2)
        event = {
            "type": "wake",
            "subscription_id": sub.id,
            "stream": stream,
            "generation": sub.generation,
            "ts": int(self._clock() * 1000),
        }
        body = json.dumps(event).encode()
        try:
            # Unsynced: a wake does not outlive a restart, so neither need its event
            # (pending work is woken again at start-up).
            self.core.run(
                lambda tx: self.core.append(
                    wake_stream,
                    content_type=meta.content_type,
                    body=body,
                    close=False,
                    stream_seq=None,
                    producer=None,
                    tx=tx,
                ),
                sync=False,
            )
        except ProtocolError:
            return

    def _end_wake(self, sub: Subscription) -> bool:
        """Clear the wake and lease; start the next wake if work is pending."""
        self._clear_timers(sub)
        sub.wake_id = None
        sub.holder = None
        sub.snapshot = {}
        self._maybe_wake(sub)
        return sub.wake_id is not None

    def _extend_lease(self, sub: Subscription) -> None:
        if sub.lease is not None:
            sub.lease.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # An expired lease clears the holder and wakes again if work is pending.
        sub.lease = loop.call_later(sub.lease_seconds, self._end_wake, sub)

    def _clear_timers(self, sub: Subscription) -> None:
        for handle in (sub.lease, sub.retry):
            if handle is not None:
                handle.cancel()
        sub.lease = sub.retry = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, sub: Subscription, wake_id: str) -> None:
        """POST the signed wake to the webhook; retry with backoff on failure."""
        if sub.wake_id != wake_id or self._subs.get(sub.id) is not sub:
            return
        body = json.dumps(
            {
                "subscription_id": sub.id,
                "wake_id": wake_id,
                "generation": sub.generation,
                "streams": self._infos(sub),
                "callback_url": self._action_url(sub, "callback"),
                "callback_token": self._token(sub),
            }
        )
        timestamp = int(self._clock())
        signature = _b64url(self._signing_key.sign(f"{timestamp}.{body}".encode()))
        headers = {
            p.CONTENT_TYPE: "application/json",
            p.WEBHOOK_SIGNATURE: f"t={timestamp},kid={self.kid},ed25519={signature}",
        }
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        try:
            response = await self._client.post(
                sub.config["webhook"]["url"], content=body, headers=headers
            )
        except httpx.HTTPError:
            self._schedule_retry(sub, wake_id)
            return
        if not response.is_success:
            self._schedule_retry(sub, wake_id)
            return
        sub.status, sub.retry_count = "active", 0
        try:
            done = response.json().get("done") is True
        except (ValueError, AttributeError):
            done = False
        if done and sub.wake_id == wake_id and self._subs.get(sub.id) is sub:
            # A synchronous {"done": true} acks the wake's snapshot (section 7.1).
            acked = [path for path in sub.snapshot if path in sub.links]
            for path in acked:
                sub.links[path].acked_offset = sub.snapshot[path]
                self._refresh(sub, path)
            self._unlink_spent(sub, acked)
            self._save_links(sub, acked, sync=False)  # a lost ack is one more wake
            self._end_wake(sub)

    def _schedule_retry(self, sub: Subscription, wake_id: str) -> None:
        if self._closing:
            return
        sub.retry_count += 1
        sub.status = "failed"
        delay = min(2.0 ** (sub.retry_count - 1), MAX_RETRY_DELAY_SECONDS)
        delay *= 1 + 0.2 * (2 * secrets.randbelow(1001) / 1000 - 1)
        loop = asyncio.get_running_loop()
        sub.retry = loop.call_later(delay, lambda: self._spawn(self._deliver(sub, wake_id)))

    def _action_url(self, sub: Subscription, action: str) -> str:
        base = self._base_url or "http://127.0.0.1"
        return f"{base}/v1/stream/__ds/subscriptions/{quote(sub.id, safe='')}/{action}"

    _base_url: str | None = None

    # ------------------------------------------------------- tokens, fencing

    def _token(self, sub: Subscription) -> str:
        payload = {
            "sub": f"subscription:{sub.id}",
            "gen": sub.generation,
            "exp": int(self._clock()) + TOKEN_TTL_SECONDS,
            "jti": secrets.token_hex(8),
        }
        encoded = _b64url(json.dumps(payload).encode())
        mac = hmac.new(self._token_key, encoded.encode(), hashlib.sha256).digest()
        return f"{encoded}.{_b64url(mac)}"

    def _check_token(self, sub: Subscription, request: Request, body: dict[str, Any]) -> None:
        """401 for a bad token; 409 FENCED unless token, generation and wake_id are current."""
        auth = request.header("authorization") or ""
        if not auth.startswith("Bearer "):
            raise SubscriptionError(401, "TOKEN_INVALID", "Missing bearer token")
        encoded, _, mac = auth[len("Bearer ") :].partition(".")
        expected = _b64url(hmac.new(self._token_key, encoded.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(mac, expected):
            raise SubscriptionError(401, "TOKEN_INVALID", "Token invalid")
        try:
            payload = json.loads(_unb64url(encoded))
        except ValueError as exc:
            raise SubscriptionError(401, "TOKEN_INVALID", "Token invalid") from exc
        if payload.get("sub") != f"subscription:{sub.id}":
            raise SubscriptionError(401, "TOKEN_INVALID", "Token invalid")
        if int(self._clock()) > payload.get("exp", 0):
            raise SubscriptionError(401, "TOKEN_EXPIRED", "Token expired")
        if (
            sub.wake_id is None
            or payload.get("gen") != sub.generation
            or body.get("generation") != sub.generation
            or body.get("wake_id") != sub.wake_id
        ):
            raise SubscriptionError(409, "FENCED", "Wake generation is stale")

    def _settle(self, sub: Subscription, action: str, request: Request) -> Reply:
        """callback (webhook), ack (pull-wake) or release (pull-wake)."""
        if (action == "callback") != (sub.type == "webhook"):
            raise SubscriptionError(
                400, "INVALID_REQUEST", f"{action} does not apply to {sub.type}"
            )
        body = _json_body(request)
        self._check_token(sub, request, body)
        if action == "release":
            self._end_wake(sub)
            return Reply(204)
        self._apply_acks(sub, body.get("acks"))
        if body.get("done") is True:
            next_wake = self._end_wake(sub)
        else:
            self._extend_lease(sub)  # an ack without done is the heartbeat
            next_wake = False
        return _json_reply(200, {"ok": True, "next_wake": next_wake})

    def _apply_acks(self, sub: Subscription, acks: Any) -> None:
        if acks is None:
            return
        if not isinstance(acks, list):
            raise SubscriptionError(400, "INVALID_REQUEST", "acks must be a list")
        updates: dict[str, str] = {}
        for ack in acks:
            if not isinstance(ack, dict) or not isinstance(ack.get("offset"), str):
                raise SubscriptionError(400, "INVALID_REQUEST", "ack needs stream and offset")
            path = str(ack.get("stream") or ack.get("path") or "").strip("/")
            link = sub.links.get(path)
            offset = ack["offset"]
            if link is None:
                raise SubscriptionError(409, "INVALID_OFFSET", "Ack names an unlinked stream")
            if not p.is_offset(offset):
                raise SubscriptionError(409, "INVALID_OFFSET", "Ack offset is malformed")
            if offset < link.acked_offset:
                raise SubscriptionError(409, "INVALID_OFFSET", "Ack offset regresses the cursor")
            if offset > self._tail(path):
                raise SubscriptionError(409, "INVALID_OFFSET", "Ack offset is past the tail")
            updates[path] = offset
        for path, offset in updates.items():
            sub.links[path].acked_offset = offset
            self._refresh(sub, path)
        self._unlink_spent(sub, updates)
        self._save_links(sub, updates, sync=False)  # a lost ack is one more wake

    def _claim(self, sub: Subscription, body: dict[str, Any]) -> Reply:
        worker = body.get("worker")
        if not isinstance(worker, str) or not worker:
            raise SubscriptionError(400, "INVALID_REQUEST", "worker must be a non-empty string")
        if sub.type != "pull-wake":
            raise SubscriptionError(400, "INVALID_REQUEST", "Subscription is not pull-wake")
        if sub.holder is not None:
            raise SubscriptionError(
                409,
                "ALREADY_CLAIMED",
                "Another worker holds the lease",
                current_holder=sub.holder,
                generation=sub.generation,
            )
        if not sub.pending:
            raise SubscriptionError(409, "NO_PENDING_WORK", "Subscription has no pending work")
        if sub.wake_id is None:
            self._start_wake(sub, next(iter(sub.pending)))
        sub.holder = worker
        self._extend_lease(sub)
        return _json_reply(
            200,
            {
                "wake_id": sub.wake_id,
                "generation": sub.generation,
                "token": self._token(sub),
                "streams": self._infos(sub),
                "lease_ttl_ms": sub.config["lease_ttl_ms"],
            },
        )


def _config_key(sub_id: str) -> str:
    return f"subscriptions.sub.{sub_id}"


def _link_prefix(sub_id: str) -> str:
    """Where ``sub_id``'s links are kept, one key each (the id is JSON-quoted, so
    that no id's prefix is another's)."""
    return f"subscriptions.link.{json.dumps(sub_id)}."


def _globbed(sub: Subscription, path: str) -> bool:
    """Whether ``sub``'s pattern links ``path``; never its own wake stream.

    A pull-wake subscription watching its wake stream would make every wake event
    new pending work for itself.
    """
    pattern = sub.config.get("pattern")
    return (
        pattern is not None and path != sub.config.get("wake_stream") and glob_match(pattern, path)
    )


def _json_body(request: Request) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        value = json.loads(request.body)
    except ValueError as exc:
        raise SubscriptionError(400, "INVALID_REQUEST", "Invalid JSON body") from exc
    if not isinstance(value, dict):
        raise SubscriptionError(400, "INVALID_REQUEST", "Body must be a JSON object")
    return value


def config_paths(config: dict[str, Any]) -> list[str]:
    """Every stream path or pattern a subscription body or config names."""
    paths = [config.get("pattern"), config.get("wake_stream"), *(config.get("streams") or [])]
    return [p.strip("/") for p in paths if isinstance(p, str) and p]


def _normalise_config(body: dict[str, Any]) -> dict[str, Any]:
    """Validate a PUT body into the canonical config that is hashed (section 6.2)."""
    kind = body.get("type")
    if kind not in ("webhook", "pull-wake"):
        raise SubscriptionError(400, "INVALID_REQUEST", 'type must be "webhook" or "pull-wake"')
    pattern = body.get("pattern")
    pattern = pattern.strip("/") if isinstance(pattern, str) and pattern else None
    streams = body.get("streams") or []
    if not isinstance(streams, list) or not all(isinstance(s, str) and s for s in streams):
        raise SubscriptionError(400, "INVALID_REQUEST", "streams must be non-empty strings")
    streams = sorted({s.strip("/") for s in streams})
    if pattern is None and not streams:
        raise SubscriptionError(400, "INVALID_REQUEST", "Give pattern or streams")
    lease = body.get("lease_ttl_ms", DEFAULT_LEASE_TTL_MS)
    if (
        not isinstance(lease, int)
        or isinstance(lease, bool)
        or not MIN_LEASE_TTL_MS <= lease <= MAX_LEASE_TTL_MS
    ):
        raise SubscriptionError(400, "INVALID_REQUEST", "lease_ttl_ms must be 1000..600000")
    webhook = None
    if kind == "webhook":
        raw = body.get("webhook")
        url = raw.get("url") if isinstance(raw, dict) else None
        if not isinstance(url, str) or not url:
            raise SubscriptionError(
                400, "INVALID_REQUEST", "webhook subscriptions need webhook.url"
            )
        webhook = {"url": url}
    wake_stream = body.get("wake_stream")
    wake_stream = wake_stream.strip("/") if isinstance(wake_stream, str) and wake_stream else None
    if kind == "pull-wake" and wake_stream is None:
        raise SubscriptionError(400, "INVALID_REQUEST", "pull-wake subscriptions need wake_stream")
    description = body.get("description")
    return {
        "type": kind,
        "pattern": pattern,
        "streams": streams,
        "webhook": webhook,
        "wake_stream": wake_stream,
        "lease_ttl_ms": lease,
        "description": description if isinstance(description, str) else None,
    }


def _json_reply(status: int, body: dict[str, Any]) -> Reply:
    return Reply(status, {p.CONTENT_TYPE: "application/json"}, json.dumps(body).encode())
