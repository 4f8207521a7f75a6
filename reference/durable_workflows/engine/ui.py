"""A web app served by ``dwf serve --ui DIR`` from the engine's own origin.

``/`` and below serve the files of ``DIR`` (an ``index.html`` and its assets, such as
the example app's build). ``GET /ui/session.json`` tells the page where the namespace
is, which workflows it can start (with their input schemas) and, when the server checks
credentials, a short-lived client token: a development convenience that hands every
visitor the same rights, so ``dwf serve`` offers it only on a loopback address. A
production app mints its tokens in its own backend (docs/browser.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..access import KeySet, mint_client_token
from ..core import WorkflowRegistry

__all__ = ["SESSION_PATH", "UI_RUN_PREFIX", "session_maker", "ui_routes"]

SESSION_PATH = "/ui/session.json"
#: Runs started from the app's session token have ids with this prefix.
UI_RUN_PREFIX = "ui-"
#: How long a session token lives; the page asks for a new one before it ends.
SESSION_TTL_SECONDS = 3600


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
        return Response(
            json.dumps(session()),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    app = Starlette(
        routes=[
            Route(SESSION_PATH, session_endpoint, methods=["GET"]),
            Mount("/", app=StaticFiles(directory=directory, html=True)),
        ]
    )
    return [Mount("", app=app)]
