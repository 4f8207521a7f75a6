"""mkdocs hooks: put the spec and the schemas on the site from their real folders.

- Every file of ``spec/`` is mounted at ``spec/<file>``, so the site renders the
  normative pages where they live in the repository; nothing is copied into docs/.
- Every file under ``schemas/v1/`` is published at ``schemas/v1/...``, so each schema's
  ``$id`` (``https://durable-workflows.dev/schemas/v1/<event>.json``) resolves on the site.
- ``schemas/index.md`` is generated from the schema files: one section per event with
  its entity type, operation, status and value fields, linked to the raw schema and to
  the spec section that defines the event.

Pages link to each other by repository path (``../spec/replay.md`` from docs/,
``../docs/getting-started.md`` from spec/), which works when browsing the repository;
``on_page_markdown`` rewrites such links to where the site puts the target.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page as MkdocsPage

from spec_markup import Page, load_pages

REPO_ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = REPO_ROOT / "spec"
SCHEMA_DIR = REPO_ROOT / "schemas" / "v1"
SCHEMA_PAGE = "schemas/index.md"
#: Aggregate schemas: each is ``oneOf`` the events of one stream.
STREAMS = (
    ("history-message", "History", "written by the engine only"),
    ("inbox-message", "Inbox", "written by clients"),
    ("index-message", "Run index", "written by clients that may start runs"),
)

#: Headings and spec pages of the schema folders that are not events.
FOLDER_TITLES = {"defs": "Shared definitions", "conformance": "Conformance adapter"}
FOLDER_PAGES = {"conformance": "adapter.md"}

_LINK_RE = re.compile(r"(?P<head>\]\(\s*<?)(?P<target>[^()\s<>]+)")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


# -- mounting ---------------------------------------------------------------------------


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for path in sorted(SPEC_DIR.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            files.append(File.generated(config, f"spec/{path.name}", abs_src_path=str(path)))
    for path in sorted(SCHEMA_DIR.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            uri = f"schemas/v1/{path.relative_to(SCHEMA_DIR).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    files.append(File.generated(config, SCHEMA_PAGE, content=schema_reference()))
    return files


def _repo_path(page: MkdocsPage, config: MkDocsConfig) -> str | None:
    """The page's path in the repository, or None for a generated page."""
    source = page.file.abs_src_path
    if source is None:
        return None
    path = Path(source).resolve()
    for root in (SPEC_DIR, Path(config.docs_dir).resolve()):
        if path.is_relative_to(root) and path.is_relative_to(REPO_ROOT):
            return path.relative_to(REPO_ROOT).as_posix()
    return None


def _site_path(repo_path: str) -> str | None:
    """Where the site publishes a repository file, or None if it does not."""
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    if repo_path.startswith(("spec/", "schemas/v1/")):
        return repo_path
    return None


def rewrite_links(markdown: str, repo_path: str, site_path: str) -> str:
    """Rewrite relative links written as repository paths into site paths."""
    code = _code_lines(markdown)
    lines = markdown.split("\n")

    def replace(match: re.Match[str]) -> str:
        target = match.group("target")
        if _SCHEME_RE.match(target) or target.startswith(("/", "#")):
            return match.group(0)
        path, hash_mark, fragment = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), path))
        published = _site_path(resolved)
        if published is None:
            return match.group(0)
        relative = posixpath.relpath(published, posixpath.dirname(site_path) or ".")
        return f"{match.group('head')}{relative}{hash_mark}{fragment}"

    for index, line in enumerate(lines):
        if not code[index]:
            lines[index] = _LINK_RE.sub(replace, line)
    return "\n".join(lines)


def _code_lines(markdown: str) -> list[bool]:
    flags: list[bool] = []
    fence: str | None = None
    for line in markdown.split("\n"):
        stripped = line.strip()
        if fence is None:
            opened = re.match(r"^(`{3,}|~{3,})", stripped)
            if opened is not None:
                fence = opened.group(1)
            flags.append(fence is not None)
        else:
            flags.append(True)
            if re.fullmatch(re.escape(fence[0]) + "{" + str(len(fence)) + ",}", stripped):
                fence = None
    return flags


def on_page_markdown(markdown: str, page: MkdocsPage, config: MkDocsConfig, files: Files) -> str:
    repo_path = _repo_path(page, config)
    if repo_path is None:
        return markdown
    return rewrite_links(markdown, repo_path, page.file.src_uri)


# -- the schema reference ---------------------------------------------------------------


