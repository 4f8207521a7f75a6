"""``dwf validate``: check JSON files of events against the protocol's schemas.

A file holds one message (a JSON object) or a JSON array of messages, such as a
history dump. Each message is identified by its discriminator (``type``,
``headers.operation``, ``value.status``) and validated against that event's schema,
offline. Exit status: 0 when every message of every file is valid, 1 when some
message is not, 2 when some file cannot be read or is not JSON (that wins over 1).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from .schemas import SchemaError, Violation, identify_any

__all__ = ["FileReport", "MessageReport", "check_file", "run_validate"]

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_UNREADABLE = 2


@dataclass(frozen=True)
class MessageReport:
    """The outcome for one message: ``index`` is its position in an array file, or None
    when the file holds a single message."""

    index: int | None
    event: str | None
    stream: str | None
    valid: bool
    reason: str | None = None
    violations: tuple[Violation, ...] = ()


@dataclass(frozen=True)
class FileReport:
    """The outcome for one file."""

    file: str
    status: Literal["valid", "invalid", "unreadable"]
    error: str | None = None
    messages: tuple[MessageReport, ...] = field(default_factory=tuple)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_message(index: int | None, message: object) -> MessageReport:
    try:
        stream, event = identify_any(message)
    except SchemaError as error:
        return MessageReport(
            index=index,
            event=error.event,
            stream=None,
            valid=False,
            reason=error.reason,
            violations=error.violations,
        )
    return MessageReport(index=index, event=event, stream=stream, valid=True)


def check_file(path: str) -> FileReport:
    """Read and check one file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return FileReport(file=path, status="unreadable", error=f"cannot read: {reason}")
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        return FileReport(file=path, status="unreadable", error=f"not JSON: {error}")
    if isinstance(document, list):
        messages = tuple(_check_message(i, m) for i, m in enumerate(document))
    else:
        messages = (_check_message(None, document),)
    valid = all(m.valid for m in messages)
    return FileReport(file=path, status="valid" if valid else "invalid", messages=messages)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _print_text(reports: Sequence[FileReport], out: TextIO) -> None:
    for report in reports:
        if report.status == "unreadable":
            print(f"ERROR {report.file}: {report.error}", file=out)
            continue
        if report.status == "valid":
            events = sorted({m.event for m in report.messages if m.event})
            summary = _plural(len(report.messages), "message")
            detail = f" ({', '.join(events)})" if events else ""
            print(f"ok    {report.file}: {summary}{detail}", file=out)
            continue
        for m in report.messages:
            if m.valid:
                continue
            where = "the message" if m.index is None else f"message {m.index}"
            claimed = f" ({m.event})" if m.event else ""
            print(f"FAIL  {report.file}: {where}{claimed}: {m.reason}", file=out)
            schema_file = f"{m.event}.json" if m.event else "defs/change-message.json"
            for v in m.violations:
                print(f"        at {v.path or '/'}: {v.message}", file=out)
                if v.requirement:
                    print(f"           rule: {v.requirement}", file=out)
                else:
                    print(f"           schema: {schema_file}#{v.schema_path}", file=out)
    messages = [m for r in reports for m in r.messages]
    invalid = sum(1 for m in messages if not m.valid)
    unreadable = sum(1 for r in reports if r.status == "unreadable")
    line = (
        f"{_plural(len(reports), 'file')}, {_plural(len(messages), 'message')}: "
        f"{len(messages) - invalid} valid, {invalid} invalid"
    )
    if unreadable:
        line += f"; {_plural(unreadable, 'file')} unreadable"
    print(line, file=out)


def _exit_code(reports: Sequence[FileReport]) -> int:
    if any(r.status == "unreadable" for r in reports):
        return EXIT_UNREADABLE
    if any(r.status == "invalid" for r in reports):
        return EXIT_INVALID
    return EXIT_VALID


def run_validate(files: Sequence[str], as_json: bool, out: TextIO | None = None) -> int:
    """Check ``files``, print a report (text, or JSON with ``as_json``), return the exit
    status: 0 all valid, 1 some message invalid, 2 some file unreadable."""
    stream = sys.stdout if out is None else out
    reports = [check_file(f) for f in files]
    code = _exit_code(reports)
    if as_json:
        document = {"exit_code": code, "files": [asdict(r) for r in reports]}
        json.dump(document, stream, indent=2)
        stream.write("\n")
    else:
        _print_text(reports, stream)
    return code
