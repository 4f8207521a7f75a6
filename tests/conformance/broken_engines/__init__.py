"""Deliberately broken engines: the reference engine with exactly ONE bug each.

They exist to test the conformance suite (tests/conformance/test_broken_engines.py):
each must be caught by the quick profile, by the check that is meant to catch it.
Nothing here ships in the package; a bug is applied by monkeypatching reference
classes in the process that ``python -m tests.conformance.broken_engines BUG`` starts,
before it serves exactly what ``dwf serve --conformance --memory`` serves.

Every patch keeps the reference's own code path and changes one decision in it, so
that the engine is otherwise the conforming reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["BUGS", "apply"]


def _rerun_completed_steps() -> None:
    """A completed step body runs again on replay (REPLAY-011, REPLAY-023).

    When replay meets a step whose ``step-completed`` is recorded, the engine hands the
    code the recorded result (so the history is unchanged) but also starts the body
    again, as an engine does that decides "run the body" before it looks at history.
    """
    from durable_workflows.core.activation import Activation

    original = Activation.issue_step

    def issue_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        pending = original(self, *args, **kwargs)
        seq = self._pending_seq.get(id(pending))
        if seq is not None and seq <= self._history_max_seq:
            rec = self._issued[seq].rec
            if rec.status == "completed":
                self._to_dispatch.append((rec.key, int(rec.value["attempt"])))
        return pending

    Activation.issue_step = issue_step  # type: ignore[method-assign]


def _last_valid_input_wins() -> None:
    """A request takes the LAST valid submission of those it has read, not the first
    (INPUT-019). The earlier valid ones are rejected as ``already-answered``."""
    from durable_workflows.core.activation import Activation
    from durable_workflows.core.inbox import schema_problem

    original = Activation._inbox_pass

    def inbox_pass(self: Any, entries: Sequence[Any], *, resume: bool = True) -> bool:
        order = list(entries)
        seen: set[str] = set()
        valid: dict[str, list[int]] = {}
        for index, entry in enumerate(order):
            if entry.inbox_id in seen:
                continue
            seen.add(entry.inbox_id)
            if entry.kind != "submission" or entry.inbox_id in self._decided:
                continue
            rec = self._by_key.get(("input", entry.request or ""))
            if rec is None or rec.status != "pending":
                continue
            if schema_problem(rec.key, rec.value["schema"], entry.value) is None:
                valid.setdefault(rec.key, []).append(index)
        for indexes in valid.values():
            if len(indexes) > 1:  # the last valid one is seen first
                first, last = indexes[0], indexes[-1]
                order[first], order[last] = order[last], order[first]
        result: bool = original(self, order, resume=resume)
        return result

    Activation._inbox_pass = inbox_pass  # type: ignore[method-assign]


def _no_fencing() -> None:
    """History appends carry no ``Stream-Seq`` (FENCE-004): two workers that read the
    same history both record at the same position.

    One worker never races with itself; the suite makes two race with the adapter's
    ``workers: 2`` run option (feature ``concurrent-workers``).
    """
    from durable_workflows.engine import writer

    def no_seq(position: int) -> Any:
        return None  # the producer sends no Stream-Seq header then

    writer.stream_seq = no_seq


def _clock_on_replay() -> None:
    """Replay takes a recorded timestamp from the clock instead of the history.

    An activation that replays a run rebuilds the run entity with ITS clock reading as
    the run's ``started_at``, so every run message it records carries a fixed field
    that changed (EVT-009). (Restamping a sleep's ``scheduled_at`` or an input's
    ``requested_at`` as well breaks the schemas' ``wake_at``/``expires_at`` arithmetic,
    and the engine then refuses to replay its own history: a stalled run, not this bug.)
    """
    from durable_workflows.core.activation import Activation
    from durable_workflows.core.timefmt import floor_ms, format_ts

    original = Activation.advance

    def advance(self: Any, now: Any, *args: Any, **kwargs: Any) -> Any:
        if self._parsed.run is not None and not getattr(self, "_restamped", False):
            self._restamped = True  # once per activation: when it has replayed
            if self._run is not None:
                self._run["started_at"] = format_ts(floor_ms(now))
        return original(self, now, *args, **kwargs)

    Activation.advance = advance  # type: ignore[method-assign]


def _drop_early_submissions() -> None:
    """A submission read before its request is made is discarded instead of kept
    (INPUT-020): the engine marks it decided and records nothing for it."""
    from durable_workflows.core.activation import Activation

    original = Activation._inbox_pass

    def inbox_pass(self: Any, entries: Sequence[Any], *, resume: bool = True) -> bool:
        for entry in entries:
            if (
                entry.kind == "submission"
                and entry.inbox_id not in self._decided
                and ("input", entry.request or "") not in self._by_key
            ):
                self._decided.add(entry.inbox_id)
        result: bool = original(self, list(entries), resume=resume)
        return result

    Activation._inbox_pass = inbox_pass  # type: ignore[method-assign]


def _out_of_order() -> None:
    """Each append puts the inserts of new entities before the updates of existing ones,
    so a resumed run records its next primitive before ``run-resumed`` (MODEL-026)."""
    from durable_workflows.engine.writer import FencedWriter

    original = FencedWriter.append

    async def append(self: Any, messages: Sequence[Any], *, close: bool = False) -> None:
        inserts = [m for m in messages if m["headers"]["operation"] == "insert"]
        updates = [m for m in messages if m["headers"]["operation"] != "insert"]
        await original(self, inserts + updates, close=close)

    FencedWriter.append = append  # type: ignore[method-assign]


def _accept_schema_invalid() -> None:
    """A submission whose value fails the request's schema is received (INPUT-026)."""
    from durable_workflows.core import inbox_pass

    def no_problem(request_key: str, schema: Any, value: Any) -> str | None:
        return None

    inbox_pass.schema_problem = no_problem  # type: ignore[attr-defined]


