"""Stopping ``dwf serve`` and ``dwf streams serve`` with Ctrl-C while readers wait: the
live reads are answered as if their timeout had passed (204, up to date) and the
process exits without cancelling any request mid-response (no tracebacks)."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import pytest

from tests.runtime.engine_support import spawn


def _long_poll(url: str, out: dict[str, Any]) -> None:
    try:
        response = httpx.get(url, params={"offset": "now", "live": "long-poll"}, timeout=25)
        out["status"] = response.status_code
        out["up_to_date"] = response.headers.get("Stream-Up-To-Date")
    except httpx.HTTPError as error:
        out["error"] = repr(error)


@pytest.mark.parametrize(
    ("args", "stream"),
    [
        (
            ["serve", "--port", "0", "--long-poll-timeout", "30", "--insecure-no-auth"],
            "/v1/stream/workflows/index",
        ),
        (
            ["streams", "serve", "--port", "0", "--long-poll-timeout", "30", "--insecure-no-auth"],
            "/v1/stream/s",
        ),
    ],
    ids=["dwf-serve", "dwf-streams-serve"],
)
def test_ctrl_c_answers_waiting_long_polls_and_exits_cleanly(args: list[str], stream: str) -> None:
    running = spawn(args)
    try:
        url = running.url + stream
        httpx.put(url, headers={"Content-Type": "application/json"}, timeout=10)
        out: dict[str, Any] = {}
        reader = threading.Thread(target=_long_poll, args=(url, out))
        reader.start()
        time.sleep(0.5)  # the poll is waiting (its timeout is 30 s)
        started = time.monotonic()
        running.process.send_signal(signal.SIGINT)
        running.process.wait(15)
        reader.join(15)
        assert out == {"status": 204, "up_to_date": "true"}, out
        assert time.monotonic() - started < 12
        stderr = running.stderr()
        assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr
    finally:
        running.stop()
