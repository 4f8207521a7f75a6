"""The core is sans-IO: it imports no I/O module and calls no clock or global random source.

Every module of ``durable_workflows.core`` is parsed and its AST scanned for forbidden
imports (sockets, asyncio, HTTP clients, servers, storage, ``time``, ``os``...) and for
forbidden names (``datetime.now``, ``random.random``, ``uuid4``, ``os.environ``,
``open``...). Time, randomness, ids and the inbox are passed in by the shells.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import durable_workflows.core

CORE_DIR = Path(durable_workflows.core.__file__).parent

#: Top-level modules the core must not import (brief-runtime.md, design.md section 3).
FORBIDDEN_MODULES = frozenset(
    {
        "asyncio",
        "concurrent",
        "ftplib",
        "http",
        "httpx",
        "io",
        "multiprocessing",
        "os",
        "pathlib",
        "requests",
        "secrets",
        "select",
        "selectors",
        "shutil",
        "signal",
        "socket",
        "socketserver",
        "sqlite3",
        "ssl",
        "starlette",
        "subprocess",
        "sys",
        "tempfile",
        "threading",
        "time",
        "urllib",
        "uuid",
        "uvicorn",
        "zoneinfo",
    }
)

#: The only package module outside the core that it may import: the packaged schemas, read
#: offline (SEC-005 inbox checks, VER-006 history checks). The streams client, the shells,
#: the CLI and anything new stay out unless added here deliberately.
ALLOWED_PACKAGE_MODULES = frozenset({"schemas", "core"})

#: Attribute calls that read a clock or a global random source.
FORBIDDEN_ATTRIBUTES = frozenset(
    {
        "now",
        "utcnow",
        "today",
        "time",
        "monotonic",
        "perf_counter",
        "urandom",
        "uuid1",
        "uuid4",
        "environ",
        "getenv",
        "fromtimestamp",
        "utcfromtimestamp",
    }
)

#: Module-level functions of ``random`` (its hidden global instance); ``random.Random`` is fine.
RANDOM_GLOBALS = frozenset(
    {
        "random",
        "randint",
        "randrange",
        "choice",
        "choices",
        "shuffle",
        "sample",
        "uniform",
        "getrandbits",
        "gauss",
        "seed",
        "randbytes",
        "SystemRandom",
    }
)

#: Builtins that do I/O.
FORBIDDEN_BUILTINS = frozenset(
    {"open", "input", "print", "exec", "eval", "__import__", "breakpoint"}
)


def violations(source: str, filename: str = "<module>") -> list[str]:
    """Every boundary violation in ``source``, as readable lines."""
    tree = ast.parse(source, filename)
    found: list[str] = []

    def where(node: ast.AST) -> str:
        return f"{filename}:{getattr(node, 'lineno', '?')}"

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    found.append(f"{where(node)}: import {alias.name}")
                if (
                    alias.name.startswith("durable_workflows.")
                    and alias.name.split(".")[1] not in ALLOWED_PACKAGE_MODULES
                ):
                    found.append(f"{where(node)}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{where(node)}: from {module} import ...")
            parts = module.split(".")
            if node.level >= 2 and module and parts[0] not in ALLOWED_PACKAGE_MODULES:
                found.append(f"{where(node)}: from {'.' * node.level}{module} import ...")
            if node.level == 2 and not module:
                for alias in node.names:
                    if alias.name not in ALLOWED_PACKAGE_MODULES:
                        found.append(f"{where(node)}: from .. import {alias.name}")
            outside_core = node.level == 0 and module.startswith("durable_workflows.")
            if outside_core and parts[1] not in ALLOWED_PACKAGE_MODULES:
                found.append(f"{where(node)}: from {module} import ...")
            if node.level == 0 and module == "random":
                for alias in node.names:
                    if alias.name in RANDOM_GLOBALS:
                        found.append(f"{where(node)}: from random import {alias.name}")
        elif isinstance(node, ast.Attribute):
            if node.attr in FORBIDDEN_ATTRIBUTES:
                found.append(f"{where(node)}: .{node.attr}")
            if (
                isinstance(node.value, ast.Name)
                and node.value.id == "random"
                and node.attr in RANDOM_GLOBALS
            ):
                found.append(f"{where(node)}: random.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_BUILTINS:
            found.append(f"{where(node)}: {node.id}")
    return found


def core_modules() -> list[Path]:
    return sorted(CORE_DIR.glob("*.py"))


def test_core_has_modules() -> None:
    names = {p.name for p in core_modules()}
    assert {
        "__init__.py",
        "api.py",
        "activation.py",
        "scheduler.py",
        "history.py",
        "messages.py",
    } <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_does_no_io(path: Path) -> None:
    """No forbidden import, clock read, global random draw or I/O builtin in the core."""
    assert violations(path.read_text(encoding="utf-8"), path.name) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import time",
        "import time as t",
        "from time import monotonic",
        "import asyncio",
        "import socket",
        "import httpx",
        "from os import environ",
        "import os\nx = os.environ['A']",
        "from datetime import datetime\nx = datetime.now()",
        "import datetime\nx = datetime.datetime.utcnow()",
        "import random\nx = random.random()",
        "from random import choice",
        "import uuid\nx = uuid.uuid4()",
        "from ..streams import client",
        "from .. import engine",
        "from ..validate import run_validate",
        "from .._event_rules import check",
        "from durable_workflows.streams.client import Client",
        "import durable_workflows.engine.worker",
        "open('x')",
        "import sqlite3",
        "import starlette.applications",
    ],
)
def test_scanner_catches(snippet: str) -> None:
    """The scanner flags each kind of violation (so the test above cannot pass vacuously)."""
    assert violations(snippet), snippet


def test_scanner_allows_what_the_core_needs() -> None:
    ok = (
        "import random\n"
        "from datetime import UTC, datetime, timedelta\n"
        "def f(rng: random.Random) -> float:\n"
        "    return rng.random()\n"
    )
    assert violations(ok) == []


def test_adding_import_time_to_the_core_fails_the_boundary(tmp_path: Path) -> None:
    """Prove it: a temporary module with ``import time`` placed among the core's files fails."""
    bad = CORE_DIR / "_boundary_probe_tmp.py"
    bad.write_text('"""probe"""\nimport time\n\nSTAMP = time.time()\n', encoding="utf-8")
    try:
        assert bad in core_modules()
        problems = violations(bad.read_text(encoding="utf-8"), bad.name)
        assert any("import time" in p for p in problems)
        assert any(".time" in p for p in problems)
    finally:
        bad.unlink()
    assert bad not in core_modules()


def test_the_product_app_and_the_access_policy_import_no_test_interface() -> None:
    """``dwf serve`` mounts the conformance adapter only when asked (SEC-017): the app,
    the stream server and the permission rules never import it. The policy is sans-IO."""
    import subprocess
    import sys

    code = (
        "import sys, durable_workflows.engine.app, durable_workflows.access.policy;"
        "print(sorted(m for m in sys.modules if m.startswith('durable_workflows.adapter')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    policy = Path(durable_workflows.core.__file__).parent.parent / "access" / "policy.py"
    imported = {
        (node.module or "").split(".")[0]
        for node in ast.walk(ast.parse(policy.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level == 0
    } | {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(policy.read_text()))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not imported & FORBIDDEN_MODULES - {"json"}, imported
