"""The spec linter and the requirements index: the real spec passes, bad markup is caught."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

import requirements_index  # noqa: E402
import spec_lint  # noqa: E402
import spec_markup  # noqa: E402

GOOD_PAGE = """\
# Good page

**Status:** Draft

Informative text may say must, should and may in lower case, mention "MUST" in
quotes or `SHOULD` in code, and link to [the rules](#rules-of-the-game) and to
[the other page](other.md#a-section-with-code-and-punctuation).

## Rules of the game

<a id="EVT-001"></a>**EVT-001** The engine MUST record every `step-started` before the
step body runs; it MUST NOT record it twice.

- <a id="EVT-002"></a>**EVT-002** A client SHOULD show the prompt, and:
    - it SHOULD NOT hide the schema;
    - NOT RECOMMENDED: guessing.
- A plain item.

<a id="EVT-003"></a>**EVT-003** The engine MAY batch appends.

<!-- example: step-started -->
```json
{"type": "step", "key": "a", "value": {}, "headers": {"operation": "insert"}}
```

<!-- example: step-started, step-started -->
```json
[{"headers": {"operation": "insert"}}, {"headers": {"operation": "insert"}}]
```

```python
MUST = "code is not prose"
```
"""

OTHER_PAGE = """\
# Other page

**Status:** Stable

## A section with `code` and punctuation!

<a id="custom-anchor"></a>Back to [the good page](good.md#EVT-002).
"""


def make_spec(tmp_path: Path, pages: dict[str, str]) -> Path:
    """A spec folder with the given pages and a schemas/v1 that knows `step-started`."""
    spec = tmp_path / "spec"
    spec.mkdir(parents=True)
    for name, text in pages.items():
        (spec / name).write_text(text, encoding="utf-8")
    schemas = tmp_path / "schemas" / "v1"
    schemas.mkdir(parents=True)
    (schemas / "step-started.json").write_text("{}", encoding="utf-8")
    return spec


def findings(spec: Path) -> list[tuple[str, int, str]]:
    return [(f.path.name, f.line, f.message) for f in spec_lint.lint(spec)]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


# -- the real spec ------------------------------------------------------------------------


@pytest.mark.req("CONV-001", "CONV-002", "CONV-003", "CONV-005", "CONV-006", "CONV-015")
def test_real_spec_passes_the_linter() -> None:
    result = run_tool("tools/spec_lint.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert spec_lint.lint(ROOT / "spec") == []


@pytest.mark.req("CONV-004")
def test_requirements_index_is_up_to_date() -> None:
    result = run_tool("tools/requirements_index.py", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_requirements_index_matches_its_schema() -> None:
    index = json.loads((ROOT / "spec" / "requirements.json").read_text(encoding="utf-8"))
    schema = json.loads((TOOLS / "requirements.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(index)]
    assert errors == []
    ids = [entry["id"] for entry in index["requirements"]]
    assert ids == sorted(set(ids)), "ids are unique and sorted"
    for entry in index["requirements"]:
        assert (ROOT / "spec" / entry["page"]).is_file()
        assert entry["anchor"] == entry["id"]


def test_conventions_area_table_matches_the_linter() -> None:
    text = (ROOT / "spec" / "conventions.md").read_text(encoding="utf-8")
    section = text.split("### Areas", 1)[1].split("\n## ", 1)[0]
    areas = tuple(re.findall(r"^\| `([A-Z]+)` \|", section, flags=re.M))
    assert areas == spec_markup.AREAS


# -- the rules, on fixtures -------------------------------------------------------------


def test_good_fixture_is_clean(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"good.md": GOOD_PAGE, "other.md": OTHER_PAGE})
    assert findings(spec) == []


def _replace(old: str, new: str) -> str:
    assert old in GOOD_PAGE
    return GOOD_PAGE.replace(old, new, 1)


BAD_PAGES = {
    "title_case_must": (
        _replace("may say must,", "may say Must,"),
        5,
        "keyword 'Must' in mixed case",
    ),
    "title_case_heading": (
        _replace("## Rules of the game", "## Optional rules"),
        9,
        "keyword 'Optional' in mixed case",
    ),
    "keyword_outside_requirement": (
        _replace("- A plain item.", "- A plain item that MUST be ignored."),
        17,
        "'MUST' outside an id'd requirement",
    ),
    "two_levels_in_one_item": (
        _replace("The engine MAY batch appends.", "The engine MAY batch appends and MUST say so."),
        19,
        "EVT-003 mixes keyword levels MAY and MUST",
    ),
    "no_keyword_in_requirement": (
        _replace("The engine MAY batch appends.", "The engine batches appends."),
        19,
        "EVT-003 has no RFC 2119 keyword",
    ),
    "missing_status": (
        _replace("**Status:** Draft\n", ""),
        4,
        "is not '**Status:** Draft|Stable|Deprecated'",
    ),
    "unknown_status": (
        _replace("**Status:** Draft", "**Status:** Final"),
        3,
        "unknown status 'Final'",
    ),
    "missing_title": (
        _replace("# Good page\n", "Good page\n"),
        1,
        "does not start with a '# Title' heading",
    ),
    "broken_link": (
        _replace("(other.md#a-section-with-code-and-punctuation)", "(missing.md)"),
        7,
        "broken link 'missing.md'",
    ),
    "broken_anchor_other_page": (
        _replace("other.md#a-section-with-code-and-punctuation", "other.md#a-section"),
        7,
        "broken anchor 'other.md#a-section'",
    ),
    "broken_anchor_same_page": (
        _replace("(#rules-of-the-game)", "(#rules)"),
        6,
        "anchor '#rules' not found on this page",
    ),
    "link_text_names_another_id": (
        _replace("[the rules](#rules-of-the-game)", "[EVT-002](#EVT-001)"),
        6,
        "link text EVT-002 points at #EVT-001",
    ),
    "wrapped_line_starts_a_list_item": (
        _replace("- A plain item.", "- A plain item cited from RFC 3339,\n  2002. Reflow me."),
        18,
        "list item indented 2 space(s) under its parent item",
    ),
    "list_glued_to_a_paragraph": (
        _replace("## Rules of the game\n", "## Rules of the game\nThe rules:\n- one\n"),
        11,
        "list item right after a paragraph",
    ),
    "absolute_link": (
        _replace("(#rules-of-the-game)", "(/spec/good.md)"),
        6,
        "absolute link '/spec/good.md'",
    ),
    "unmarked_example": (
        _replace("<!-- example: step-started -->\n", ""),
        21,
        "has no '<!-- example: EVENT -->' comment",
    ),
    "unknown_example_event": (
        _replace("<!-- example: step-started -->", "<!-- example: step-begun -->"),
        22,
        "example names unknown event 'step-begun'",
    ),
    "example_array_length": (
        _replace("<!-- example: step-started, step-started -->", "<!-- example: step-started -->"),
        27,
        "the block must be one JSON object",
    ),
    "dangling_example_comment": (
        GOOD_PAGE + "\n<!-- example: step-started -->\n\nNo code here.\n",
        35,
        "example comment is not followed by a ```json block",
    ),
    "anchor_differs_from_bold": (
        _replace('<a id="EVT-003"></a>**EVT-003**', '<a id="EVT-003"></a>**EVT-004**'),
        19,
        'anchor id "EVT-003" differs from bold id **EVT-004**',
    ),
    "bold_id_without_anchor": (
        _replace('<a id="EVT-003"></a>**EVT-003**', "**EVT-003**"),
        19,
        '**EVT-003** has no anchor: begin the item with <a id="EVT-003"></a>',
    ),
    "malformed_id": (
        _replace('<a id="EVT-003"></a>**EVT-003**', '<a id="EVT-03"></a>**EVT-03**'),
        19,
        "malformed requirement id 'EVT-03'",
    ),
    "unknown_area": (
        _replace('<a id="EVT-003"></a>**EVT-003**', '<a id="INBOX-003"></a>**INBOX-003**'),
        19,
        "unknown area 'INBOX' in INBOX-003",
    ),
    "anchor_not_at_start": (
        _replace("The engine MAY batch appends.", 'The engine MAY batch <a id="EVT-009"></a>.'),
        19,
        'requirement anchor "EVT-009" must begin its paragraph or list item',
    ),
}


@pytest.mark.parametrize(("page", "line", "message"), list(BAD_PAGES.values()), ids=list(BAD_PAGES))
def test_linter_catches(tmp_path: Path, page: str, line: int, message: str) -> None:
    spec = make_spec(tmp_path, {"good.md": page, "other.md": OTHER_PAGE})
    found = findings(spec)
    assert any(name == "good.md" and at == line and message in text for name, at, text in found), (
        found
    )


@pytest.mark.req("CONV-003")
def test_linter_catches_duplicate_ids_across_pages(tmp_path: Path) -> None:
    other = OTHER_PAGE + '\n<a id="EVT-002"></a>**EVT-002** The engine MUST be unique.\n'
    spec = make_spec(tmp_path, {"good.md": GOOD_PAGE, "other.md": other})
    duplicates = [f for f in findings(spec) if "duplicate requirement id" in f[2]]
    assert len(duplicates) == 1, duplicates
    name, line, message = duplicates[0]
    assert (name, line) == ("other.md", 9)
    assert message.startswith("duplicate requirement id EVT-002 (first used at ")
    assert message.endswith("good.md:14)")


WITHDRAWN = '<a id="EVT-003"></a>**EVT-003** Withdrawn in 1.1: merged into EVT-001.'


@pytest.mark.req("CONV-004")
def test_a_withdrawn_requirement_keeps_its_id_and_has_no_keyword(tmp_path: Path) -> None:
    page = _replace('<a id="EVT-003"></a>**EVT-003** The engine MAY batch appends.', WITHDRAWN)
    spec = make_spec(tmp_path, {"good.md": page, "other.md": OTHER_PAGE})
    assert findings(spec) == []
    index = requirements_index.build_index(spec)
    assert [r["id"] for r in index["requirements"]] == ["EVT-001", "EVT-002"]
    assert index["withdrawn"] == [
        {
            "id": "EVT-003",
            "page": "good.md",
            "anchor": "EVT-003",
            "text": "Withdrawn in 1.1: merged into EVT-001.",
        }
    ]

    still_normative = page.replace("merged into EVT-001.", "engines MAY batch.")
    spec = make_spec(tmp_path / "bad", {"good.md": still_normative, "other.md": OTHER_PAGE})
    assert [f[2] for f in findings(spec)] == [
        "withdrawn EVT-003 still uses MAY: a withdrawn requirement has no keyword"
    ]

    reused = page + '\n<a id="EVT-003"></a>**EVT-003** The engine MUST reuse nothing.\n'
    spec = make_spec(tmp_path / "reused", {"good.md": reused, "other.md": OTHER_PAGE})
    assert any("duplicate requirement id EVT-003" in f[2] for f in findings(spec))


def test_may_as_a_month_is_not_a_keyword(tmp_path: Path) -> None:
    dated = GOOD_PAGE + "\nRFC 8174, May 2017; also May 5, 2017 and 5 May 2017.\n"
    spec = make_spec(tmp_path, {"good.md": dated, "other.md": OTHER_PAGE})
    assert findings(spec) == []
    worded = GOOD_PAGE + "\nMay the engine retry? It depends.\n"
    spec = make_spec(tmp_path / "worded", {"good.md": worded, "other.md": OTHER_PAGE})
    assert [f[2][:24] for f in findings(spec)] == ["keyword 'May' in mixed c"]


def test_keywords_in_nested_items_belong_to_the_requirement(tmp_path: Path) -> None:
    nested = _replace("    - NOT RECOMMENDED: guessing.", "    - it MAY guess.")
    spec = make_spec(tmp_path, {"good.md": nested, "other.md": OTHER_PAGE})
    assert [f[2] for f in findings(spec)] == [
        "EVT-002 mixes keyword levels MAY and SHOULD: split it into one requirement per level"
    ]


def test_cli_prints_file_and_line_and_exits_1(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path, {"good.md": _replace("may say must,", "may say Should,"), "other.md": OTHER_PAGE}
    )
    result = run_tool("tools/spec_lint.py", str(spec))
    assert result.returncode == 1
    assert re.search(r"good\.md:5: keyword 'Should' in mixed case", result.stdout), result.stdout
    clean = make_spec(tmp_path / "clean", {"good.md": GOOD_PAGE, "other.md": OTHER_PAGE})
    assert run_tool("tools/spec_lint.py", str(clean)).returncode == 0


# -- the requirements index, on fixtures ------------------------------------------------


def test_index_lists_each_requirement_with_level_section_and_plain_text(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"good.md": GOOD_PAGE, "other.md": OTHER_PAGE})
    index = requirements_index.build_index(spec)
    assert [(r["id"], r["level"], r["page"], r["section"]) for r in index["requirements"]] == [
        ("EVT-001", "MUST", "good.md", "Rules of the game"),
        ("EVT-002", "SHOULD", "good.md", "Rules of the game"),
        ("EVT-003", "MAY", "good.md", "Rules of the game"),
    ]
    first = index["requirements"][0]
    assert first["text"] == (
        "The engine MUST record every step-started before the step body runs;"
        " it MUST NOT record it twice."
    )
    assert first["anchor"] == "EVT-001"
    assert index["requirements"][1]["text"] == (
        "A client SHOULD show the prompt, and: it SHOULD NOT hide the schema;"
        " NOT RECOMMENDED: guessing."
    )


@pytest.mark.req("CONV-004")
def test_index_check_detects_staleness_and_dropped_ids(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"good.md": GOOD_PAGE, "other.md": OTHER_PAGE})
    tool = "tools/requirements_index.py"
    assert run_tool(tool, "--spec-dir", str(spec), "--check").returncode == 1  # no file yet
    assert run_tool(tool, "--spec-dir", str(spec)).returncode == 0
    assert run_tool(tool, "--spec-dir", str(spec), "--check").returncode == 0

    page = spec / "good.md"
    page.write_text(GOOD_PAGE.replace("batch appends", "batch its appends"), encoding="utf-8")
    assert run_tool(tool, "--spec-dir", str(spec), "--check").returncode == 1

    # Dropping EVT-003 is refused: ids are never removed, only withdrawn.
    dropped = GOOD_PAGE.replace('<a id="EVT-003"></a>**EVT-003** The engine MAY', "We may")
    page.write_text(dropped, encoding="utf-8")
    refused = run_tool(tool, "--spec-dir", str(spec))
    assert refused.returncode == 1
    assert "EVT-003" in refused.stderr
    kept = json.loads((spec / "requirements.json").read_text(encoding="utf-8"))
    assert [r["id"] for r in kept["requirements"]] == ["EVT-001", "EVT-002", "EVT-003"]
    page.write_text(
        GOOD_PAGE.replace(
            '<a id="EVT-003"></a>**EVT-003** The engine MAY batch appends.', WITHDRAWN
        ),
        encoding="utf-8",
    )
    assert run_tool(tool, "--spec-dir", str(spec)).returncode == 0
    index = json.loads((spec / "requirements.json").read_text(encoding="utf-8"))
    assert [r["id"] for r in index["requirements"]] == ["EVT-001", "EVT-002"]
    assert [r["id"] for r in index["withdrawn"]] == ["EVT-003"]

    # Before a draft is ever released, --allow-removal accepts a dropped id.
    page.write_text(dropped, encoding="utf-8")
    assert run_tool(tool, "--spec-dir", str(spec)).returncode == 1
    allowed = run_tool(tool, "--spec-dir", str(spec), "--allow-removal")
    assert allowed.returncode == 0, allowed.stderr
    assert "removed ids: EVT-003" in allowed.stderr


def test_index_refuses_a_spec_that_does_not_lint(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"good.md": _replace("may say must,", "may say Must,")})
    result = run_tool("tools/requirements_index.py", "--spec-dir", str(spec))
    assert result.returncode == 1
    assert not (spec / "requirements.json").exists()