def _append_to_later_versions() -> None:
    """The engine does not check the protocol a history records, so it goes on appending
    to a history of a major (or a later minor) it does not implement (VER-003, VER-005)."""
    from durable_workflows.core import history

    def any_protocol(version: object, implemented: str) -> None:
        return None

    history.check_protocol = any_protocol  # type: ignore[assignment]


def _traceback_in_errors() -> None:
    """A failing body's recorded error message carries the Python traceback (EVT-018)."""
    import traceback

    from durable_workflows.core.decisions import StepErrored

    original = StepErrored.from_exception.__func__  # type: ignore[attr-defined]

    def from_exception(cls: Any, exc: BaseException) -> Any:
        error = original(cls, exc)
        trace = "".join(traceback.format_exception(exc))
        return cls(error.type, f"{error.message}\n{trace}", error.details, error.retryable)

    StepErrored.from_exception = classmethod(from_exception)  # type: ignore[assignment]


def _final_rejections_reversed() -> None:
    """The rejections of a run's final append come in reverse inbox order (MODEL-037)."""
    from datetime import datetime

    from durable_workflows.core.activation import Activation

    original = Activation.closing

    def closing(self: Any, inbox_final: Sequence[Any], now: datetime) -> list[dict[str, Any]]:
        return list(reversed(original(self, inbox_final, now)))

    Activation.closing = closing  # type: ignore[method-assign]


def _history_before_inbox() -> None:
    """A new run's history is created before its inbox (MODEL-016): the streams still
    end up as they should, so only the engine's request log shows it."""
    from durable_workflows.engine.namespace import NamespaceIO

    original = NamespaceIO.ensure_inbox

    async def ensure_inbox(self: Any, run_id: str) -> None:
        await self.create_history(run_id)
        await original(self, run_id)

    NamespaceIO.ensure_inbox = ensure_inbox  # type: ignore[method-assign]


def _status_written_once() -> None:
    """A run's run-status row is written when the run starts and never again
    (MODEL-044): a task list never sees the run wait or end."""
    from durable_workflows.engine.status import StatusRows

    original = StatusRows.schedule

    def schedule(self: Any, view: Any) -> Any:
        if view.run_id in self._written:
            return None
        return original(self, view)

    StatusRows.schedule = schedule  # type: ignore[method-assign]


#: Bug name -> the patch that introduces it.
BUGS: dict[str, Callable[[], None]] = {
    "rerun-completed-steps": _rerun_completed_steps,
    "last-valid-input-wins": _last_valid_input_wins,
    "no-fencing": _no_fencing,
    "clock-on-replay": _clock_on_replay,
    "drop-early-submissions": _drop_early_submissions,
    "out-of-order": _out_of_order,
    "accept-schema-invalid": _accept_schema_invalid,
    "append-to-later-versions": _append_to_later_versions,
    "traceback-in-errors": _traceback_in_errors,
    "final-rejections-reversed": _final_rejections_reversed,
    "history-before-inbox": _history_before_inbox,
    "status-written-once": _status_written_once,
}


def apply(bug: str) -> None:
    """Introduce ``bug`` (a key of :data:`BUGS`; ``none`` changes nothing)."""
    if bug != "none":
        BUGS[bug]()
