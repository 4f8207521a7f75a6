"""A run's row in the run-status stream, folded from its history (MODEL-042). Sans-IO.

The row is derived data: what the first ``history_length`` messages of a history say
about the run, in the shape a task list needs. :class:`StatusView` is fed history
messages in order (a whole history, then each append an activation makes) and says
whether the row a task list sees has changed since it was last published.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["StatusView", "status_message"]

#: The ``run`` value fields a row copies as they are.
_RUN_FIELDS = ("workflow", "started_at", "status", "waiting_for", "error", "finished_at")


class StatusView:
    """The run-status row of a history, kept up to date as messages are fed to it."""

    def __init__(self, messages: Iterable[Any] = ()) -> None:
        self.length = 0
        self._run: Mapping[str, Any] | None = None
        #: Pending input requests by key, with the seq that orders them.
        self._pending: dict[str, Mapping[str, Any]] = {}
        self.feed(messages)

    def feed(self, messages: Iterable[Any]) -> None:
        for message in messages:
            self.length += 1
            kind, value = message.get("type"), message.get("value")
            if not isinstance(value, Mapping):
                continue
            if kind == "run":
                self._run = value
            elif kind == "input":
                if value.get("status") == "pending":
                    self._pending[message["key"]] = value
                else:
                    self._pending.pop(message["key"], None)

    @property
    def run_id(self) -> str | None:
        return None if self._run is None else str(self._run["run_id"])

    def fields(self) -> dict[str, Any] | None:
        """What a task list shows (every field but ``updated_at`` and
        ``history_length``), or None before the history has a ``run`` message."""
        if self._run is None:
            return None
        row = {"run_id": self._run["run_id"]}
        row.update({name: self._run.get(name) for name in _RUN_FIELDS})
        pending = sorted(self._pending.items(), key=lambda item: item[1].get("seq", 0))
        row["inputs"] = [
            {
                "key": key,
                "name": value.get("name"),
                "prompt": value.get("prompt"),
                "expires_at": value.get("expires_at"),
            }
            for key, value in pending
        ]
        return row

    def message(self, updated_at: str) -> dict[str, Any] | None:
        """The ``run-status`` change message of the history fed so far (MODEL-041)."""
        fields = self.fields()
        if fields is None:
            return None
        return status_message(fields, updated_at, self.length)


def status_message(fields: Mapping[str, Any], updated_at: str, length: int) -> dict[str, Any]:
    value = {**fields, "updated_at": updated_at, "history_length": length}
    return {
        "type": "run-status",
        "key": fields["run_id"],
        "value": value,
        "headers": {"operation": "update"},
    }
