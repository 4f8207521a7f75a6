"""The example web app (examples/web, built by ``make ui``) in headless Chromium,
against a real ``dwf serve --memory --ui examples/web/dist`` with authentication on,
as the product runs by default: the session token comes from /ui/session.json.

The browser is driven by examples/web/e2e/run.mjs (playwright-core, Debian's
chromium): start an expense approval from the start form, see it wait in the task
inbox, answer it wrong (the engine's reason is shown) and right (the output is shown);
follow 8 waiting runs in the list on one connection and still get answers in quickly;
show a prompt that holds HTML as text. The script prints the latency from the inbox
POST to the row visible in the page; this test fails with the script's output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.runtime.engine_support import dwf_serve
from tests.support import REPO_ROOT

pytestmark = pytest.mark.slow

WEB = REPO_ROOT / "examples" / "web"
E2E = WEB / "e2e" / "run.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _require_built() -> None:
    if shutil.which("node") is None:
        pytest.fail("Not testable: node is not on PATH (install Node.js)")
    if not (WEB / "dist" / "index.html").is_file():
        pytest.fail(f"Not testable: {WEB / 'dist'} is not built: run `make ui`")
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        pytest.fail(f"Not testable: {WEB / 'node_modules'} is missing: run `make ui`")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Not testable: {CHROMIUM} is missing: run `make system-deps`")


def test_the_example_app_in_chromium(tmp_path: Path) -> None:
    _require_built()
    with dwf_serve("--memory", "--ui", str(WEB / "dist"), auth=True) as served:
        done = subprocess.run(
            ["node", str(E2E), served.url, "--screenshots", str(tmp_path)],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "CHROMIUM": CHROMIUM},
        )
    output = done.stdout + done.stderr
    print(output)
    assert done.returncode == 0, f"e2e/run.mjs failed (exit {done.returncode}):\n{output}"
    assert output.count("PASS ") == 4, output
    assert "latency inbox POST -> run row visible in the task list: median" in output, output
