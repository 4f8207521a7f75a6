"""Helpers shared by the engine tests (shell side): servers, messages, clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tests.support import REPO_ROOT
from tests.support.embedded_server import embedded_server
from tests.support.node_server import node_server

SERVER_KINDS = ["embedded", "node"]

#: The file (named by this environment variable) where step bodies log each execution.
BODY_LOG_ENV = "DWF_TEST_BODY_LOG"


def log_body_run(i: int, pause: float) -> dict[str, Any]:
    """A step body that leaves a trace outside the process (an O_APPEND line) before it
    returns, so a test counts executions a SIGKILL cannot erase."""
    from durable_workflows.core import current_step

    info = current_step()
    assert info is not None
    token = uuid.uuid4().hex
    time.sleep(pause)
    line = {"run": info.run_id, "key": info.key, "token": token, "pid": os.getpid()}
    fd = os.open(os.environ[BODY_LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)
    return {"i": i, "token": token, "pid": os.getpid()}


class Server(Protocol):
    @property
    def base_url(self) -> str: ...

    @property
    def stream_base(self) -> str: ...


@contextmanager
def any_server(kind: str) -> Iterator[Server]:
    """A running stream server of ``kind`` (``embedded`` or ``node``)."""
    if kind == "node":
        with node_server(long_poll_timeout_ms=500) as node:
            yield node
    else:
        with embedded_server(long_poll_timeout=0.5) as ours:
            yield ours


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def submission(sub_id: str, request: str, value: Any) -> dict[str, Any]:
    return {
        "type": "submission",
        "key": sub_id,
        "value": {"submission_id": sub_id, "request": request, "value": value},
        "headers": {"operation": "insert"},
    }


def cancel(cancel_id: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "type": "cancel",
        "key": cancel_id,
        "value": {"cancel_id": cancel_id, "reason": reason},
        "headers": {"operation": "insert"},
    }


# ---------------------------------------------------------------------- processes


START_TIMEOUT = 30.0


@dataclass
class Process:
    """A ``dwf`` subprocess that printed ``ready <url> ...``."""

    process: subprocess.Popen[bytes]
    ready_line: str
    log_dir: Path

    @property
    def url(self) -> str:
        return self.ready_line.split()[1]

    @property
    def keys(self) -> str | None:
        """The server's key file (``keys PATH`` ends the ready line), None without auth."""
        return self.ready_line.split(" keys ")[1].strip() if " keys " in self.ready_line else None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def stdout(self) -> str:
        return (self.log_dir / "stdout.log").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.log_dir / "stderr.log").read_text(errors="replace")


def spawn(args: list[str], env: dict[str, str] | None = None, wait_ready: bool = True) -> Process:
    """Start ``python -m durable_workflows.cli ARGS`` in the repository root."""
    log_dir = Path(tempfile.mkdtemp(prefix="dwf-proc-"))
    out_path, err_path = log_dir / "stdout.log", log_dir / "stderr.log"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "durable_workflows.cli", *args],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    running = Process(proc, "", log_dir)
    if not wait_ready:
        return running
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in out_path.read_text(errors="replace").splitlines():
            if line.startswith("ready "):
                running.ready_line = line
                return running
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    running.stop()
    raise RuntimeError(f"dwf {args[0]} did not start: {err_path.read_text(errors='replace')}")


@contextmanager
def dwf_serve(*extra: str, auth: bool = False) -> Iterator[Process]:
    """``dwf serve`` on a free 127.0.0.1 port; stopped on exit. Without ``auth`` anyone
    may write any stream (the engine tests drive streams directly); with it, clients
    need credentials minted from ``Process.keys``."""
    options = [] if auth else ["--insecure-no-auth"]
    running = spawn(["serve", "--port", "0", "--long-poll-timeout", "2", *options, *extra])
    try:
        yield running
    finally:
        running.stop()


def cli(*args: str, timeout: float = 60) -> tuple[int, Any]:
    """Run a client command with ``--json``; returns (exit code, parsed output)."""
    done = subprocess.run(
        [sys.executable, "-m", "durable_workflows.cli", *args, "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=timeout,
    )
    text = done.stdout.decode()
    try:
        return done.returncode, json.loads(text)
    except ValueError:
        return done.returncode, text + done.stderr.decode()


def wait_until(condition: Any, seconds: float, what: str = "condition") -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {seconds} s")
        time.sleep(0.05)


def client_for(namespace_url: str) -> Any:
    """A StreamClient with the credential the CLI would use here ($DWF_KEYS, ...)."""
    from durable_workflows.access import resolve_credential
    from durable_workflows.streams import StreamClient

    credential = resolve_credential(namespace_url)
    return StreamClient(timeout=10, auth=None if credential is None else credential.auth())


def read_history(namespace_url: str, run_id: str) -> tuple[list[Any], bool]:
    from durable_workflows.engine.namespace import strip_read_annotations
    from durable_workflows.streams import StreamNotFound

    with client_for(namespace_url) as client:
        try:
            result = client.stream(f"{namespace_url}/runs/{run_id}/history").read()
        except StreamNotFound:
            return [], False
    return strip_read_annotations(result.items), result.closed


def run_status(namespace_url: str, run_id: str) -> str | None:
    items, _ = read_history(namespace_url, run_id)
    runs = [m["value"]["status"] for m in items if m.get("type") == "run"]
    return runs[-1] if runs else None


def pending_inputs(namespace_url: str, run_id: str) -> list[str]:
    items, _ = read_history(namespace_url, run_id)
    rows: dict[str, str] = {}
    for m in items:
        if m.get("type") == "input":
            rows[m["key"]] = m["value"]["status"]
    return [k for k, v in rows.items() if v == "pending"]


def start(ns: str, workflow_name: str, value: Any, run_id: str | None = None) -> str:
    """Request a run (append ``run-requested`` to the index); returns its run id."""
    run_id = run_id or unique(workflow_name)
    with client_for(ns) as client:
        index = client.stream(f"{ns}/index", content_type="application/json")
        index.create_json()
        index.append_json(
            {
                "type": "start",
                "key": run_id,
                "value": {"run_id": run_id, "workflow": workflow_name, "input": value},
                "headers": {"operation": "insert"},
            }
        )
    return run_id


def to_inbox(ns: str, run_id: str, message: dict[str, Any]) -> None:
    """Append to a run's inbox as a client does, creating it first if need be."""
    from durable_workflows.streams import StreamNotFound

    with client_for(ns) as client:
        inbox = client.stream(f"{ns}/runs/{run_id}/inbox", content_type="application/json")
        try:
            inbox.append_json(message)
        except StreamNotFound:  # the harness creates it as the engine would (clients never do)
            inbox.create_json()
            inbox.append_json(message)
