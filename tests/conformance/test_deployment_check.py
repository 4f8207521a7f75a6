"""``dwf conformance deployment``: ours with authentication on refuses every forgery;
the Node reference server, which has no permissions, is caught; the classification and
the report are checked against small fake servers (no sockets)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from durable_workflows.access import KeySet, mint_client_token, mint_engine_token
from durable_workflows_conformance import deployment
from durable_workflows_conformance.deployment import Outcome, Report
from tests.support.embedded_server import EmbeddedServer, embedded_server
from tests.support.node_server import node_server

CLIENT_RUN = "check-run"


def check(*argv: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "durable_workflows.cli", "conformance", "deployment", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def ours() -> Iterator[tuple[EmbeddedServer, KeySet]]:
    with embedded_server(auth=True) as server:
        assert server.keys is not None
        yield server, KeySet.load(server.keys)


# ---------------------------------------------------------------------- real servers


@pytest.mark.req(
    "SEC-001", "SEC-002", "SEC-003", "SEC-004", "SEC-019", "SEC-020", "SEC-021", "SEC-023",
    "SEC-024", "PRIV-005", "PRIV-006",
)  # fmt: skip
def test_the_embedded_server_refuses_every_forgery(
    ours: tuple[EmbeddedServer, KeySet], tmp_path: Path
) -> None:
    server, keys = ours
    client = mint_client_token(keys, runs=[CLIENT_RUN], rights=["read", "submit", "cancel"])
    code, out, err = check(
        "--namespace-url", f"{server.stream_base}/workflows",
        "--engine-token", mint_engine_token(keys),
        "--client-token", client,
        "--client-run", CLIENT_RUN,
        "--json",
        "--report-md", str(tmp_path / "report.md"),
    )  # fmt: skip
    assert code == 0, (out, err)
    report = json.loads(out)
    assert report["allowed"] == 0 and not report["notes"], report
    assert not report["enforces_no_write_permissions"] and not report["anonymous_only"]
    attempts = report["attempts"]
    assert {a["credential"] for a in attempts} == {
        "anonymous",
        "client",
        "bad-token",
        "tampered-token",
    }
    assert all(a["result"] == "refused" and not a["changed"] for a in attempts), attempts
    assert {a["status"] for a in attempts if a["credential"] != "client"} == {401}
    assert {a["status"] for a in attempts if a["credential"] == "client"} == {403}
    names = {a["attempt"] for a in attempts}
    assert len(names) == len(deployment.attempts()) + 2
    assert len(attempts) == 2 * len(deployment.attempts()) + 2
    markdown = (tmp_path / "report.md").read_text()
    assert (
        "every forgery was refused" in markdown and "| close an inbox | client | 403 |" in markdown
    )


@pytest.mark.req("SEC-003", "SEC-026")
def test_a_run_request_by_a_client_that_may_start_runs_is_informational(
    ours: tuple[EmbeddedServer, KeySet],
) -> None:
    server, keys = ours
    client = mint_client_token(keys, runs=[CLIENT_RUN], rights=["read", "start"])
    code, out, err = check(
        "--namespace-url", f"{server.stream_base}/workflows",
        "--engine-token", mint_engine_token(keys),
        "--client-token", client,
        "--client-run", CLIENT_RUN,
    )  # fmt: skip
    assert code == 0, (out, err)
    request = [line for line in out.splitlines() if line.startswith("request a run")]
    assert len(request) == 2, out
    assert "401  refused" in request[0] and "anonymous" in request[0]
    assert "204  informational" in request[1] and "client" in request[1]
    assert "1 informational (the client token may start runs)" in out


def test_without_a_client_token_only_anonymous_attempts_are_made(
    ours: tuple[EmbeddedServer, KeySet],
) -> None:
    server, keys = ours
    code, out, err = check(
        "--namespace-url", f"{server.stream_base}/workflows",
        "--engine-token", mint_engine_token(keys), "--json",
    )  # fmt: skip
    assert code == 0, (out, err)
    report = json.loads(out)
    assert report["anonymous_only"] and "no client token" in report["notes"][0]
    assert {a["credential"] for a in report["attempts"]} == {"anonymous", "bad-token"}
    assert report["refused"] == len(deployment.attempts()) + 1


@pytest.mark.peers
def test_the_node_server_is_reported_as_allowing_forgeries() -> None:
    with node_server(long_poll_timeout_ms=500) as node:
        code, out, err = check(
            "--namespace-url", f"{node.stream_base}/dwf-check",
            "--engine-token", "anything",
            "--client-token", "anything-else",
            "--client-run", CLIENT_RUN,
        )  # fmt: skip
    assert code == 1, (out, err)
    assert deployment.NO_PERMISSIONS in out
    names = ("append a forged input-received to a history", "close an inbox", "delete a history")
    for name in names:
        lines = [line for line in out.splitlines() if re.split(r"\s{2,}", line)[0] == name]
        assert len(lines) == 2 and all(" allowed " in line for line in lines), out
    assert " 0 refused" in out and "PRIV-006: a read with the client token" in out


def test_usage_errors_exit_2() -> None:
    assert check()[0] == 2
    assert check("--namespace-url", "http://127.0.0.1:9/v1/stream/x")[0] == 2  # no engine token
    code, _, err = check("--namespace-url", "http://127.0.0.1:9", "--engine-token", "t")
    assert code == 2 and "is a server, not a namespace" in err
    code, _, err = check(
        "--namespace-url", "http://127.0.0.1:9/v1/stream/x", "--engine-token", "t",
        "--client-token", "c",
    )  # fmt: skip
    assert code == 2 and "--client-run" in err
    code, _, err = check(
        "--namespace-url", "http://127.0.0.1:9/v1/stream/x", "--engine-token", "t",
        "--client-token", "c", "--client-run", "../index",
    )  # fmt: skip
    assert code == 2 and "not a run id" in err


def test_an_engine_credential_the_server_refuses_is_a_setup_error(
    ours: tuple[EmbeddedServer, KeySet],
) -> None:
    server, keys = ours
    url = f"{server.stream_base}/workflows"
    code, _, err = check("--namespace-url", url, "--engine-token", "not-a-token")
    assert code == 2 and "engine credential cannot" in err and "HTTP 401" in err, err
    client = mint_client_token(keys, runs=["another-run"], rights=["read"])
    code, _, err = check(
        "--namespace-url", url, "--engine-token", mint_engine_token(keys),
        "--client-token", client, "--client-run", CLIENT_RUN,
    )  # fmt: skip
    assert code == 2 and "the client token cannot read" in err and "403" in err, err


# ---------------------------------------------------------------------- fake servers


@dataclass
class Stream:
    closed: bool = False
    messages: list[Any] = field(default_factory=list)


@dataclass
class FakeServer:
    """A Durable Streams server in a dict. ``mode``: ``open`` lets anyone do anything;
    ``strict`` lets the engine do anything and the client read its own run; ``leaky``
    answers like ``strict`` but carries out the refused request anyway."""

    mode: str
    streams: dict[str, Stream] = field(default_factory=dict)

    def allowed(self, request: httpx.Request, path: str) -> int | None:
        """None: go ahead; else the refusal's status."""
        who = request.headers.get("authorization")
        if self.mode == "open" or who == "Bearer engine":
            return None
        own = (f"/runs/{CLIENT_RUN}/history", f"/runs/{CLIENT_RUN}/inbox")
        if who == "Bearer client" and request.method in ("GET", "HEAD") and path.endswith(own):
            return None
        return 403 if who == "Bearer client" else 401

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        refusal = self.allowed(request, path)
        refused = httpx.Response(refusal or 0, json={"code": "forbidden", "message": "no"})
        if refusal is not None and self.mode != "leaky":
            return refused
        answer = self.serve(request, path)
        return refused if refusal is not None else answer

    def serve(self, request: httpx.Request, path: str) -> httpx.Response:
        stream = self.streams.get(path)
        closing = request.headers.get("stream-closed") == "true"
        body = json.loads(request.content) if request.content else None
        found = [] if body is None else body if isinstance(body, list) else [body]
        if request.method == "PUT":
            if stream is not None:
                return httpx.Response(409 if stream.closed != closing else 200)
            self.streams[path] = Stream(closing, found)
            return httpx.Response(201)
        if stream is None:
            return httpx.Response(404)
        headers = {"stream-next-offset": str(len(stream.messages))}
        if stream.closed:
            headers["stream-closed"] = "true"
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        if request.method == "GET":
            headers["cache-control"] = "private"
            return httpx.Response(200, headers=headers, json=stream.messages)
        if request.method == "DELETE":
            del self.streams[path]
            return httpx.Response(204)
        if stream.closed:
            return httpx.Response(409, headers=headers)
        stream.messages += found
        stream.closed = stream.closed or closing
        return httpx.Response(204)


