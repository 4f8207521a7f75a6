"""A web app served by ``dwf serve --ui DIR`` from the engine's own origin.

``/`` and below serve the files of ``DIR`` (an ``index.html`` and its assets, such as
the example app's build). ``GET /ui/session.json`` tells the page where the namespace
is, which workflows it can start (with their input schemas) and, when the server checks
credentials, a short-lived client token: a development convenience that hands every
visitor the same rights, so ``dwf serve`` offers it only on a loopback address. A
production app mints its tokens in its own backend (docs/browser.md).

The token goes only to a request addressed to a loopback name (SEC-038): a page of any
site can make its own host name resolve to 127.0.0.1 (DNS rebinding) and then read this
server as same-origin, but the browser still sends that site's name in ``Host``. Every
response of the app forbids framing by another origin (SEC-039), so no other site can
have a person click in it unseen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..access import KeySet, mint_client_token
from ..core import WorkflowRegistry
from ..streams.serve import is_loopback

__all__ = ["SESSION_PATH", "UI_RUN_PREFIX", "session_maker", "ui_routes"]

SESSION_PATH = "/ui/session.json"
#: Runs started from the app's session token have ids with this prefix.
UI_RUN_PREFIX = "ui-"
#: How long a session token lives; the page asks for a new one before it ends.
SESSION_TTL_SECONDS = 3600
#: On every response of the app: no framing by other origins (SEC-039), no guessing of
#: content types, and nothing loaded or run from elsewhere. 'unsafe-eval' because the
#: form's validator (Ajv) compiles each input's schema into a function.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without the port: ``[::1]:4437`` gives ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_loopback_name(name: str) -> bool:
    """A loopback address, ``localhost`` or a name under ``.localhost`` (RFC 6761)."""
    name = name.rstrip(".")
    return name.endswith(".localhost") or is_loopback(name)


def session_maker(
    namespace_path: str,
    namespace: str,
    registry: WorkflowRegistry,
    keys: KeySet | None,
    *,
    clock: Callable[[], float] = time.time,
) -> Callable[[], dict[str, Any]]:
    """What ``/ui/session.json`` answers (a new token on every call)."""
    workflows = [
        {"name": wf.name, "title": wf.title, "input_schema": wf.input_schema} for wf in registry
    ]
    workflows.sort(key=lambda w: str(w["name"]))

    def session() -> dict[str, Any]:
        now = clock()
        body: dict[str, Any] = {
            "namespace": namespace_path,
            "status_stream": f"{namespace_path}/status",
            "run_prefix": UI_RUN_PREFIX,
            "workflows": workflows,
            "token": None,
            "expires_at": None,
        }
        if keys is not None:
            rights = ["read", "submit", "cancel", "start", "list"]
            body["token"] = mint_client_token(
                keys,
                namespace=namespace,
                run_prefix=UI_RUN_PREFIX,
                rights=rights,
                ttl=SESSION_TTL_SECONDS,
                subject="dwf-serve-ui",
                now=now,
            )
            body["expires_at"] = now + SESSION_TTL_SECONDS
        return body

    return session


def ui_routes(directory: Path, session: Callable[[], dict[str, Any]]) -> list[Mount]:
    """The session route and the static files, to mount after every other route (in a
    Starlette app of their own, so that a missing file is a 404, not an error)."""

    async def session_endpoint(request: Request) -> Response:
        if not is_loopback_name(host_name(request.headers.get("host", ""))):
            return Response(
                json.dumps(
                    {
                        "error": f"{SESSION_PATH} answers only requests addressed to a "
                        "loopback name (Host: 127.0.0.1, [::1] or localhost)"
                    }
                ),
                status_code=403,
                media_type="application/json",
                headers={"Cache-Control": "no-store"},
            )
        return Response(
            json.dumps(session()),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    app = Starlette(
        routes=[
            Route(SESSION_PATH, session_endpoint, methods=["GET"]),
            Mount("/", app=StaticFiles(directory=directory, html=True)),
        ],
        # The app's script is about 1 MB; gzip makes it a fifth of that. Only the app's
        # own files and the session: stream reads never pass through here.
        middleware=[Middleware(SecurityHeaders), Middleware(GZipMiddleware, minimum_size=1024)],
    )
    return [Mount("", app=app)]


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response of the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
