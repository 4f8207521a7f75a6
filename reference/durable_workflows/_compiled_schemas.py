"""The protocol's schemas compiled to plain Python predicates: a fast yes/no per message.

Validating a message with ``jsonschema`` walks the schema at run time (``$ref`` lookups,
a validator object per subschema) and costs about half a millisecond; a 10,000-event
history spent seconds there. The schemas use a small keyword subset, so each one is
compiled once, on first use, into generated Python code with every ``$ref`` resolved up
front (through the same offline :func:`~.schemas.registry`) that answers only *valid or
not*, in a few microseconds. The code is generated from the packaged schema files
alone: their strings and numbers enter it through ``repr``, their patterns as
precompiled objects; nothing a message holds is ever part of it.

Each keyword is checked with ``jsonschema``'s own Draft 2020-12 semantics (its type
checker: an integer-valued float is an ``integer``, a bool is no number; its ``const``
and ``enum`` equality: ``1`` and ``True`` differ; ``pattern`` is ``re.search``;
``format`` is an annotation only). A schema that uses any other keyword does not compile
(:func:`compiled` returns None) and is always checked by ``jsonschema``. A predicate
that says *invalid* never produces the error: :func:`~.schemas.violations` does, so the
words a malformed message gets are those ``jsonschema`` gives. A test checks that both
agree on every example, golden history and generated mutation of them.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from referencing._core import Resolver

__all__ = ["Check", "compiled"]

Check = Callable[[Any], bool]

#: Keywords that only annotate (no effect on validity), as Draft 2020-12 treats them
#: without a format checker.
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "$comment",
        "title",
        "description",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",
    }
)


class _Unsupported(Exception):
    """A keyword (or keyword value) this compiler does not mirror exactly."""


def _always(_: Any) -> bool:
    return True


def _never(_: Any) -> bool:
    return False


def _is_number(x: Any) -> bool:
    t = type(x)
    if t is int or t is float:
        return True
    if x is None or t is str or t is bool or t is dict or t is list:
        return False  # the other JSON values, without the slow ABC check below
    return not isinstance(x, bool) and isinstance(x, numbers.Number)


def _is_integer(x: Any) -> bool:
    if type(x) is int:
        return True
    if isinstance(x, float):
        return x.is_integer()  # 1.0 is an integer (draft 6 and later)
    return isinstance(x, int) and not isinstance(x, bool)


def _literal(value: Any) -> str:
    """A Python expression for a scalar schema value (``repr`` round-trips these)."""
    if value is None or isinstance(value, bool | str) or type(value) in (int, float):
        if isinstance(value, float) and not math.isfinite(value):
            raise _Unsupported(f"value {value!r}")
        return repr(value)
    raise _Unsupported(f"value {value!r}")


def _equals(var: str, expected: Any) -> str:
    """``jsonschema``'s ``equal(var, expected)`` for a scalar ``expected``, as an expression."""
    if isinstance(expected, str):
        return f"{var} == {_literal(expected)}"  # a str compares by == with anything
    if expected is None:
        return f"{var} is None"
    if isinstance(expected, bool):
        return f"{var} is {expected!r}"
    return f"(_is_number({var}) and {var} == {_literal(expected)})"


_TYPE_TESTS = {
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "string": "isinstance({v}, str)",
    "boolean": "isinstance({v}, bool)",
    "null": "{v} is None",
    "number": "_is_number({v})",
    "integer": "(type({v}) is int or _is_integer({v}))",
}


