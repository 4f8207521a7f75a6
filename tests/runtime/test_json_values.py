"""EVT-100: what the engine can record is I-JSON; sizes count UTF-8 bytes of the compact
serialisation with characters written as themselves."""

from __future__ import annotations

import pytest

from durable_workflows.core.inbox import MAX_EXACT_INT, compact_size, encodable


@pytest.mark.req("EVT-100")
@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), "\ud800", MAX_EXACT_INT + 1, -MAX_EXACT_INT - 1, [{"a": 2**64}]],
)
def test_values_outside_i_json_cannot_be_recorded(value: object) -> None:
    assert compact_size(value) is None
    assert not encodable({"value": value})


@pytest.mark.req("EVT-100")
def test_the_exact_integer_range_and_booleans_are_kept() -> None:
    assert compact_size(MAX_EXACT_INT) == 16
    assert compact_size(-MAX_EXACT_INT) == 17
    assert compact_size({"ok": True, "n": None, "list": []}) == len(
        '{"ok":true,"n":null,"list":[]}'
    )


@pytest.mark.req("INPUT-031")
def test_sizes_count_utf8_bytes_of_characters_written_as_themselves() -> None:
    assert compact_size("é") == 4
    assert compact_size("🙂") == 6
    assert compact_size("a\nb") == len('"a\\nb"')
