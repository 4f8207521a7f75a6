"""Replaying and running the workflow code (replay.md).

The workflow coroutine is started once per activation and driven by the deterministic
scheduler. Every primitive it issues is matched against the recorded primitive at the next
position (REPLAY-010) or, past the recorded ones, recorded anew. The *outcome log* lists
the positions of finished steps, sleeps and inputs in the order their outcome messages
appear in history; outcomes are given to the code strictly in that order, one at a time,
running the code until it blocks between two (REPLAY-013). Live outcomes are appended to
the same log and given the same way, so a live execution and its replay see identical
interleavings. The ``issue_*`` methods and :meth:`gather` are what
:class:`~.api.Context` calls.
"""

from __future__ import annotations

import contextlib
import inspect
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from .api import Context, RetryPolicy
from .ending import NOT_BY_CODE
from .errors import InputExpired, NonDeterminism, StepFailed
from .history import Recorded
from .inbox import check_request_schema
from .messages import (
    error_object,
    input_requested,
    patch_recorded,
    sleep_scheduled,
    step_started,
    value_recorded,
)
from .run_state import Issued, RunState, json_copy
from .scheduler import PatchCheck, Pending, Scheduler
from .timefmt import ceil_ms, format_ts, parse_ts, plus_ms

__all__ = ["Replayer"]


class _Diverged(BaseException):
    """Unwinds workflow code once non-determinism is found (code must not catch it)."""


class _Beyond(Exception):
    """Offline check of a live history: the code went past what is recorded (it stops there)."""


