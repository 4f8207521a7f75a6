"""Parse the spec's Markdown markup: pages, headings, anchors, requirements, links, examples.

The spec linter, the requirements index, the example tests and the docs hook all read
the spec through this module, so they agree on what a requirement, an anchor or an
example is. The markup itself is defined in ``spec/conventions.md``.

This is a line-oriented reader, not a Markdown renderer. It knows exactly as much
Markdown as the spec's markup needs: fenced code, headings, paragraphs, list items
(with nesting), inline code, links, raw HTML anchors and attribute lists. Heading
anchors are computed the way Python-Markdown's ``toc`` extension computes them for
mkdocs, and a docs test checks that against a real build.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

#: Requirement areas (see the area table in spec/conventions.md).
AREAS: tuple[str, ...] = (
    "CONV",
    "MODEL",
    "EVT",
    "REPLAY",
    "VER",
    "INPUT",
    "RETRY",
    "CANCEL",
    "FENCE",
    "WAKE",
    "SEC",
    "PRIV",
    "ADAPT",
)

STATUSES: tuple[str, ...] = ("Draft", "Stable", "Deprecated")

Level = Literal["MUST", "SHOULD", "MAY"]

#: Each RFC 2119 / RFC 8174 keyword and the requirement level it expresses.
KEYWORD_LEVELS: dict[str, Level] = {
    "MUST": "MUST",
    "MUST NOT": "MUST",
    "REQUIRED": "MUST",
    "SHALL": "MUST",
    "SHALL NOT": "MUST",
    "SHOULD": "SHOULD",
    "SHOULD NOT": "SHOULD",
    "RECOMMENDED": "SHOULD",
    "NOT RECOMMENDED": "SHOULD",
    "MAY": "MAY",
    "OPTIONAL": "MAY",
}

# Longest alternatives first so "MUST NOT" is one keyword, not "MUST".
_KEYWORD_ALTERNATIVES = sorted(KEYWORD_LEVELS, key=len, reverse=True)
KEYWORD_RE = re.compile(
    r"(?<![\w-])(" + "|".join(k.replace(" ", r"[ \t]+") for k in _KEYWORD_ALTERNATIVES) + r")\b"
)
# Single words whose Title Case or mixed case spelling is an error.
_KEYWORD_WORDS = ("must", "shall", "should", "may", "required", "recommended", "optional")
ANY_CASE_KEYWORD_RE = re.compile(r"\b(" + "|".join(_KEYWORD_WORDS) + r")\b", re.IGNORECASE)

ID_RE = re.compile(r"^(?P<area>[A-Z]+)-(?P<num>[0-9]{3})$")
# Anything that looks like it was meant to be a requirement id.
ID_LIKE_RE = re.compile(r"^[A-Z][A-Z0-9]*-[0-9]+$")

_FENCE_OPEN_RE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEADING_RE = re.compile(r"^(?P<hashes>#{1,6})[ \t]+(?P<text>.*?)[ \t]*#*[ \t]*$")
_ITEM_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>[-*+]|[0-9]+[.)])[ \t]+(?P<rest>.*)$")
_REQ_START_RE = re.compile(
    r"^<a[ \t]+id=\"(?P<anchor>[^\"]*)\"[ \t]*>[ \t]*</a>[ \t]*(?:\*\*(?P<bold>[^*]+)\*\*)?"
)
_BOLD_ID_START_RE = re.compile(r"^\*\*(?P<bold>[A-Z][A-Z0-9]*-[0-9]+)\*\*")
_HTML_ID_RE = re.compile(r"""<[A-Za-z][^>]*?\bid=(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)')""")
_A_ID_RE = re.compile(r"<a[ \t]+id=\"(?P<anchor>[^\"]*)\"")
_ATTR_LIST_ID_RE = re.compile(r"\{:?[^}\n]*?#(?P<id>[A-Za-z][\w.:-]*)[^}\n]*\}")
_HEADING_ATTR_LIST_RE = re.compile(r"[ \t]*\{:?(?P<attrs>[^}\n]*)\}[ \t]*$")
_EXAMPLE_COMMENT_RE = re.compile(r"^\s*<!--\s*example:\s*(?P<names>[^>]*?)\s*-->\s*$")
_CODE_SPAN_RE = re.compile(
    r"(?<!`)(?P<ticks>`+)(?!`)(?P<body>(?:(?!\n[ \t]*\n).)+?)(?<!`)(?P=ticks)(?!`)", re.S
)
_HTML_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][^>\n]*>")
_LINK_TARGET_RE = re.compile(r"\]\((?P<target>[^)\n]*)\)")
_AUTOLINK_RE = re.compile(r"<[a-z][a-z0-9+.-]*:[^>\s]*>", re.I)
_QUOTED_MENTION_RE = re.compile(
    r"[\"\u201c](?P<word>"
    + "|".join(k.replace(" ", r"[ \t]+") for k in _KEYWORD_ALTERNATIVES)
    + r"|"
    + "|".join(_KEYWORD_WORDS)
    + r")[\"\u201d]",
    re.IGNORECASE,
)
_INLINE_LINK_RE = re.compile(
    r"!?\[(?P<text>(?:[^\[\]\\]|\\.|\[[^\]]*\])*)\]\(\s*<?(?P<target>[^()\s<>]*)>?"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)
