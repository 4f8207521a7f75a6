"""Every code block of README.md and docs/*.md that claims to work is run (issue 12: the
README cannot drift again). A Python or shell block carries a ``doc-test`` marker that
says how it is checked (run, parse, skip with a reason); one without a marker fails
here. The vocabulary: tests/support/doc_blocks.py and docs/getting-started.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import REPO_ROOT
from tests.support.doc_blocks import (
    Block,
    DocBlockError,
    PageSession,
    find_blocks,
    kind_of,
    marker_problems,
    output_matches,
    page_blocks,
    parse_problem,
    run_page,
)

PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (REPO_ROOT / "docs").glob("*.md"))]
#: Pages whose blocks use the npm peers (make peers): the TypeScript generator.
NEEDS_PEERS = {"docs/client-types.md"}


def _checked(page: str) -> bool:
    return any(b.marker is not None and b.marker.verb != "skip" for b in page_blocks(page))


def test_every_python_and_shell_block_has_a_valid_marker() -> None:
    problems = [
        problem
        for page in PAGES
        for block in page_blocks(page)
        for problem in marker_problems(block)
    ]
    assert problems == [], "\n".join(problems)


def test_the_pages_have_runnable_blocks() -> None:
    """The harness sees the blocks it is meant to (a broken fence reader would pass
    every page vacuously)."""
    verbs = [b.marker.verb for page in PAGES for b in page_blocks(page) if b.marker is not None]
    assert verbs.count("run") >= 20 and "parse" in verbs and "output" in verbs


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(page, marks=[pytest.mark.peers] if page in NEEDS_PEERS else [])
        for page in PAGES
        if _checked(page)
    ],
)
def test_the_blocks_of_a_page_do_what_it_says(page: str, tmp_path: Path) -> None:
    run_page(page, tmp_path, page_blocks(page))


# ---------------------------------------------------------------------- the harness itself


def _blocks(markdown: str) -> list[Block]:
    return find_blocks(markdown, "example.md")


def _run(markdown: str, tmp_path: Path) -> None:
    (tmp_path / "clone").mkdir(exist_ok=True)
    with PageSession(tmp_path / "clone", tmp_path / "state") as session:
        for block in _blocks(markdown):
            session.check(block)


def test_a_block_without_a_marker_fails() -> None:
    markdown = "Text.\n\n```sh\ndwf --version\n```\n\n```text\nnot code\n```\n"
    problems = [p for block in _blocks(markdown) for p in marker_problems(block)]
    assert len(problems) == 1 and problems[0].startswith("example.md:3: a sh block without")


@pytest.mark.parametrize(
    ("marker", "language", "complaint"),
    [
        ("<!-- doc-test: skip -->", "sh", "skip needs a reason"),
        ("<!-- doc-test: runs -->", "python", "unknown marker"),
        ("<!-- doc-test: parse -->", "python", "parse checks shell blocks only"),
        ("<!-- doc-test: output -->", "sh", "output marks a text or json block"),
        ("<!-- doc-test: run -->", "text", "cannot run a text block"),
        ("<!-- doc-test: skip why\ngiven: x = 1\n-->", "python", "given: lines belong"),
    ],
)
def test_a_malformed_marker_fails(marker: str, language: str, complaint: str) -> None:
    [block] = _blocks(f"{marker}\n```{language}\nx\n```\n")
    assert any(complaint in problem for problem in marker_problems(block))


def test_a_marker_with_given_lines_is_read() -> None:
    markdown = "<!-- doc-test: run\ngiven: A=1\ngiven: B=2\n-->\n```sh\necho $A$B\n```\n"
    [block] = _blocks(markdown)
    assert block.marker is not None and block.marker.given == ("A=1", "B=2")
    assert block.line == 5 and marker_problems(block) == []


def test_a_failing_shell_block_fails_with_its_line(tmp_path: Path) -> None:
    markdown = "<!-- doc-test: run -->\n```sh\necho fine\ntest -e no-such-file\necho never\n```\n"
    with pytest.raises(DocBlockError, match=r"example\.md:2: a command of lines 3-5 failed"):
        _run(markdown, tmp_path)


def test_a_failing_python_block_fails_with_the_markdown_line(tmp_path: Path) -> None:
    markdown = "Text.\n\n<!-- doc-test: run -->\n```python\nx = 1\nassert x == 2\n```\n"
    with pytest.raises(DocBlockError, match=r'(?s)example\.md:4.*File "example\.md", line 6'):
        _run(markdown, tmp_path)


def test_shell_blocks_share_one_session_and_set_up_lines_are_not_run(tmp_path: Path) -> None:
    markdown = (
        "<!-- doc-test: run -->\n```sh\nmake test\nNAME=world\nmkdir -p sub\ncd sub\n```\n"
        "<!-- doc-test: run\ngiven: GREETING=hello\n-->\n```sh\n"
        'echo $GREETING $NAME "$(basename "$PWD")"\n```\n'
        "<!-- doc-test: output -->\n```text\nhello world sub\n```\n"
    )
    _run(markdown, tmp_path)
    with pytest.raises(DocBlockError, match="the output differs"):
        _run(markdown.replace("hello world sub\n```", "hello there sub\n```"), tmp_path)


def test_a_block_of_set_up_lines_only_must_say_skip(tmp_path: Path) -> None:
    with pytest.raises(DocBlockError, match="nothing to run"):
        _run("<!-- doc-test: run -->\n```sh\nmake install\npip install x\n```\n", tmp_path)


def test_a_console_block_prints_what_it_shows(tmp_path: Path) -> None:
    good = "<!-- doc-test: run -->\n```console\n$ echo 'a  b' \\\n  c\na  b c\n```\n"
    _run(good, tmp_path)
    with pytest.raises(DocBlockError, match="the output differs"):
        _run(good.replace("a  b c\n```", "a b c\n```"), tmp_path)


def test_parse_checks_dwf_commands_against_the_cli() -> None:
    assert parse_problem("dwf start wf --run-id r-1 --wait 5  # a comment") is None
    assert parse_problem("dwf conformance --target-url http://127.0.0.1:PORT --req X") is None
    assert parse_problem("dwf conformance deployment --namespace-url u --client-run r") is None
    assert "unrecognized arguments: --retries" in (parse_problem("dwf start wf --retries 3") or "")
    assert "invalid choice" in (parse_problem("dwf strat wf") or "")
    assert "dwf commands only" in (parse_problem("curl -s http://127.0.0.1") or "")


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        ("make run    # installs, then serves", "server"),
        ("make run PORT=8080", "server"),
        (".venv/bin/dwf serve --data .dwf", "server"),
        ("dwf streams serve --memory", "server"),
        ("dwf serve --help", "shell"),
        ("dwf start wf", "shell"),
        ("make install peers", "setup"),
        ("make test   # lints, runs the tests", "setup"),
        ("pip install '.[conformance]'", "setup"),
        ("# a comment", "comment"),
    ],
)
def test_lines_are_told_apart(command: str, kind: str) -> None:
    assert kind_of(command) == kind


def test_a_server_line_gets_a_free_port_on_loopback(tmp_path: Path) -> None:
    session = PageSession(tmp_path, tmp_path / "state")
    [block] = _blocks("<!-- doc-test: run -->\n```sh\ndwf serve\n```\n")
    argv = session.server_argv(block, 3, "dwf serve --port 4437 --data .dwf  # comment")
    assert argv[1:] == ["serve", "--port", "0", "--data", ".dwf"]
    assert Path(argv[0]).name == "dwf"
    assert session.server_argv(block, 3, "dwf streams serve --memory")[-2:] == ["--port", "0"]
    with pytest.raises(DocBlockError, match="loopback only"):
        session.server_argv(block, 3, "dwf serve --host 0.0.0.0")


@pytest.mark.parametrize(
    ("expected", "actual", "prefix", "matches"),
    [
        ("a\nb\n", "a\nb", False, True),
        ("a\n...\nd\n", "a\nb\nc\nd\n", False, True),
        ("a\n...\nd\n", "a\nd\n", False, True),
        ("a\nb\n", "a\nb\nc\n", False, False),
        ("a\nb\n", "a\nb\nc\n", True, True),
        ("7 passed in 10.82s\n", "7 passed in 12.01s\n", False, True),
        ("7 passed\n", "8 passed\n", False, False),
        ("x (y)\n", "x (y) \n", False, True),
    ],
)
def test_output_matching(expected: str, actual: str, prefix: bool, matches: bool) -> None:
    assert output_matches(expected, actual, prefix=prefix) is matches
