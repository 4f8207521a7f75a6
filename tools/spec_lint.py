"""Lint the spec's markup: ``python tools/spec_lint.py [SPEC_DIR] [--schemas DIR]``.

Enforces the rules of spec/conventions.md: every page has a title and a status line;
RFC 2119 keywords are all caps and appear only inside id'd requirements; each
requirement has exactly one keyword level (a withdrawn one has none); requirement ids
are well formed, unique and anchored under their own name; every relative
link and anchor resolves; every example message names its event. Prints one
``file:line: message`` per finding and exits 1 when there is any, 0 when there is none.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spec_markup import (
    AREAS,
    ID_LIKE_RE,
    ID_RE,
    STATUSES,
    Page,
    is_withdrawn,
    load_pages,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
_STATUS_RE = re.compile(r"^\*\*Status:\*\*[ \t]+(?P<status>\S+)[ \t]*$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True, order=True)
class Finding:
    """One lint error at a place in a file."""

    path: Path
    line: int
    message: str

    def render(self) -> str:
        return f"{_display(self.path)}:{self.line}: {self.message}"


def _display(path: Path) -> str:
    """The path relative to the working directory when it lies under it, else as given."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:  # another drive on Windows
        return str(path)


class _Linter:
    def __init__(self, spec_dir: Path, schemas_dir: Path) -> None:
        self.spec_dir = spec_dir.resolve()
        self.schemas_dir = schemas_dir.resolve()
        self.link_roots = (
            self.spec_dir,
            self.spec_dir.parent / "docs",
            self.spec_dir.parent / "schemas",
        )
        self.findings: list[Finding] = []
        self._page_cache: dict[Path, Page] = {}

    def error(self, page: Page, line: int, message: str) -> None:
        self.findings.append(Finding(page.path, line, message))

    def run(self) -> list[Finding]:
        pages = load_pages(self.spec_dir)
        for page in pages:
            self._page_cache[page.path.resolve()] = page
        seen: dict[str, tuple[Page, int]] = {}
        for page in pages:
            self.check_title_and_status(page)
            self.check_keywords(page)
            self.check_ids(page, seen)
            self.check_lists(page)
            self.check_links(page)
            self.check_examples(page)
        return sorted(self.findings)

    # -- rules ----------------------------------------------------------------------

    def check_title_and_status(self, page: Page) -> None:
        title_line = next((n for n, line in enumerate(page.lines, 1) if line.strip()), None)
        if title_line is None or page.title is None:
            self.error(page, title_line or 1, "page does not start with a '# Title' heading")
            return
        status_line = next(
            (n for n, line in enumerate(page.lines, 1) if n > title_line and line.strip()), None
        )
        if status_line is None:
            self.error(page, title_line, "no '**Status:** Draft|Stable|Deprecated' line")
            return
        match = _STATUS_RE.match(page.lines[status_line - 1].strip())
        if match is None:
            self.error(
                page,
                status_line,
                "the line after the title is not '**Status:** Draft|Stable|Deprecated'",
            )
        elif match.group("status") not in STATUSES:
            self.error(
                page,
                status_line,
                f"unknown status {match.group('status')!r} (use {', '.join(STATUSES)})",
            )

    def check_keywords(self, page: Page) -> None:
        for keyword in page.miscased_keywords():
            self.error(
                page,
                keyword.line,
                f"keyword {keyword.word!r} in mixed case: write it in all caps inside a"
                " requirement, in lower case elsewhere, or rephrase",
            )
        for keyword in page.keywords():
            if page.owning_requirement(keyword.line) is None:
                self.error(
                    page,
                    keyword.line,
                    f"{keyword.word!r} outside an id'd requirement: give the paragraph an id"
                    " or write the word in lower case",
                )
        for block in page.requirement_blocks():
            levels = sorted({keyword.level for keyword in page.requirement_keywords(block)})
            if is_withdrawn(page, block):
                if levels:
                    self.error(
                        page,
                        block.start,
                        f"withdrawn {block.requirement_id} still uses {' and '.join(levels)}:"
                        " a withdrawn requirement has no keyword",
                    )
            elif not levels:
                self.error(page, block.start, f"{block.requirement_id} has no RFC 2119 keyword")
            elif len(levels) > 1:
                self.error(
                    page,
                    block.start,
                    f"{block.requirement_id} mixes keyword levels {' and '.join(levels)}:"
                    " split it into one requirement per level",
                )

    def check_ids(
        self,
        page: Page,
        seen: dict[str, tuple[Page, int]],
    ) -> None:
        starts = {block.start: block for block in page.blocks}
        for block in page.blocks:
            anchor, bold = block.anchor, block.bold
            if anchor is None and bold is None:
                continue
            if anchor is None:
                self.error(
                    page,
                    block.start,
                    f'**{bold}** has no anchor: begin the item with <a id="{bold}"></a>',
                )
                continue
            if bold is None:
                if ID_LIKE_RE.match(anchor):
                    self.error(
                        page,
                        block.start,
                        f'<a id="{anchor}"></a> is not followed by its bold id **{anchor}**',
                    )
                continue
            if anchor != bold:
                self.error(
                    page, block.start, f'anchor id "{anchor}" differs from bold id **{bold}**'
                )
                continue
            match = ID_RE.match(anchor)
            if match is None or match.group("num") == "000":
                self.error(page, block.start, f"malformed requirement id {anchor!r}: use AREA-NNN")
                continue
            if match.group("area") not in AREAS:
                self.error(
                    page,
                    block.start,
                    f"unknown area {match.group('area')!r} in {anchor} (areas: {', '.join(AREAS)})",
                )
            if anchor in seen:
                first_page, first_line = seen[anchor]
                self.error(
                    page,
                    block.start,
                    f"duplicate requirement id {anchor}"
                    f" (first used at {_display(first_page.path)}:{first_line})",
                )
            else:
                seen[anchor] = (page, block.start)
        for line, value in page.html_ids:
            if not ID_LIKE_RE.match(value):
                continue
            start = starts.get(line)
            if start is None or start.anchor != value:
                self.error(
                    page,
                    line,
                    f'requirement anchor "{value}" must begin its paragraph or list item',
                )

    def check_lists(self, page: Page) -> None:
        for line in page.glued_lists:
            self.error(
                page,
                line,
                "list item right after a paragraph: the site's Markdown runs it into the"
                " paragraph; put a blank line before the list (or reflow the line)",
            )
        for block in page.blocks:
            if block.kind == "item" and block.parent is not None:
                step = block.indent - block.parent.indent
                if step < 4:
                    self.error(
                        page,
                        block.start,
                        f"list item indented {step} space(s) under its parent item: the site's"
                        " Markdown nests lists only at 4 spaces, and a wrapped line that starts"
                        " with '1. ' or '- ' begins a new item (indent by 4 or reflow the line)",
                    )

    def check_links(self, page: Page) -> None:
        for link in page.links():
            target = link.target.strip()
            if not target or _SCHEME_RE.match(target) or target.startswith("//"):
                continue
            if target.startswith("/"):
                self.error(page, link.line, f"absolute link {target!r}: use a relative link")
                continue
            path_part, _, fragment = target.partition("#")
            label = link.text.strip("` ")
            if ID_LIKE_RE.match(label) and ID_LIKE_RE.match(fragment) and label != fragment:
                self.error(page, link.line, f"link text {label} points at #{fragment}")
            path_part = path_part.split("?", 1)[0]
            if not path_part:
                if fragment not in page.anchors():
                    self.error(page, link.line, f"anchor '#{fragment}' not found on this page")
                continue
            resolved = (page.path.parent / path_part).resolve()
            if not any(resolved.is_relative_to(root) for root in self.link_roots):
                self.error(
                    page,
                    link.line,
                    f"link {target!r} leaves the published trees (spec/, docs/, schemas/)",
                )
                continue
            if not resolved.exists():
                self.error(page, link.line, f"broken link {target!r}: no such file")
                continue
            if resolved.is_dir():
                self.error(page, link.line, f"link {target!r} names a directory, not a file")
                continue
            if fragment and resolved.suffix == ".md":
                target_page = self._page(resolved)
                if fragment not in target_page.anchors():
                    self.error(
                        page,
                        link.line,
                        f"broken anchor {target!r}: no '#{fragment}' in {path_part}",
                    )

    def check_examples(self, page: Page) -> None:
        attached: set[int] = set()
        for fence in page.fences:
            language = fence.info.split()[0].lstrip(".").lower() if fence.info else ""
            if fence.comment_line is not None:
                attached.add(fence.comment_line)
                if language != "json":
                    self.error(
                        page,
                        fence.comment_line,
                        "an example comment must be followed by a ```json block",
                    )
                    continue
            if language != "json":
                continue
            if fence.comment is None:
                if '"operation"' in fence.body:
                    self.error(
                        page,
                        fence.start,
                        "```json block with an \"operation\" has no '<!-- example: EVENT -->'"
                        " comment before it",
                    )
                continue
            self._check_example(page, fence.start, fence.comment, fence.body)
        for line, _ in page.example_comments():
            if line not in attached:
                self.error(page, line, "example comment is not followed by a ```json block")

    def _check_example(self, page: Page, line: int, names_text: str, body: str) -> None:
        names = [name.strip() for name in names_text.split(",")]
        for name in names:
            if (
                not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name)
                or not (self.schemas_dir / f"{name}.json").is_file()
            ):
                self.error(page, line, f"example names unknown event {name!r}")
        try:
            document = json.loads(body)
        except json.JSONDecodeError as exc:
            self.error(page, line + exc.lineno, f"example is not valid JSON: {exc.msg}")
            return
        if len(names) > 1 and not (isinstance(document, list) and len(document) == len(names)):
            self.error(
                page,
                line,
                f"example names {len(names)} events: the block must be an array of"
                f" {len(names)} messages",
            )
        elif len(names) == 1 and not isinstance(document, dict):
            self.error(page, line, "example names one event: the block must be one JSON object")

    def _page(self, path: Path) -> Page:
        page = self._page_cache.get(path)
        if page is None:
            page = Page(path)
            self._page_cache[path] = page
        return page