_REF_DEF_RE = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:[ \t]*<?(?P<target>\S+?)>?(?:[ \t].*)?$")
_HTML_LINK_RE = re.compile(r"""\b(?:href|src)=(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)')""")


def slugify(value: str, separator: str = "-") -> str:
    """Python-Markdown's ``toc`` slugify (the default mkdocs uses for heading ids)."""
    value = unicodedata.normalize("NFKD", value)
    value = value.encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(rf"[{separator}\s]+", separator, value)


def unique_id(candidate: str, used: set[str]) -> str:
    """Python-Markdown's ``toc`` de-duplication: ``slug``, ``slug_1``, ``slug_2``..."""
    if candidate in used or not candidate:
        match = re.match(r"^(.*)_([0-9]+)$", candidate)
        base, count = (match.group(1), int(match.group(2))) if match else (candidate, 0)
        while True:
            count += 1
            candidate = f"{base}_{count}"
            if candidate not in used:
                break
    used.add(candidate)
    return candidate


def _blank_out(text: str, pattern: re.Pattern[str], keep: str | None = None) -> str:
    """Replace every match of ``pattern`` by spaces (newlines kept) so offsets survive.

    With ``keep`` naming a group, only the characters outside that group are blanked.
    """

    def repl(match: re.Match[str]) -> str:
        whole = match.group(0)
        blanked = re.sub(r"[^\n]", " ", whole)
        if keep is None or match.group(keep) is None:
            return blanked
        start = match.start(keep) - match.start(0)
        end = match.end(keep) - match.start(0)
        return blanked[:start] + whole[start:end] + blanked[end:]

    return pattern.sub(repl, text)


def plain_inline(text: str) -> str:
    """Reduce inline Markdown to the text a reader sees (code kept, markup dropped)."""
    pieces: list[str] = []
    last = 0
    for match in _CODE_SPAN_RE.finditer(text):
        pieces.append(_plain_no_code(text[last : match.start()]))
        pieces.append(match.group("body").strip())
        last = match.end()
    pieces.append(_plain_no_code(text[last:]))
    return " ".join("".join(pieces).split())


