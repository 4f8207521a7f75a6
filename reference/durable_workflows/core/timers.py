"""Deadlines, suspension and step attempts (model.md, retries.md).

What a blocked run waits for and records when it suspends (MODEL-022..024); which
sleeps, expiries and retries are due at ``now`` (EVT-064, INPUT-034, RETRY-006); and how
the outcome of a step attempt is recorded: completed, retrying with its backoff, or
failed (RETRY-004..016, SEC-009).
"""

from __future__ import annotations

from datetime import datetime

from .api import RetryPolicy
from .decisions import StepErrored, StepSucceeded, StepTimedOut
from .history import Recorded
from .inbox import compact_size
from .messages import error_object, input_expired, sleep_completed, step_update
from .run_state import Issued, RunState, StepReport, json_copy
from .timefmt import ceil_ms, format_ts, parse_ts, plus_ms

__all__ = ["Timers"]


class Timers(RunState):
    """Deadlines, suspension and the recording of step attempts."""

    # -- deadlines -----------------------------------------------------------------

    @staticmethod
    def _deadline(rec: Recorded) -> str | None:
        if rec.entity == "sleep":
            return str(rec.value["wake_at"])
        if rec.entity == "input":
            expires = rec.value["expires_at"]
            return None if expires is None else str(expires)
        if rec.entity == "step" and rec.status == "retrying":
            return str(rec.value["retry_at"])
        return None

    def _earliest_deadline(self, pending: list[Recorded]) -> datetime | None:
        times = [parse_ts(d) for d in (self._deadline(r) for r in pending) if d is not None]
        return min(times, default=None)

    def _suspend(self) -> None:
        """MODEL-022..024, EVT-027/028: record what the blocked code waits for."""
        awaited = self._awaited()
        pending = [r for r in self._pending_prims() if r.seq in awaited]
        inputs = [r.key for r in pending if r.entity == "input"]
        until = self._earliest_deadline(pending)
        if not inputs and until is None:
            # Blocked on nothing that can finish (code awaiting something no primitive
            # resolves): there is nothing to wait for, so no suspension is recorded.
            return
        waiting_for = {"inputs": inputs, "until": None if until is None else format_ts(until)}
        self._run_event(status="waiting" if inputs else "sleeping", waiting_for=waiting_for)

    def _fire_timers(self, inbox_at_tail: bool) -> bool:
        due: list[tuple[datetime, int, Recorded]] = []
        for rec in self._pending_prims():
            deadline = self._deadline(rec)
            if deadline is None:
                continue
            when = parse_ts(deadline)
            if rec.entity == "input" and not inbox_at_tail:
                continue  # INPUT-035: only after the inbox was read to its tail
            if self._now >= when:  # EVT-064, INPUT-034, RETRY-006: never early
                due.append((when, rec.seq, rec))
        for _, _, rec in sorted(due, key=lambda d: (d[0], d[1])):
            if rec.entity == "sleep":
                self._update(rec, sleep_completed(rec.key, rec.value, self._t), outcome=True)
            elif rec.entity == "input":  # INPUT-036
                self._update(rec, input_expired(rec.key, rec.value, self._t), outcome=True)
            else:  # RETRY-007: the next attempt's start is recorded before its body runs
                attempt = int(rec.value["attempt"]) + 1
                msg = step_update(
                    rec.key,
                    rec.value,
                    status="running",
                    attempt=attempt,
                    started_at=self._t,
                    error=None,
                    retry_at=None,
                )
                self._update(rec, msg, outcome=False)
                self._to_dispatch.append((rec.key, attempt))
                self._resume_if_suspended()  # a body will run: the run is not blocked
                continue
            self._resume_if_awaited(rec.seq)
        return bool(due)

    # -- step outcomes -------------------------------------------------------------

    def _record_reports(self) -> bool:
        progressed = False
        reports, self._reports = self._reports, []
        for report in reports:
            rec = self._by_key.get(("step", report.key))
            if rec is None or rec.status != "running" or rec.value["attempt"] != report.attempt:
                continue  # RETRY-016: an attempt already decided
            self._record_attempt(rec, self._issued[rec.seq], report)
            progressed = True
        return progressed

    def _record_attempt(self, rec: Recorded, issued: Issued, report: StepReport) -> None:
        t = format_ts(report.at)
        outcome = report.outcome
        attempt = report.attempt
        if isinstance(outcome, StepSucceeded):
            size = compact_size(outcome.result)
            if size is None:  # EVT-052
                outcome = StepErrored(
                    "InvalidResult",
                    f"Step '{rec.key}' returned a value that cannot be encoded as JSON.",
                    retryable=False,
                )
            elif size > self._limits.result_bytes:  # SEC-009
                outcome = StepErrored(
                    "ResultTooLarge",
                    f"Step '{rec.key}' returned {size} bytes, more than the limit of "
                    f"{self._limits.result_bytes}.",
                    {"size": size, "limit": self._limits.result_bytes},
                    retryable=False,
                )
            else:  # RETRY-010
                msg = step_update(
                    rec.key,
                    rec.value,
                    status="completed",
                    result=json_copy(outcome.result),
                    error=None,
                    retry_at=None,
                    finished_at=t,
                )
                self._update(rec, msg, outcome=True)
                return
        if isinstance(outcome, StepTimedOut):  # RETRY-015
            timeout_ms = rec.value["timeout_ms"]
            if timeout_ms is None:  # a shell's own limit, not the step's (none recorded)
                error = error_object(
                    "StepTimeout", f"Attempt {attempt} of step '{rec.key}' timed out."
                )
            else:
                error = error_object(
                    "StepTimeout",
                    f"Attempt {attempt} of step '{rec.key}' exceeded {timeout_ms} ms.",
                    {"timeout_ms": timeout_ms},
                )
            retryable = True
        else:
            assert isinstance(outcome, StepErrored)
            details = outcome.details if compact_size(outcome.details) is not None else None
            error = error_object(outcome.type, outcome.message, details)
            retryable = outcome.retryable
        policy = issued.policy or RetryPolicy()
        if error["type"] in policy.non_retryable:  # RETRY-014
            retryable = False
        if retryable and attempt < int(rec.value["max_attempts"]):  # RETRY-008
            assert self._rng is not None
            delay = policy.delay_ms(attempt)
            jitter = self._rng.random() * policy.jitter * delay  # RETRY-005
            retry_at = ceil_ms(plus_ms(report.at, delay + jitter))  # RETRY-004
            msg = step_update(
                rec.key,
                rec.value,
                status="retrying",
                error=error,
                retry_at=format_ts(retry_at),
                finished_at=None,
            )
            self._update(rec, msg, outcome=False)
        else:  # RETRY-009
            msg = step_update(
                rec.key, rec.value, status="failed", error=error, retry_at=None, finished_at=t
            )
            self._update(rec, msg, outcome=True)
