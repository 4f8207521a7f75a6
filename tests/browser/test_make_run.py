"""What a newcomer sees after ``make run``: the command the Makefile's ``run`` target
runs (read with ``make -n``, so the test follows the Makefile), started on a free port
with a fresh data folder, and ``/`` loaded in headless Chromium by
examples/web/e2e/smoke.mjs: the task inbox and a start form per workflow."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.browser.test_web_app import CHROMIUM, WEB, _require_built
from tests.support import REPO_ROOT

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_command(port: int, data: Path) -> list[str]:
    """The last line `make -n run` prints: the server command, with its data folder
    moved out of the clone."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    planned = subprocess.run(
        ["make", "-n", "--no-print-directory", "run", f"PORT={port}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    argv = shlex.split(planned.stdout.strip().splitlines()[-1])
    assert "serve" in argv and "--ui" in argv, argv
    assert argv[argv.index("--port") + 1] == str(port), argv
    argv[argv.index("--data") + 1] = str(data)
    return argv


def test_make_run_serves_the_app_at_the_root(tmp_path: Path) -> None:
    _require_built()
    port = _free_port()
    argv = _run_command(port, tmp_path / "data")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not log.read_text(errors="replace").startswith("ready "):
            assert server.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "no ready line in 60 s"
            time.sleep(0.05)
        ready = log.read_text(errors="replace").splitlines()[0]
        url = f"http://127.0.0.1:{port}"
        assert ready.startswith(f"ready {url} "), ready
        shot = tmp_path / "make-run.png"
        done = subprocess.run(
            ["node", str(WEB / "e2e" / "smoke.mjs"), url, "--screenshot", str(shot)],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "CHROMIUM": CHROMIUM},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        said = done.stdout
        assert said.startswith("ok Durable Workflows: the inbox and 3 start forms"), said
        assert shot.stat().st_size > 10_000
    finally:
        server.terminate()
        server.wait(15)
