"""Who may write and read which stream (security.md), and the credentials that say so.

- :mod:`.keys`: the deployment's Ed25519 signing keys, one JWKS file, rotation.
- :mod:`.tokens`: client and engine tokens (JWT, EdDSA): minting and verifying.
- :mod:`.policy`: the permission rules as a pure function of a grant and a request.
- :mod:`.guard`: the stream server's gate, built on the two above.
- :mod:`.credentials`: what the engine and the CLI present to the server.
"""

from __future__ import annotations

from .credentials import BearerAuth, Credential, resolve_credential
from .keys import KeyFileError, KeySet
from .policy import Refusal, StreamRequest, authorize
from .tokens import RIGHTS, Grant, TokenError, Verifier, mint_client_token, mint_engine_token

__all__ = [
    "RIGHTS",
    "BearerAuth",
    "Credential",
    "Grant",
    "KeyFileError",
    "KeySet",
    "Refusal",
    "StreamRequest",
    "TokenError",
    "Verifier",
    "authorize",
    "mint_client_token",
    "mint_engine_token",
    "resolve_credential",
]
