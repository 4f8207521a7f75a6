"""A FAKE conformance adapter, for testing the runner's plumbing only.

It answers the adapter's identity and error endpoints (and a stand-in run index on
the same port) and nothing else: no engine is behind it, so it proves nothing about
conformance. The tests use it to exercise the CLI's options, exit statuses, reports
and expected-failures baseline with selections such as ``--req ADAPT-00*``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _info(base: str, features: list[str]) -> dict[str, Any]:
    return {
        "adapter": {"name": "fake-adapter-for-runner-tests", "version": "0"},
        "engine": {"name": "no-engine", "version": "0"},
        "protocol_versions": ["1.0"],
        "features": features,
        "namespace": f"{base}/v1/stream/fake",
    }


class FakeAdapter:
    def __init__(self, *, info_valid: bool = True, features: list[str] | None = None) -> None:
        self.info_valid = info_valid
        self.features = features or []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any = None, ctype: str = "application/json") -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: str) -> None:
                self._send(status, {"error": {"code": code, "message": f"fake: {code}"}})

            def do_GET(self) -> None:
                if self.path == "/conformance/v1/info":
                    info = _info(fake.url, fake.features)
                    if not fake.info_valid:
                        info["protocol_versions"] = ["one"]
                    self._send(200, info)
                elif self.path == "/conformance/v1/clock":
                    self._error(501, "unsupported")
                else:
                    self._error(404, "not-found")

            def do_HEAD(self) -> None:
                if self.path.startswith("/v1/stream/fake/"):
                    self._send(200, None)
                else:
                    self._send(404, None)

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                if self.path.startswith("/v1/stream/fake/"):
                    self._send(201, None)
                elif self.path.startswith("/conformance/v1/workflows/"):
                    self._error(400, "bad-request")
                elif self.path.startswith("/conformance/v1/runs/"):
                    self._error(501, "unsupported")
                else:
                    self._error(404, "not-found")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                self._error(404, "not-found")

        return Handler


@contextmanager
def fake_adapter(**options: Any) -> Iterator[FakeAdapter]:
    fake = FakeAdapter(**options)
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
        thread.join(5)
