"""``dwf start/submit/cancel/inspect`` as clients: they append to the index and to
inboxes and read histories, never write one (SEC-001)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import pytest

from durable_workflows.cli import main
from durable_workflows.engine.commands import summarize
from durable_workflows.schemas import identify
from durable_workflows.streams import StreamClient
from tests.support.embedded_server import EmbeddedServer, embedded_server

from .engine_support import unique


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    with embedded_server(long_poll_timeout=0.5) as running:
        yield running


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


def engine_creates(*urls: str) -> None:
    """Create streams as the engine does (clients never create them)."""
    with StreamClient(timeout=10) as client:
        for url in urls:
            client.stream(url, content_type="application/json").create_json()


def test_start_appends_a_valid_run_request(
    server: EmbeddedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = f"{server.stream_base}/{unique('cli')}"
    engine_creates(f"{ns}/index")
    code, out = run_cli(
        [
            "start",
            "expense-approval",
            "--input",
            '{"amount": 12}',
            "--run-id",
            "r-1",
            "--url",
            ns,
            "--json",
        ],
        capsys,
    )
    assert code == 0 and json.loads(out)["run_id"] == "r-1"
    with StreamClient(timeout=10) as client:
        items = client.stream(f"{ns}/index").read().items
    assert len(items) == 1 and identify(items[0], "index") == "run-requested"
    assert items[0]["value"]["input"] == {"amount": 12}


def test_url_from_environment_and_server_base(
    server: EmbeddedServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DWF_URL", server.base_url)
    engine_creates(f"{server.stream_base}/workflows/index")
    code, _ = run_cli(["start", "wf", "--run-id", unique("r")], capsys)
    assert code == 0
    with StreamClient(timeout=10) as client:
        assert client.stream(f"{server.stream_base}/workflows/index").read().items


@pytest.mark.req("EVT-090", "INPUT-040", "EVT-093")
def test_submit_and_cancel_append_to_the_inbox_and_a_closed_inbox_refuses(
    server: EmbeddedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = f"{server.stream_base}/{unique('cli')}"
    engine_creates(f"{ns}/runs/r-2/inbox")
    code, out = run_cli(
        [
            "submit",
            "r-2",
            "approval",
            "--value",
            '{"approved": true}',
            "--submission-id",
            "s-1",
            "--url",
            ns,
            "--json",
        ],
        capsys,
    )
    assert code == 0 and json.loads(out)["status"] == "sent"
    code, _ = run_cli(
        ["cancel", "r-2", "--reason", "stop", "--cancel-id", "c-1", "--url", ns], capsys
    )
    assert code == 0
    with StreamClient(timeout=10) as client:
        inbox = client.stream(f"{ns}/runs/r-2/inbox")
        items = inbox.read().items
        assert [identify(m, "inbox") for m in items] == ["input-submitted", "cancel-requested"]
        inbox.close()
    code, out = run_cli(
        ["submit", "r-2", "approval", "--value", "1", "--url", ns, "--json"], capsys
    )
    assert code == 1
    assert json.loads(out) | {"submission_id": None} == {
        "run_id": "r-2",
        "submission_id": None,
        "request": "approval",
        "status": "refused",
        "reason": "run-finished",
    }


@pytest.mark.req("INPUT-041")
def test_submit_to_a_run_without_an_inbox_exits_1_and_creates_nothing(
    server: EmbeddedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = f"{server.stream_base}/{unique('cli')}"
    for argv in (["submit", "r-3", "approval", "--value", "1"], ["cancel", "r-3"]):
        assert main([*argv, "--url", ns]) == 1
        assert "has not started" in capsys.readouterr().err
    assert httpx.head(f"{ns}/runs/r-3/inbox").status_code == 404  # never created


@pytest.mark.req("SEC-031")
def test_start_without_a_run_index_or_with_a_closed_one_exits_2(
    server: EmbeddedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = f"{server.stream_base}/{unique('cli')}"
    assert main(["start", "wf", "--url", ns]) == 2
    assert "no run index" in capsys.readouterr().err
    engine_creates(f"{ns}/index")
    with StreamClient(timeout=10) as client:
        client.stream(f"{ns}/index").close()
    assert main(["start", "wf", "--url", ns]) == 2
    assert "is closed" in capsys.readouterr().err


def test_bad_arguments_exit_2(server: EmbeddedServer, capsys: pytest.CaptureFixture[str]) -> None:
    ns = f"{server.stream_base}/{unique('cli')}"
    assert main(["start", "wf", "--input", "{nope", "--url", ns]) == 2
    assert main(["submit", "../x", "req", "--value", "1", "--url", ns]) == 2
    assert main(["inspect", "r", "--url", "ftp://nowhere"]) == 2
    capsys.readouterr()


def test_inspect_of_an_unknown_run_exits_1(
    server: EmbeddedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(["inspect", "nobody", "--url", server.base_url], capsys)
    assert code == 1 and "no history" in out


def test_summary_says_what_the_run_waits_for() -> None:
    examples = "schemas/v1/examples"
    from tests.support import REPO_ROOT

    def load(event: str, name: str) -> dict[str, object]:
        path = REPO_ROOT / examples / event / "valid" / name
        loaded: dict[str, object] = json.loads(path.read_text())
        return loaded

    suspended = load("run-suspended", "expense-waiting-for-manager.json")
    summary = summarize([suspended])
    data = summary.as_dict()
    assert data["status"] == "waiting"
    assert data["waiting_for"]["inputs"][0]["request"]
    text = io.StringIO()
    from durable_workflows.engine.commands import render

    text.write(render(summary))
    assert "waiting for:" in text.getvalue()


def test_every_option_and_argument_has_help_text() -> None:
    import argparse

    from durable_workflows.cli import build_parser

    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}")
            elif not action.help and action.dest != "help":
                missing.append(f"{prefix} {action.option_strings or action.dest}")

    walk(build_parser(), "dwf")
    assert missing == []


def test_dwf_worker_takes_a_file_path_and_says_what_it_cannot_import(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from durable_workflows.engine.worker import load_registry

    registry = load_registry(["examples/expense_approval.py"])
    assert "expense-approval" in registry.names()
    argv = ["worker", "--url", "http://127.0.0.1:9", "--workflows", "no/such/file.py"]
    assert main(argv) == 2
    assert "cannot import workflows" in capsys.readouterr().err


def test_a_worker_whose_server_is_unreachable_still_stops_on_sigterm() -> None:
    import signal
    import subprocess
    import sys
    import time

    worker = subprocess.Popen(
        [sys.executable, "-m", "durable_workflows.cli", "worker", "--url", "http://127.0.0.1:9",
         "--workflows", "examples.expense_approval"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(2)  # it is retrying its first read of the run index by now
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
