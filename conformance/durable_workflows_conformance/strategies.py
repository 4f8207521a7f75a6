"""Hypothesis strategies: programs, submission schedules, fault schedules.

Everything generated validates against the adapter's schemas
(``schemas/v1/conformance/``). The strategies take the target's features into
account: optional operations appear only when the adapter declares them, and without
a virtual clock durations stay short and time never races with input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from .scenario import Scenario, Submission

STEP_NAMES = ("fetch", "charge", "notify")
SLEEP_NAMES = ("pause", "cool-off")

#: Input schemas with a valid and an invalid value each, and values a branch tests.
INPUT_KINDS: dict[str, dict[str, Any]] = {
    "approval": {
        "schema": {
            "type": "object",
            "properties": {"approved": {"type": "boolean"}},
            "required": ["approved"],
        },
        "valid": [{"approved": True}, {"approved": False}],
        "invalid": [{"approved": "yes"}, {}],
        "path": ["approved"],
        "cases": [True, False],
    },
    "count": {
        "schema": {"type": "integer", "minimum": 0, "maximum": 9},
        "valid": [0, 3, 9],
        "invalid": [-1, "3", 10],
        "path": [],
        "cases": [0, 3],
    },
    "anything": {
        "schema": True,
        "valid": [None, "ok", [1, 2]],
        "invalid": [],
        "path": [],
        "cases": ["ok"],
    },
}

JSON_RESULTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["ok", "done", ""]),
    st.lists(st.integers(0, 3), max_size=2),
    st.fixed_dictionaries({"n": st.integers(0, 3)}),
)


@dataclass(frozen=True)
class Features:
    declared: frozenset[str] = frozenset()

    @property
    def virtual_clock(self) -> bool:
        return "virtual-clock" in self.declared

    def has(self, feature: str) -> bool:
        return feature in self.declared


class _Names:
    def __init__(self) -> None:
        self.inputs = 0
        self.vars = 0

    def input(self) -> str:
        self.inputs += 1
        return f"ask-{self.inputs}"

    def var(self) -> str:
        self.vars += 1
        return f"v{self.vars}"


#: Without a virtual clock, no deadline is shorter than this: a deadline that has
#: already passed when the engine makes its append can legitimately spare the run a
#: suspension, which would make the predicted run events depend on timing.
REAL_MIN_MS = 250


@st.composite
def step_ops(
    draw: st.DrawFn, names: _Names, *, may_fail: bool = True, features: Features | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {"op": "step", "name": draw(st.sampled_from(STEP_NAMES))}
    op["result"] = draw(JSON_RESULTS)
    max_attempts = draw(st.integers(1, 3))
    virtual = features is not None and features.virtual_clock
    initial = draw(st.integers(5, 60_000) if virtual else st.integers(REAL_MIN_MS, 300))
    op["retry"] = {
        "max_attempts": max_attempts,
        "initial_interval_ms": initial,
        "backoff_coefficient": draw(st.sampled_from([1.0, 2.0])),
        "max_interval_ms": initial * 4,
    }
    if may_fail and draw(st.booleans()):
        op["fail_attempts"] = draw(st.integers(1, 3))
        op["error"] = {"type": "ScriptedError", "message": "attempt failed on purpose"}
        if draw(st.booleans()):
            op["catch"] = True
    if draw(st.booleans()):
        op["as"] = names.var()
    return op


@st.composite
def sleep_ops(draw: st.DrawFn, features: Features) -> dict[str, Any]:
    low, top = (1, 86_400_000) if features.virtual_clock else (REAL_MIN_MS, 400)
    duration = draw(st.integers(low, top))
    return {"op": "sleep", "name": draw(st.sampled_from(SLEEP_NAMES)), "duration_ms": duration}


@st.composite
def input_ops(
    draw: st.DrawFn, names: _Names, features: Features, *, timeouts: bool = True
) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(INPUT_KINDS)))
    op: dict[str, Any] = {
        "op": "input",
        "name": names.input(),
        "schema": INPUT_KINDS[kind]["schema"],
        "prompt": draw(st.sampled_from([None, "Please answer"])),
        "as": names.var(),
    }
    if timeouts and draw(st.booleans()):
        op["timeout_ms"] = (
            draw(st.integers(1_000, 259_200_000)) if features.virtual_clock else 1_000
        )
        if draw(st.booleans()):
            op["on_expired"] = {"default": draw(st.sampled_from(INPUT_KINDS[kind]["valid"]))}
    return op


def kind_of(op: Mapping[str, Any]) -> str:
    for name, kind in INPUT_KINDS.items():
        if kind["schema"] == op.get("schema"):
            return name
    raise KeyError(op.get("schema"))


@st.composite
def programs(draw: st.DrawFn, features: Features = Features(), max_ops: int = 5) -> dict[str, Any]:
    """A program of up to ``max_ops`` top-level operations."""
    names = _Names()
    ops: list[dict[str, Any]] = []
    count = draw(st.integers(1, max_ops))
    choices = ["step", "step", "sleep", "input", "branch"]
    if features.has("records"):
        choices.append("record")
    if features.has("parallel"):
        choices.append("parallel")
    if features.has("patches"):
        choices.append("patch")
    for _ in range(count):
        choice = draw(st.sampled_from(choices))
        if choice == "step":
            ops.append(draw(step_ops(names, features=features)))
        elif choice == "sleep":
            ops.append(draw(sleep_ops(features)))
        elif choice == "input":
            ops.append(draw(input_ops(names, features)))
        elif choice == "record":
            ops.append(
                {
                    "op": "record",
                    "name": draw(st.sampled_from(["now", "dice", "id"])),
                    "kind": draw(st.sampled_from(["time", "random", "uuid"])),
                }
            )
        elif choice == "patch":
            ops.append(
                {
                    "op": "patch",
                    "id": draw(st.sampled_from(["fix-1", "fix-2"])),
                    "then": [draw(step_ops(names, may_fail=False, features=features))],
                    "else": [],
                }
            )
        elif choice == "parallel":
            members: list[dict[str, Any]] = []
            for _member in range(draw(st.integers(2, 3))):
                kinds = ["step", "input"] + (["sleep"] if features.virtual_clock else [])
                kind = draw(st.sampled_from(kinds))
                if kind == "step":
                    members.append(draw(step_ops(names, may_fail=False, features=features)))
                elif kind == "sleep":
                    members.append(draw(sleep_ops(features)))
                else:
                    members.append(
                        draw(input_ops(names, features, timeouts=features.virtual_clock))
                    )
            ops.append({"op": "parallel", "ops": members})
        else:  # branch on a fresh input
            asked = draw(input_ops(names, features, timeouts=False))
            spec = INPUT_KINDS[kind_of(asked)]
            ops.append(asked)
            case_value = draw(st.sampled_from(spec["cases"]))
            branch: dict[str, Any] = {
                "op": "branch",
                "var": asked["as"],
                "cases": [
                    {"equals": case_value, "ops": [draw(step_ops(names, features=features))]}
                ],
                "else": [draw(st.one_of(step_ops(names, features=features), sleep_ops(features)))],
            }
            if spec["path"]:
                branch["path"] = spec["path"]
            ops.append(branch)
    return {"ops": ops}


def input_requests(program: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every input operation of a program, in every branch."""

    def walk(ops: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for op in ops:
            if op["op"] == "input":
                yield op
            elif op["op"] == "parallel":
                yield from walk(op["ops"])
            elif op["op"] == "patch":
                yield from walk(op.get("then") or [])
                yield from walk(op.get("else") or [])
            elif op["op"] == "branch":
                for case in op["cases"]:
                    yield from walk(case["ops"])
                yield from walk(op.get("else") or [])

    yield from walk(program.get("ops", []))


PLANS = ("answer", "early", "invalid-then-valid", "duplicate", "two-clients", "late", "malformed")


@st.composite
def schedules(
    draw: st.DrawFn, program: Mapping[str, Any], *, concurrent: bool = True
) -> tuple[Submission, ...]:
    """Submissions for every input request of ``program``: each request without a
    timeout gets at least one valid answer, so no run waits forever."""
    out: list[Submission] = []
    counter = iter(range(1, 10_000))

    def sid() -> str:
        return f"s{next(counter)}"

    for op in input_requests(program):
        kind = INPUT_KINDS[kind_of(op)]
        key = str(op["name"])
        plans = list(PLANS if concurrent else [p for p in PLANS if p != "two-clients"])
        if op.get("timeout_ms") is not None:
            plans.append("expire")
        if not kind["invalid"]:
            plans = [p for p in plans if p != "invalid-then-valid"]
        plan = draw(st.sampled_from(plans))
        valid = draw(st.sampled_from(kind["valid"]))
        if plan == "answer":
            out.append(Submission(sid(), key, valid))
        elif plan == "early":
            out.append(Submission(sid(), key, valid, when="early"))
        elif plan == "invalid-then-valid":
            out.append(Submission(sid(), key, draw(st.sampled_from(kind["invalid"]))))
            out.append(Submission(sid(), key, valid))
        elif plan == "duplicate":
            same = sid()
            out.append(Submission(same, key, valid))
            out.append(Submission(same, key, draw(st.sampled_from(kind["valid"]))))
        elif plan == "two-clients":
            out.append(Submission(sid(), key, valid, client=0))
            out.append(Submission(sid(), key, draw(st.sampled_from(kind["valid"])), client=1))
        elif plan == "late":
            out.append(Submission(sid(), key, valid))
            out.append(Submission(sid(), key, valid, when="late"))
        elif plan == "malformed":
            out.append(Submission(sid(), key, valid, malformed=True))
            out.append(Submission(sid(), key, valid))
        elif plan == "expire" and draw(st.booleans()):
            out.append(Submission(sid(), key, valid, when="late"))
    return tuple(out)


POINTS = ("before-append", "after-append", "in-step-body", "after-step-body")


@st.composite
def fault_lists(draw: st.DrawFn, features: Features) -> tuple[dict[str, Any], ...]:
    actions = [a for a in ("crash", "restart") if features.has(f"{a}-injection")]
    if not actions:
        return ()
    faults = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "at": st.sampled_from(POINTS),
                    "n": st.integers(1, 6),
                    "action": st.sampled_from(actions),
                }
            ),
            min_size=1,
            max_size=2,
        )
    )
    return tuple(faults)


@st.composite
def scenarios(
    draw: st.DrawFn,
    features: Features = Features(),
    *,
    faults: bool = False,
    concurrent: bool = True,
    max_ops: int = 5,
) -> Scenario:
    program = draw(programs(features, max_ops=max_ops))
    subs = draw(schedules(program, concurrent=concurrent))
    run_input = draw(st.one_of(st.none(), st.fixed_dictionaries({"order": st.integers(1, 99)})))
    chosen = draw(fault_lists(features)) if faults else ()
    return Scenario(program, run_input, subs, chosen)
