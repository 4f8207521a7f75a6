"""Client and engine tokens: JWTs signed with EdDSA (Ed25519) through PyJWT.

A token is a standard JWT so that any backend language can mint one with a library
it already trusts; the signature algorithm is pinned on verification, so
``alg: none`` and algorithm-confusion tokens are refused by construction.

Claims::

    {"aud": "durable-workflows", "iat": ..., "exp": ..., "sub": "user-42",
     "dwf": {"role": "client", "ns": "workflows", "runs": ["exp-1"],
             "run_prefix": null, "rights": ["read", "submit", "cancel"],
             "workflows": null}}

``role`` ``engine`` may do everything in its namespace (``ns`` ``*``: in every one);
``client`` only what :mod:`.policy` lets its rights do, on the runs it names.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from .keys import KeySet

__all__ = [
    "AUDIENCE",
    "RIGHTS",
    "Grant",
    "TokenError",
    "Verifier",
    "mint_client_token",
    "mint_engine_token",
]

AUDIENCE = "durable-workflows"
Right = Literal["read", "submit", "cancel", "start", "list"]
RIGHTS: tuple[Right, ...] = ("read", "submit", "cancel", "start", "list")
ALGORITHM = "EdDSA"
#: Clock skew tolerated between the minting backend and the server.
LEEWAY_SECONDS = 30
#: Longest lifetime a client token may be minted with: a day.
MAX_CLIENT_TTL = 86_400
#: EVT-014's run id pattern (the engine's own copy is in engine.namespace, which
#: this module must not import: the stream server imports it).
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class TokenError(ValueError):
    """A token that proves nothing. ``code`` names why (for the 401 body)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Grant:
    """What one credential may do: the verified claims of a token."""

    role: Literal["client", "engine"]
    namespace: str
    runs: frozenset[str] = frozenset()
    run_prefix: str | None = None
    rights: frozenset[str] = frozenset()
    workflows: frozenset[str] | None = None
    expires_at: float | None = None
    subject: str | None = None

    @property
    def is_engine(self) -> bool:
        return self.role == "engine"

    def covers_namespace(self, namespace: str) -> bool:
        return self.namespace in ("*", namespace)

    def covers_run(self, run_id: str) -> bool:
        if self.is_engine:
            return True
        if run_id in self.runs:
            return True
        return self.run_prefix is not None and run_id.startswith(self.run_prefix)

    def may(self, right: str) -> bool:
        return self.is_engine or right in self.rights

    def may_start(self, workflow: object) -> bool:
        if self.is_engine:
            return True
        return self.workflows is None or workflow in self.workflows


# ---------------------------------------------------------------------- minting


def _mint(keys: KeySet, claims: dict[str, Any], ttl: float, now: float | None) -> str:
    issued = int(time.time() if now is None else now)
    key = keys.signing_key
    assert key.private is not None  # signing_key only returns keys we hold
    payload = {
        "aud": AUDIENCE,
        "iat": issued,
        "exp": issued + int(ttl),
        "jti": secrets.token_hex(8),
        **claims,
    }
    return jwt.encode(payload, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})


def mint_client_token(
    keys: KeySet,
    *,
    namespace: str = "workflows",
    runs: Iterable[str] = (),
    run_prefix: str | None = None,
    rights: Sequence[str] = ("read", "submit", "cancel"),
    workflows: Iterable[str] | None = None,
    ttl: float = 900,
    subject: str | None = None,
    now: float | None = None,
) -> str:
    """A short-lived token for one browser or service: the runs it names (or every
    run id with ``run_prefix``), and the rights it has on them.

    ``start`` lets it append ``run-requested`` to the index, for run ids in its scope
    and, when ``workflows`` is given, only for those workflows. ``list`` lets it read the
    run-status stream, every run's row (SEC-037); a token with only ``list`` names no runs.
    """
    run_list = sorted(set(runs))
    bad = [r for r in run_list if not RUN_ID.fullmatch(r)]
    if bad:
        raise ValueError(f"not run ids: {bad}")
    if not run_list and run_prefix is None and set(rights) != {"list"}:
        raise ValueError("name the runs (runs=...) or a run id prefix (run_prefix=...)")
    if run_prefix is not None and not run_prefix:
        raise ValueError("an empty run_prefix would name every run of the namespace")
    unknown = sorted(set(rights) - set(RIGHTS))
    if unknown or not rights:
        raise ValueError(f"rights are a non-empty subset of {list(RIGHTS)}, not {list(rights)}")
    if not 0 < ttl <= MAX_CLIENT_TTL:
        raise ValueError(f"a client token lives 1 s to {MAX_CLIENT_TTL} s, not {ttl}")
    _check_namespace(namespace, allow_all=False)
    claims: dict[str, Any] = {
        "dwf": {
            "role": "client",
            "ns": namespace,
            "runs": run_list,
            "run_prefix": run_prefix,
            "rights": sorted(set(rights), key=RIGHTS.index),
            "workflows": None if workflows is None else sorted(set(workflows)),
        }
    }
    if subject is not None:
        claims["sub"] = subject
    return _mint(keys, claims, ttl, now)


