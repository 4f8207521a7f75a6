"""The credential an engine or the CLI presents to the stream server.

Either a token given as it is (``--token`` / ``$DWF_TOKEN``: what a worker on
another machine, or a client, is handed), or a key file from which engine tokens
are minted as needed (``--keys`` / ``$DWF_KEYS``, else ``.dwf/keys.json`` in the
current directory: what ``make run`` leaves there, so the README's walkthrough needs
no token handling). :class:`BearerAuth` puts it on every httpx request that has no
``Authorization`` of its own (pull-wake acks carry their claim token instead).
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from .keys import KeySet
from .tokens import mint_engine_token

__all__ = [
    "DEFAULT_KEY_FILE",
    "BearerAuth",
    "Credential",
    "namespace_of_url",
    "resolve_credential",
]

#: Where ``dwf serve --data .dwf`` (``make run``) keeps its keys.
DEFAULT_KEY_FILE = Path(".dwf") / "keys.json"
#: Engine tokens minted from a key file live this long and are renewed well before.
ENGINE_TOKEN_TTL = 3600
_RENEW_BEFORE = ENGINE_TOKEN_TTL / 2
STREAM_ROOT = "/v1/stream/"


def namespace_of_url(namespace_url: str) -> str:
    """``http://h/v1/stream/workflows`` -> ``workflows`` (the ``ns`` of a token)."""
    path = urlsplit(namespace_url).path
    _, marker, rest = path.partition(STREAM_ROOT)
    return rest.strip("/") if marker and rest.strip("/") else "*"


class Credential:
    """A bearer token: fixed, or minted from keys for ``namespace`` and renewed."""

    def __init__(
        self, *, token: str | None = None, keys: KeySet | None = None, namespace: str = "*"
    ) -> None:
        if (token is None) == (keys is None):
            raise ValueError("give a token or keys")
        self._token = token
        self._keys = keys
        self.namespace = namespace
        self._expires = 0.0
        self._kid: str | None = None

    @classmethod
    def engine(cls, keys: KeySet, namespace: str) -> Credential:
        return cls(keys=keys, namespace=namespace)

    def token(self) -> str:
        """The token to send now: renewed at half its life, and at once when the key
        set's signing key changed (a rotation, or the old key retired)."""
        keys = self._keys
        if keys is not None and (
            time.time() > self._expires - _RENEW_BEFORE or keys.signing_key.kid != self._kid
        ):
            self._token = mint_engine_token(keys, namespace=self.namespace, ttl=ENGINE_TOKEN_TTL)
            self._expires = time.time() + ENGINE_TOKEN_TTL
            self._kid = keys.signing_key.kid
        assert self._token is not None
        return self._token

    def header(self) -> str:
        return f"Bearer {self.token()}"

    def auth(self) -> BearerAuth:
        return BearerAuth(self)


class BearerAuth(httpx.Auth):
    """httpx auth: the credential on every request that carries no other one."""

    def __init__(self, credential: Credential) -> None:
        self.credential = credential

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "authorization" not in request.headers:
            request.headers["Authorization"] = self.credential.header()
        yield request


def resolve_credential(
    namespace_url: str, *, token: str | None = None, keys: str | os.PathLike[str] | None = None
) -> Credential | None:
    """The credential a command presents: ``token``, else ``$DWF_TOKEN``; else the key
    file ``keys``, else ``$DWF_KEYS``, else ``.dwf/keys.json`` when it exists; else
    None (a server without authentication)."""
    token = token or os.environ.get("DWF_TOKEN") or None
    if token:
        return Credential(token=token)
    key_path = keys or os.environ.get("DWF_KEYS") or None
    if key_path is None and DEFAULT_KEY_FILE.exists():
        key_path = DEFAULT_KEY_FILE
    if key_path is None:
        return None
    return Credential.engine(KeySet.load(key_path), namespace_of_url(namespace_url))
