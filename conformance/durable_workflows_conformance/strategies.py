"""Hypothesis strategies: programs, submission schedules, fault schedules.

Everything generated validates against the adapter's schemas
(``schemas/v1/conformance/``). The strategies take the target's features into
account: optional operations appear only when the adapter declares them, and without
a virtual clock durations stay short and time never races with input.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from .model import final_attempt, predict
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

#: Without a virtual clock, the per-attempt timeouts of steps: long enough that a body
#: that returns at once never times out, short enough to keep hanging attempts cheap.
REAL_TIMEOUT_MS = (400, 600)


@st.composite
def step_ops(
    draw: st.DrawFn, names: _Names, *, may_fail: bool = True, features: Features | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {"op": "step", "name": draw(st.sampled_from(STEP_NAMES))}
    op["result"] = draw(JSON_RESULTS)
    max_attempts = draw(st.integers(1, 4))
    virtual = features is not None and features.virtual_clock
    initial = draw(st.integers(5, 60_000) if virtual else st.integers(REAL_MIN_MS, 300))
    op["retry"] = {
        "max_attempts": max_attempts,
        "initial_interval_ms": initial,
        "backoff_coefficient": draw(st.sampled_from([1.0, 2.0, 3.0])),
        # A cap the backoff can reach within four attempts, so that RETRY-004's min() shows.
        "max_interval_ms": initial * draw(st.sampled_from([1, 2, 4])),
    }
    if may_fail and draw(st.booleans()):
        op["fail_attempts"] = draw(st.integers(1, 4))
        op["error"] = {"type": "ScriptedError", "message": "attempt failed on purpose"}
        if draw(st.booleans()):
            op["catch"] = True
    if features is not None and features.has("step-timeouts"):
        draw(step_timeouts(op, features, may_hang=may_fail))
    if draw(st.booleans()):
        op["as"] = names.var()
    return op


@st.composite
def step_timeouts(
    draw: st.DrawFn, op: dict[str, Any], features: Features, *, may_hang: bool, force: bool = False
) -> None:
    """Give a step ``timeout_ms`` (RETRY-003) and attempts that hang past it
    (RETRY-015); adds them to ``op`` in place.

    A hanging attempt's timeout is short even on a virtual clock: it bounds the real
    time the body runs (ADAPT-020), since the suite never advances the clock while a
    body runs. A caught step whose last attempt times out is not generated: its output
    would hold the engine-worded message of the ``StepTimeout``."""
    if not force and draw(st.integers(0, 3)) != 3:  # one step in four; shrinks to none
        return
    max_attempts = int(op.get("retry", {}).get("max_attempts", 3))
    hangs = may_hang and (force or draw(st.booleans()))
    if features.virtual_clock and not hangs:
        op["timeout_ms"] = draw(st.integers(1_000, 3_600_000))
        return
    op["timeout_ms"] = draw(st.integers(*REAL_TIMEOUT_MS))
    if hangs:
        hang = draw(st.sets(st.integers(1, max_attempts), min_size=1, max_size=2))
        op["hang_attempts"] = sorted(hang)
        if draw(st.integers(0, 3)) == 3:
            op["retry"]["non_retryable"] = ["StepTimeout"]
        _, error = final_attempt(op)
        if error is not None and error["type"] == "StepTimeout":
            op.pop("catch", None)


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


#: How a schedule cancels the run (feature ``cancellation``, retries.md#cancellation).
CANCEL_PLANS = ("early", "at-rest", "after-end", "twice", "duplicate", "reuses-an-id", "malformed")
REASONS = (None, "Customer withdrew the order.", "Too long. " * 110 + "\u00e9")
#: A suspension count no run reaches: the cancel is sent after the run has ended.
AFTER_THE_END = 10_000


def cancel_points(scenario: Scenario, features: Features) -> list[int]:
    """The suspensions (1-based, in history order) at which a cancel finds the run in
    the same state on every conforming engine: any suspension on a virtual clock; on a
    real clock only a wait for input without a deadline, since there a run cannot move
    on its own while the suite sends the cancel."""
    points: list[int] = []
    count = 0
    for message in predict(scenario).history:
        value = message["value"]
        if message["type"] != "run" or value["status"] not in ("sleeping", "waiting"):
            continue
        count += 1
        waiting = value["waiting_for"] or {}
        if features.virtual_clock or (waiting.get("inputs") and not waiting.get("until")):
            points.append(count)
    return points


@st.composite
def with_cancels(draw: st.DrawFn, scenario: Scenario, features: Features) -> tuple[Submission, ...]:
    """``scenario``'s submissions with one cancel plan added. A cancel reaches the inbox
    before the run starts (CANCEL-012), at a point where the run is at rest (CANCEL-003,
    CANCEL-005), or after the run ended (a closed inbox refuses it); two cancels at one
    point give CANCEL-009; a repeated inbox id is a duplicate (INPUT-015)."""
    subs = list(scenario.submissions)
    plan = draw(st.sampled_from(CANCEL_PLANS))
    points = cancel_points(scenario, features)
    reason = draw(st.sampled_from(REASONS))

    def cancel(cancel_id: str, **fields: Any) -> Submission:
        return Submission(cancel_id, "", None, kind="cancel", reason=reason, **fields)

    def where() -> dict[str, Any]:
        """Before the run starts, or at one of the points (after the end, if so planned)."""
        if plan == "after-end":
            return {"when": "suspended", "at": AFTER_THE_END}
        if plan == "early" or not points or (plan != "at-rest" and draw(st.booleans())):
            return {"when": "early"}
        return {"when": "suspended", "at": draw(st.sampled_from(points))}

    def insert(*added: Submission) -> None:
        index = draw(st.integers(0, len(subs)))
        subs[index:index] = list(added)

    fields = where()
    if plan == "twice":
        insert(cancel("c1", **fields), cancel("c2", **fields))
    elif plan == "duplicate":
        insert(cancel("c1", **fields), cancel("c1", **fields))
    elif plan == "reuses-an-id" and subs:
        insert(cancel(draw(st.sampled_from([s.id for s in subs])), **fields))
    elif plan == "malformed":
        insert(cancel("c1", malformed=True, **fields))
    else:  # early, at-rest, after-end (and reuses-an-id without submissions)
        insert(cancel("c1", **fields))
    return tuple(subs)


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
    cancels: bool | None = None,
    timeouts: bool = False,
) -> Scenario:
    """A program, its input, a schedule and faults. ``cancels``: None adds a cancel plan
    to one scenario in four when the adapter declares ``cancellation``, True to every
    one (the feature must be declared), False to none. ``timeouts`` makes the first
    step of the program one with a timeout (and, on a real clock, hanging attempts)."""
    program = draw(programs(features, max_ops=max_ops))
    if timeouts:
        program = draw(with_timeout_step(program, features))
    subs = draw(schedules(program, concurrent=concurrent))
    run_input = draw(st.one_of(st.none(), st.fixed_dictionaries({"order": st.integers(1, 99)})))
    chosen = draw(fault_lists(features)) if faults else ()
    if cancels is None:
        cancels = features.has("cancellation") and draw(st.integers(0, 3)) == 3
    if cancels:
        subs = draw(with_cancels(Scenario(program, run_input, subs), features))
    return Scenario(program, run_input, subs, chosen)


@st.composite
def with_timeout_step(
    draw: st.DrawFn, program: dict[str, Any], features: Features
) -> dict[str, Any]:
    """``program`` with a step that has a timeout (and hangs, on a real clock) inserted
    at a random top-level position."""
    op = draw(step_ops(_Names(), features=Features(features.declared - {"step-timeouts"})))
    op.pop("as", None)
    draw(step_timeouts(op, features, may_hang=True, force=True))
    ops = list(program["ops"])
    index = draw(st.integers(0, len(ops)))
    ops.insert(index, op)
    return {"ops": ops}


# -- changed programs (non-determinism) -------------------------------------------------

#: The input every non-determinism program ends with: the run waits there while the
#: suite deploys the changed program.
GATE = {"op": "input", "name": "gate", "schema": True, "as": "gate"}


@st.composite
def nd_primitive(draw: st.DrawFn, features: Features) -> dict[str, Any]:
    if features.has("records") and draw(st.integers(0, 3)) == 3:
        return {
            "op": "record",
            "name": draw(st.sampled_from(["now", "dice"])),
            "kind": draw(st.sampled_from(["time", "random", "uuid"])),
        }
    return {
        "op": "step",
        "name": draw(st.sampled_from(["a", "b", "c"])),
        "result": draw(st.integers(0, 3)),
    }


@st.composite
def nd_programs(draw: st.DrawFn, features: Features) -> list[dict[str, Any]]:
    """The operations before the gate of a program that a run executes and then replays
    with a changed program: steps, and, as the adapter offers them, records, parallel
    groups and patch checks (whose ``then`` branch a new run takes)."""
    kinds = ["step", "step"]
    kinds += ["parallel"] if features.has("parallel") else []
    kinds += ["patch"] if features.has("patches") else []
    ops: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(kinds))
        if kind == "parallel":
            members = draw(st.lists(nd_primitive(features), min_size=2, max_size=3))
            ops.append({"op": "parallel", "ops": members})
        elif kind == "patch":
            otherwise = draw(st.lists(nd_primitive(features), max_size=1))
            ops.append(
                {
                    "op": "patch",
                    "id": draw(st.sampled_from(["p1", "p2"])),
                    "then": [draw(nd_primitive(features))],
                    "else": otherwise,
                }
            )
        else:
            ops.append(draw(nd_primitive(features)))
    return ops


def _containers(ops: list[dict[str, Any]]) -> list[tuple[list[dict[str, Any]], str]]:
    """Every list of operations in ``ops`` (itself included), with what holds it."""
    out: list[tuple[list[dict[str, Any]], str]] = [(ops, "top")]
    for op in ops:
        if op["op"] == "parallel":
            out.append((op["ops"], "parallel"))
        elif op["op"] == "patch":
            out.append((op["then"], "patch"))
            out.append((op["else"], "patch"))
    return out


MUTATIONS = (
    "rename",  # a primitive gets another name (a patch check another id)
    "kind",  # a primitive becomes one of another kind
    "remove",  # an operation goes
    "insert",  # a new step comes before an operation
    "swap",  # an operation and the next one trade places
    "flatten",  # a parallel group becomes the same primitives in sequence
    "unpatch-then",  # a patch check is retired: its new branch stays (VER-013)
    "unpatch-else",  # a patch check goes with its new branch
    "new-patch",  # a new patch check with a new branch only (VER-012)
    "new-patch-else",  # a new patch check whose old branch is a new step
)


@st.composite
def mutations(
    draw: st.DrawFn, ops: list[dict[str, Any]], features: Features
) -> list[dict[str, Any]]:
    """A changed version of ``ops``: one edit somewhere in it (:data:`MUTATIONS`), some
    of which a conforming engine must report as non-determinism and some not."""
    changed = copy.deepcopy(ops)
    containers = [(c, h) for c, h in _containers(changed) if c]
    container, holder = draw(st.sampled_from(containers))
    index = draw(st.integers(0, len(container) - 1))
    victim = container[index]
    hows = ["rename", "kind", "remove", "insert"]
    if index + 1 < len(container):
        hows.append("swap")
    if victim["op"] == "parallel":
        hows.append("flatten")
    if victim["op"] == "patch":
        hows += ["unpatch-then", "unpatch-else"]
    if holder == "top" and features.has("patches"):
        hows += ["new-patch", "new-patch-else"]
    how = draw(st.sampled_from(hows))
    new_step = {"op": "step", "name": "inserted", "result": None}
    if how == "rename":
        if victim["op"] == "patch":
            victim["id"] = victim["id"] + "-v2"
        elif victim["op"] == "parallel":
            victim["ops"][0]["name"] += "-v2"
        else:
            victim["name"] = victim["name"] + "-v2"
    elif how == "kind":
        name = victim.get("name") or victim.get("id") or "changed"
        if victim["op"] == "sleep":
            container[index] = {"op": "step", "name": name, "result": None}
        else:
            container[index] = {"op": "sleep", "name": name, "duration_ms": 1}
    elif how == "remove":
        del container[index]
    elif how == "insert":
        container.insert(index, new_step)
    elif how == "swap":
        container[index], container[index + 1] = container[index + 1], container[index]
    elif how == "flatten":
        container[index : index + 1] = victim["ops"]
    elif how == "unpatch-then":
        container[index : index + 1] = victim["then"]
    elif how == "unpatch-else":
        container[index : index + 1] = victim["else"]
    else:
        otherwise = [new_step] if how == "new-patch-else" else []
        container.insert(
            index, {"op": "patch", "id": "p-new", "then": [dict(new_step)], "else": otherwise}
        )
    # A parallel group keeps at least one member (program.json).
    for c, _ in _containers(changed):
        c[:] = [op for op in c if op["op"] != "parallel" or op["ops"]]
    return changed
