"""The request-driven handler: plain wakes and signed subscription webhooks
(waking.md WAKE-014..019, security.md SEC-013), through ``dwf serve`` running the
handler only (no worker), woken by its own streams server's webhooks."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from durable_workflows.engine.handler import SignatureError, verify_signature

from .engine_support import Process, cli, dwf_serve, pending_inputs, read_history, wait_until

pytestmark = pytest.mark.slow


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(key: Ed25519PrivateKey, body: bytes, t: int, kid: str = "k1") -> str:
    return f"t={t},kid={kid},ed25519={_b64(key.sign(f'{t}.'.encode() + body))}"


@pytest.mark.req("SEC-013")
def test_signature_checks() -> None:
    key = Ed25519PrivateKey.generate()
    keys = {"k1": key.public_key()}
    body = b'{"subscription_id": "s"}'
    now = int(time.time())
    verify_signature(signed(key, body, now), body, keys, now)
    bad = [
        (None, body, now),
        ("t=1", body, now),
        (signed(key, body, now), body + b" ", now),  # another body
        (signed(key, body, now - 301), body, now),  # too old
        (signed(key, body, now + 301), body, now),  # from the future
        (signed(key, body, now, kid="k2"), body, now),  # unknown key
        (signed(Ed25519PrivateKey.generate(), body, now), body, now),  # another key
    ]
    for header, data, at in bad:
        with pytest.raises(SignatureError):
            verify_signature(header, data, keys, at)


@pytest.fixture(scope="module")
def handler_only() -> Iterator[Process]:
    with dwf_serve("--no-worker", "--subscribe", "engine-test") as running:
        yield running


def ns(serve: Process) -> str:
    return serve.ready_line.split("namespace ")[1].split()[0]


@pytest.mark.req("WAKE-015", "WAKE-016", "WAKE-017", "WAKE-018", "WAKE-023")
def test_webhooks_start_and_advance_runs(handler_only: Process) -> None:
    url = handler_only.url
    code, _ = cli(
        "start",
        "onboarding-wizard",
        "--input",
        '{"tenant": "t", "settle_ms": 150}',
        "--run-id",
        "hook-1",
        "--url",
        url,
    )
    assert code == 0
    wait_until(lambda: "profile" in pending_inputs(ns(handler_only), "hook-1"), 20, "profile")
    for request, value in [
        ("profile", {"name": "Bo", "email": "bo@example.com"}),
        ("plan", {"plan": "free"}),
        ("preferences", {"newsletter": True}),
    ]:
        code, outcome = cli(
            "submit", "hook-1", request, "--value", json.dumps(value), "--wait", "20", "--url", url
        )
        assert code == 0 and outcome["status"] == "accepted", outcome
    # The 150 ms sleep after the last page is fired by the handler's own timer.
    wait_until(lambda: read_history(ns(handler_only), "hook-1")[1], 20, "run closed")
    items, _ = read_history(ns(handler_only), "hook-1")
    assert items[-1]["value"]["status"] == "completed" or any(
        m["type"] == "run" and m["value"]["status"] == "completed" for m in items
    )


def test_forged_webhooks_are_refused(handler_only: Process) -> None:
    body = json.dumps({"subscription_id": "engine-test", "streams": []}).encode()
    forged = signed(Ed25519PrivateKey.generate(), body, int(time.time()))
    reply = httpx.post(
        f"{handler_only.url}/webhook", content=body, headers={"Webhook-Signature": forged}
    )
    assert reply.status_code == 401
    reply = httpx.post(f"{handler_only.url}/webhook", content=body)
    assert reply.status_code == 401


@pytest.mark.req("WAKE-018")
@pytest.mark.parametrize("kind", ["fenced", "error"])
def test_a_webhook_is_not_done_while_an_activation_was_fenced_or_failed(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wake is delivered again: a fenced activation may not have read the inbox
    up to the wake's offset. (The outcome is forced here; the decision is the subject.)"""
    import asyncio

    from durable_workflows.core import WorkflowRegistry
    from durable_workflows.engine.handler import WakeHandler
    from durable_workflows.engine.runner import ActivationOutcome

    handler = WakeHandler(
        "http://127.0.0.1:9/v1/stream/ns", WorkflowRegistry(), subscription_id="sub"
    )
    key = Ed25519PrivateKey.generate()
    handler._keys = {"k1": key.public_key()}
    outcomes = {"r1": "suspended", "r2": kind}

    async def activate(run_id: str, request: object = None) -> ActivationOutcome:
        return ActivationOutcome(run_id, outcomes[run_id])  # type: ignore[arg-type]

    monkeypatch.setattr(handler, "activate", activate)
    body = json.dumps(
        {
            "subscription_id": "sub",
            "streams": [{"path": f"ns/runs/{r}/inbox", "has_pending": True} for r in ("r1", "r2")],
        }
    ).encode()
    now = int(time.time())
    status, reply = asyncio.run(handler.webhook(signed(key, body, now), body))
    assert status == 500 and "done" not in reply and reply["outcome"] == kind
    outcomes["r2"] = "suspended"
    assert asyncio.run(handler.webhook(signed(key, body, now), body)) == (200, {"done": True})


def test_the_handler_bounds_what_it_reads() -> None:
    """Issue 12: other paths never read the body; /wake reads at most 64 KiB, and a
    body that does not arrive in time is refused."""
    import asyncio

    from durable_workflows.core import WorkflowRegistry
    from durable_workflows.engine.handler import WakeHandler

    handler = WakeHandler("http://127.0.0.1:9/v1/stream/ns", WorkflowRegistry())

    async def call(path: str, method: str, chunks: list[bytes], stall: bool = False) -> int:
        sent: list[dict[str, object]] = []
        pending = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
        pending.append({"type": "http.request", "body": b"", "more_body": False})
        reads = 0

        async def receive() -> dict[str, object]:
            nonlocal reads
            reads += 1
            if stall:
                await asyncio.sleep(3600)
            return pending.pop(0)

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "path": path, "method": method, "headers": []}
        if stall:
            import durable_workflows.engine.handler as module

            module.BODY_SECONDS, saved = 0.05, module.BODY_SECONDS
            try:
                await handler(scope, receive, send)
            finally:
                module.BODY_SECONDS = saved
        else:
            await handler(scope, receive, send)
        if path == "/elsewhere":
            assert reads == 0  # routed before the body is read
        status = sent[0]["status"]
        assert isinstance(status, int)
        return status

    big = [b"x" * 65536] * 20
    assert asyncio.run(call("/elsewhere", "POST", big)) == 404
    assert asyncio.run(call("/wake", "GET", [])) == 405
    assert asyncio.run(call("/wake", "POST", big)) == 413
    assert asyncio.run(call("/wake", "POST", [b'{"run_id":'], stall=True)) == 408
