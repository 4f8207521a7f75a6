"""The stream server's gate: bearer credential in, :mod:`.policy` decision out.

:class:`AccessGuard` is handed to :class:`~durable_workflows.streams.server.StreamsApp`,
which calls :meth:`AccessGuard.check` after it has read a request's body and before
anything is stored or touched, so a refused request leaves every stream as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..streams import protocol as p
from ..streams.server.core import ProtocolError
from ..streams.server.subscriptions import config_paths
from .keys import KeySet
from .policy import Refusal, StreamRequest, authorize, authorize_control
from .tokens import Grant, TokenError, Verifier

if TYPE_CHECKING:
    from ..streams.server.app import Request

__all__ = ["AccessGuard", "refusal_error"]

#: Subscription actions authenticated by their own claim or callback token
#: (PROTOCOL.md section 6); the manager checks that token itself.
_TOKEN_ACTIONS = ("callback", "ack", "release")


def refusal_error(refusal: Refusal) -> ProtocolError:
    headers = {p.CONTENT_TYPE: "application/json"}
    if refusal.status == 401:
        headers["www-authenticate"] = f'Bearer error="{refusal.code}"'
    return ProtocolError(refusal.status, json.dumps(refusal.body()), headers)


class AccessGuard:
    """Enforces security.md's write (and read) permissions on a stream server."""

    #: Reads of protected streams must not land in shared caches (PRIV-006).
    protected_reads = True

    def __init__(
        self,
        keys: KeySet,
        *,
        anonymous: Grant | None = None,
        subscription_paths: Callable[[str], list[str] | None] | None = None,
    ) -> None:
        self.verifier = Verifier(keys)
        self.anonymous = anonymous
        self.subscription_paths = subscription_paths

    def grant(self, authorization: str | None) -> Grant | None:
        """The grant of an ``Authorization`` header: the anonymous grant (None unless
        the operator opened one) without it; :class:`Refusal` 401 for a bad one."""
        if not authorization:
            return self.anonymous
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refusal(401, "unauthorized", "send the credential as Authorization: Bearer …")
        try:
            return self.verifier.verify(token.strip())
        except TokenError as error:
            raise Refusal(401, error.code, error.message) from error

    def check(self, request: Request) -> None:
        """Return when the request may go on; raise a 401/403 ProtocolError otherwise."""
        try:
            if request.path == "__ds" or request.path.startswith("__ds/"):
                self._check_control(request)
                return
            authorize(
                self.grant(request.header("authorization")),
                StreamRequest(
                    method=request.method,
                    path=request.path,
                    closes=p.is_true(request.header(p.STREAM_CLOSED)),
                    stream_seq=request.header(p.STREAM_SEQ) is not None,
                    body=request.body,
                ),
            )
        except Refusal as refusal:
            raise refusal_error(refusal) from refusal

    def _check_control(self, request: Request) -> None:
        parts = request.path.split("/")
        if parts == ["__ds", "jwks.json"]:
            return  # public keys of webhook signatures
        if (
            len(parts) == 4
            and parts[1] == "subscriptions"
            and parts[3] in _TOKEN_ACTIONS
            and request.method == "POST"
        ):
            return
        paths: list[str] | None = None
        if len(parts) >= 3 and self.subscription_paths is not None:
            paths = self.subscription_paths(parts[2])
        if request.method in ("PUT", "POST") and len(parts) in (3, 4):
            paths = [*(paths or []), *_body_paths(request.body)]
        authorize_control(self.grant(request.header("authorization")), paths)


def _body_paths(body: bytes) -> list[str]:
    """The streams a subscription PUT (or a ``streams`` POST) body names."""
    try:
        value: Any = json.loads(body) if body else {}
    except ValueError:
        return []  # the subscription manager answers 400 for it
    return config_paths(value) if isinstance(value, dict) else []