def fake_check(mode: str, client: str | None = "client") -> Report:
    server = FakeServer(mode)
    with httpx.Client(transport=httpx.MockTransport(server.handle)) as http:
        run = CLIENT_RUN if client else None
        return deployment.run_check("http://streams.test/v1/stream/ns", "engine", client, run, http)


def test_a_server_that_refuses_everything_passes() -> None:
    report = fake_check("strict")
    assert report.exit_status() == 0 and report.count("refused") == len(report.outcomes)
    assert deployment.render_text(report).splitlines()[-1] == "every forgery was refused"


def test_a_server_without_permissions_fails_and_says_so() -> None:
    report = fake_check("open")
    assert report.exit_status() == 1 and report.enforces_nothing
    assert report.count("refused") == 0
    # Closing the shared streams (index, wake, run status) spoils the client's closes
    # of them only.
    untestable = {o.attempt for o in report.outcomes if o.result == "untestable"}
    assert untestable == {
        "close the run index",
        "close the wake stream",
        "close the run-status stream",
    }
    assert all(o.credential == "client" for o in report.outcomes if o.result == "untestable")
    text = deployment.render_text(report)
    assert deployment.NO_PERMISSIONS in text
    assert f"{len(report.outcomes)} attempts, 0 refused" in text


def test_a_refusal_that_stored_the_request_anyway_counts_as_allowed() -> None:
    report = fake_check("leaky")
    writes = [o for o in report.outcomes if o.method != "GET"]
    assert writes and all(o.status in (401, 403) for o in writes)
    tested = [o for o in writes if o.method != "PUT" and o.result != "untestable"]
    assert all(o.changed and o.result == "allowed" for o in tested), tested
    # The leaky close of the shared index spoils the client's attempt to close it.
    assert {o.attempt for o in writes if o.result == "untestable"} == {
        "close the run index",
        "close the wake stream",
        "close the run-status stream",
    }
    assert report.exit_status() == 1
    # A PUT of a stream that exists with the same configuration changes nothing.
    puts = {o.attempt: o.result for o in writes if o.method == "PUT"}
    assert puts["create the run index (PUT)"] == "refused"
    assert puts["pre-create a history with a forged run-started"] == "allowed"


