"""The reserved ``__ds`` subscription APIs beyond what the official suite checks."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from durable_workflows.streams.server import build_app
from durable_workflows.streams.server.storage import SqliteStorage
from durable_workflows.streams.server.subscriptions import glob_match, validate_webhook_url
from tests.support.embedded_server import in_process_server, wait_for


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records requests and answers ``reply``."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []  # answered in order; 200 once exhausted
        self.reply: dict[str, Any] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                payload = json.dumps(receiver.reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    try:
        yield running
    finally:
        running.close()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(jwks: dict[str, Any], signature_header: str, body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in signature_header.split(","))
    key = next(k for k in jwks["keys"] if k["kid"] == fields["kid"])
    public = Ed25519PublicKey.from_public_bytes(_unb64url(key["x"]))
    try:
        public.verify(_unb64url(fields["ed25519"]), f"{fields['t']}.".encode() + body)
    except InvalidSignature:
        return False
    return abs(time.time() - int(fields["t"])) < 300


def put_subscription(base: str, sub_id: str, config: dict[str, Any]) -> httpx.Response:
    return httpx.put(f"{base}/v1/stream/__ds/subscriptions/{sub_id}", json=config)


def test_webhook_is_signed_with_the_published_key(tmp_path: Path, receiver: Receiver) -> None:
    receiver.reply = {"done": True}
    with in_process_server(build_app(tmp_path / "data")) as server:
        created = put_subscription(
            server.base_url,
            "s1",
            {"type": "webhook", "pattern": "runs/*", "webhook": {"url": receiver.url}},
        )
        assert created.status_code == 201
        jwks = httpx.get(created.json()["webhook"]["signing"]["jwks_url"]).json()
        key = jwks["keys"][0]
        thumbprint = json.dumps(
            {"crv": key["crv"], "kty": key["kty"], "x": key["x"]}, separators=(",", ":")
        )
        expected_kid = (
            "ds_"
            + base64.urlsafe_b64encode(hashlib.sha256(thumbprint.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        assert key["kid"] == expected_kid
        httpx.put(
            server.url("runs/a"), headers={"content-type": "application/json"}, content=b"[1]"
        )
        wait_for(lambda: len(receiver.requests) == 1, 5)
        headers, body = receiver.requests[0]
        assert verify(jwks, headers["webhook-signature"], body)
        assert not verify(jwks, headers["webhook-signature"], body + b" ")
        wake = json.loads(body)
        assert (wake["subscription_id"], wake["generation"]) == ("s1", 1)
        # {"done": true} acked the snapshot; the next append wakes generation 2.
        httpx.post(
            server.url("runs/a"), headers={"content-type": "application/json"}, content=b"[2]"
        )
        wait_for(lambda: len(receiver.requests) == 2, 5)
        assert json.loads(receiver.requests[1][1])["generation"] == 2


def test_failed_delivery_is_retried_and_reported(tmp_path: Path, receiver: Receiver) -> None:
    receiver.statuses = [500]
    receiver.reply = {"done": True}
    with in_process_server(build_app(tmp_path / "data")) as server:
        put_subscription(
            server.base_url,
            "r",
            {"type": "webhook", "streams": ["jobs/x"], "webhook": {"url": receiver.url}},
        )
        httpx.put(server.url("jobs/x"), headers={"content-type": "text/plain"})
        httpx.post(server.url("jobs/x"), headers={"content-type": "text/plain"}, content=b"work")
        wait_for(lambda: len(receiver.requests) == 1, 5)
        sub_url = f"{server.base_url}/v1/stream/__ds/subscriptions/r"
        wait_for(lambda: httpx.get(sub_url).json()["status"] == "failed", 5)
        wait_for(lambda: len(receiver.requests) == 2, 5)  # backoff starts at ~1 s
        first, second = (json.loads(body) for _, body in receiver.requests)
        assert first["wake_id"] == second["wake_id"]  # the same wake, delivered again
        wait_for(lambda: httpx.get(sub_url).json()["status"] == "active", 5)


def test_pull_wake_lease_expiry_fences_the_old_holder(tmp_path: Path) -> None:
    with in_process_server(build_app(tmp_path / "data")) as server:
        httpx.put(
            server.url("wake/pool"), headers={"content-type": "application/json"}, content=b"[]"
        )
        sub = f"{server.base_url}/v1/stream/__ds/subscriptions/pw"
        config = {
            "type": "pull-wake",
            "pattern": "inbox/*",
            "wake_stream": "wake/pool",
            "lease_ttl_ms": 1000,
        }
        assert httpx.put(sub, json=config).status_code == 201
        assert httpx.put(sub, json=config).status_code == 200
        assert httpx.put(sub, json={**config, "lease_ttl_ms": 2000}).status_code == 409
        httpx.put(
            server.url("inbox/1"), headers={"content-type": "application/json"}, content=b"[1]"
        )
        wait_for(lambda: len(httpx.get(server.url("wake/pool")).json()) == 1, 5)
        event = httpx.get(server.url("wake/pool")).json()[0]
        assert (event["type"], event["stream"], event["generation"]) == ("wake", "inbox/1", 1)

        claim = httpx.post(f"{sub}/claim", json={"worker": "w1"}).json()
        auth = {"authorization": f"Bearer {claim['token']}"}
        heartbeat = {"wake_id": claim["wake_id"], "generation": claim["generation"]}
        assert httpx.post(f"{sub}/ack", json=heartbeat, headers=auth).status_code == 200
        # w1 stops heart-beating: the lease lapses and the pending work is woken again.
        wait_for(lambda: len(httpx.get(server.url("wake/pool")).json()) == 2, 5)
        claim2 = httpx.post(f"{sub}/claim", json={"worker": "w2"}).json()
        assert claim2["generation"] == 2
        stale = httpx.post(f"{sub}/ack", json={**heartbeat, "done": True}, headers=auth)
        assert (stale.status_code, stale.json()["error"]["code"]) == (409, "FENCED")
        forged = httpx.post(f"{sub}/ack", json=heartbeat, headers={"authorization": "Bearer x.y"})
        assert forged.status_code == 401
        tail = claim2["streams"][0]["tail_offset"]
        done = httpx.post(
            f"{sub}/ack",
            json={
                "wake_id": claim2["wake_id"],
                "generation": 2,
                "acks": [{"stream": "inbox/1", "offset": tail}],
                "done": True,
            },
            headers={"authorization": f"Bearer {claim2['token']}"},
        )
        assert done.json() == {"ok": True, "next_wake": False}
        assert httpx.get(sub).json()["streams"][0]["acked_offset"] == tail


def test_subscriptions_and_signing_key_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with in_process_server(build_app(data)) as server:
        httpx.put(server.url("orders/1"), headers={"content-type": "text/plain"}, content=b"x")
        created = put_subscription(
            server.base_url,
            "keep",
            {"type": "webhook", "pattern": "orders/*", "webhook": {"url": "https://example.com/h"}},
        ).json()
    with in_process_server(build_app(data)) as server:
        again = httpx.get(f"{server.base_url}/v1/stream/__ds/subscriptions/keep").json()
        assert again["streams"] == created["streams"]
        assert again["webhook"]["signing"]["kid"] == created["webhook"]["signing"]["kid"]
        jwks = httpx.get(f"{server.base_url}/v1/stream/__ds/jwks.json").json()
        assert jwks["keys"][0]["kid"] == created["webhook"]["signing"]["kid"]


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://hooks.example.com/x", True),
        ("http://localhost:8080/x", True),
        ("http://127.0.0.5/x", True),
        ("http://example.com/x", False),
        ("https://10.1.2.3/x", False),
        ("https://192.168.1.1/x", False),
        ("https://169.254.169.254/latest", False),
        ("https://[::1]/x", False),
        ("https://localhost/x", False),
        ("ftp://example.com/x", False),
        ("not a url", False),
    ],
)
def test_webhook_urls_are_checked_against_ssrf(url: str, accepted: bool) -> None:
    assert (validate_webhook_url(url) is None) == accepted


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("events/*", "events/a", True),
        ("events/*", "events/a/b", False),
        ("events/**", "events", True),
        ("events/**", "events/a/b", True),
        ("**/history", "workflows/runs/r1/history", True),
        ("runs/*/inbox", "runs/r1/history", False),
    ],
)
def test_glob_patterns(pattern: str, path: str, matches: bool) -> None:
    assert glob_match(pattern, path) == matches


def test_pull_wake_never_links_its_own_wake_stream(tmp_path: Path) -> None:
    with in_process_server(build_app(tmp_path / "data")) as server:
        httpx.put(server.url("wake/all"), headers={"content-type": "application/json"})
        sub = f"{server.base_url}/v1/stream/__ds/subscriptions/everything"
        config = {"type": "pull-wake", "pattern": "**", "wake_stream": "wake/all"}
        assert httpx.put(sub, json=config).status_code == 201
        httpx.put(server.url("jobs/1"), headers={"content-type": "text/plain"}, content=b"x")
        wait_for(lambda: len(httpx.get(server.url("wake/all")).json()) == 1, 5)
        claim = httpx.post(f"{sub}/claim", json={"worker": "w"}).json()
        assert [s["path"] for s in claim["streams"]] == ["jobs/1"]
        tail = claim["streams"][0]["tail_offset"]
        ack = {
            "wake_id": claim["wake_id"],
            "generation": claim["generation"],
            "acks": [{"stream": "jobs/1", "offset": tail}],
            "done": True,
        }
        headers = {"authorization": f"Bearer {claim['token']}"}
        # Nothing left: the wake event itself is not new work.
        assert httpx.post(f"{sub}/ack", json=ack, headers=headers).json()["next_wake"] is False
        busy = httpx.post(f"{sub}/claim", json={"worker": "w"})
        assert busy.json()["error"]["code"] == "NO_PENDING_WORK"


def test_a_deleted_subscription_is_not_woken(tmp_path: Path, receiver: Receiver) -> None:
    with in_process_server(build_app(tmp_path / "data")) as server:
        config = {"type": "webhook", "pattern": "q/*", "webhook": {"url": receiver.url}}
        put_subscription(server.base_url, "gone", config)
        sub_url = f"{server.base_url}/v1/stream/__ds/subscriptions/gone"
        assert httpx.delete(sub_url).status_code == 204
        assert httpx.get(sub_url).status_code == 404
        httpx.put(server.url("q/1"), headers={"content-type": "text/plain"}, content=b"x")
        time.sleep(0.3)
        assert receiver.requests == []


def _claim_and_ack(sub: str, path: str) -> int:
    """Claim the pending wake and ack ``path`` to its tail (done); its generation."""
    claim = httpx.post(f"{sub}/claim", json={"worker": "w"}).json()
    tail = next(s["tail_offset"] for s in claim["streams"] if s["path"] == path)
    ack = {
        "wake_id": claim["wake_id"],
        "generation": claim["generation"],
        "acks": [{"stream": path, "offset": tail}],
        "done": True,
    }
    token = {"authorization": f"Bearer {claim['token']}"}
    reply = httpx.post(f"{sub}/ack", json=ack, headers=token)
    assert reply.status_code == 200, reply.text
    return int(claim["generation"])


def test_acked_offsets_links_and_generations_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = {"type": "pull-wake", "pattern": "jobs/*", "wake_stream": "wake/all"}
    with in_process_server(build_app(data)) as server:
        httpx.put(server.url("wake/all"), headers={"content-type": "application/json"})
        sub = f"{server.base_url}/v1/stream/__ds/subscriptions/keep"
        assert httpx.put(sub, json=config).status_code == 201
        httpx.put(server.url("jobs/1"), headers={"content-type": "text/plain"}, content=b"x")
        wait_for(lambda: len(httpx.get(server.url("wake/all")).json()) == 1, 5)
        first = _claim_and_ack(sub, "jobs/1")
        # jobs/2 is linked by its first append, after the subscription was stored
        httpx.put(server.url("jobs/2"), headers={"content-type": "text/plain"})
        httpx.post(server.url("jobs/2"), headers={"content-type": "text/plain"}, content=b"y")
        wait_for(lambda: len(httpx.get(server.url("wake/all")).json()) == 2, 5)
        before = httpx.get(sub).json()["streams"]
    with in_process_server(build_app(data)) as server:
        sub = f"{server.base_url}/v1/stream/__ds/subscriptions/keep"
        assert httpx.get(sub).json()["streams"] == before
        acked = {s["path"]: s["acked_offset"] for s in before}
        assert acked["jobs/1"] != "-1" and acked["jobs/2"] == "-1"
        # jobs/2 is still pending and woken again, with a generation above every
        # generation issued before the restart
        wait_for(lambda: len(httpx.get(server.url("wake/all")).json()) == 3, 5)
        assert _claim_and_ack(sub, "jobs/2") > first + 1


def test_a_wake_writes_nothing_and_an_ack_only_its_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[tuple[list[str], bool]] = []
    real_write = SqliteStorage.write

    def recording(self: SqliteStorage, values: Any, *, sync: bool = True) -> None:
        writes.append((sorted(values), sync))
        real_write(self, values, sync=sync)

    monkeypatch.setattr(SqliteStorage, "write", recording)
    commits: list[tuple[list[str], bool]] = []
    real_commit = SqliteStorage.commit

    def committing(self: SqliteStorage, *args: Any, sync: bool = True) -> None:
        commits.append((sorted({path for path, _ in args[1]}), sync))
        real_commit(self, *args, sync=sync)

    monkeypatch.setattr(SqliteStorage, "commit", committing)
    config = {"type": "pull-wake", "pattern": "jobs/*", "wake_stream": "wake/all"}
    with in_process_server(build_app(tmp_path / "data")) as server:
        httpx.put(server.url("wake/all"), headers={"content-type": "application/json"})
        sub = f"{server.base_url}/v1/stream/__ds/subscriptions/few"
        assert httpx.put(sub, json=config).status_code == 201
        for n in range(1, 4):
            httpx.put(server.url(f"jobs/{n}"), headers={"content-type": "text/plain"}, content=b"x")
        # the first wake reserves a block of generations: one synced write
        wait_for(lambda: len(httpx.get(server.url("wake/all")).json()) == 1, 5)
        _claim_and_ack(sub, "jobs/1")
        wait_for(lambda: len(httpx.get(server.url("wake/all")).json()) == 2, 5)
        writes.clear()
        _claim_and_ack(sub, "jobs/2")
        # the next wake (jobs/3 is pending) and its claim wrote nothing; the ack wrote
        # the one link it moved, unsynced
        wait_for(lambda: len(httpx.get(server.url("wake/all")).json()) == 3, 5)
        assert writes == [(['subscriptions.link."few".jobs/2'], False)]
        # wake events are appended without an fsync: a wake does not outlive a restart
        assert (["wake/all"], False) in commits
        assert all(not sync for paths, sync in commits if "wake/all" in paths)
        assert (["jobs/1"], True) in commits


def test_subscriptions_stored_whole_are_read_and_rewritten(tmp_path: Path) -> None:
    """A database written before links had a key each still loads."""
    data = tmp_path / "data"
    with in_process_server(build_app(data)):
        pass
    old = {
        "config": {
            "type": "pull-wake",
            "pattern": "jobs/*",
            "streams": [],
            "wake_stream": "wake/all",
            "lease_ttl_ms": 30000,
            "description": None,
        },
        "config_hash": "h",
        "created_at": "2026-01-01T00:00:00.000Z",
        "generation": 7,
        "links": {"jobs/1": {"kinds": ["glob"], "acked_offset": "-1"}},
    }
    db = sqlite3.connect(data / "streams.sqlite3")
    with db:
        db.execute(
            "INSERT OR REPLACE INTO kv VALUES (?, ?)", ("subscriptions.sub.old", json.dumps(old))
        )
        db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", ("subscriptions.index", '["old"]'))
    db.close()
    with in_process_server(build_app(data)) as server:
        got = httpx.get(f"{server.base_url}/v1/stream/__ds/subscriptions/old").json()
        assert [(s["path"], s["acked_offset"]) for s in got["streams"]] == [("jobs/1", "-1")]
    db = sqlite3.connect(data / "streams.sqlite3")
    rows = dict(db.execute("SELECT key, value FROM kv WHERE key LIKE 'subscriptions.%'"))
    db.close()
    assert "links" not in json.loads(rows["subscriptions.sub.old"])
    assert json.loads(rows['subscriptions.link."old".jobs/1'])["acked_offset"] == "-1"


def test_a_linked_stream_created_with_a_body_is_woken(tmp_path: Path) -> None:
    """An explicit link may name a stream before it exists; the PUT that creates it
    with content is data past the cursor, as an append would be."""
    config = {"type": "pull-wake", "streams": ["later/1"], "wake_stream": "wake/all"}
    with in_process_server(build_app(tmp_path / "data")) as server:
        httpx.put(server.url("wake/all"), headers={"content-type": "application/json"})
        sub = f"{server.base_url}/v1/stream/__ds/subscriptions/early"
        assert httpx.put(sub, json=config).status_code == 201
        assert httpx.post(f"{sub}/claim", json={"worker": "w"}).status_code == 409
        httpx.put(server.url("later/1"), headers={"content-type": "text/plain"}, content=b"x")
        wait_for(lambda: len(httpx.get(server.url("wake/all")).json()) == 1, 5)
        _claim_and_ack(sub, "later/1")
        assert httpx.post(f"{sub}/claim", json={"worker": "w"}).status_code == 409


def test_a_closed_stream_acked_to_its_tail_is_unlinked(tmp_path: Path) -> None:
    """A pattern link whose stream is closed and acked to its tail can never have work
    again: it is dropped (on the ack, or on the close when nothing was pending), so
    claims and wake payloads do not grow with every stream that ever matched. An
    explicit link, a closed stream with data unacked, and an open stream stay; a stream
    created again at a dropped path is linked again. Stored links follow, across a
    restart."""
    data = tmp_path / "data"
    config = {"type": "pull-wake", "pattern": "jobs/*", "wake_stream": "wake/all"}
    text = {"content-type": "text/plain"}
    closing = {**text, "Stream-Closed": "true"}
    with in_process_server(build_app(data)) as server:
        httpx.put(server.url("wake/all"), headers={"content-type": "application/json"})
        sub = f"{server.base_url}/v1/stream/__ds/subscriptions/spent"
        assert httpx.put(sub, json=config).status_code == 201

        def linked() -> list[str]:
            return sorted(s["path"] for s in httpx.get(sub).json()["streams"])

        for name in ("a", "b", "c", "d"):
            httpx.put(server.url(f"jobs/{name}"), headers=text, content=b"x")
        httpx.post(f"{sub}/streams", json={"streams": ["jobs/d"]})  # explicit as well
        wait_for(lambda: len(httpx.get(server.url("wake/all")).json()) >= 1, 5)
        claim = httpx.post(f"{sub}/claim", json={"worker": "w"}).json()
        tails = {s["path"]: s["tail_offset"] for s in claim["streams"]}
        # a: closed before its ack; b: closed after it; c: closed with data unacked
        httpx.post(server.url("jobs/a"), headers=closing)
        httpx.post(server.url("jobs/c"), headers=closing, content=b"more")
        httpx.post(server.url("jobs/d"), headers=closing)
        ack = {
            "wake_id": claim["wake_id"],
            "generation": claim["generation"],
            "acks": [{"stream": p, "offset": tails[p]} for p in ("jobs/a", "jobs/b", "jobs/d")],
            "done": True,
        }
        token = {"authorization": f"Bearer {claim['token']}"}
        assert httpx.post(f"{sub}/ack", json=ack, headers=token).status_code == 200
        assert linked() == ["jobs/b", "jobs/c", "jobs/d"]
        httpx.post(server.url("jobs/b"), headers=closing)  # closed, nothing pending
        assert linked() == ["jobs/c", "jobs/d"]
        assert httpx.delete(server.url("jobs/a")).status_code in (200, 204)
        httpx.put(server.url("jobs/a"), headers=text, content=b"again")
        assert linked() == ["jobs/a", "jobs/c", "jobs/d"]
    with sqlite3.connect(data / SqliteStorage.FILENAME) as db:
        keys = sorted(
            k for (k,) in db.execute("SELECT key FROM kv") if k.startswith("subscriptions.link.")
        )
    assert [k.rsplit(".", 1)[-1] for k in keys] == ["jobs/a", "jobs/c", "jobs/d"], keys
    with in_process_server(build_app(data)) as server:
        sub = f"{server.base_url}/v1/stream/__ds/subscriptions/spent"
        assert sorted(s["path"] for s in httpx.get(sub).json()["streams"]) == [
            "jobs/a",
            "jobs/c",
            "jobs/d",
        ]
