"""Deciding inbox messages (inputs.md: INPUT-015..024, INPUT-039; SEC-034).

Messages are decided in inbox order: a duplicate gets nothing, a malformed message, an
oversized or surplus submission, one for an answered or expired request, or one that
fails the request's schema is rejected, a cancel ends the run, and the first valid
submission answers its request. A submission for a request not recorded yet is kept.
When the run has ended, :meth:`InboxPass._closing_rejections` decides the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .inbox import ID_PATTERN, InboxEntry, classify, compact_size, schema_problem
from .messages import error_object, input_received, input_rejected
from .run_state import RunState, json_copy

__all__ = ["InboxPass"]


class InboxPass(RunState):
    """The inbox's decisions."""

    def _classify(self, inbox: Sequence[Any]) -> list[InboxEntry]:
        """Classify the inbox, reusing the entries of messages seen before (it only grows)."""
        cache = self._inbox_cache
        for index in range(len(inbox)):
            message = inbox[index]
            if index < len(cache):
                key = message.get("key") if isinstance(message, Mapping) else None
                if cache[index].inbox_id == (
                    key if isinstance(key, str) and ID_PATTERN.match(key) else f"inbox-{index}"
                ):
                    continue
                del cache[index:]
            cache.append(classify(message, index))
        return cache[: len(inbox)]

    def _cancel_waiting(self, entries: list[InboxEntry]) -> bool:
        seen: set[str] = set()
        for entry in entries:
            if entry.inbox_id in seen:
                continue
            seen.add(entry.inbox_id)
            if entry.kind == "cancel" and entry.inbox_id not in self._decided:
                return True
        return False

    def _too_large(self, entry: InboxEntry, submissions: int) -> str | None:
        if submissions > self._limits.submissions_per_run:  # INPUT-033
            return (
                f"Submission {entry.inbox_id} is beyond the run's limit of "
                f"{self._limits.submissions_per_run} submissions."
            )
        size = compact_size(entry.value)
        if size is None or size > self._limits.submission_bytes:  # INPUT-031
            return (
                f"The value submitted for input '{entry.request}' is larger than "
                f"{self._limits.submission_bytes} bytes."
            )
        return None

    @staticmethod
    def _malformed_text(entry: InboxEntry) -> str:
        return f"Inbox message {entry.index} is not an input-submitted or cancel-requested message."

    def _record_rejection(self, entry: InboxEntry) -> bool:
        """Decide ``entry`` as rejected; True when its ``input-rejected`` is to be recorded.

        SEC-034: past the run's rejection limit a rejection is decided without a record,
        so no inbox content can grow the history by more than the limit. The count comes
        from the history, so every activation draws the line at the same message.
        """
        self._decided.add(entry.inbox_id)
        if self._rejections >= self._limits.rejections_per_run:
            return False
        self._rejections += 1
        return True

    def _reject(self, entry: InboxEntry, reason: str, text: str) -> None:
        if self._record_rejection(entry):  # INPUT-022
            self._emit(input_rejected(entry.inbox_id, entry.request, reason, text, self._t))

    def _inbox_pass(self, entries: list[InboxEntry], *, resume: bool = True) -> bool:
        """Decide inbox messages in inbox order (INPUT-016/017); True when an input was answered."""
        answered = False
        seen: set[str] = set()
        submissions = 0
        for entry in entries:
            if entry.inbox_id in seen:  # check 1, INPUT-015
                continue
            seen.add(entry.inbox_id)
            if entry.kind == "submission":
                submissions += 1
            if entry.inbox_id in self._decided:
                continue
            if entry.kind is None:  # check 2
                self._reject(entry, "malformed", self._malformed_text(entry))
                continue
            if entry.kind == "cancel":  # check 3, CANCEL-003/004
                reason = entry.reason
                text = "Run cancelled." if reason is None else str(reason)[:1024]
                self._decided.add(entry.inbox_id)
                self._to_dispatch = []
                self._end(
                    "cancelled",
                    error=error_object("Cancelled", text, {"cancel_id": entry.inbox_id}),
                    txid=entry.inbox_id,
                )
                return answered
            too_large = self._too_large(entry, submissions)
            if too_large is not None:  # check 4
                self._reject(entry, "too-large", too_large)
                continue
            # check 5 (run ended) is decided by closing().
            rec = self._by_key.get(("input", entry.request or ""))
            if rec is None:
                continue  # check 8, INPUT-020: kept until the request is recorded
            key = rec.key
            if rec.status == "received":  # check 6
                self._reject(
                    entry,
                    "already-answered",
                    f"Input '{key}' was already answered by another submission.",
                )
                continue
            if rec.status == "expired":  # check 7
                self._reject(
                    entry, "expired", f"Input '{key}' expired before this submission was read."
                )
                continue
            problem = schema_problem(key, rec.value["schema"], entry.value)  # INPUT-026
            if problem is not None:  # check 9
                self._reject(entry, "schema-invalid", problem)
                continue
            # check 10, INPUT-019: the first valid submission wins.
            self._decided.add(entry.inbox_id)
            value = json_copy(entry.value)
            self._update(
                rec, input_received(key, rec.value, value, entry.inbox_id, self._t), outcome=True
            )
            if resume:
                self._resume_if_awaited(rec.seq)
            answered = True
        return answered

    def _closing_rejections(self, inbox_final: Sequence[Any], t: str) -> list[dict[str, Any]]:
        """INPUT-039: one ``input-rejected`` per undecided message, in inbox order."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        submissions = 0
        for entry in self._classify(inbox_final):
            if entry.inbox_id in seen:
                continue  # check 1: duplicate
            seen.add(entry.inbox_id)
            if entry.kind == "submission":
                submissions += 1
            if entry.inbox_id in self._decided:
                continue
            if entry.kind is None:
                reason, text = "malformed", self._malformed_text(entry)
            elif entry.kind == "cancel":
                # CANCEL-009: a cancel of an ended run.
                reason, text = (
                    "run-finished",
                    "The run had already ended; the cancel has no effect.",
                )
            elif self._too_large(entry, submissions) is not None:
                reason, text = "too-large", str(self._too_large(entry, submissions))
            else:
                reason = "run-finished"
                text = f"Input '{entry.request}' was not taken: the run has ended."
            if self._record_rejection(entry):
                out.append(input_rejected(entry.inbox_id, entry.request, reason, text, t))
        return out
