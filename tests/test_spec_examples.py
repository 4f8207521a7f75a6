"""Every example message in the spec validates against the schema of the event it names."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from durable_workflows.schemas import EVENTS, STREAM_EVENTS, identify, validator

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from spec_markup import load_pages  # noqa: E402


def _examples() -> list[tuple[str, list[str], str]]:
    found: list[tuple[str, list[str], str]] = []
    for page in load_pages(ROOT / "spec"):
        for fence in page.fences:
            if fence.comment is not None:
                names = [name.strip() for name in fence.comment.split(",")]
                found.append((f"{page.name}:{fence.start}", names, fence.body))
    return found


EXAMPLES = _examples()


def _stream_of(event: str) -> str:
    return next(stream for stream, events in STREAM_EVENTS.items() if event in events)


def test_the_spec_has_examples() -> None:
    assert EXAMPLES, "no <!-- example: EVENT --> blocks found in spec/"


@pytest.mark.req("CONV-015")
@pytest.mark.parametrize(("where", "names", "body"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_validates_against_its_event_schema(
    where: str, names: list[str], body: str
) -> None:
    document: Any = json.loads(body)
    messages = document if len(names) > 1 else [document]
    assert len(messages) == len(names), f"{where}: {len(names)} events named"
    for name, message in zip(names, messages, strict=True):
        assert name in EVENTS, f"{where}: {name!r} is not an event"
        errors = sorted(
            validator(name).iter_errors(message), key=lambda error: list(error.absolute_path)
        )
        report = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
        assert report == [], f"{where}: example is not a valid {name}"
        assert identify(message, _stream_of(name)) == name, f"{where}: identified otherwise"


@pytest.mark.req("CONV-015")
def test_every_event_has_an_example_in_the_spec() -> None:
    shown = {name for _, names, _ in EXAMPLES for name in names}
    assert [event for event in EVENTS if event not in shown] == []
