"""The docs site builds with ``mkdocs build --strict`` and publishes the spec and the schemas."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from durable_workflows.schemas import EVENTS

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from mkdocs_hooks import rewrite_links  # noqa: E402
from spec_markup import load_pages  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _html_ids(path: Path) -> set[str]:
    return set(re.findall(r"""\bid=["']([^"']+)["']""", path.read_text(encoding="utf-8")))


def _page_html(site: Path, spec_page: str) -> Path:
    stem = spec_page.removesuffix(".md")
    return site / "spec" / ("index.html" if stem == "index" else f"{stem}/index.html")


def test_site_renders_every_spec_page(site: Path) -> None:
    pages = sorted(path.name for path in (ROOT / "spec").glob("*.md"))
    assert "conventions.md" in pages
    missing = [page for page in pages if not _page_html(site, page).is_file()]
    assert missing == []


def test_spec_is_mounted_not_copied() -> None:
    assert not (ROOT / "docs" / "spec").exists()
    assert not (ROOT / "docs" / "schemas").exists()


def test_site_publishes_every_schema_file_at_its_id_path(site: Path) -> None:
    sources = sorted(p for p in (ROOT / "schemas" / "v1").rglob("*") if p.is_file())
    assert len(sources) >= len(EVENTS)
    for source in sources:
        published = site / "schemas" / "v1" / source.relative_to(ROOT / "schemas" / "v1")
        assert published.is_file(), published
        assert published.read_bytes() == source.read_bytes()
    for event in EVENTS:
        assert (site / "schemas" / "v1" / f"{event}.json").is_file()


def test_schema_reference_has_a_section_per_event(site: Path) -> None:
    page = site / "schemas" / "index.html"
    html = page.read_text(encoding="utf-8")
    ids = _html_ids(page)
    for event in EVENTS:
        assert event in ids, f"no section for {event}"
        section = re.split(r"<h[1-3][ >]", html.split(f'id="{event}"', 1)[1], maxsplit=1)[0]
        assert f'href="v1/{event}.json"' in section, f"{event}: no link to the raw schema"
        assert 'href="../spec/' in section, f"{event}: no link to the spec"
        assert "<table>" in section, f"{event}: no table of value fields"


def test_heading_anchors_match_the_built_site(site: Path) -> None:
    """The linter's idea of each page's anchors is what the site really generates."""
    for page in load_pages(ROOT / "spec"):
        built = _html_ids(_page_html(site, page.name))
        assert page.anchors() - built == set(), page.name


def test_requirement_anchors_are_on_the_site(site: Path) -> None:
    for page in load_pages(ROOT / "spec"):
        built = _html_ids(_page_html(site, page.name))
        ids = {block.requirement_id for block in page.requirement_blocks()}
        assert ids - built == set(), page.name


def test_repository_links_are_rewritten_to_site_paths() -> None:
    docs_page = "[spec](../spec/replay.md#REPLAY-004) and [raw](../schemas/v1/run-started.json)"
    assert rewrite_links(docs_page, "docs/index.md", "index.md") == (
        "[spec](spec/replay.md#REPLAY-004) and [raw](schemas/v1/run-started.json)"
    )
    spec_page = "[start](../docs/getting-started.md), [same](model.md#x), [out](../README.md)"
    assert rewrite_links(spec_page, "spec/events.md", "spec/events.md") == (
        "[start](../getting-started.md), [same](model.md#x), [out](../README.md)"
    )
    fenced = "```md\n[spec](../spec/replay.md)\n```"
    assert rewrite_links(fenced, "docs/index.md", "index.md") == fenced
