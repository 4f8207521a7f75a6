"""The program interpreter of the conformance adapter (adapter.md, ADAPT-007..011).

A program is a JSON document; :class:`ProgramRegistry` turns each registered program
into a workflow whose code carries out every operation with the engine's own
primitives (``ctx.step``, ``ctx.sleep``, ``ctx.request_input``, ``ctx.now``/``random``/
``uuid``, ``ctx.patched``, ``ctx.gather``). Nothing here writes to a stream.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..core import (
    Context,
    InputExpired,
    RetryPolicy,
    StepFailed,
    Workflow,
    WorkflowRegistry,
    current_step,
)
from .faults import KNOWN_HISTORY, FaultPlan

__all__ = ["BodyLog", "ProgramRegistry", "RunLog", "scripted_error"]

DEFAULT_ERROR = {"type": "ScriptedError", "message": "scripted failure"}

_error_classes: dict[str, type[Exception]] = {}
_error_lock = threading.Lock()


class Unencodable:
    """What the body of a step with ``unencodable`` true returns: an object of a class
    that has no JSON encoding, so the engine must fail the attempt with
    ``InvalidResult`` (EVT-052)."""

    def __repr__(self) -> str:
        return "Unencodable()"


def scripted_error(error: Mapping[str, Any]) -> Exception:
    """An exception whose class name is the program's ``type`` (ADAPT-011): the engine
    records ``type(exc).__name__`` and ``str(exc)``."""
    name = str(error["type"])
    with _error_lock:
        cls = _error_classes.get(name)
        if cls is None:
            cls = type(name, (Exception,), {})
            _error_classes[name] = cls
    return cls(str(error.get("message", "")))


@dataclass
class RunLog:
    """What the adapter counts for one run (ADAPT-018)."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    activations: int = 0
    running: int = 0


class BodyLog:
    """Per-run body executions and activations, shared by the worker thread and the
    adapter's HTTP handlers."""

    def __init__(self, faults: FaultPlan | None = None) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, RunLog] = {}
        self.faults = faults or FaultPlan()

    def run(self, run_id: str) -> RunLog:
        with self.lock:
            return self.runs.setdefault(run_id, RunLog())

    def activation(self, run_id: str) -> str:
        with self.lock:
            log = self.runs.setdefault(run_id, RunLog())
            log.activations += 1
            return f"{run_id}/{log.activations}"

    def entered(self, run_id: str) -> None:
        with self.lock:
            self.runs.setdefault(run_id, RunLog()).running += 1

    def began(self, run_id: str, key: str, attempt: int, activation: str, known: int) -> None:
        with self.lock:
            log = self.runs.setdefault(run_id, RunLog())
            log.bodies.append(
                {"step": key, "attempt": attempt, "activation": activation, "known_history": known}
            )

    def ended(self, run_id: str) -> None:
        with self.lock:
            self.runs.setdefault(run_id, RunLog()).running -= 1

    def snapshot(self, run_id: str) -> tuple[list[dict[str, Any]], int, int]:
        with self.lock:
            log = self.runs.get(run_id) or RunLog()
            return [dict(b) for b in log.bodies], log.activations, log.running


#: ``known(run_id) -> number of history messages``, awaited when a body begins.
KnownHistory = Callable[[str], Awaitable[int]]


@dataclass
class _Live:
    """An activation that interprets a program: the task that runs it, on its loop."""

    run_id: str
    workflow: str
    program: dict[str, Any]
    task: asyncio.Task[Any]
    loop: asyncio.AbstractEventLoop


