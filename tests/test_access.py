"""Tokens, keys and the permission rules, without a server (sans-IO)."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import jwt
import pytest

from durable_workflows.access import (
    Grant,
    KeySet,
    Refusal,
    StreamRequest,
    TokenError,
    Verifier,
    authorize,
    mint_client_token,
    mint_engine_token,
)
from durable_workflows.access.keys import KeyFileError
from durable_workflows.cli import main


def submission(key: str = "s-1") -> dict[str, object]:
    return {
        "type": "submission",
        "key": key,
        "value": {"submission_id": key, "request": "approval", "value": True},
        "headers": {"operation": "insert"},
    }


def cancel(key: str = "c-1") -> dict[str, object]:
    return {
        "type": "cancel",
        "key": key,
        "value": {"cancel_id": key, "reason": None},
        "headers": {"operation": "insert"},
    }


def start(run_id: str, workflow: str = "wf") -> dict[str, object]:
    return {
        "type": "start",
        "key": run_id,
        "value": {"run_id": run_id, "workflow": workflow, "input": None},
        "headers": {"operation": "insert"},
    }


def body(*messages: object) -> bytes:
    return json.dumps(list(messages)).encode()


# --------------------------------------------------------------------- tokens


@pytest.mark.req("SEC-025", "SEC-026")
def test_a_client_token_carries_its_scope_and_expiry() -> None:
    keys = KeySet.generate()
    token = mint_client_token(
        keys, runs=["r-1"], rights=["read", "start"], workflows=["wf"], ttl=60, subject="ann"
    )
    grant = Verifier(keys).verify(token)
    assert grant == Grant(
        "client",
        "workflows",
        runs=frozenset({"r-1"}),
        rights=frozenset({"read", "start"}),
        workflows=frozenset({"wf"}),
        expires_at=grant.expires_at,
        subject="ann",
    )
    assert grant.expires_at is not None and abs(grant.expires_at - (time.time() + 60)) < 5


def test_tampered_expired_unsigned_and_foreign_tokens_are_refused() -> None:
    keys = KeySet.generate()
    verifier = Verifier(keys)
    token = mint_client_token(keys, runs=["r-1"])
    head, payload, signature = token.split(".")
    # A payload that names more runs, with the old signature.
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["dwf"]["run_prefix"] = ""
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    unsigned = jwt.encode(claims, None, algorithm="none")
    expired = mint_client_token(keys, runs=["r-1"], ttl=10, now=time.time() - 3600)
    stranger = mint_client_token(KeySet.generate(), runs=["r-1"])
    cases = {
        "forged payload": (f"{head}.{forged}.{signature}", "token-invalid"),
        "alg none": (unsigned, "token-invalid"),
        "expired": (expired, "token-expired"),
        "another deployment's key": (stranger, "token-invalid"),
        "not a JWT": ("not-a-token", "token-invalid"),
    }
    for what, (bad, code) in cases.items():
        with pytest.raises(TokenError) as caught:
            verifier.verify(bad)
        assert caught.value.code == code, what


def test_an_hmac_token_keyed_with_the_public_key_is_refused() -> None:
    keys = KeySet.generate()
    raw = keys.public_jwks()["keys"][0]["x"].encode()
    claims = {"aud": "durable-workflows", "iat": int(time.time()), "exp": int(time.time()) + 60}
    claims["dwf"] = {"role": "engine", "ns": "*"}  # type: ignore[assignment]
    token = jwt.encode(claims, raw, algorithm="HS256", headers={"kid": keys.signing_key.kid})
    with pytest.raises(TokenError):
        Verifier(keys).verify(token)


def test_a_cached_token_still_expires() -> None:
    keys = KeySet.generate()
    now = [time.time()]
    verifier = Verifier(keys, clock=lambda: now[0])
    token = mint_client_token(keys, runs=["r-1"], ttl=60, now=now[0])
    verifier.verify(token)  # cached from here on
    now[0] += 3600
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    assert caught.value.code == "token-expired"


def test_minting_refuses_tokens_that_name_nothing_or_too_much() -> None:
    keys = KeySet.generate()
    with pytest.raises(ValueError):
        mint_client_token(keys)  # no runs, no prefix
    with pytest.raises(ValueError):
        mint_client_token(keys, runs=["../x"])
    with pytest.raises(ValueError):
        mint_client_token(keys, runs=["r"], rights=["write-history"])
    with pytest.raises(ValueError):
        mint_client_token(keys, runs=["r"], ttl=10 * 86_400)
    with pytest.raises(ValueError):
        mint_client_token(keys, runs=["r"], namespace="*")
    with pytest.raises(ValueError):
        mint_client_token(keys, run_prefix="")  # would name every run


def test_signed_tokens_that_name_every_run_or_live_for_weeks_are_refused() -> None:
    keys = KeySet.generate()
    key = keys.signing_key
    now = int(time.time())

    def signed(scope: dict[str, object], ttl: int) -> str:
        claims = {"aud": "durable-workflows", "iat": now, "exp": now + ttl, "dwf": scope}
        return jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": key.kid})

    client = {"role": "client", "ns": "ns", "runs": [], "rights": ["read"]}
    for token in (
        signed({**client, "run_prefix": ""}, 60),
        signed({**client, "runs": ["r"]}, 30 * 86_400),
    ):
        with pytest.raises(TokenError):
            Verifier(keys).verify(token)


def test_the_engine_credential_follows_a_rotation_at_once() -> None:
    from durable_workflows.access import Credential

    keys = KeySet.generate()
    credential = Credential.engine(keys, "ns")
    first = credential.token()
    assert credential.token() == first  # reused while it is young
    old = keys.signing_key.kid
    keys.rotate()
    keys.retire(old)
    renewed = credential.token()
    assert renewed != first and Verifier(keys).verify(renewed).is_engine


@pytest.mark.req("SEC-025")
def test_rotation_keeps_two_keys_valid_until_the_old_one_is_retired(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys = KeySet.load_or_create(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    server = Verifier(KeySet.load(path))  # the server's own copy of the file
    old_token = mint_client_token(keys, runs=["r"])
    old_kid = keys.signing_key.kid
    # Rotate: the backend (another process) adds a key and signs with it.
    assert main(["keys", "rotate", "--keys", str(path)]) == 0
    backend = KeySet.load(path)
    new_token = mint_client_token(backend, runs=["r"])
    assert backend.signing_key.kid != old_kid
    os.utime(path, (time.time() + 5, time.time() + 5))  # a new mtime, whatever the clock
    server._checked_at = 0.0  # re-read now rather than within a second
    assert server.verify(new_token).runs == {"r"}
    assert server.verify(old_token).runs == {"r"}  # both valid at once
    # Retire the old key: its tokens are refused, the new one's are not.
    assert main(["keys", "retire", old_kid, "--keys", str(path)]) == 0
    os.utime(path, (time.time() + 10, time.time() + 10))
    server._checked_at = 0.0
    with pytest.raises(TokenError):
        server.verify(old_token)
    assert server.verify(new_token).runs == {"r"}
    with pytest.raises(KeyFileError):
        KeySet.load(path).retire(backend.signing_key.kid)  # never the last key


def test_a_server_given_only_public_keys_verifies_but_cannot_mint(tmp_path: Path) -> None:
    keys = KeySet.generate()
    public = tmp_path / "public.json"
    public.write_text(json.dumps(keys.public_jwks()))
    verify_only = KeySet.load(public)
    assert Verifier(verify_only).verify(mint_engine_token(keys)).is_engine
    with pytest.raises(KeyFileError):
        mint_engine_token(verify_only)


def test_dwf_token_prints_a_token_the_keys_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.json"
    KeySet.load_or_create(path)
    argv = ["token", "client", "--keys", str(path), "--run", "r-9", "--rights", "read,cancel"]
    assert main(argv) == 0
    grant = Verifier(KeySet.load(path)).verify(capsys.readouterr().out.strip())
    assert grant.runs == {"r-9"} and grant.rights == {"read", "cancel"}
    assert main(["token", "engine", "--keys", str(path), "--namespace", "tenant-a"]) == 0
    assert (
        Verifier(KeySet.load(path)).verify(capsys.readouterr().out.strip()).namespace == "tenant-a"
    )
    assert main(["token", "client", "--keys", str(tmp_path / "missing.json"), "--run", "r"]) == 2


# --------------------------------------------------------------------- policy


CLIENT = Grant("client", "ns", runs=frozenset({"r-1"}), rights=frozenset({"read", "submit"}))
ENGINE = Grant("engine", "ns")


def refused(grant: Grant | None, request: StreamRequest) -> int:
    try:
        authorize(grant, request)
    except Refusal as refusal:
        return refusal.status
    return 0


@pytest.mark.req("SEC-001", "SEC-003", "SEC-019", "SEC-020", "PRIV-005")
@pytest.mark.parametrize(
    ("grant", "request_", "status"),
    [
        (None, StreamRequest("GET", "ns/runs/r-1/history"), 401),
        (CLIENT, StreamRequest("GET", "ns/runs/r-1/history"), 0),
        (CLIENT, StreamRequest("HEAD", "ns/runs/r-1/inbox"), 0),
        (CLIENT, StreamRequest("GET", "ns/runs/r-2/history"), 403),
        (CLIENT, StreamRequest("GET", "other/runs/r-1/history"), 403),
        (CLIENT, StreamRequest("GET", "ns/index"), 403),
        (CLIENT, StreamRequest("GET", "ns/wake"), 403),
        (CLIENT, StreamRequest("POST", "ns/runs/r-1/history", body=body(submission())), 403),
        (CLIENT, StreamRequest("POST", "ns/runs/r-1/inbox", body=body(submission())), 0),
        (CLIENT, StreamRequest("POST", "ns/runs/r-1/inbox", body=body(cancel())), 403),
        (CLIENT, StreamRequest("POST", "ns/runs/r-1/inbox", closes=True), 403),
        (CLIENT, StreamRequest("POST", "ns/runs/r-1/inbox", True, False, body(submission())), 403),
        (CLIENT, StreamRequest("POST", "ns/runs/r-1/inbox", False, True, body(submission())), 403),
        (CLIENT, StreamRequest("PUT", "ns/runs/r-1/inbox"), 403),
        (CLIENT, StreamRequest("DELETE", "ns/runs/r-1/inbox"), 403),
        (CLIENT, StreamRequest("POST", "ns/index", body=body(start("r-1"))), 403),  # no start
        (CLIENT, StreamRequest("POST", "ns/runs/r-1/inbox", body=b"[1, 2]"), 403),
        (CLIENT, StreamRequest("POST", "ns/runs/r-1/inbox", body=b"{"), 400),
        (
            CLIENT,
            StreamRequest("POST", "ns/runs/r-1/inbox", body=body({"type": "submission"})),
            400,
        ),
        (CLIENT, StreamRequest("POST", "ns/runs/r-1/inbox", body=body(*[submission()] * 17)), 413),
        (ENGINE, StreamRequest("DELETE", "ns/runs/r-1/history"), 0),
        (ENGINE, StreamRequest("PUT", "ns/wake"), 0),
        (ENGINE, StreamRequest("PUT", "nsx/index"), 403),
        (ENGINE, StreamRequest("PUT", "other/index"), 403),
        (Grant("engine", "*"), StreamRequest("PUT", "other/index"), 0),
    ],
)
def test_the_permission_table(grant: Grant | None, request_: StreamRequest, status: int) -> None:
    assert refused(grant, request_) == status


def test_start_rights_follow_the_scope_and_the_workflows() -> None:
    starter = Grant(
        "client",
        "ns",
        run_prefix="u7-",
        rights=frozenset({"start"}),
        workflows=frozenset({"wf"}),
    )
    index = "ns/index"
    assert refused(starter, StreamRequest("POST", index, body=body(start("u7-1")))) == 0
    assert refused(starter, StreamRequest("POST", index, body=body(start("u8-1")))) == 403
    assert refused(starter, StreamRequest("POST", index, body=body(start("u7-2", "other")))) == 403
    assert refused(starter, StreamRequest("POST", index, body=body(submission()))) == 403


def test_anonymous_requests_get_only_what_the_operator_opened() -> None:
    from durable_workflows.access.guard import AccessGuard

    keys = KeySet.generate()
    closed = AccessGuard(keys)
    assert closed.grant(None) is None  # nothing: every request needs a credential
    public = Grant("client", "ns", run_prefix="demo-", rights=frozenset({"read"}))
    opened = AccessGuard(keys, anonymous=public)
    grant = opened.grant(None)
    assert refused(grant, StreamRequest("GET", "ns/runs/demo-1/history")) == 0
    assert refused(grant, StreamRequest("GET", "ns/runs/other/history")) == 403
    assert (
        refused(grant, StreamRequest("POST", "ns/runs/demo-1/inbox", body=body(submission())))
        == 403
    )
    with pytest.raises(Refusal) as caught:
        opened.grant("Basic dXNlcjpwYXNz")  # a credential that is not a bearer token
    assert caught.value.status == 401
