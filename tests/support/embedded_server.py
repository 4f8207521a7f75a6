"""Our own stream server, as a real subprocess or in-process.

:func:`embedded_server` runs ``dwf streams serve`` as a subprocess. It listens on
a port the OS picks on 127.0.0.1 (port 0, so no race for a free port) and prints
``ready <url>``; the context manager waits for that line, yields the URL, and
stops the process on exit (SIGTERM, then SIGKILL). :meth:`EmbeddedServer.kill` is
``kill -9`` for crash tests.

:func:`in_process_server` runs an app under uvicorn in a thread instead, for
tests that look inside the server (live-reader registry, event-loop tasks).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from durable_workflows.streams.server import StreamsApp

from . import REPO_ROOT

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class EmbeddedServerError(RuntimeError):
    """The server did not start."""


@dataclass
class EmbeddedServer:
    """A running server: ``base_url`` is ``http://127.0.0.1:PORT``."""

    base_url: str
    process: subprocess.Popen[bytes]
    #: The key file credentials are checked with; None when authentication is off.
    keys: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stream_base(self) -> str:
        return f"{self.base_url}/v1/stream"

    def stream_url(self, path: str) -> str:
        return f"{self.stream_base}/{path.lstrip('/')}"

    def kill(self) -> None:
        """SIGKILL, the crash no code of ours can react to."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def _command(
    data_dir: str | os.PathLike[str] | None,
    long_poll_timeout: float,
    max_body_bytes: int | None,
    auth: bool,
) -> list[str]:
    storage = ["--memory"] if data_dir is None else ["--data", os.fspath(data_dir)]
    options = ["--host", "127.0.0.1", "--port", "0", *storage]
    if not auth:  # a bare Durable Streams server, as the protocol tests expect
        options.append("--insecure-no-auth")
    options += ["--long-poll-timeout", str(long_poll_timeout)]
    if max_body_bytes is not None:
        options += ["--max-body-bytes", str(max_body_bytes)]
    return [sys.executable, "-m", "durable_workflows.cli", "streams", "serve", *options]


@contextmanager
def embedded_server(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    long_poll_timeout: float = 0.5,
    max_body_bytes: int | None = None,
    auth: bool = False,
    source: str | os.PathLike[str] | None = None,
    wrapper: Sequence[str] = (),
) -> Iterator[EmbeddedServer]:
    """Start ``dwf streams serve`` (memory, or SQLite in ``data_dir``); stop it on exit.
    With ``auth`` it checks credentials (keys: ``EmbeddedServer.keys``); without, anyone
    may do anything, as on a bare Durable Streams server. ``source`` runs the package
    from another checkout's ``reference`` directory (a benchmark's baseline);
    ``wrapper`` is a command the server runs under (``strace ...``)."""
    with tempfile.TemporaryDirectory(prefix="dwf-streams-") as logs:
        out_path = Path(logs) / "stdout.log"
        err_path = Path(logs) / "stderr.log"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            env = None
            if source is not None:
                env = {**os.environ, "PYTHONPATH": os.fspath(source)}
            proc = subprocess.Popen(
                [*wrapper, *_command(data_dir, long_poll_timeout, max_body_bytes, auth)],
                cwd=REPO_ROOT,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        try:
            url, keys = "", None
            deadline = time.monotonic() + START_TIMEOUT
            while not url and time.monotonic() < deadline and proc.poll() is None:
                for line in out_path.read_text(errors="replace").splitlines():
                    if line.startswith("ready "):
                        url = line.split()[1]
                        keys = line.split(" keys ")[1].strip() if " keys " in line else None
                if not url:
                    time.sleep(0.05)
            if not url:
                raise EmbeddedServerError(
                    f"dwf streams serve did not start (exit code {proc.poll()}); stderr: "
                    f"{err_path.read_text(errors='replace')[-2000:]!r}"
                )
            yield EmbeddedServer(base_url=url, process=proc, keys=keys)
        finally:
            _stop(proc)


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    """Poll ``condition`` until true; AssertionError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


class InProcessServer:
    """``app`` served by uvicorn on a thread, on a free 127.0.0.1 port."""

    def __init__(self, app: StreamsApp) -> None:
        self.app = app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), START_TIMEOUT)
        if not self.server.started:
            raise EmbeddedServerError("the in-process server did not start")

    def url(self, path: str) -> str:
        return f"{self.base_url}/v1/stream/{path}"

    def watcher_tasks(self) -> int:
        """Disconnect watchers (one per live request) alive in the server's loop."""
        loop = self.server.servers[0].get_loop()

        async def count() -> int:
            return sum("Connection._watch" in repr(t.get_coro()) for t in asyncio.all_tasks())

        return asyncio.run_coroutine_threadsafe(count(), loop).result(5)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(STOP_TIMEOUT * 2)


@contextmanager
def in_process_server(app: StreamsApp) -> Iterator[InProcessServer]:
    """Serve ``app`` in this process; stop it (and its lifespan) on exit."""
    running = InProcessServer(app)
    try:
        yield running
    finally:
        running.stop()
