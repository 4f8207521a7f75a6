"""``dwf conformance deployment`` against real servers: ours with authentication on
refuses every forgery; the Node reference server, which has no permissions, is caught."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from durable_workflows.access import KeySet, mint_client_token, mint_engine_token
from tests.support.embedded_server import embedded_server
from tests.support.node_server import node_server


def check(*argv: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "durable_workflows.cli", "conformance", "deployment", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.req("SEC-002", "SEC-003", "SEC-021", "SEC-023", "SEC-024", "PRIV-005", "PRIV-006")
def test_the_embedded_server_refuses_every_forgery() -> None:
    with embedded_server(auth=True) as server:
        assert server.keys is not None
        keys = KeySet.load(server.keys)
        engine = mint_engine_token(keys)
        client = mint_client_token(keys, runs=["check-run"], rights=["read", "submit", "cancel"])
        code, out, err = check(
            "--namespace-url",
            f"{server.stream_base}/workflows",
            "--engine-token",
            engine,
            "--client-token",
            client,
            "--client-run",
            "check-run",
            "--json",
        )
    assert code == 0, (out, err)
    report = json.loads(out)
    assert report["allowed"] == 0 and not report["notes"], report
    credentials = {a["credential"] for a in report["attempts"]}
    assert credentials == {"anonymous", "client", "bad-token", "tampered-token"}
    assert all(a["result"] == "refused" for a in report["attempts"])
    assert {a["status"] for a in report["attempts"] if a["credential"] != "client"} == {401}
    assert len(report["attempts"]) >= 30


@pytest.mark.peers
def test_the_node_server_is_reported_as_allowing_forgeries(tmp_path: object) -> None:
    with node_server(long_poll_timeout_ms=500) as node:
        code, out, err = check(
            "--namespace-url",
            f"{node.stream_base}/dwf-check",
            "--engine-token",
            "anything",
            "--client-token",
            "anything-else",
            "--client-run",
            "check-run",
        )
    assert code == 1, (out, err)
    assert "does not enforce write permissions" in out
    lines = [line for line in out.splitlines() if "append a forged input-received" in line]
    assert lines and all("allowed" in line for line in lines)


def test_usage_and_setup_errors_exit_2() -> None:
    assert check()[0] == 2
    assert check("--namespace-url", "http://127.0.0.1:9/v1/stream/x")[0] == 2  # no engine token
    code, _, err = check(
        "--namespace-url",
        "http://127.0.0.1:9/v1/stream/x",
        "--engine-token",
        "t",
        "--client-token",
        "c",
    )
    assert code == 2 and "--client-run" in err
    with embedded_server(auth=True) as server:
        code, _, err = check(
            "--namespace-url", f"{server.stream_base}/workflows", "--engine-token", "not-a-token"
        )
    assert code == 2 and "cannot create" in err and "401" in err
