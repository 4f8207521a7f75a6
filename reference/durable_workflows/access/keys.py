"""The signing keys of a deployment: an Ed25519 JSON Web Key Set in one file.

The file holds private keys (``d``), newest first. The first key signs new tokens;
every key in the file verifies. Rotation is therefore: add a key (it signs from now
on), wait until every token the old key signed has expired, retire the old key. A
stream server elsewhere may be given only the public half (:meth:`KeySet.public_jwks`).

Ed25519 rather than a shared HMAC secret: whoever only verifies (the stream server)
never holds what mints, and the project already uses Ed25519 for webhook signatures.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

__all__ = ["KeyFileError", "KeySet", "SigningKey"]


class KeyFileError(ValueError):
    """A key file that cannot be used (unreadable, malformed, no key)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class SigningKey:
    """One key: its id, its public half, and its private half when we hold it."""

    kid: str
    public: Ed25519PublicKey
    private: Ed25519PrivateKey | None
    created: int

    @classmethod
    def generate(cls) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        kid = f"dwf-{time.strftime('%Y%m%d', time.gmtime())}-{secrets.token_hex(4)}"
        return cls(kid, private.public_key(), private, int(time.time()))

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> SigningKey:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            kid = jwk.get("kid")
            raise KeyFileError(f"key {kid!r} is not an Ed25519 key (kty OKP, crv Ed25519)")
        kid, x = jwk.get("kid"), jwk.get("x")
        if not isinstance(kid, str) or not kid or not isinstance(x, str):
            raise KeyFileError("every key needs a kid and an x")
        try:
            public = Ed25519PublicKey.from_public_bytes(_unb64(x))
            d = jwk.get("d")
            private = None if d is None else Ed25519PrivateKey.from_private_bytes(_unb64(d))
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"key {kid!r} is malformed: {exc}") from exc
        created = jwk.get("created")
        return cls(kid, public, private, created if isinstance(created, int) else 0)

    def jwk(self, *, private: bool) -> dict[str, Any]:
        raw = self.public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        jwk: dict[str, Any] = {
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": _b64(raw),
            "created": self.created,
        }
        if private and self.private is not None:
            jwk["d"] = _b64(
                self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            )
        return jwk


class KeySet:
    """The keys of one key file (or of memory), newest first."""

    def __init__(self, keys: list[SigningKey], path: Path | None = None) -> None:
        if not keys:
            raise KeyFileError("a key set needs at least one key")
        self.keys = list(keys)
        self.path = path
        self._mtime = self._stat()

    # ------------------------------------------------------------------ files

    @classmethod
    def generate(cls) -> KeySet:
        return cls([SigningKey.generate()])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeySet:
        path = Path(path)
        try:
            document = json.loads(path.read_text())
        except OSError as exc:
            raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise KeyFileError(f"the key file {path} is not JSON: {exc}") from exc
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not entries:
            raise KeyFileError(f"the key file {path} holds no keys (a JWKS: {{'keys': [...]}})")
        return cls([SigningKey.from_jwk(e) for e in entries if isinstance(e, dict)], path)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> KeySet:
        """The key file at ``path``; a new one with one fresh key when there is none."""
        path = Path(path)
        if path.exists():
            return cls.load(path)
        keys = cls.generate()
        keys.path = path
        keys.save()
        return keys

    def save(self) -> None:
        """Write the file atomically, readable by its owner only."""
        if self.path is None:
            raise KeyFileError("this key set has no file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"keys": [k.jwk(private=True) for k in self.keys]}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return None if self.path is None else self.path.stat().st_mtime
        except OSError:
            return None

    def reload_if_changed(self) -> bool:
        """Pick up a rotation made by another process; True when the keys changed.
        A file that became unreadable keeps the keys we have."""
        mtime = self._stat()
        if self.path is None or mtime is None or mtime == self._mtime:
            return False
        try:
            fresh = KeySet.load(self.path)
        except KeyFileError:
            return False
        self.keys, self._mtime = fresh.keys, mtime
        return True

    # ------------------------------------------------------------- rotation

    @property
    def signing_key(self) -> SigningKey:
        for key in self.keys:
            if key.private is not None:
                return key
        raise KeyFileError("this key set holds only public keys: it can verify, not mint")

    def find(self, kid: str) -> SigningKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    def rotate(self) -> SigningKey:
        """Add a new key in front (it signs from now on); the old ones still verify."""
        key = SigningKey.generate()
        self.keys.insert(0, key)
        return key

    def retire(self, kid: str) -> None:
        """Remove a key: tokens it signed are refused from now on."""
        remaining = [k for k in self.keys if k.kid != kid]
        if len(remaining) == len(self.keys):
            raise KeyFileError(f"no key {kid!r} in this key set")
        if not remaining:
            raise KeyFileError("cannot retire the last key")
        self.keys = remaining

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk(private=False) for k in self.keys]}