class ProgramRegistry(WorkflowRegistry):
    """Registered workflows plus the programs the suite registers by name."""

    def __init__(self, base: WorkflowRegistry, log: BodyLog, known: KnownHistory) -> None:
        super().__init__(base)
        self.log = log
        self.known = known
        self.programs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        #: Activations in progress, by their task.
        self._live: dict[int, _Live] = {}
        #: The Workflow made of each program, the same object while the program is:
        #: an engine that keeps runs replayed knows the code changed when it is not.
        self._made: dict[str, tuple[dict[str, Any], Workflow]] = {}

    def set_program(self, name: str, program: dict[str, Any]) -> None:
        """Register or replace a program. ADAPT-008: a replacement is a deployment of
        changed code: every activation in progress of a run of that workflow ends, as
        a worker restart ends it, and the run is woken again; every later activation
        replays with the new program."""
        with self._lock:
            old = self.programs.get(name)
            self.programs[name] = program
            stale = []
            if old is not None and old != program:
                stale = [
                    live
                    for live in self._live.values()
                    if live.workflow == name and live.program is not program
                ]
        for live in stale:
            if not live.loop.is_closed():
                live.loop.call_soon_threadsafe(self._restart, live)

    def _restart(self, live: _Live) -> None:
        """On the activation's loop: end it where it stands, then wake the run again."""
        if live.task.done():
            return
        live.task.cancel()
        self.log.faults.revive_later(live.run_id)

    def activation_started(self, run_id: str, workflow: str, program: dict[str, Any]) -> None:
        """Called by the interpreter when an activation starts interpreting a program."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - workflow code runs in the activation's task
            return
        with self._lock:
            for key in [k for k, live in self._live.items() if live.task.done()]:
                del self._live[key]
            live = self._live[id(task)] = _Live(
                run_id, workflow, program, task, asyncio.get_running_loop()
            )
            replaced = self.programs.get(workflow, program) != program
        if replaced:  # replaced between the look-up and now: end this one too
            live.loop.call_soon(self._restart, live)

    def get(self, name: str) -> Workflow | None:
        with self._lock:
            program = self.programs.get(name)
            if program is None:
                return super().get(name)
            made = self._made.get(name)
            if made is None or made[0] is not program:
                workflow = Workflow(
                    name, _Interpreter(program, self.log, self.known, self, name).run
                )
                made = self._made[name] = (program, workflow)
            return made[1]

    def __contains__(self, name: object) -> bool:
        with self._lock:
            if name in self.programs:
                return True
        return super().__contains__(name)


def _retry(op: Mapping[str, Any]) -> RetryPolicy:
    r = op.get("retry") or {}
    default = RetryPolicy()
    initial = r.get("initial_interval_ms", default.initial_interval_ms)
    return RetryPolicy(
        max_attempts=r.get("max_attempts", default.max_attempts),
        initial_interval=timedelta(milliseconds=initial),
        backoff_coefficient=r.get("backoff_coefficient", default.backoff_coefficient),
        max_interval=timedelta(
            milliseconds=r.get("max_interval_ms", max(default.max_interval_ms, initial))
        ),
        non_retryable=tuple(r.get("non_retryable") or ()),
    )


class _Interpreter:
    """One activation's interpretation of one program (bound when the activation starts)."""

    def __init__(
        self,
        program: dict[str, Any],
        log: BodyLog,
        known: KnownHistory,
        registry: ProgramRegistry | None = None,
        workflow: str = "",
    ) -> None:
        self.program = program
        self.log = log
        self.known = known
        self.registry = registry
        self.workflow = workflow

    async def run(self, ctx: Context, run_input: Any) -> Any:
        if self.registry is not None:
            self.registry.activation_started(ctx.run_id, self.workflow, self.program)
        activation = self.log.activation(ctx.run_id)
        variables: dict[str, Any] = {"input": run_input}
        await self._ops(ctx, activation, self.program.get("ops") or [], variables)
        return {k: v for k, v in variables.items() if k != "input"}

    def _body(self, op: Mapping[str, Any], activation: str) -> Callable[[], Awaitable[Any]]:
        fail_attempts = int(op.get("fail_attempts", 0))
        hang = set(op.get("hang_attempts") or ())
        timeout_ms = op.get("timeout_ms")
        error = op.get("error") or DEFAULT_ERROR
        result: Any = Unencodable() if op.get("unencodable") else op.get("result")

        async def body() -> Any:
            info = current_step()
            if info is None:  # pragma: no cover - the engine always sets it
                raise RuntimeError("a step body ran outside a step")
            self.log.entered(info.run_id)
            self.log.faults.body_entered(info.run_id, info.key, info.attempt)
            try:
                # What this body's activation had read or appended when it started the
                # body (ADAPT-018); read the history only if the transport did not say.
                known = KNOWN_HISTORY.get()
                if known is None:
                    known = await self.known(info.run_id)
                self.log.began(info.run_id, info.key, info.attempt, activation, known)
                self.log.faults.occurred(info.run_id, "in-step-body")
                if info.attempt in hang:
                    # Past the attempt's timeout; an engine that does not stop the body
                    # must still record nothing from it (RETRY-016).
                    if timeout_ms is None:
                        await asyncio.Event().wait()
                    else:
                        await asyncio.sleep(2 * timeout_ms / 1000)
                failed = info.attempt <= fail_attempts  # ADAPT-010: by attempt number only
                self.log.faults.occurred(info.run_id, "after-step-body")
                if failed:
                    raise scripted_error(error)
                return result
            finally:
                self.log.ended(info.run_id)

        return body

    def _step(self, ctx: Context, activation: str, op: Mapping[str, Any]) -> Awaitable[Any]:
        timeout = op.get("timeout_ms")
        pending = ctx.step(
            op["name"],
            self._body(op, activation),
            retry=_retry(op),
            timeout=None if timeout is None else timedelta(milliseconds=timeout),
        )

        async def settle() -> Any:
            try:
                return await pending
            except StepFailed as exc:
                if op.get("catch"):
                    return {"failed": {"type": exc.error["type"], "message": exc.error["message"]}}
                raise

        return settle()

    def _input(self, ctx: Context, op: Mapping[str, Any]) -> Awaitable[Any]:
        timeout = op.get("timeout_ms")
        options: dict[str, Any] = {"prompt": op.get("prompt")}
        if "schema" in op:  # absent: the engine's own choice for no schema (INPUT-043)
            options["schema"] = op["schema"]
        pending = ctx.request_input(
            op["name"],
            timeout=None if timeout is None else timedelta(milliseconds=timeout),
            **options,
        )

        async def settle() -> Any:
            try:
                return await pending
            except InputExpired:
                if "on_expired" in op:
                    return op["on_expired"]["default"]
                raise

        return settle()

    def _issue(self, ctx: Context, activation: str, op: Mapping[str, Any]) -> Awaitable[Any]:
        kind = op["op"]
        if kind == "step":
            return self._step(ctx, activation, op)
        if kind == "sleep":
            if "until" in op:  # an absolute time, possibly already past (EVT-060)
                until = datetime.fromisoformat(op["until"].replace("Z", "+00:00"))
                return ctx.sleep_until(op["name"], until)
            return ctx.sleep(op["name"], timedelta(milliseconds=op["duration_ms"]))
        if kind == "input":
            return self._input(ctx, op)
        if kind == "record":
            if op["kind"] == "time":
                return ctx.now(op["name"])
            if op["kind"] == "random":
                return ctx.random(op["name"])
            return ctx.uuid(op["name"])
        raise ValueError(f"operation {kind!r} cannot run in parallel")

    async def _ops(
        self, ctx: Context, activation: str, ops: list[Any], variables: dict[str, Any]
    ) -> None:
        for op in ops:
            kind = op["op"]
            if kind in ("step", "sleep", "input", "record"):
                value = await self._issue(ctx, activation, op)
                if op.get("as") and kind in ("step", "input"):
                    variables[op["as"]] = value
            elif kind == "patch":
                taken = await ctx.patched(op["id"])
                await self._ops(
                    ctx, activation, op.get("then" if taken else "else") or [], variables
                )
            elif kind == "branch":
                value = variables.get(op["var"])
                for member in op.get("path") or []:
                    value = value.get(member) if isinstance(value, dict) else None
                for case in op.get("cases") or []:
                    if _json_equal(case["equals"], value):
                        await self._ops(ctx, activation, case["ops"], variables)
                        break
                else:
                    await self._ops(ctx, activation, op.get("else") or [], variables)
            elif kind == "parallel":
                # ADAPT-009: every primitive is issued, in list order, before any is awaited.
                issued: list[Awaitable[Any]] = []
                try:
                    for member in op["ops"]:
                        issued.append(self._issue(ctx, activation, member))
                except BaseException:
                    for pending in issued:  # never awaited now: close them quietly
                        if inspect.iscoroutine(pending):
                            pending.close()
                    raise
                results = await ctx.gather(*issued)
                for member, value in zip(op["ops"], results, strict=True):
                    if member.get("as") and member["op"] in ("step", "input"):
                        variables[member["as"]] = value
            elif kind == "raise":
                raise scripted_error(op["error"])
            else:
                raise ValueError(f"unknown operation {kind!r}")


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON: ``1 == 1.0`` but ``True != 1`` and ``0 != False``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)
