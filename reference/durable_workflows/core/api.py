"""The workflow API: what workflow authors write against.

A workflow is a plain ``async def`` function of ``(ctx, input)`` registered under an
explicit name; every interaction with the world goes through a ``ctx`` primitive with an
explicit name (no build-time transformation, no names derived from source locations)::

    @workflow("expense-approval")
    async def expense_approval(ctx: Context, report: dict) -> dict:
        total = await ctx.step("sum", sum_items, report)
        if total > 1000:
            answer = await ctx.request_input("manager", schema=APPROVAL, timeout=timedelta(days=3))
        await ctx.sleep("cool-off", timedelta(minutes=5))
        return await ctx.step("pay", pay, report, retry=3)

The code runs under the core's deterministic scheduler (not asyncio) and is replayed from
the top on every activation, so it must be deterministic: use ``ctx.now()``,
``ctx.random()`` and ``ctx.uuid()`` instead of the clock and ``random``, and do I/O only
inside step bodies. Step bodies (sync or async functions) run in the shell, at least once.
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import inspect
import math
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any, Protocol, TypeVar, overload

from .errors import InvalidPrimitive
from .scheduler import PatchCheck, Pending

__all__ = [
    "NAME_PATTERN",
    "Context",
    "RetryPolicy",
    "StepInfo",
    "Workflow",
    "WorkflowFunction",
    "WorkflowRegistry",
    "current_step",
    "workflow",
]

T = TypeVar("T")

#: Names of primitives and workflows (EVT-014): 1-128 chars, no ``#``, no control chars.
NAME_PATTERN = re.compile(r"^[^#\x00-\x1f]{1,128}$")

#: A workflow function: ``async def fn(ctx, input) -> output``.
WorkflowFunction = Callable[["Context", Any], Coroutine[Any, Any, Any]]


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it matches the name pattern, else raise InvalidPrimitive (REPLAY-005)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidPrimitive(f"{what} {name!r} does not match ^[^#\\u0000-\\u001f]{{1,128}}$")
    return name


def to_ms(duration: timedelta, what: str) -> int:
    """A non-negative duration in whole milliseconds, rounded up (EVT-013)."""
    if not isinstance(duration, timedelta):
        raise InvalidPrimitive(
            f"{what} must be a datetime.timedelta, not {type(duration).__name__}"
        )
    if duration < timedelta(0):
        raise InvalidPrimitive(f"{what} must not be negative")
    micros = duration // timedelta(microseconds=1)
    return -(-micros // 1000)


# --------------------------------------------------------------------------------------
# Workflows and the registry


@dataclass(frozen=True)
class Workflow:
    """A workflow function registered under an explicit name.

    Calling it is not how a run starts: a client appends ``run-requested`` to the run index
    (``dwf start``). ``fn`` is the ``async def fn(ctx, input)`` function itself.
    """

    name: str
    fn: WorkflowFunction
    #: A JSON Schema (2020-12) of the input: clients build a start form from it, and a
    #: run whose input it does not accept fails at once with ``InvalidInput`` (MODEL-051).
    input_schema: Any = field(default=None, compare=False)
    #: One line that says what the workflow does, for people choosing one.
    title: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "workflow name")
        if self.input_schema is not None:
            from .inbox import check_request_schema

            schema = check_request_schema(f"{self.name} (input schema)", self.input_schema)
            object.__setattr__(self, "input_schema", schema)


def workflow(
    name: str,
    *,
    registry: WorkflowRegistry | None = None,
    input_schema: Any = None,
    title: str | None = None,
) -> Callable[[WorkflowFunction], Workflow]:
    """Decorator: make ``fn`` the workflow ``name`` (and add it to ``registry`` when given).

    The decorated name is bound to a :class:`Workflow`; shells find workflows in a module
    with :meth:`WorkflowRegistry.from_module`. There is no global registry.
    """

    def decorate(fn: WorkflowFunction) -> Workflow:
        wf = Workflow(name, fn, input_schema=input_schema, title=title)
        if registry is not None:
            registry.add(wf)
        return wf

    return decorate


class WorkflowRegistry:
    """Workflows by name, for the shells: the worker looks up ``run-requested.workflow`` here."""

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._by_name: dict[str, Workflow] = {}
        for wf in workflows:
            self.add(wf)

    def add(self, wf: Workflow) -> Workflow:
        """Register ``wf``; a second, different workflow under the same name is an error."""
        existing = self._by_name.get(wf.name)
        if existing is not None and existing is not wf:
            raise ValueError(f"workflow {wf.name!r} is already registered")
        self._by_name[wf.name] = wf
        return wf

    def workflow(
        self, name: str, *, input_schema: Any = None, title: str | None = None
    ) -> Callable[[WorkflowFunction], Workflow]:
        """Decorator form of :func:`workflow` that registers here."""
        return workflow(name, registry=self, input_schema=input_schema, title=title)

    def get(self, name: str) -> Workflow | None:
        """The workflow ``name``, or ``None`` (the run fails with UnknownWorkflow, MODEL-019)."""
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Workflow]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._by_name)

    @classmethod
    def from_module(cls, *modules: ModuleType) -> WorkflowRegistry:
        """A registry of every :class:`Workflow` bound at the top level of ``modules``."""
        reg = cls()
        for module in modules:
            for value in vars(module).values():
                if isinstance(value, Workflow):
                    reg.add(value)
        return reg


# --------------------------------------------------------------------------------------
# Retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """How a step retries (retries.md, defaults per RETRY-021).

    ``max_attempts`` counts attempts in total (1 = no retry). The delay after failed attempt
    ``a`` is ``min(initial_interval * backoff_coefficient ** (a - 1), max_interval)`` plus a
    random jitter of up to ``jitter`` times that delay (RETRY-005 allows up to 20%), drawn
    from the rng the shell passes in and recorded as ``retry_at``. ``non_retryable`` lists
    error types that end the step at once (RETRY-014). Invalid values raise
    :class:`InvalidPrimitive` when the policy is built, before anything is recorded (RETRY-002).
    """

    max_attempts: int = 3
    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    max_interval: timedelta = timedelta(seconds=60)
    non_retryable: tuple[str, ...] = field(default=())
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise InvalidPrimitive(
                f"max_attempts must be an integer >= 1, not {self.max_attempts!r}"
            )
        initial = to_ms(self.initial_interval, "initial_interval")
        if initial < 1:
            raise InvalidPrimitive("initial_interval must be at least 1 ms")
        coef = self.backoff_coefficient
        if (
            isinstance(coef, bool)
            or not isinstance(coef, int | float)
            or not math.isfinite(coef)
            or coef < 1.0
        ):
            raise InvalidPrimitive(f"backoff_coefficient must be a number >= 1.0, not {coef!r}")
        if to_ms(self.max_interval, "max_interval") < initial:
            raise InvalidPrimitive("max_interval must be at least initial_interval")
        if isinstance(self.non_retryable, str) or not all(
            isinstance(t, str) for t in self.non_retryable
        ):
            raise InvalidPrimitive("non_retryable must be a sequence of error type names")
        object.__setattr__(self, "non_retryable", tuple(self.non_retryable))
        if not isinstance(self.jitter, int | float) or not 0.0 <= self.jitter <= 0.2:
            raise InvalidPrimitive("jitter must be between 0.0 and 0.2 (RETRY-005)")

    @property
    def initial_interval_ms(self) -> int:
        """``initial_interval`` in milliseconds."""
        return to_ms(self.initial_interval, "initial_interval")

    @property
    def max_interval_ms(self) -> int:
        """``max_interval`` in milliseconds."""
        return to_ms(self.max_interval, "max_interval")

    def delay_ms(self, attempt: int) -> float:
        """``delay(a)`` of retries.md, without jitter, in milliseconds."""
        raw = self.initial_interval_ms * self.backoff_coefficient ** (attempt - 1)
        return float(min(raw, self.max_interval_ms))

    @classmethod
    def coerce(cls, retry: RetryPolicy | int | None) -> RetryPolicy:
        """``None`` -> defaults, an int -> that many attempts, a policy -> itself."""
        if retry is None:
            return _DEFAULT_POLICY if cls is RetryPolicy else cls()
        if isinstance(retry, RetryPolicy):
            return retry
        if isinstance(retry, int) and not isinstance(retry, bool):
            return cls(max_attempts=retry)
        raise InvalidPrimitive(
            f"retry must be a RetryPolicy, an int or None, not {type(retry).__name__}"
        )


#: The policy of a step issued without one (frozen, so shared; built once, not per step).
_DEFAULT_POLICY = RetryPolicy()

# --------------------------------------------------------------------------------------
# Step bodies: what a body may learn about itself (REPLAY-024)


@dataclass(frozen=True)
class StepInfo:
    """Who a running step body is: use it to build idempotency keys (``f"{run_id}/{key}"``)."""

    run_id: str
    key: str
    name: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """``run_id/key``: the same for every attempt and every re-run of the step."""
        return f"{self.run_id}/{self.key}"


_CURRENT_STEP: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "durable_workflows_step", default=None
)


def current_step() -> StepInfo | None:
    """Inside a step body run by a shell: the body's :class:`StepInfo`; elsewhere ``None``."""
    return _CURRENT_STEP.get()