class _Stopped(BaseException):
    """A primitive issued after the core stopped the code (run ended, or offline check)."""


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID from ``rng`` (no ``uuid.uuid4``: that reads the OS random source)."""
    bits = rng.getrandbits(128)
    bits &= ~(0xF000 << 64)
    bits |= 0x4000 << 64  # version 4
    bits &= ~(0xC000 << 48)
    bits |= 0x8000 << 48  # RFC 4122 variant
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _describe(entity: str, name: str, kind: str | None) -> str:
    text = f'{entity} "{name}"'
    return f"{text} (kind {kind})" if kind is not None else text


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


class Replayer(RunState):
    """Runs the code and matches what it issues against the history."""

    # -- running the code ----------------------------------------------------------

    def _start_code(self) -> None:
        assert self._workflow is not None
        self._sched = Scheduler()
        fn = self._workflow.fn
        try:
            coro = fn(Context(self), json_copy(self._input))
        except Exception as exc:  # a non-async function that raised at once
            self._root = Pending("workflow")
            self._root.set_error(exc)
            return
        if not inspect.iscoroutine(coro):
            self._root = Pending("workflow")
            self._root.set_error(
                TypeError(f"workflow '{self._workflow.name}' must be an async def function")
            )
            return
        self._root = self._sched.spawn(coro, "workflow")

    def _run_code(self) -> None:
        """Run ready branches until all block, the code ends, or non-determinism is found."""
        assert self._sched is not None
        with contextlib.suppress(_Diverged):
            self._sched.run_until_blocked(stop=lambda: self._nd is not None or self._code_ended())

    def _pump(self) -> None:
        """Give outcomes to the code in outcome-log order, one at a time (REPLAY-013)."""
        while True:
            self._run_code()
            if self._nd is not None or self._code_ended() or self._stopped:
                return
            if self._next_outcome >= len(self._outcomes):
                return
            issued = self._issued.get(self._outcomes[self._next_outcome])
            if issued is None:
                return  # its primitive is not reached: blocked (case 3 in replay)
            self._next_outcome += 1
            self._give(issued)

    def _give(self, issued: Issued) -> None:
        rec = issued.rec
        v = rec.value
        if rec.entity == "step":
            if v["status"] == "completed":
                issued.pending.set_result(json_copy(v["result"]))
            else:  # RETRY-018, RETRY-018: the error built from the recorded one
                issued.pending.set_error(StepFailed(rec.key, int(v["attempt"]), v["error"]))
        elif rec.entity == "sleep":
            issued.pending.set_result(None)
        elif v["status"] == "received":  # INPUT-005
            issued.pending.set_result(json_copy(v["value"]))
        else:  # INPUT-006
            issued.pending.set_error(InputExpired(rec.key, str(v["expired_at"])))

    def _replay(self) -> None:
        """REPLAY-016: replay the whole history before acting on anything."""
        self._replayed = True
        self._start_code()
        self._pump()
        if self._nd is None:
            self._check_unreached()
        if self._nd is not None:
            # REPLAY-017/018: nothing from the divergent code is recorded.
            self._buffer = []
            self._to_dispatch = []
            nd = self._nd
            self._end("failed", error=error_object("NonDeterminism", str(nd), nd.details))

    def _check_unreached(self) -> None:
        """Cases 2 and 3 of replay.md: the code ended or blocked short of the history."""
        self._skip_markers()  # VER-013
        if self._cursor > self._history_max_seq:
            return
        rec = self._recorded[self._cursor]
        if self._code_ended():
            how = "the code ended without reaching it"
        else:
            how = "the code is blocked without reaching it"
        self._nd = NonDeterminism(
            rec.seq,
            {"kind": rec.entity, "name": rec.name},
            None,
            f"at seq {rec.seq} history has {rec.describe()} but {how}",
        )

    def _code_ended_run(self) -> bool:
        """The history ends where the code ended the run (returned or raised).

        Only then is a primitive past the history a divergence (recorded ``null``); a run
        cut short by a cancel, a non-determinism or a limit simply stops there.
        """
        run = self._parsed.run
        if run is None or run["status"] not in ("completed", "failed"):
            return False
        error = run["error"]
        return error is None or error["type"] not in NOT_BY_CODE

    # -- matching primitives -------------------------------------------------------

    def _skip_markers(self) -> None:
        while (
            self._cursor <= self._history_max_seq and self._recorded[self._cursor].entity == "patch"
        ):
            self._cursor += 1

    def _issue(self, entity: str, name: str, kind: str | None) -> tuple[int, str, Recorded | None]:
        """Take the next position for a primitive and match it (REPLAY-006, REPLAY-010)."""
        if self._stopped:
            raise _Stopped("the run has ended; no primitive is recorded")
        if self._nd is not None:
            raise _Diverged
        self._skip_markers()  # VER-013
        count = self._counts.get((entity, name), 0) + 1
        self._counts[(entity, name)] = count
        key = name if count == 1 else f"{name}#{count}"  # EVT-015
        if self._cursor <= self._history_max_seq:
            rec = self._recorded[self._cursor]
            if (rec.entity, rec.name, rec.kind) != (entity, name, kind):
                asked = _describe(entity, name, kind)
                self._nd = NonDeterminism(
                    rec.seq,
                    {"kind": rec.entity, "name": rec.name},
                    {"kind": entity, "name": name},
                    f"at seq {rec.seq} history has {rec.describe()} but the code asked for {asked}",
                )
                raise _Diverged
            self._cursor += 1
            return rec.seq, rec.key, rec
        if self._offline:
            if self._code_ended_run():
                # A finished history checked offline: the code asks for more than was recorded.
                seq = self._max_seq + 1
                asked = _describe(entity, name, kind)
                self._nd = NonDeterminism(
                    seq,
                    None,
                    {"kind": entity, "name": name},
                    f"at seq {seq} the finished run's history has nothing "
                    f"but the code asked for {asked}",
                )
                raise _Diverged
            raise _Beyond
        seq = self._max_seq + 1
        self._max_seq = seq
        self._cursor = seq + 1
        return seq, key, None

    def _new(
        self, seq: int, entity: str, key: str, name: str, kind: str | None, message: dict[str, Any]
    ) -> Recorded:
        rec = Recorded(seq, entity, key, name, kind, dict(message["value"]))
        self._recorded[seq] = rec
        self._by_key[(entity, key)] = rec
        # MODEL-026: a suspended run resumes before it records a new primitive (new code can
        # issue one during replay of a suspended run).
        self._resume_if_suspended()
        self._emit(message)
        return rec

    # -- the _Runtime protocol (called by Context) ---------------------------------

    def issue_step(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: RetryPolicy,
        timeout_ms: int | None,
    ) -> Pending[Any]:
        try:
            seq, key, rec = self._issue("step", name, None)
        except _Beyond:  # REPLAY-029: where an offline check stops
            return Pending(f'step "{name}"')
        pending: Pending[Any] = Pending(f'step "{key}"')
        if rec is None:
            # RETRY-003: max_attempts and timeout_ms are recorded and govern every attempt.
            msg = step_started(key, name, seq, policy.max_attempts, timeout_ms, self._t)
            rec = self._new(seq, "step", key, name, None, msg)
            self._to_dispatch.append((key, 1))
        elif rec.status == "running":
            # REPLAY-012/022, RETRY-011: an interrupted attempt runs again as the same attempt.
            self._to_dispatch.append((key, int(rec.value["attempt"])))
        self._track(seq, Issued(rec, pending, fn, args, kwargs, policy))
        return pending

    def issue_sleep(
        self, name: str, duration_ms: int | None, until: datetime | None
    ) -> Pending[None]:
        try:
            seq, key, rec = self._issue("sleep", name, None)
        except _Beyond:  # REPLAY-029: where an offline check stops
            return Pending(f'sleep "{name}"')
        pending: Pending[None] = Pending(f'sleep "{key}"')
        if rec is None:
            if duration_ms is not None:
                wake = plus_ms(self._now, duration_ms)  # EVT-059
            else:
                assert until is not None
                wake = ceil_ms(until)  # EVT-060; rounded up so it never fires early
            msg = sleep_scheduled(key, name, seq, duration_ms, self._t, format_ts(wake))
            rec = self._new(seq, "sleep", key, name, None, msg)
        self._track(seq, Issued(rec, pending))
        return pending

    def issue_input(
        self, name: str, schema: Any, prompt: str | None, timeout_ms: int | None
    ) -> Pending[Any]:
        # INPUT-029: checked before anything is recorded (and before a position is taken).
        schema = check_request_schema(name, schema)
        try:
            seq, key, rec = self._issue("input", name, None)
        except _Beyond:  # REPLAY-029: where an offline check stops
            return Pending(f'input "{name}"')
        pending: Pending[Any] = Pending(f'input "{key}"')
        if rec is None:
            expires = None if timeout_ms is None else format_ts(plus_ms(self._now, timeout_ms))
            msg = input_requested(key, name, seq, prompt, schema, self._t, expires)  # INPUT-004
            rec = self._new(seq, "input", key, name, None, msg)
        self._track(seq, Issued(rec, pending))
        return pending

    def issue_record(self, name: str, kind: str) -> Pending[Any]:
        try:
            seq, key, rec = self._issue("record", name, kind)
        except _Beyond:
            return Pending(f'record "{name}"')
        pending: Pending[Any] = Pending(f'record "{key}"')
        if rec is None:
            assert self._rng is not None
            value: Any
            if kind == "time":
                value = self._t
            elif kind == "random":
                value = self._rng.random()
            else:
                value = _uuid4(self._rng)
            msg = value_recorded(key, name, seq, kind, value, self._t)
            rec = self._new(seq, "record", key, name, kind, msg)
        self._track(seq, Issued(rec, pending))
        recorded = rec.value["value"]
        # REPLAY-011: a record's outcome is its recorded value, at once.
        pending.set_result(parse_ts(recorded) if kind == "time" else recorded)
        return pending

    def issue_patch(self, patch_id: str) -> PatchCheck:
        if self._stopped:
            raise _Stopped("the run has ended; no primitive is recorded")
        if self._nd is not None:
            raise _Diverged
        pending = PatchCheck(f'patch "{patch_id}"')
        if patch_id in self._patches:  # VER-009
            pending.set_result(self._patches[patch_id])
            return pending
        answer: bool
        if self._cursor <= self._history_max_seq:
            block: list[Recorded] = []
            pos = self._cursor
            while pos <= self._history_max_seq and self._recorded[pos].entity == "patch":
                block.append(self._recorded[pos])
                pos += 1
            match = next((r for r in block if r.name == patch_id), None)
            if match is not None:  # VER-010: skip the markers before it, match it
                self._cursor = match.seq + 1
                answer = True
            else:  # VER-012: the run passed here before the patch existed
                answer = False
        elif ("patch", patch_id) in self._by_key:
            # VER-016, EVT-006: never a second marker. This id's marker was skipped earlier, so
            # the run did not pass this check where the code now asks: the old branch.
            answer = False
        elif self._offline:
            if self._code_ended_run():
                seq = self._max_seq + 1
                self._nd = NonDeterminism(
                    seq,
                    None,
                    {"kind": "patch", "name": patch_id},
                    f"at seq {seq} the finished run's history has nothing "
                    f'but the code asked for patch "{patch_id}"',
                )
                raise _Diverged
            # Offline, past a live history: the answer live execution would give (VER-015),
            # recorded nowhere (REPLAY-029).
            answer = True
        else:  # VER-015: live execution records the marker at the next position
            seq = self._max_seq + 1
            self._max_seq = seq
            self._cursor = seq + 1
            self._new(
                seq, "patch", patch_id, patch_id, None, patch_recorded(patch_id, seq, self._t)
            )
            answer = True
        self._patches[patch_id] = answer
        pending.set_result(answer)
        return pending

    def gather(self, awaitables: tuple[Awaitable[Any], ...]) -> Pending[list[Any]]:
        if self._stopped:
            raise _Stopped("the run has ended")
        assert self._sched is not None
        children: list[Pending[Any]] = []
        for aw in awaitables:
            if isinstance(aw, Pending):
                children.append(aw)
            elif inspect.iscoroutine(aw):
                children.append(self._sched.spawn(aw, "gather branch"))
            elif inspect.isawaitable(aw):
                children.append(self._sched.spawn(_await(aw), "gather branch"))
            else:
                raise TypeError(f"gather() takes awaitables, not {type(aw).__name__}")
        result: Pending[list[Any]] = Pending("gather", tuple(children))
        if not children:
            result.set_result([])
            return result
        remaining = [len(children)]

        def child_done(child: Pending[Any]) -> None:
            if result.done:
                return
            try:
                child.result()
            except Exception as exc:  # the first error, in the order outcomes are given
                result.set_error(exc)
                return
            remaining[0] -= 1
            if remaining[0] == 0:
                result.set_result([c.result() for c in children])

        for child in children:
            child.add_callback(child_done)
        return result