def test_without_a_client_token_the_report_says_so() -> None:
    report = fake_check("strict", client=None)
    assert report.anonymous_only and report.exit_status() == 0
    assert {o.credential for o in report.outcomes} == {"anonymous", "bad-token"}
    assert "note: no client token" in deployment.render_text(report)


def outcome(result: str, credential: str = "anonymous", method: str = "POST") -> Outcome:
    return Outcome("x", credential, method, "index", 204, result, False, ("SEC-003",))


def test_summary_and_verdict() -> None:
    mixed = [
        outcome("refused"),
        outcome("allowed", "client"),
        outcome("untestable", "client"),
        outcome("informational", "client"),
    ]
    assert deployment.summary_line(mixed) == (
        "4 attempts, 1 refused, 1 allowed, 1 untestable (a stream they need was closed by "
        "then), 1 informational (the client token may start runs)"
    )
    report = Report("ns", mixed)
    assert report.exit_status() == 1 and not report.enforces_nothing
    assert deployment.verdict(report).startswith("1 forgeries were allowed")
    only_reads = Report("ns", [outcome("allowed", method="GET")])
    assert not only_reads.enforces_nothing  # reads are not writes
    everything = Report(
        "ns", [outcome("allowed"), outcome("untestable"), outcome("refused", "client")]
    )
    assert everything.enforces_nothing
    assert Report("ns", [outcome("informational", "client")]).exit_status() == 0


def test_tampering_changes_one_character_of_the_signature_only() -> None:
    token = "aGVhZA.Y2xhaW1z.c2lnbmF0dXJlQUFB"
    tampered = deployment.tamper(token)
    assert tampered != token and len(tampered) == len(token)
    assert tampered.rsplit(".", 1)[0] == token.rsplit(".", 1)[0]
    assert sum(a != b for a, b in zip(tampered, token, strict=True)) == 1
    assert deployment.tamper("AAAA") == "AABA"


def test_the_start_right_is_read_from_a_tokens_claims(tmp_path: Path) -> None:
    keys = KeySet.generate()
    starter = mint_client_token(keys, runs=["r"], rights=["start"])
    reader = mint_client_token(keys, runs=["r"], rights=["read"])
    assert deployment.token_may_start(starter) and not deployment.token_may_start(reader)
    assert not deployment.token_may_start("not-a-token")
    assert not deployment.token_may_start("a.!!!.c")


def test_the_forged_messages_are_schema_valid() -> None:
    """A server that checks schemas but not credentials must not look like one that
    enforces permissions: every forgery is a message the schemas accept."""
    from durable_workflows import schemas

    assert schemas.identify(json.loads(deployment.run_started("r")), "history") == "run-started"
    assert schemas.identify(json.loads(deployment.run_completed("r")), "history") == (
        "run-completed"
    )
    assert schemas.identify(json.loads(deployment.input_received()), "history") == (
        "input-received"
    )
    assert schemas.identify(json.loads(deployment.input_submitted()), "inbox") == (
        "input-submitted"
    )
    assert schemas.identify(json.loads(deployment.run_requested("r")), "index") == ("run-requested")


def test_the_check_is_bounded_in_time() -> None:
    server = FakeServer("open")
    with httpx.Client(transport=httpx.MockTransport(server.handle)) as http:
        late = deployment.Check(
            "http://streams.test/v1/stream/ns", "e", None, None, http, deadline=-1
        )
        with pytest.raises(deployment.SetupError, match="did not finish within"):
            late.run_all()
    assert server.streams == {}