def lint(spec_dir: Path, schemas_dir: Path | None = None) -> list[Finding]:
    """All findings for the pages in ``spec_dir`` (schemas default to ``../schemas/v1``)."""
    if schemas_dir is None:
        schemas_dir = spec_dir.resolve().parent / "schemas" / "v1"
    return _Linter(spec_dir, schemas_dir).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spec_lint", description="Lint the markup of the Durable Workflows spec."
    )
    parser.add_argument(
        "spec_dir", nargs="?", type=Path, default=REPO_ROOT / "spec", help="default: spec/"
    )
    parser.add_argument(
        "--schemas",
        type=Path,
        default=None,
        metavar="DIR",
        help="event schemas that examples may name (default: SPEC_DIR/../schemas/v1)",
    )
    args = parser.parse_args(argv)
    spec_dir: Path = args.spec_dir
    if not spec_dir.is_dir():
        print(f"spec_lint: {spec_dir} is not a directory", file=sys.stderr)
        return 2
    findings = lint(spec_dir, args.schemas)
    for finding in findings:
        print(finding.render())
    pages = len(list(spec_dir.glob("*.md")))
    if findings:
        print(f"spec_lint: {len(findings)} finding(s) in {pages} page(s)", file=sys.stderr)
        return 1
    print(f"spec_lint: {pages} page(s) OK", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
