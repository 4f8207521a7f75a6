"""Write permissions on the embedded server, end to end: ``dwf serve`` with
authentication on (its default), attacked with a plain HTTP client.

Every forgery of issue 11 is sent with no credential and with a client token, and
must be refused (401/403) and leave the streams byte-for-byte as they were; a run is
started, answered and completed with client tokens only; CORS grants only listed
origins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from durable_workflows.access import KeySet, mint_client_token, mint_engine_token
from tests.runtime.engine_support import Process, dwf_serve, wait_until

pytestmark = pytest.mark.slow

APP_ORIGIN = "http://app.example.test"


@pytest.fixture(scope="module")
def served() -> Iterator[Process]:
    with dwf_serve("--cors-origin", APP_ORIGIN, auth=True) as running:
        yield running


@pytest.fixture(scope="module")
def keys(served: Process) -> KeySet:
    assert served.keys is not None
    return KeySet.load(served.keys)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def ns_url(served: Process) -> str:
    return f"{served.url}/v1/stream/workflows"


def snapshot(served: Process, keys: KeySet, path: str) -> tuple[Any, ...]:
    """Everything a forgery could change about a stream, read with the engine's
    credential: existence, closed status, tail offset and every byte."""
    url = f"{ns_url(served)}/{path}"
    engine = bearer(mint_engine_token(keys))
    head = httpx.head(url, headers=engine)
    if head.status_code == 404:
        return ("absent",)
    body = httpx.get(url, params={"offset": "-1"}, headers=engine)
    return (
        head.status_code,
        head.headers.get("stream-closed"),
        head.headers.get("stream-next-offset"),
        body.content,
    )


def request_run(served: Process, keys: KeySet, run_id: str, items: list[int]) -> None:
    token = mint_client_token(keys, runs=[run_id], rights=["start", "read"])
    message = {
        "type": "start",
        "key": run_id,
        "value": {
            "run_id": run_id,
            "workflow": "expense-approval",
            "input": {"report_id": run_id, "items": [{"amount": a} for a in items]},
        },
        "headers": {"operation": "insert"},
    }
    reply = httpx.post(f"{ns_url(served)}/index", json=message, headers=bearer(token))
    assert reply.status_code == 204, reply.text


def history(served: Process, token: str, run_id: str) -> list[dict[str, Any]]:
    reply = httpx.get(
        f"{ns_url(served)}/runs/{run_id}/history", params={"offset": "-1"}, headers=bearer(token)
    )
    if reply.status_code == 404:
        return []
    assert reply.status_code == 200, reply.text
    items: list[dict[str, Any]] = reply.json()
    return items


def status(served: Process, keys: KeySet, run_id: str) -> str | None:
    runs = [m for m in history(served, mint_engine_token(keys), run_id) if m["type"] == "run"]
    return runs[-1]["value"]["status"] if runs else None


@pytest.fixture(scope="module")
def runs(served: Process, keys: KeySet) -> dict[str, str]:
    """A run waiting for the manager, and a completed one."""
    request_run(served, keys, "waiting-1", [900, 350])
    request_run(served, keys, "done-1", [20])
    wait_until(lambda: status(served, keys, "waiting-1") == "waiting", 20, "waiting-1 waits")
    wait_until(lambda: status(served, keys, "done-1") == "completed", 20, "done-1 completes")
    return {"waiting": "waiting-1", "done": "done-1"}


FORGED_RECEIVED = {
    "type": "input",
    "key": "manager",
    "value": {"status": "received", "value": {"approved": True}},
    "headers": {"operation": "update"},
}
FORGED_COMPLETED = {
    "type": "run",
    "key": "waiting-1",
    "value": {"status": "completed", "output": {"paid": True}},
    "headers": {"operation": "update"},
}
FORGED_STARTED = {
    "type": "run",
    "key": "fresh-1",
    "value": {"run_id": "fresh-1", "workflow": "expense-approval", "status": "running"},
    "headers": {"operation": "insert"},
}
CLOSE = {"stream-closed": "true"}
JSON = {"content-type": "application/json"}

#: (what, method, stream path, headers, body): every forgery of issue 11 and more.
FORGERIES: list[tuple[str, str, str, dict[str, str], bytes]] = [
    (
        "append a forged input-received to a waiting run's history",
        "POST",
        "runs/waiting-1/history",
        JSON,
        json.dumps(FORGED_RECEIVED).encode(),
    ),
    (
        "append a forged run-completed and close the history",
        "POST",
        "runs/waiting-1/history",
        {**JSON, **CLOSE},
        json.dumps(FORGED_COMPLETED).encode(),
    ),
    (
        "pre-create a run's history with a forged run-started",
        "PUT",
        "runs/fresh-1/history",
        JSON,
        json.dumps([FORGED_STARTED]).encode(),
    ),
    ("delete a completed run's history", "DELETE", "runs/done-1/history", {}, b""),
    ("delete a completed run's inbox", "DELETE", "runs/done-1/inbox", {}, b""),
    ("close a waiting run's inbox", "POST", "runs/waiting-1/inbox", {**JSON, **CLOSE}, b""),
    ("create an inbox closed", "PUT", "runs/fresh-2/inbox", {**JSON, **CLOSE}, b""),
    ("create an inbox", "PUT", "runs/fresh-2/inbox", JSON, b""),
    ("delete the run index", "DELETE", "index", {}, b""),
    ("close the run index", "POST", "index", {**JSON, **CLOSE}, b""),
    ("re-create the run index", "PUT", "index", JSON, b""),
    ("delete the wake stream", "DELETE", "wake", {}, b""),
    ("close the wake stream", "POST", "wake", {**JSON, **CLOSE}, b""),
    ("append to the wake stream", "POST", "wake", JSON, b'{"wake": 1}'),
    (
        "append a history event to an inbox",
        "POST",
        "runs/waiting-1/inbox",
        JSON,
        json.dumps(FORGED_RECEIVED).encode(),
    ),
]


def attacker_tokens(keys: KeySet) -> dict[str, dict[str, str]]:
    """No credential; a client token for the runs with every right; a token for
    another run; a forged signature; an expired token."""
    client = mint_client_token(
        keys, runs=["waiting-1", "done-1", "fresh-1", "fresh-2"], rights=list(RIGHTS_ALL)
    )
    head, payload, signature = client.split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    expired = mint_client_token(keys, runs=["waiting-1"], ttl=1, now=1_000_000)
    return {
        "anonymous": {},
        "client": bearer(client),
        "tampered": bearer(tampered),
        "expired": bearer(expired),
    }


RIGHTS_ALL = ("read", "submit", "cancel", "start")


@pytest.mark.req(
    "SEC-001", "SEC-002", "SEC-003", "SEC-019", "SEC-020", "SEC-021", "SEC-023", "SEC-024"
)
@pytest.mark.parametrize("forgery", FORGERIES, ids=[f[0] for f in FORGERIES])
def test_every_forgery_is_refused_and_changes_nothing(
    served: Process,
    keys: KeySet,
    runs: dict[str, str],
    forgery: tuple[str, str, str, dict[str, str], bytes],
) -> None:
    what, method, path, headers, body = forgery
    for who, credential in attacker_tokens(keys).items():
        before = snapshot(served, keys, path)
        reply = httpx.request(
            method, f"{ns_url(served)}/{path}", headers={**headers, **credential}, content=body
        )
        expected = 403 if who == "client" else 401
        assert reply.status_code == expected, (what, who, reply.status_code, reply.text)
        assert reply.headers["content-type"] == "application/json"
        refusal = reply.json()
        assert refusal["code"] and refusal["message"], refusal
        assert snapshot(served, keys, path) == before, (what, who)
    # The engine's run goes on as if nothing had happened.
    assert status(served, keys, "waiting-1") == "waiting"


@pytest.mark.req("SEC-003", "SEC-026", "PRIV-005", "PRIV-006")
def test_a_token_for_one_run_does_nothing_to_another(
    served: Process, keys: KeySet, runs: dict[str, str]
) -> None:
    token = bearer(mint_client_token(keys, runs=["done-1"], rights=list(RIGHTS_ALL)))
    base = ns_url(served)
    mine = httpx.get(f"{base}/runs/done-1/history", params={"offset": "-1"}, headers=token)
    assert mine.status_code == 200
    assert mine.headers["cache-control"].startswith("private")  # PRIV-006
    before = snapshot(served, keys, "runs/waiting-1/inbox")
    submission = {
        "type": "submission",
        "key": "s-other",
        "value": {"submission_id": "s-other", "request": "manager", "value": {"approved": True}},
        "headers": {"operation": "insert"},
    }
    for method, path, body in [
        ("GET", "runs/waiting-1/history?offset=-1", None),
        ("HEAD", "runs/waiting-1/inbox", None),
        ("POST", "runs/waiting-1/inbox", submission),
        ("GET", "index?offset=-1", None),  # the index holds every run's input
    ]:
        reply = httpx.request(method, f"{base}/{path}", headers=token, json=body)
        assert reply.status_code == 403, (method, path, reply.status_code)
    assert snapshot(served, keys, "runs/waiting-1/inbox") == before
    # Another namespace, and subscriptions, are the engine's.
    assert (
        httpx.get(f"{served.url}/v1/stream/other/index?offset=-1", headers=token).status_code == 403
    )
    sub = httpx.put(
        f"{served.url}/v1/stream/__ds/subscriptions/evil",
        headers=token,
        json={"type": "pull-wake", "pattern": "**", "wake_stream": "workflows/wake"},
    )
    assert sub.status_code == 403
    delete = httpx.delete(f"{served.url}/v1/stream/__ds/subscriptions/evil")
    assert delete.status_code == 401


@pytest.mark.req("SEC-003")
def test_client_appends_are_checked_message_by_message(
    served: Process, keys: KeySet, runs: dict[str, str]
) -> None:
    url = f"{ns_url(served)}/runs/waiting-1/inbox"
    read_only = bearer(mint_client_token(keys, runs=["waiting-1"], rights=["read"]))
    submit_only = bearer(mint_client_token(keys, runs=["waiting-1"], rights=["submit"]))
    cancel = {
        "type": "cancel",
        "key": "c-1",
        "value": {"cancel_id": "c-1", "reason": None},
        "headers": {"operation": "insert"},
    }
    before = snapshot(served, keys, "runs/waiting-1/inbox")
    assert httpx.post(url, json=cancel, headers=read_only).status_code == 403
    assert httpx.post(url, json=cancel, headers=submit_only).status_code == 403
    # Schema-invalid and junk bodies get a clear 400 or 413, and are not stored.
    bad = httpx.post(url, json={"type": "submission", "key": "x"}, headers=submit_only)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid-message"
    assert httpx.post(url, content=b"{nope", headers={**JSON, **submit_only}).status_code == 400
    junk = [{"type": "submission"}] * 60_000
    assert httpx.post(url, json=junk, headers=submit_only).status_code == 413
    # Text that is not Unicode (a lone surrogate) and deep nesting would wedge the
    # engine that records them: refused here (and malformed to an engine elsewhere).
    surrogate = b'{"type":"submission","key":"s-9","value":{"submission_id":"s-9",' + (
        b'"request":"manager","value":"\\ud800"},"headers":{"operation":"insert"}}'
    )
    reply = httpx.post(url, content=surrogate, headers={**JSON, **submit_only})
    assert reply.status_code == 400 and "surrogate" in reply.json()["message"]
    # Numbers not every reader holds: named as such, not as bad text (EVT-100).
    for number in (b"NaN", b"-Infinity", b"1e400", b"9007199254740993"):
        body = surrogate.replace(b'"\\ud800"', number)
        assert number in body and b"ud800" not in body
        reply = httpx.post(url, content=body, headers={**JSON, **submit_only})
        assert reply.status_code == 400 and "I-JSON" in reply.json()["message"], number
        assert "1e400" in reply.json()["message"] and "NaN" in reply.json()["message"]
    deep = b"[" * 2000 + b"]" * 2000
    reply = httpx.post(url, content=deep, headers={**JSON, **submit_only})
    assert reply.status_code == 400, reply.text
    nested = json.loads(surrogate.replace(b'"\\ud800"', b"[" * 40 + b"]" * 40))
    reply = httpx.post(url, json=nested, headers=submit_only)
    assert reply.status_code == 400 and "nest" in reply.json()["message"]
    seq = httpx.post(url, json=cancel, headers={**submit_only, "stream-seq": "9"})
    assert seq.status_code == 403  # INPUT-009
    assert snapshot(served, keys, "runs/waiting-1/inbox") == before
    # Start rights name the runs and the workflows.
    start_one = bearer(
        mint_client_token(keys, run_prefix="u7-", rights=["start"], workflows=["agent-confirm"])
    )
    index = f"{ns_url(served)}/index"

    def request(run_id: str, workflow: str) -> dict[str, Any]:
        return {
            "type": "start",
            "key": run_id,
            "value": {"run_id": run_id, "workflow": workflow, "input": None},
            "headers": {"operation": "insert"},
        }

    assert (
        httpx.post(index, json=request("x-1", "agent-confirm"), headers=start_one).status_code
        == 403
    )
    assert (
        httpx.post(index, json=request("u7-1", "expense-approval"), headers=start_one).status_code
        == 403
    )


@pytest.mark.req("SEC-003", "SEC-022")
def test_a_run_started_answered_and_completed_with_client_tokens_only(
    served: Process, keys: KeySet
) -> None:
    """What a browser does: its backend minted one token for the run, with start."""
    token = mint_client_token(keys, runs=["browser-1"], rights=list(RIGHTS_ALL))
    request_run(served, keys, "browser-1", [700, 800])
    wait_until(
        lambda: any(
            m["type"] == "input" and m["value"]["status"] == "pending"
            for m in history(served, token, "browser-1")
        ),
        20,
        "the manager's input is pending",
    )
    submission = {
        "type": "submission",
        "key": "s-browser",
        "value": {"submission_id": "s-browser", "request": "manager", "value": {"approved": True}},
        "headers": {"operation": "insert"},
    }
    url = f"{ns_url(served)}/runs/browser-1/inbox"
    assert httpx.post(url, json=submission, headers=bearer(token)).status_code == 204
    wait_until(lambda: status(served, keys, "browser-1") == "completed", 20, "completed")
    run = [m for m in history(served, token, "browser-1") if m["type"] == "run"][-1]
    assert run["value"]["output"]["decision"]["approved"] is True


@pytest.mark.req("SEC-027")
def test_cors_grants_only_listed_origins(served: Process) -> None:
    url = f"{ns_url(served)}/runs/waiting-1/inbox"
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    listed = httpx.options(url, headers={"origin": APP_ORIGIN, **preflight})
    assert listed.status_code == 204
    assert listed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert listed.headers["access-control-allow-credentials"] == "true"
    assert "authorization" in listed.headers["access-control-allow-headers"]
    assert "Producer-Id" in listed.headers["access-control-allow-headers"]
    assert int(listed.headers["access-control-max-age"]) > 0
    other = httpx.options(url, headers={"origin": "http://evil.example.test", **preflight})
    assert "access-control-allow-origin" not in other.headers
    plain = httpx.get(url, headers={"origin": "http://evil.example.test"})
    assert "access-control-allow-origin" not in plain.headers


def test_no_auth_mode_is_refused_on_a_public_address() -> None:
    from durable_workflows.cli import main

    assert main(["streams", "serve", "--host", "0.0.0.0", "--port", "0", "--insecure-no-auth"]) == 2
    assert main(["serve", "--host", "0.0.0.0", "--port", "0", "--insecure-no-auth"]) == 2
