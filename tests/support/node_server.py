"""The Node reference server (``@durable-streams/server``) as a context manager.

``peers/node-server.mjs`` runs ``DurableStreamTestServer`` on 127.0.0.1, on a port
the OS picks (port 0, so no race for a free port), and prints ``ready <url>``.
A missing ``node`` or missing npm peers is an error with the fix in its message,
never a skip: interop is part of what the tests prove.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import REPO_ROOT

PEERS = REPO_ROOT / "peers"
SCRIPT = PEERS / "node-server.mjs"
PACKAGE = PEERS / "node_modules" / "@durable-streams" / "server" / "package.json"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class NodeServerUnavailable(RuntimeError):
    """node or the npm peers are missing, or the server did not start."""


@dataclass(frozen=True)
class NodeServer:
    """A running reference server: ``base_url`` is ``http://127.0.0.1:PORT``."""

    base_url: str
    pid: int

    @property
    def stream_base(self) -> str:
        """The prefix stream paths go under."""
        return f"{self.base_url}/v1/stream"

    def stream_url(self, path: str) -> str:
        return f"{self.stream_base}/{path.lstrip('/')}"


def _check_prerequisites() -> str:
    node = shutil.which("node")
    if node is None:
        raise NodeServerUnavailable(
            "node is not on PATH: the interop tests need Node.js (>= 18) to run the "
            "Durable Streams reference server"
        )
    if not PACKAGE.is_file():
        raise NodeServerUnavailable(
            f"the npm peers are not installed ({PACKAGE.relative_to(REPO_ROOT)} is missing): "
            "run `make peers`"
        )
    return node


def _read_ready(out_path: Path, proc: subprocess.Popen[bytes], deadline: float) -> str:
    while time.monotonic() < deadline:
        text = out_path.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("ready "):
                return line.split(" ", 1)[1].strip()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


@contextmanager
def node_server(
    *, long_poll_timeout_ms: int = 500, data_dir: str | os.PathLike[str] | None = None
) -> Iterator[NodeServer]:
    """Start the Node reference server on a free 127.0.0.1 port; stop it on exit."""
    node = _check_prerequisites()
    args = [
        node,
        str(SCRIPT),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--long-poll-timeout-ms",
        str(long_poll_timeout_ms),
    ]
    if data_dir is not None:
        args += ["--data-dir", os.fspath(data_dir)]
    with tempfile.TemporaryDirectory(prefix="node-server-") as logs:
        out_path = Path(logs) / "stdout.log"
        err_path = Path(logs) / "stderr.log"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                args, cwd=PEERS, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        try:
            url = _read_ready(out_path, proc, time.monotonic() + START_TIMEOUT)
            if not url:
                _stop(proc)
                raise NodeServerUnavailable(
                    f"the Node reference server did not start within {START_TIMEOUT:g} s "
                    f"(exit code {proc.returncode}); stderr: "
                    f"{err_path.read_text(errors='replace')[-2000:]!r}"
                )
            yield NodeServer(base_url=url, pid=proc.pid)
        finally:
            _stop(proc)