class _Schemas:
    """The schema files of one major version, with ``$ref`` resolution by relative path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.documents: dict[str, Any] = {
            path.relative_to(root).as_posix(): json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(root.rglob("*.json"))
            if "examples" not in path.relative_to(root).parts
        }

    def resolve(self, ref: str, base: str) -> tuple[Any, str]:
        """The schema a ``$ref`` names, and the file it lives in."""
        file_part, _, pointer = ref.partition("#")
        file = (
            posixpath.normpath(posixpath.join(posixpath.dirname(base), file_part))
            if (file_part)
            else base
        )
        node: Any = self.documents[file]
        for token in [t for t in pointer.split("/") if t]:
            node = node[token.replace("~1", "/").replace("~0", "~")]
        return node, file

    def deref(self, schema: Any, base: str) -> tuple[Any, str]:
        while isinstance(schema, dict) and "$ref" in schema and len(schema) <= 2:
            target, base = self.resolve(schema["$ref"], base)
            if "description" in schema and isinstance(target, dict):
                target = {**target, "description": schema["description"]}
            schema = target
        return schema, base

    def members(self, schema: Any, base: str) -> Iterator[tuple[dict[str, Any], str]]:
        """The schema and every ``allOf`` member, ``$ref``s followed."""
        schema, base = self.deref(schema, base)
        if not isinstance(schema, dict):
            return
        yield schema, base
        for member in schema.get("allOf", []):
            yield from self.members(member, base)


def _const(schema: Any) -> Any:
    return schema.get("const") if isinstance(schema, dict) else None


def _describe_type(schemas: _Schemas, schema: Any, base: str) -> str:
    if schema is True or schema == {}:
        return "any JSON"
    if not isinstance(schema, dict):
        return "nothing"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    if "$ref" in schema:
        target, target_base = schemas.resolve(schema["$ref"], base)
        inner = _describe_type(schemas, target, target_base)
        if isinstance(target, dict) and target.get("title") and "const" not in target:
            return f"{str(target['title']).lower()} ({inner})"
        return inner
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema:
            return " or ".join(
                _describe_type(schemas, option, base) for option in schema[combinator]
            )
    kind = schema.get("type")
    if kind is None:
        if "allOf" in schema:
            return " and ".join(_describe_type(schemas, part, base) for part in schema["allOf"])
        return "any JSON"
    kinds = kind if isinstance(kind, list) else [kind]
    return " or ".join(str(k) for k in kinds)


def _field_table(schemas: _Schemas, value: Any, base: str) -> list[str]:
    """Rows of the value's fields: the narrowest type each event allows, and a description."""
    required: list[str] = []
    props: dict[str, tuple[Any, str]] = {}
    descriptions: dict[str, str] = {}
    for member, member_base in schemas.members(value, base):
        for name in member.get("required", []):
            if name not in required:
                required.append(name)
        for name, prop in member.get("properties", {}).items():
            prop_schema, _ = schemas.deref(prop, member_base)
            if isinstance(prop, dict) and "description" in prop:
                descriptions.setdefault(name, prop["description"])
            elif isinstance(prop_schema, dict) and "description" in prop_schema:
                descriptions.setdefault(name, prop_schema["description"])
            # Later allOf members narrow earlier ones (e.g. status `running`).
            props[name] = (prop, member_base)
    variants = _variants(schemas, value, base)
    rows = ["| field | type | description |", "| --- | --- | --- |"]
    for name in required:
        if name in variants:
            kind = " or ".join(variants[name])
        elif name in props:
            kind = _describe_type(schemas, *props[name])
        else:
            kind = "any JSON"
        description = " ".join(descriptions.get(name, "").split())
        rows.append(f"| `{name}` | {_cell(kind)} | {_cell(description)} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _variants(schemas: _Schemas, value: Any, base: str) -> dict[str, list[str]]:
    """Fields whose allowed values differ between the ``oneOf`` branches of a value."""
    found: dict[str, list[str]] = {}
    for member, member_base in schemas.members(value, base):
        for branch in member.get("oneOf", []):
            branch_schema, _ = schemas.deref(branch, member_base)
            if not isinstance(branch_schema, dict):
                continue
            for name, prop in branch_schema.get("properties", {}).items():
                if _const(prop) is not None:
                    label = f"`{json.dumps(_const(prop))}`"
                    title = branch_schema.get("title")
                    found.setdefault(name, []).append(f"{label} ({title})" if title else label)
    return found


def _statuses(schemas: _Schemas, value: Any, base: str) -> list[str]:
    variants = _variants(schemas, value, base).get("status")
    if variants:
        return variants
    status: str | None = None
    for member, member_base in schemas.members(value, base):
        prop = member.get("properties", {}).get("status")
        if prop is not None:
            resolved, _ = schemas.deref(prop, member_base)
            if _const(resolved) is not None:
                status = f"`{json.dumps(_const(resolved))}`"
    return [status] if status else []


def _spec_sections(pages: list[Page]) -> dict[str, str]:
    """Event name -> ``page#anchor`` of the heading that defines it in the spec."""
    found: dict[str, str] = {}
    ordered = sorted(pages, key=lambda page: page.name != "events.md")
    for page in ordered:
        for heading in page.headings:
            match = re.match(r"^([a-z]+(?:-[a-z]+)+)\b", heading.text)
            if match is not None:
                found.setdefault(match.group(1), f"{page.name}#{heading.anchor}")
        for _, value in page.html_ids:
            if re.fullmatch(r"[a-z]+(?:-[a-z]+)+", value):
                found.setdefault(value, f"{page.name}#{value}")
    return found


def schema_reference(schema_dir: Path = SCHEMA_DIR, spec_dir: Path = SPEC_DIR) -> str:
    """The Markdown of the schema reference page."""
    schemas = _Schemas(schema_dir)
    sections = _spec_sections(load_pages(spec_dir)) if spec_dir.is_dir() else {}
    events_page = spec_dir / "events.md"
    grouped: list[tuple[str, str, list[str]]] = []
    placed: set[str] = set()
    for aggregate, title, writer in STREAMS:
        document = schemas.documents.get(f"{aggregate}.json")
        if document is None:
            continue
        names = [
            posixpath.splitext(posixpath.basename(option["$ref"]))[0]
            for option in document.get("oneOf", [])
            if isinstance(option, dict) and "$ref" in option
        ]
        grouped.append((title, writer, names))
        placed.update(names)
    aggregates = {f"{aggregate}.json" for aggregate, _, _ in STREAMS}
    others = sorted(
        posixpath.splitext(name)[0]
        for name in schemas.documents
        if "/" not in name and name not in aggregates and posixpath.splitext(name)[0] not in placed
    )
    if others:
        grouped.append(("Other", "", others))

    out = [
        "# Schema reference",
        "",
        "One JSON Schema (2020-12) per event, generated from the files under `schemas/v1/`."
        " Every message is a State Protocol change message"
        " ([`defs/change-message.json`](v1/defs/change-message.json)); an event is identified"
        " by its entity type, its operation and, for updates, the value's `status`."
        " Values list every field: a field with no value is `null`, never omitted.",
        "",
        "Each schema's `$id` is its URL on this site, for example"
        " `https://durable-workflows.dev/schemas/v1/step-started.json`.",
        "",
    ]
    for title, writer, names in grouped:
        out += [f"## {title} stream" if title != "Other" else "## Other schemas", ""]
        if writer:
            aggregate = next(a for a, t, _ in STREAMS if t == title)
            out += [
                f"Messages {writer}; any one of them validates against"
                f" [`{aggregate}.json`](v1/{aggregate}.json).",
                "",
            ]
        for name in names:
            document = schemas.documents.get(f"{name}.json")
            if document is None:
                continue
            out += _event_section(schemas, name, document, sections, events_page.is_file())
    folders = sorted({name.split("/", 1)[0] for name in schemas.documents if "/" in name})
    for folder in sorted(folders, key=lambda f: f != "defs"):
        title = FOLDER_TITLES.get(folder, f"`{folder}/` schemas")
        out += [f"## {title}", ""]
        page = FOLDER_PAGES.get(folder)
        if page is not None and (spec_dir / page).is_file():
            out += [f"Specified in [`{page}`](../spec/{page}).", ""]
        for name in sorted(n for n in schemas.documents if n.startswith(f"{folder}/")):
            document = schemas.documents[name]
            description = " ".join(str(document.get("description", "")).split())
            out.append(f"- [`{name}`](v1/{name}): {description}")
        out.append("")
    return "\n".join(out)


def _event_section(
    schemas: _Schemas,
    name: str,
    document: dict[str, Any],
    sections: dict[str, str],
    has_events_page: bool,
) -> list[str]:
    base = f"{name}.json"
    properties: dict[str, Any] = document.get("properties", {})
    entity = _const(properties.get("type"))
    operation = _const(properties.get("headers", {}).get("properties", {}).get("operation"))
    statuses = _statuses(schemas, properties.get("value", {}), base)
    links = [f"schema: [`{name}.json`](v1/{name}.json)"]
    if name in sections:
        links.append(f"defined in: [`{sections[name]}`](../spec/{sections[name]})")
    elif has_events_page:
        links.append("defined in: [`events.md`](../spec/events.md)")
    for kind in ("valid", "invalid"):
        folder = schemas.root / "examples" / name / kind
        examples = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if examples:
            listed = ", ".join(
                f"[{path.stem}](v1/examples/{name}/{kind}/{path.name})" for path in examples
            )
            links.append(f"{kind} examples: {listed}")
    out = [f"### `{name}`", ""]
    if document.get("description"):
        out += [" ".join(str(document["description"]).split()), ""]
    out += [
        f"- entity type: `{entity}`" if entity is not None else "- entity type: (any)",
        f"- operation: `{operation}`" if operation is not None else "- operation: (any)",
        f"- status: {' or '.join(statuses) if statuses else '(none)'}",
        *(f"- {link}" for link in links),
        "",
        "Value fields (all required):",
        "",
    ]
    out += _field_table(schemas, properties.get("value", {}), base)
    out.append("")
    return out
