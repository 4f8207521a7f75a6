"""ADAPT-007 for the reference adapter: the scripted workflow (``adapter/interpreter.py``)
carries out each operation with the primitive application code would use, through the
public workflow API (``durable_workflows.core``), and has no way to write a stream."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import durable_workflows.core as core
from durable_workflows.adapter import interpreter

SOURCE = Path(interpreter.__file__)

#: Operation -> the Context primitive application code would use for it.
PRIMITIVES = {
    "step": "step",
    "sleep": "sleep",
    "input": "request_input",
    "record time": "now",
    "record random": "random",
    "record uuid": "uuid",
    "patch": "patched",
    "parallel": "gather",
}

#: Modules the workflow may import besides the standard library and the core API.
LOCAL_MODULES = {"faults"}  # fault points and the body log, no stream access
FORBIDDEN = {"httpx", "durable_workflows.streams", "durable_workflows.engine"}


def _tree() -> ast.Module:
    return ast.parse(SOURCE.read_text(encoding="utf-8"), filename=str(SOURCE))


@pytest.mark.req("ADAPT-007")
def test_the_scripted_workflow_uses_only_the_public_workflow_api() -> None:
    for node in ast.walk(_tree()):
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not any(alias.name.startswith(f) for f in FORBIDDEN), alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 2:  # from ..X import ...
                assert module == "core", f"the workflow imports from ..{module}"
                for alias in node.names:
                    assert alias.name in core.__all__, f"{alias.name} is not public API"
            elif node.level == 1:
                assert module in LOCAL_MODULES, f"the workflow imports .{module}"
            else:
                assert not any(module.startswith(f) for f in FORBIDDEN), module


@pytest.mark.req("ADAPT-007")
def test_each_operation_is_carried_out_with_its_primitive() -> None:
    called = {
        node.func.attr
        for node in ast.walk(_tree())
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "ctx"
    }
    missing = {op: p for op, p in PRIMITIVES.items() if p not in called}
    assert not missing, f"operations not carried out by their Context primitive: {missing}"
    assert all(hasattr(core.Context, p) for p in PRIMITIVES.values())