def mint_engine_token(
    keys: KeySet, *, namespace: str = "workflows", ttl: float = 3600, now: float | None = None
) -> str:
    """The engine's credential: everything in ``namespace`` (``*``: every namespace)."""
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    _check_namespace(namespace, allow_all=True)
    return _mint(keys, {"dwf": {"role": "engine", "ns": namespace}}, ttl, now)


def _check_namespace(namespace: str, *, allow_all: bool) -> None:
    if namespace == "*" and allow_all:
        return
    parts = namespace.split("/")
    if not namespace or any(p in ("", ".", "..", "__ds") for p in parts) or "*" in namespace:
        raise ValueError(f"{namespace!r} is not a namespace path")


# ----------------------------------------------------------------- verification


class Verifier:
    """Verifies bearer tokens against a key set, with a small cache: the engine sends
    the same token on every request, and an Ed25519 check costs far more than a
    dictionary look-up. A cached grant is still checked for expiry on every use."""

    def __init__(
        self, keys: KeySet, clock: Callable[[], float] = time.time, cache_size: int = 4096
    ) -> None:
        self.keys = keys
        self._clock = clock
        self._cache: OrderedDict[str, Grant] = OrderedDict()
        self._cache_size = cache_size
        self._checked_at = 0.0

    def verify(self, token: str) -> Grant:
        now = self._clock()
        if now - self._checked_at > 1.0:  # a rotation by another process
            self._checked_at = now
            if self.keys.reload_if_changed():
                self._cache.clear()
        grant = self._cache.get(token)
        if grant is None:
            grant = self._decode(token, now)
            self._cache[token] = grant
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        elif grant.expires_at is not None and now > grant.expires_at + LEEWAY_SECONDS:
            del self._cache[token]
            raise TokenError("token-expired", "the token has expired")
        return grant

    def _decode(self, token: str, now: float) -> Grant:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenError("token-invalid", "the credential is not a JWT") from exc
        if header.get("alg") != ALGORITHM:
            raise TokenError("token-invalid", f"tokens are signed with {ALGORITHM} only")
        kid = header.get("kid")
        key = self.keys.find(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("token-invalid", f"the token's key {kid!r} is not known here")
        try:
            claims = jwt.decode(
                token,
                key.public,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token-expired", "the token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError("token-invalid", f"the token is not valid: {exc}") from exc
        del now  # expiry was checked by PyJWT against the same wall clock
        return _grant(claims)


def _grant(claims: dict[str, Any]) -> Grant:
    scope = claims.get("dwf")
    if not isinstance(scope, dict):
        raise TokenError("token-invalid", "the token has no dwf claim")
    role, namespace = scope.get("role"), scope.get("ns")
    if role not in ("client", "engine") or not isinstance(namespace, str) or not namespace:
        raise TokenError("token-invalid", "the dwf claim needs role client|engine and ns")
    exp, sub = claims.get("exp"), claims.get("sub")
    expires_at = float(exp) if isinstance(exp, int | float) else None
    subject = sub if isinstance(sub, str) else None
    if role == "engine":
        return Grant("engine", namespace, expires_at=expires_at, subject=subject)
    runs, prefix = scope.get("runs") or [], scope.get("run_prefix")
    rights, workflows = scope.get("rights") or [], scope.get("workflows")
    if not _strings(runs) or not _strings(rights) or not set(rights) <= set(RIGHTS):
        raise TokenError("token-invalid", "runs and rights must be lists of strings")
    if prefix is not None and (not isinstance(prefix, str) or not prefix):
        raise TokenError("token-invalid", "run_prefix must be a non-empty string")
    issued = claims.get("iat")
    if expires_at is None or not isinstance(issued, int | float):
        raise TokenError("token-invalid", "a client token needs iat and exp")
    if expires_at - issued > MAX_CLIENT_TTL:
        raise TokenError("token-invalid", f"a client token lives at most {MAX_CLIENT_TTL} s")
    if workflows is not None and not _strings(workflows):
        raise TokenError("token-invalid", "workflows must be a list of strings")
    return Grant(
        "client",
        namespace,
        runs=frozenset(runs),
        run_prefix=prefix,
        rights=frozenset(rights),
        workflows=None if workflows is None else frozenset(workflows),
        expires_at=expires_at,
        subject=subject,
    )


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