class _Compiler:
    """Generates one function per schema node that is called rather than inlined (the
    root, ``oneOf`` branches, ``if`` tests, recursive ``$ref`` targets)."""

    def __init__(self, files: list[dict[str, Any]]) -> None:
        self._files = {id(contents) for contents in files}
        self._names: dict[int, str] = {}  # id of a node -> its function's name
        self._source: list[str] = []
        self.namespace: dict[str, Any] = {"_is_number": _is_number, "_is_integer": _is_integer}
        self._inlining: list[int] = []
        self._vars = 0

    def constant(self, value: Any) -> str:
        name = f"_k{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def function(self, node: Any, resolver: Resolver[Any]) -> str:
        """The name of the function checking ``node`` (generated once)."""
        if node is True:
            return "_always"
        if node is False:
            return "_never"
        known = self._names.get(id(node))
        if known is not None:
            return known
        name = f"_f{len(self._names)}"
        self._names[id(node)] = name
        outer = self._inlining
        self._inlining = [id(node)]
        body = self.checks(node, "x", resolver, 1)
        self._inlining = outer
        self._source += [f"def {name}(x):", *body, "    return True", ""]
        return name

    def checks(self, node: Any, var: str, resolver: Resolver[Any], depth: int) -> list[str]:
        """Statements that ``return False`` unless ``var`` is valid against ``node``."""
        pad = "    " * depth
        if node is True:
            return []
        if node is False:
            return [f"{pad}return False"]
        if not isinstance(node, dict):
            raise _Unsupported(f"schema {node!r}")
        if "$id" in node and id(node) not in self._files:
            raise _Unsupported("a subschema with its own $id")
        out: list[str] = []
        in_object: list[str] = []  # checks that apply only to objects
        inner = pad + "    "
        # Once "type" has passed, a check that applies to one type needs no guard for it.
        sure = node.get("type") if isinstance(node.get("type"), str) else None
        sure = sure if sure in _GUARDS else None

        def guard(kind: str) -> str:
            return "" if sure == kind else f"isinstance({var}, {_GUARDS[kind]}) and "

        required = set(node.get("required", ())) if sure == "object" else set()
        # "type" first (the guards rely on it), "required" before "properties" (which then
        # reads required members without testing for them).
        order = sorted(node, key=lambda k: {"type": 0, "required": 1}.get(k, 2))
        for keyword in order:
            arg = node[keyword]
            if keyword in _ANNOTATIONS or keyword in ("then", "else"):
                continue
            if keyword == "type":
                names = [arg] if isinstance(arg, str) else list(arg)
                if not names or any(n not in _TYPE_TESTS for n in names):
                    raise _Unsupported(f"type {arg!r}")
                test = " or ".join(_TYPE_TESTS[n].format(v=var) for n in names)
                out.append(f"{pad}if not ({test}): return False")
            elif keyword == "$ref":
                resolved = resolver.lookup(arg)
                target = resolved.contents
                if isinstance(target, dict) and id(target) not in self._inlining:
                    self._inlining.append(id(target))
                    out += self.checks(target, var, resolved.resolver, depth)
                    self._inlining.pop()
                else:  # recursive: call it
                    out.append(
                        f"{pad}if not {self.function(target, resolved.resolver)}({var}): "
                        "return False"
                    )
            elif keyword == "const":
                out.append(f"{pad}if not ({_equals(var, arg)}): return False")
            elif keyword == "enum":
                if all(isinstance(v, str) for v in arg):
                    k = self.constant(frozenset(arg))
                    out.append(
                        f"{pad}if not (isinstance({var}, str) and {var} in {k}): return False"
                    )
                else:
                    test = " or ".join(f"({_equals(var, v)})" for v in arg) or "False"
                    out.append(f"{pad}if not ({test}): return False")
            elif keyword == "properties":
                for prop, sub in arg.items():
                    self._vars += 1
                    item = f"v{self._vars}"
                    if prop in required:
                        body = self.checks(sub, item, resolver, depth + 1)
                        if body:
                            in_object.append(f"{inner}{item} = {var}[{_literal(prop)}]")
                            in_object += body
                        continue
                    body = self.checks(sub, item, resolver, depth + 2)
                    if body:
                        in_object.append(f"{inner}if {_literal(prop)} in {var}:")
                        in_object.append(f"{inner}    {item} = {var}[{_literal(prop)}]")
                        in_object += body
            elif keyword == "required":
                for prop in arg:
                    in_object.append(f"{inner}if {_literal(prop)} not in {var}: return False")
            elif keyword == "additionalProperties":
                if "patternProperties" in node:
                    raise _Unsupported("patternProperties")
                known = self.constant(frozenset(node.get("properties", {})))
                self._vars += 1
                key, item = f"k{self._vars}", f"v{self._vars}"
                if arg is False:
                    in_object.append(f"{inner}for {key} in {var}:")
                    in_object.append(f"{inner}    if {key} not in {known}: return False")
                elif isinstance(arg, dict):
                    in_object.append(f"{inner}for {key}, {item} in {var}.items():")
                    in_object.append(f"{inner}    if {key} not in {known}:")
                    in_object += self.checks(arg, item, resolver, depth + 3)
                elif arg is not True:
                    raise _Unsupported(f"additionalProperties {arg!r}")
            elif keyword == "allOf":
                for sub in arg:
                    out += self.checks(sub, var, resolver, depth)
            elif keyword == "oneOf" and self._disjoint(arg, resolver):
                # Branches that admit disjoint types: at most one can hold, so the value's
                # type picks the only branch to check.
                word = "if"
                for sub in arg:
                    kinds = sorted(self._types(sub, resolver) or ())
                    test = " or ".join(_TYPE_TESTS[k].format(v=var) for k in kinds)
                    out.append(f"{pad}{word} {test}:")
                    out += self.checks(sub, var, resolver, depth + 1) or [f"{inner}pass"]
                    word = "elif"
                out.append(f"{pad}else: return False")
            elif keyword == "oneOf":
                calls = " + ".join(f"{self.function(sub, resolver)}({var})" for sub in arg)
                out.append(f"{pad}if ({calls or 0}) != 1: return False")
            elif keyword == "if":
                then = self.checks(node.get("then", True), var, resolver, depth + 1)
                other = self.checks(node.get("else", True), var, resolver, depth + 1)
                out.append(f"{pad}if {self.function(arg, resolver)}({var}):")
                out += then or [f"{inner}pass"]
                out.append(f"{pad}else:")
                out += other or [f"{inner}pass"]
            elif keyword == "items":
                if "prefixItems" in node:
                    raise _Unsupported("prefixItems")
                self._vars += 1
                item = f"v{self._vars}"
                body = self.checks(arg, item, resolver, depth + 2)
                if body:
                    out.append(f"{pad}if isinstance({var}, list):")
                    out.append(f"{inner}for {item} in {var}:")
                    out += body
            elif keyword == "pattern":
                search = self.constant(re.compile(arg).search)
                out.append(f"{pad}if {guard('string')}{search}({var}) is None: return False")
            elif keyword in ("minLength", "maxLength", "minItems", "maxItems"):
                kind = "string" if keyword.endswith("Length") else "array"
                op = "<" if keyword.startswith("min") else ">"
                bound = _literal(int(arg))
                out.append(f"{pad}if {guard(kind)}len({var}) {op} {bound}: return False")
            elif keyword in _BOUNDS:
                if isinstance(arg, bool) or type(arg) not in (int, float):
                    raise _Unsupported(f"{keyword} {arg!r}")
                out.append(
                    f"{pad}if _is_number({var}) and {var} {_BOUNDS[keyword]} {_literal(arg)}: "
                    "return False"
                )
            else:
                raise _Unsupported(keyword)
        if in_object:
            out.append(f"{pad}if {guard('object')}True:")
            out += in_object
        return out

    def _types(self, node: Any, resolver: Resolver[Any]) -> frozenset[str] | None:
        """The JSON types ``node`` admits at most, as its "type" (or its ``$ref``'s) says;
        None when it does not say."""
        if not isinstance(node, dict):
            return None
        found: frozenset[str] | None = None
        kinds = node.get("type")
        if isinstance(kinds, str | list) and all(k in _TYPE_TESTS for k in kinds or ()):
            found = frozenset([kinds] if isinstance(kinds, str) else kinds)
        if isinstance(node.get("$ref"), str):
            resolved = resolver.lookup(node["$ref"])
            target = self._types(resolved.contents, resolved.resolver)
            if target is not None:
                found = target if found is None else found & target
        return found

    def _disjoint(self, branches: list[Any], resolver: Resolver[Any]) -> bool:
        """Whether no value can have a type two of ``branches`` admit."""
        seen: set[str] = set()
        for sub in branches:
            kinds = self._types(sub, resolver)
            if not kinds:
                return False
            # An integer is a number too.
            wide = {"number" if k == "integer" else k for k in kinds}
            if wide & seen:
                return False
            seen |= wide
        return True

    def build(self, root: str) -> Check:
        namespace = dict(self.namespace, _always=_always, _never=_never)
        exec(compile("\n".join(self._source), "<compiled schemas>", "exec"), namespace)
        check: Check = namespace[root]
        return check


#: The Python classes of the types whose checks guard on them.
_GUARDS = {"object": "dict", "array": "list", "string": "str"}

#: A bound keyword -> the comparison that makes a number break it.
_BOUNDS = {"minimum": "<", "maximum": ">", "exclusiveMinimum": "<=", "exclusiveMaximum": ">="}


@cache
def compiled(name: str) -> Check | None:
    """The predicate of the schema ``name`` (an event or aggregate), or None when the
    schema uses a keyword this module does not mirror (then only ``jsonschema`` checks)."""
    from .schemas import BASE_URI, _schemas, registry

    uri = BASE_URI + name + ".json"
    resolved = registry().resolver(base_uri=uri).lookup(uri)
    compiler = _Compiler(list(_schemas().values()))
    try:
        root = compiler.function(resolved.contents, resolved.resolver)
    except _Unsupported:
        return None
    return compiler.build(root)
