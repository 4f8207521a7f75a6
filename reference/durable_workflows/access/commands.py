"""``dwf token ...`` and ``dwf keys ...``: mint credentials and rotate signing keys.

The key file is ``--keys FILE``, else ``$DWF_KEYS``, else ``.dwf/keys.json`` (where
``make run`` keeps it). Tokens are printed on stdout alone, so a script can capture
them; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .credentials import DEFAULT_KEY_FILE
from .keys import KeyFileError, KeySet
from .tokens import MAX_CLIENT_TTL, RIGHTS, mint_client_token, mint_engine_token

__all__ = ["add_commands"]


def _key_path(args: argparse.Namespace) -> Path:
    return Path(args.keys or os.environ.get("DWF_KEYS") or DEFAULT_KEY_FILE)


def _load(args: argparse.Namespace) -> KeySet:
    return KeySet.load(_key_path(args))


def _rights(text: str) -> list[str]:
    rights = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in rights if r not in RIGHTS]
    if unknown or not rights:
        raise argparse.ArgumentTypeError(f"rights are a comma list of {', '.join(RIGHTS)}")
    return rights


def _cmd_token_client(args: argparse.Namespace) -> int:
    token = mint_client_token(
        _load(args),
        namespace=args.namespace,
        runs=args.run,
        run_prefix=args.run_prefix,
        rights=args.rights,
        workflows=args.workflow or None,
        ttl=args.ttl,
        subject=args.subject,
    )
    print(token)
    return 0


def _cmd_token_engine(args: argparse.Namespace) -> int:
    print(mint_engine_token(_load(args), namespace=args.namespace, ttl=args.ttl))
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _load(args)
    for i, key in enumerate(keys.keys):
        role = "signs and verifies" if i == 0 and key.private is not None else "verifies"
        print(f"{key.kid}\tcreated {key.created}\t{role}")
    return 0


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    keys = KeySet.load_or_create(_key_path(args))
    key = keys.rotate()
    keys.save()
    print(
        f"new signing key {key.kid}; {len(keys.keys) - 1} older key(s) still verify",
        file=sys.stderr,
    )
    print(key.kid)
    return 0


def _cmd_keys_retire(args: argparse.Namespace) -> int:
    keys = _load(args)
    keys.retire(args.kid)
    keys.save()
    print(f"retired {args.kid}: tokens it signed are refused from now on", file=sys.stderr)
    return 0


def _cmd_keys_public(args: argparse.Namespace) -> int:
    print(json.dumps(_load(args).public_jwks(), indent=2))
    return 0


def _run(handler: object) -> object:
    def run(args: argparse.Namespace) -> int:
        try:
            result: int = handler(args)  # type: ignore[operator]
        except (KeyFileError, ValueError) as exc:
            print(f"dwf: {exc}", file=sys.stderr)
            return 2
        return result

    return run


def _keys_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keys",
        metavar="FILE",
        default=None,
        help="key file (default: $DWF_KEYS or .dwf/keys.json)",
    )


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``token`` and ``keys`` to the ``dwf`` command parser."""
    token = commands.add_parser("token", help="mint a client or engine token")
    tokens = token.add_subparsers(dest="token_command", required=True, metavar="KIND")
    client = tokens.add_parser(
        "client", help="a short-lived token for a browser or service: named runs and rights"
    )
    _keys_option(client)
    client.add_argument("--namespace", default="workflows", help="namespace (default: workflows)")
    client.add_argument(
        "--run", action="append", default=[], metavar="ID", help="a run it may use (repeatable)"
    )
    client.add_argument(
        "--run-prefix", default=None, metavar="PREFIX", help="every run id with this prefix"
    )
    client.add_argument(
        "--rights",
        type=_rights,
        default=["read", "submit", "cancel"],
        metavar="LIST",
        help=f"comma list of {', '.join(RIGHTS)} (default: read,submit,cancel)",
    )
    client.add_argument(
        "--workflow",
        action="append",
        default=[],
        metavar="NAME",
        help="with start: a workflow it may start (repeatable; default: any)",
    )
    client.add_argument(
        "--ttl",
        type=float,
        default=900,
        metavar="SECONDS",
        help=f"lifetime in seconds (default 900, at most {MAX_CLIENT_TTL})",
    )
    client.add_argument("--subject", default=None, help="who holds it (the JWT sub claim)")
    client.set_defaults(handler=_run(_cmd_token_client))
    engine = tokens.add_parser("engine", help="an engine credential: everything in a namespace")
    _keys_option(engine)
    engine.add_argument("--namespace", default="workflows", help="namespace, or * for every one")
    engine.add_argument(
        "--ttl", type=float, default=86_400, metavar="SECONDS", help="lifetime (default one day)"
    )
    engine.set_defaults(handler=_run(_cmd_token_engine))

    keys = commands.add_parser("keys", help="list, rotate and retire the signing keys")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    for name, handler, text in (
        ("list", _cmd_keys_list, "list the keys, newest first"),
        ("rotate", _cmd_keys_rotate, "add a new signing key; the old ones still verify"),
        ("public", _cmd_keys_public, "print the public keys (JWKS) for a server elsewhere"),
    ):
        action = actions.add_parser(name, help=text)
        _keys_option(action)
        action.set_defaults(handler=_run(handler))
    retire = actions.add_parser("retire", help="remove a key: tokens it signed are refused")
    retire.add_argument("kid", metavar="KID", help="the key id (see dwf keys list)")
    _keys_option(retire)
    retire.set_defaults(handler=_run(_cmd_keys_retire))