# --------------------------------------------------------------------------------------
# The context


class _Runtime(Protocol):
    """What a Context asks of the activation that runs it (internal)."""

    @property
    def run_id(self) -> str: ...
    @property
    def workflow_name(self) -> str: ...

    def issue_step(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: RetryPolicy,
        timeout_ms: int | None,
    ) -> Pending[Any]: ...
    def issue_sleep(
        self, name: str, duration_ms: int | None, until: datetime | None
    ) -> Pending[None]: ...
    def issue_input(
        self, name: str, schema: Any, prompt: str | None, timeout_ms: int | None
    ) -> Pending[Any]: ...
    def issue_record(self, name: str, kind: str) -> Pending[Any]: ...
    def issue_patch(self, patch_id: str) -> PatchCheck: ...
    def gather(self, awaitables: tuple[Awaitable[Any], ...]) -> Pending[list[Any]]: ...


class Context:
    """The handle workflow code gets as its first argument.

    Every method issues a primitive *when called* (REPLAY-007) and returns an awaitable
    :class:`Pending`. Names follow ``^[^#\\u0000-\\u001f]{1,128}$``; a name used twice for
    the same kind gets the keys ``name``, ``name#2``, ... (EVT-015).
    """

    __slots__ = ("_rt",)

    def __init__(self, runtime: _Runtime) -> None:
        self._rt = runtime

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._rt.run_id

    @property
    def workflow_name(self) -> str:
        """The name the run's workflow was started under."""
        return self._rt.workflow_name

    @overload
    def step(
        self,
        name: str,
        fn: Callable[..., Coroutine[Any, Any, T]],
        *args: Any,
        retry: RetryPolicy | int | None = None,
        timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> Pending[T]: ...
    @overload
    def step(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        retry: RetryPolicy | int | None = None,
        timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> Pending[T]: ...
    def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | int | None = None,
        timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> Pending[Any]:
        """Run ``fn(*args, **kwargs)`` (sync or async) as the step ``name``; await its result.

        The body runs in the shell after ``step-started`` is durable, at least once, never
        again once its outcome is recorded (RETRY-011/023). Its return value must be JSON;
        the code gets it decoded from JSON (REPLAY-014). ``retry`` is a :class:`RetryPolicy`,
        an attempt count, or ``None`` for the defaults; ``timeout`` bounds each attempt
        (RETRY-015). A step that fails for good raises :class:`StepFailed` at the await.
        """
        check_name(name, "step name")
        policy = RetryPolicy.coerce(retry)
        timeout_ms = None if timeout is None else to_ms(timeout, "timeout")
        if timeout_ms is not None and timeout_ms < 1:
            raise InvalidPrimitive("timeout must be at least 1 ms")  # RETRY-002
        if not callable(fn):
            raise InvalidPrimitive(f"step {name!r}: fn must be callable")
        _check_arguments(name, fn, args, kwargs)
        return self._rt.issue_step(name, fn, tuple(args), dict(kwargs), policy, timeout_ms)

    def sleep(self, name: str, duration: timedelta) -> Pending[None]:
        """Wait ``duration`` (recorded as ``wake_at``; never fires before it)."""
        check_name(name, "sleep name")
        return self._rt.issue_sleep(name, to_ms(duration, "duration"), None)

    def sleep_until(self, name: str, when: datetime) -> Pending[None]:
        """Wait until the absolute time ``when`` (timezone-aware); ``duration_ms`` is null."""
        check_name(name, "sleep name")
        if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
            raise InvalidPrimitive("sleep_until needs a timezone-aware datetime")
        return self._rt.issue_sleep(name, None, when)

    def request_input(
        self,
        name: str,
        *,
        schema: dict[str, Any] | bool = True,
        prompt: str | None = None,
        timeout: timedelta | None = None,
    ) -> Pending[Any]:
        """Ask for a value from outside (inputs.md); await the accepted value.

        ``schema`` is a JSON Schema 2020-12 document (object or boolean) with no ``$ref``
        outside itself (INPUT-029); it is recorded, and submissions are validated against
        the recorded one. Without one, ``true`` is recorded: any JSON value (INPUT-043).
        With ``timeout``, the request expires at request time + timeout and the await
        raises :class:`InputExpired` (INPUT-006). The request id is the key: ``name`` or
        ``name#N``.
        """
        check_name(name, "input name")
        if prompt is not None and not isinstance(prompt, str):
            raise InvalidPrimitive("prompt must be a string or None")
        timeout_ms = None if timeout is None else to_ms(timeout, "timeout")
        return self._rt.issue_input(name, schema, prompt, timeout_ms)

    def now(self, name: str = "now") -> Pending[datetime]:
        """The current time (UTC, milliseconds), recorded as ``value-recorded`` (REPLAY-021)."""
        check_name(name, "record name")
        return self._rt.issue_record(name, "time")

    def random(self, name: str = "random") -> Pending[float]:
        """A random float in [0, 1), recorded once."""
        check_name(name, "record name")
        return self._rt.issue_record(name, "random")

    def uuid(self, name: str = "uuid") -> Pending[str]:
        """A random UUID (version 4, canonical lowercase string), recorded once."""
        check_name(name, "record name")
        return self._rt.issue_record(name, "uuid")

    def patched(self, patch_id: str) -> PatchCheck:
        """Whether this run takes the new branch of a code change (versioning.md, VER-009..016).

        ``if await ctx.patched("fx-rounding"): new() else: old()``; the answer is decided at
        the call, so ``if ctx.patched("fx-rounding"):`` works too. A run that passed this
        point before the patch existed keeps the old branch on every replay.
        """
        check_name(patch_id, "patch id")
        return self._rt.issue_patch(patch_id)

    def gather(self, *awaitables: Awaitable[Any]) -> Pending[list[Any]]:
        """Await several primitives or coroutines concurrently; results in argument order.

        Coroutines become branches run by the deterministic scheduler in FIFO order
        (REPLAY-008). The first error (in the order outcomes are recorded) is raised; the
        other branches keep running.
        """
        return self._rt.gather(tuple(awaitables))


#: The options of ``ctx.step``; any other keyword goes to the body.
_STEP_OPTIONS = ("retry", "timeout")


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    """``inspect.signature(fn)``, once per body (a long run issues the same body thousands
    of times, and building a signature costs more than binding it)."""
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _check_arguments(
    name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Refuse, when the step is issued, arguments its body cannot take: a misspelt
    option (``retries=3``) would otherwise reach the body and fail every attempt."""
    try:
        signature = _signature(fn)
    except TypeError:  # unhashable: not cached
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            return
    if signature is None:
        return  # a builtin without a signature: the body will say
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        hint = ""
        close = difflib.get_close_matches(next(iter(kwargs), ""), _STEP_OPTIONS, n=1)
        if close:
            hint = f"; did you mean the step option {close[0]}=?"
        raise InvalidPrimitive(f"step {name!r}: {exc}{hint}") from None
