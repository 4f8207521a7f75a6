"""A deterministic coroutine driver for workflow code (REPLAY-008), with no asyncio.

Workflow functions are ``async def`` functions, but they never run under an event loop:
the core drives their coroutines by hand. Every primitive returns a :class:`Pending`, an
awaitable whose outcome the core sets; a task that awaits an unfinished ``Pending`` yields
it to the driver and is resumed, FIFO, when the outcome is set. The same code, fed the same
outcomes in the same order, therefore issues the same primitives in the same order.

Awaiting anything else (``asyncio.sleep``, an HTTP client) raises
:class:`~.errors.WorkflowAwaitError` into the code with a clear message.
"""

from __future__ import annotations

import contextlib
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar, cast

from .errors import WorkflowAwaitError

__all__ = ["PatchCheck", "Pending", "Scheduler", "Task"]

T = TypeVar("T")

_UNSET: Any = object()


class Pending(Generic[T]):
    """The outcome of a primitive (or of a ``gather``, or of a task), set once by the core.

    Await it in workflow code: ``result = await ctx.step(...)``. A primitive takes its
    position when it is *called*, not when it is awaited (REPLAY-007), so
    ``a = ctx.step("a", f); b = ctx.step("b", g)`` issues ``a`` then ``b`` even if ``b`` is
    awaited first.
    """

    __slots__ = ("_callbacks", "_error", "_result", "label", "parts")

    def __init__(self, label: str = "", parts: tuple[Pending[Any], ...] = ()) -> None:
        self.label = label
        #: For a combination (``gather``): the awaitables it waits on.
        self.parts = parts
        self._result: Any = _UNSET
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Pending[T]], None]] = []

    @property
    def done(self) -> bool:
        """Whether the outcome is set."""
        return self._error is not None or self._result is not _UNSET

    def result(self) -> T:
        """The value, or raise the error; only once :attr:`done`."""
        if self._error is not None:
            raise self._error
        if self._result is _UNSET:
            raise RuntimeError(f"{self.label or 'primitive'} has no outcome yet")
        return cast(T, self._result)

    def set_result(self, value: T) -> None:
        """Set the value (core only)."""
        self._finish(value, None)

    def set_error(self, error: BaseException) -> None:
        """Set the error (core only)."""
        self._finish(_UNSET, error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        if self.done:
            raise RuntimeError(f"{self.label or 'primitive'} already has an outcome")
        self._result = value
        self._error = error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def add_callback(self, callback: Callable[[Pending[T]], None]) -> None:
        """Call ``callback(self)`` when the outcome is set (at once if it is)."""
        if self.done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def __await__(self) -> Generator[Any, Any, T]:
        if not self.done:
            yield self
        return self.result()

    def __repr__(self) -> str:
        state = "done" if self.done else "pending"
        return f"<Pending {self.label} {state}>"


class PatchCheck(Pending[bool]):
    """The answer of ``ctx.patched(id)``: decided when the check is made.

    Use it directly or await it: ``if ctx.patched("x"):`` and ``if await ctx.patched("x"):``
    mean the same (versioning.md shows the awaited form).
    """

    __slots__ = ()

    def __bool__(self) -> bool:
        return bool(self.result())


class Task:
    """One branch of workflow code: the root workflow coroutine or a ``gather`` child."""

    __slots__ = ("coro", "finished", "outcome", "waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, Any], outcome: Pending[Any]) -> None:
        self.coro = coro
        self.outcome = outcome
        self.waiting_on: Pending[Any] | None = None
        self.finished = False


class Scheduler:
    """Runs ready tasks FIFO until every task is finished or waits on an unfinished ``Pending``."""

    def __init__(self) -> None:
        self._ready: deque[tuple[Task, Any, BaseException | None]] = deque()
        self.tasks: list[Task] = []
        self.closed = False

    def waited_on(self) -> list[Pending[Any]]:
        """What the unfinished branches wait on now, combinations unfolded (unfinished only)."""
        found: list[Pending[Any]] = []
        stack = [t.waiting_on for t in self.tasks if not t.finished and t.waiting_on is not None]
        while stack:
            pending = stack.pop()
            if pending.done:
                continue
            if pending.parts:
                stack.extend(pending.parts)
            else:
                found.append(pending)
        return found

    def spawn(self, coro: Coroutine[Any, Any, Any], label: str = "task") -> Pending[Any]:
        """Start a task for ``coro``; it runs at the next :meth:`run_until_blocked`."""
        outcome: Pending[Any] = Pending(label)
        task = Task(coro, outcome)
        self.tasks.append(task)
        self._ready.append((task, None, None))
        return outcome

    @property
    def has_ready(self) -> bool:
        """Whether some task can run now."""
        return bool(self._ready)

    def run_until_blocked(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Run ready tasks, FIFO, until none is ready or ``stop()`` is true."""
        while self._ready and not self.closed and not stop():
            task, value, error = self._ready.popleft()
            self._step(task, value, error)

    def _step(self, task: Task, value: Any, error: BaseException | None) -> None:
        try:
            yielded = task.coro.throw(error) if error is not None else task.coro.send(value)
        except StopIteration as stop:
            task.finished = True
            task.outcome.set_result(stop.value)
            return
        except BaseException as exc:  # the branch ended with an error: give it to its awaiter
            task.finished = True
            if not isinstance(exc, Exception):
                raise
            task.outcome.set_error(exc)
            return
        if not isinstance(yielded, Pending):
            # REPLAY-008: only ctx primitives may suspend workflow code.
            message = (
                f"workflow code awaited {yielded!r}, which is not a ctx primitive; "
                "do I/O, asyncio and other awaits inside a step body"
            )
            self._ready.append((task, None, WorkflowAwaitError(message)))
            return
        task.waiting_on = yielded
        yielded.add_callback(functools.partial(self._wake, task))

    def _wake(self, task: Task, pending: Pending[Any]) -> None:
        task.waiting_on = None
        if not self.closed:
            self._ready.append((task, None, None))

    def close(self) -> None:
        """Stop every task (the run ended); ``finally`` blocks may run but record nothing."""
        self.closed = True
        self._ready.clear()
        for task in self.tasks:
            if not task.finished:
                task.finished = True
                # code that refuses to close is abandoned; nothing it does is recorded
                with contextlib.suppress(BaseException):
                    task.coro.close()


def awaitable_label(aw: Awaitable[Any]) -> str:
    """A short label for an awaitable, for error messages."""
    return getattr(aw, "label", None) or type(aw).__name__
