"""Our own stream server (``dwf streams serve``) as a real subprocess.

It listens on a port the OS picks on 127.0.0.1 (port 0, so no race for a free
port) and prints ``ready <url>``; :func:`embedded_server` waits for that line,
yields the URL, and stops the process on exit (SIGTERM, then SIGKILL).
:meth:`EmbeddedServer.kill` is ``kill -9`` for crash tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
    data_dir: str | os.PathLike[str] | None, long_poll_timeout: float, max_body_bytes: int | None
) -> list[str]:
    storage = ["--memory"] if data_dir is None else ["--data", os.fspath(data_dir)]
    options = ["--host", "127.0.0.1", "--port", "0", *storage]
    options += ["--long-poll-timeout", str(long_poll_timeout)]
    if max_body_bytes is None:
        return [sys.executable, "-m", "durable_workflows.cli", "streams", "serve", *options]
    # `dwf streams serve` has no --max-body-bytes yet; the module entry point has.
    options += ["--max-body-bytes", str(max_body_bytes)]
    return [sys.executable, "-m", "durable_workflows.streams.serve", *options]


@contextmanager
def embedded_server(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    long_poll_timeout: float = 0.5,
    max_body_bytes: int | None = None,
) -> Iterator[EmbeddedServer]:
    """Start ``dwf streams serve`` (memory, or SQLite in ``data_dir``); stop it on exit."""
    with tempfile.TemporaryDirectory(prefix="dwf-streams-") as logs:
        out_path = Path(logs) / "stdout.log"
        err_path = Path(logs) / "stderr.log"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                _command(data_dir, long_poll_timeout, max_body_bytes),
                cwd=REPO_ROOT,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        try:
            url = ""
            deadline = time.monotonic() + START_TIMEOUT
            while not url and time.monotonic() < deadline and proc.poll() is None:
                for line in out_path.read_text(errors="replace").splitlines():
                    if line.startswith("ready "):
                        url = line.split()[1]
                if not url:
                    time.sleep(0.05)
            if not url:
                raise EmbeddedServerError(
                    f"dwf streams serve did not start (exit code {proc.poll()}); stderr: "
                    f"{err_path.read_text(errors='replace')[-2000:]!r}"
                )
            yield EmbeddedServer(base_url=url, process=proc)
        finally:
            _stop(proc)