def _plain_no_code(text: str) -> str:
    text = _HTML_COMMENT_RE.sub("", text)
    text = re.sub(r"!?\[((?:[^\[\]\\]|\\.)*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\[((?:[^\[\]\\]|\\.)*)\]\[[^\]]*\]", r"\1", text)
    text = _HTML_TAG_RE.sub("", text)
    text = re.sub(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", r"\2", text)
    text = re.sub(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", r"\1", text)
    text = re.sub(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)", r"\1", text)
    text = re.sub(r"\\([\\`*_{}\[\]()#+\-.!<>|])", r"\1", text)
    return html.unescape(text)


@dataclass(frozen=True)
class Heading:
    """An ATX heading, its plain text and the anchor id the site gives it."""

    line: int
    level: int
    text: str
    anchor: str


@dataclass(frozen=True)
class Fence:
    """A fenced code block; ``comment`` is the HTML comment line right before it, if any."""

    start: int
    end: int
    info: str
    body: str
    comment: str | None
    comment_line: int | None


@dataclass
class Block:
    """A paragraph, list item, heading or other block; lines are 1-based and inclusive."""

    kind: Literal["paragraph", "item", "heading", "other"]
    start: int
    end: int
    indent: int
    parent: Block | None = None
    anchor: str | None = None
    bold: str | None = None
    children: list[Block] = field(default_factory=list)

    @property
    def requirement_id(self) -> str | None:
        return self.anchor if self.anchor is not None and self.bold is not None else None


@dataclass(frozen=True)
class Keyword:
    """An all-caps RFC 2119 keyword in prose."""

    line: int
    column: int
    word: str

    @property
    def level(self) -> Level:
        return KEYWORD_LEVELS[" ".join(self.word.split())]


@dataclass(frozen=True)
class Link:
    """A link target; ``text`` is the link text of an inline link, else empty."""

    line: int
    target: str
    text: str = ""


@dataclass(frozen=True)
class Requirement:
    """A requirement as the index publishes it."""

    id: str
    levels: tuple[Level, ...]
    page: str
    line: int
    section: str
    text: str


class Page:
    """One Markdown page of the spec (or of the docs, for link targets)."""

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = path
        self.name = name if name is not None else path.name
        self.text = path.read_text(encoding="utf-8")
        self.lines: list[str] = self.text.splitlines()
        self.in_code: list[bool] = [False] * len(self.lines)
        self.fences: list[Fence] = []
        self._scan_fences()
        self.prose: list[str] = self._mask_prose()
        self.headings: list[Heading] = []
        self.blocks: list[Block] = []
        #: Lines that look like list items but continue a paragraph (no blank line before).
        self.glued_lists: list[int] = []
        self._scan_blocks()
        self.html_ids: list[tuple[int, str]] = self._scan_html_ids()

    # -- structure -------------------------------------------------------------------

    def _scan_fences(self) -> None:
        index = 0
        while index < len(self.lines):
            match = _FENCE_OPEN_RE.match(self.lines[index])
            if match is None or (match.group("fence")[0] == "`" and "`" in match.group("info")):
                index += 1
                continue
            fence = match.group("fence")
            close = re.compile(r"^\s*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$")
            end = index + 1
            while end < len(self.lines) and not close.match(self.lines[end]):
                end += 1
            last = min(end, len(self.lines) - 1)
            for covered in range(index, last + 1):
                self.in_code[covered] = True
            comment: str | None = None
            comment_line: int | None = None
            previous = index - 1
            while previous >= 0 and not self.lines[previous].strip():
                previous -= 1
            if previous >= 0 and not self.in_code[previous]:
                found = _EXAMPLE_COMMENT_RE.match(self.lines[previous])
                if found is not None:
                    comment = found.group("names")
                    comment_line = previous + 1
            self.fences.append(
                Fence(
                    start=index + 1,
                    end=last + 1,
                    info=match.group("info").strip(),
                    body="\n".join(self.lines[index + 1 : end]),
                    comment=comment,
                    comment_line=comment_line,
                )
            )
            index = last + 1

    def _mask_prose(self) -> list[str]:
        """Lines with code, comments, tags, URLs and quoted keyword mentions blanked out."""
        text = "\n".join(
            "" if code else line for line, code in zip(self.lines, self.in_code, strict=True)
        )
        text = _blank_out(text, _CODE_SPAN_RE)
        text = _blank_out(text, _HTML_COMMENT_RE)
        text = _blank_out(text, _HTML_TAG_RE)
        text = _blank_out(text, _AUTOLINK_RE)
        text = _blank_out(text, _LINK_TARGET_RE)
        text = _blank_out(text, _QUOTED_MENTION_RE)
        masked = text.split("\n")
        masked += [""] * (len(self.lines) - len(masked))
        return masked

    def _scan_blocks(self) -> None:
        used_ids = {
            match.group("id")
            for number, line in enumerate(self.lines)
            if not self.in_code[number] and _HEADING_RE.match(line) is None
            for match in _ATTR_LIST_ID_RE.finditer(_blank_out(line, _CODE_SPAN_RE))
        }
        fence_starts = {fence.start for fence in self.fences}
        open_items: list[Block] = []
        current: Block | None = None
        blank_before = False
        for number, line in enumerate(self.lines, start=1):
            if self.in_code[number - 1]:
                # A fence indented under an open list item belongs to the item; any other
                # fence ends the block before it.
                if number in fence_starts:
                    indent = len(line) - len(line.lstrip())
                    while open_items and open_items[-1].indent >= indent:
                        open_items.pop()
                    current = open_items[-1] if open_items else None
                if current is not None:
                    current.end = number
                blank_before = False
                continue
            if not line.strip():
                blank_before = True
                if current is not None and current.kind != "item":
                    current = None
                continue
            indent = len(line) - len(line.lstrip())
            heading = _HEADING_RE.match(line) if indent < 4 else None
            item = _ITEM_RE.match(line)
            if heading is not None:
                open_items.clear()
                current = None
                self._add_heading(number, heading, used_ids)
                self.blocks.append(Block("heading", number, number, indent))
                blank_before = False
                continue
            if (
                item is not None
                and current is not None
                and current.kind != "item"
                and not blank_before
            ):
                # Python-Markdown does not let a list interrupt a paragraph: the line
                # renders as part of the paragraph.
                self.glued_lists.append(number)
                current.end = number
                continue
            if item is not None:
                while open_items and open_items[-1].indent >= indent:
                    open_items.pop()
                parent = open_items[-1] if open_items else None
                block = Block("item", number, number, indent, parent=parent)
                self._mark_requirement(block, item.group("rest"))
                if parent is not None:
                    parent.children.append(block)
                self.blocks.append(block)
                open_items.append(block)
                current = block
                blank_before = False
                continue
            if blank_before or current is None:
                # After a blank line, an indented line continues the deepest open item
                # it is indented under; anything else starts a new block.
                while open_items and open_items[-1].indent >= indent:
                    open_items.pop()
                if open_items and (blank_before or current is None):
                    current = open_items[-1]
                    current.end = number
                    blank_before = False
                    continue
                open_items.clear()
                kind: Literal["paragraph", "other"] = "paragraph"
                if re.match(r"^\s*(\||!!!|\?\?\?|>|<(?!a[ \t]))", line):
                    kind = "other"
                block = Block(kind, number, number, indent)
                if kind == "paragraph":
                    self._mark_requirement(block, line.strip())
                self.blocks.append(block)
                current = block
                blank_before = False
                continue
            current.end = number
            blank_before = False

    def _add_heading(self, number: int, match: re.Match[str], used_ids: set[str]) -> None:
        raw = match.group("text")
        explicit: str | None = None
        attrs = _HEADING_ATTR_LIST_RE.search(raw)
        if attrs is not None:
            found = re.search(r"#([A-Za-z][\w.:-]*)", attrs.group("attrs"))
            if found is not None:
                explicit = found.group(1)
            raw = raw[: attrs.start()]
        text = plain_inline(raw)
        anchor = explicit if explicit is not None else unique_id(slugify(text), used_ids)
        self.headings.append(Heading(number, len(match.group("hashes")), text, anchor))

    @staticmethod
    def _mark_requirement(block: Block, content: str) -> None:
        start = _REQ_START_RE.match(content)
        if start is not None:
            block.anchor = start.group("anchor")
            bold = start.group("bold")
            block.bold = bold.strip() if bold is not None else None
            return
        bold_only = _BOLD_ID_START_RE.match(content)
        if bold_only is not None:
            block.bold = bold_only.group("bold")

    def _scan_html_ids(self) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        for number, line in enumerate(self.lines, start=1):
            if self.in_code[number - 1]:
                continue
            unquoted = _blank_out(line, _CODE_SPAN_RE)
            for match in _HTML_ID_RE.finditer(unquoted):
                value = match.group("dq") if match.group("dq") is not None else match.group("sq")
                found.append((number, value))
        return found

    # -- queries ---------------------------------------------------------------------

    @property
    def title(self) -> str | None:
        for line in self.lines:
            if line.strip():
                match = re.match(r"^# (?P<title>\S.*)$", line)
                return match.group("title").strip() if match else None
        return None

    def anchors(self) -> set[str]:
        """Every fragment a link into this page may use."""
        ids = {heading.anchor for heading in self.headings}
        ids.update(value for _, value in self.html_ids)
        for number, line in enumerate(self.lines):
            if not self.in_code[number]:
                prose = _blank_out(line, _CODE_SPAN_RE)
                ids.update(match.group("id") for match in _ATTR_LIST_ID_RE.finditer(prose))
        return ids

    def block_at(self, line: int) -> Block | None:
        """The innermost block that contains ``line``."""
        best: Block | None = None
        for block in self.blocks:
            if block.start <= line <= block.end and (best is None or block.start >= best.start):
                best = block
        return best

    def requirement_blocks(self) -> list[Block]:
        return [block for block in self.blocks if block.requirement_id is not None]

    def keywords(self) -> Iterator[Keyword]:
        """All-caps keywords in prose (code, comments, tags, URLs and mentions excluded)."""
        for number, line in enumerate(self.prose, start=1):
            for match in KEYWORD_RE.finditer(line):
                yield Keyword(number, match.start() + 1, match.group(1))

    def miscased_keywords(self) -> Iterator[Keyword]:
        """Keywords in Title Case or mixed case ("May" as the month of a date excepted)."""
        for number, line in enumerate(self.prose, start=1):
            for match in ANY_CASE_KEYWORD_RE.finditer(line):
                word = match.group(1)
                if word.islower() or word.isupper() or _is_month(line, match):
                    continue
                yield Keyword(number, match.start() + 1, word)

    def owning_requirement(self, line: int) -> Block | None:
        """The id'd paragraph or list item (or id'd ancestor item) that holds ``line``."""
        block = self.block_at(line)
        while block is not None:
            if block.requirement_id is not None:
                return block
            block = block.parent
        return None

    def links(self) -> Iterator[Link]:
        for number, line in enumerate(self.lines, start=1):
            if self.in_code[number - 1]:
                continue
            text = _blank_out(_blank_out(line, _CODE_SPAN_RE), _HTML_COMMENT_RE)
            for match in _INLINE_LINK_RE.finditer(text):
                yield Link(number, match.group("target"), match.group("text"))
            ref = _REF_DEF_RE.match(text)
            if ref is not None:
                yield Link(number, ref.group("target"))
            for match in _HTML_LINK_RE.finditer(text):
                value = match.group("dq") if match.group("dq") is not None else match.group("sq")
                yield Link(number, value)

    def example_comments(self) -> Iterator[tuple[int, str]]:
        for number, line in enumerate(self.lines, start=1):
            if self.in_code[number - 1]:
                continue
            match = _EXAMPLE_COMMENT_RE.match(line)
            if match is not None:
                yield number, match.group("names")

    def section_of(self, line: int) -> str:
        title = ""
        for heading in self.headings:
            if heading.line > line:
                break
            title = heading.text
        return title

    def block_text(self, block: Block) -> str:
        """The plain text of a block and its nested items, markup and the id removed."""
        end = block.end
        for child in _descendants(block):
            end = max(end, child.end)
        parts: list[str] = []
        for number in range(block.start, end + 1):
            if self.in_code[number - 1]:
                continue
            line = self.lines[number - 1]
            item = _ITEM_RE.match(line)
            if item is not None:
                line = item.group("rest")
            parts.append(line.strip())
        text = " ".join(part for part in parts if part)
        text = re.sub(r"^<a[ \t]+id=\"[^\"]*\"[ \t]*>[ \t]*</a>[ \t]*", "", text)
        text = re.sub(r"^\*\*[^*]+\*\*[ \t]*", "", text)
        return plain_inline(text)

    def requirement_keywords(self, block: Block) -> list[Keyword]:
        """Keywords that belong to an id'd block: its own lines and its non-id'd descendants."""
        return [
            keyword for keyword in self.keywords() if self.owning_requirement(keyword.line) is block
        ]


def _is_month(line: str, match: re.Match[str]) -> bool:
    """``May 2017``, ``May 5, 2017`` or ``5 May 2017``: a date, not a keyword."""
    if match.group(1) != "May":
        return False
    after = line[match.end() :]
    before = line[: match.start()]
    return bool(
        re.match(r"^ (?:[0-9]{1,2}, )?[0-9]{4}\b", after) or re.search(r"\b[0-9]{1,2} $", before)
    )


def _descendants(block: Block) -> Iterator[Block]:
    for child in block.children:
        yield child
        yield from _descendants(child)


def load_pages(spec_dir: Path) -> list[Page]:
    """Every ``*.md`` page directly in ``spec_dir``, sorted by file name."""
    return [Page(path) for path in sorted(spec_dir.glob("*.md"))]


def is_withdrawn(page: Page, block: Block) -> bool:
    """A withdrawn requirement: its text, after the id, begins with "Withdrawn"."""
    return page.block_text(block).startswith("Withdrawn")


def withdrawn(pages: Sequence[Page]) -> list[Requirement]:
    """The withdrawn requirements (they keep their id and anchor), sorted by id."""
    found = [
        Requirement(
            id=block.requirement_id,
            levels=(),
            page=page.name,
            line=block.start,
            section=page.section_of(block.start),
            text=page.block_text(block),
        )
        for page in pages
        for block in page.requirement_blocks()
        if block.requirement_id is not None and is_withdrawn(page, block)
    ]
    return sorted(found, key=lambda requirement: (requirement.id, requirement.page))


def requirements(pages: Sequence[Page]) -> list[Requirement]:
    """Every requirement in force (withdrawn ones excluded), sorted by id."""
    found: list[Requirement] = []
    for page in pages:
        for block in page.requirement_blocks():
            requirement_id = block.requirement_id
            assert requirement_id is not None
            if is_withdrawn(page, block):
                continue
            levels = sorted({keyword.level for keyword in page.requirement_keywords(block)})
            found.append(
                Requirement(
                    id=requirement_id,
                    levels=tuple(levels),
                    page=page.name,
                    line=block.start,
                    section=page.section_of(block.start),
                    text=page.block_text(block),
                )
            )
    return sorted(found, key=lambda requirement: (requirement.id, requirement.page))
