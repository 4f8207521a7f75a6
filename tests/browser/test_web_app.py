"""The example web app (examples/web, built by ``make ui``) in headless Chromium,
against a real ``dwf serve --memory --ui examples/web/dist`` with authentication on,
as the product runs by default: the session token comes from /ui/session.json.

The browser is driven by examples/web/e2e/run.mjs (playwright-core, Debian's
chromium), ten scenarios: start an expense approval from the start form, see it wait
in the task inbox, answer it wrong (refused in the browser; sent anyway, the engine's
reason is shown) and right (the output is shown); 20 waiting runs in the list on one
connection plus a run page in a second tab, answered within a second; two tabs answering
at once (one wins, the other is told it was already answered); a reload mid-run; an
answer sent after the run ended; a run page opened before the run exists; a page whose
token names one run, refused on another; a prompt holding HTML shown as text; and the
latency from the form's submit to the next step over 20 runs. Screenshots go to
``DWF_E2E_SCREENSHOTS`` (git-ignored ``examples/web/e2e/screenshots/`` by default).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


SCENARIOS = 14


def test_the_example_app_in_chromium() -> None:
    _require_built()
    shots = Path(os.environ.get("DWF_E2E_SCREENSHOTS", WEB / "e2e" / "screenshots"))
    with dwf_serve("--memory", "--ui", str(WEB / "dist"), auth=True) as served:
        assert served.keys is not None
        done = subprocess.run(
            ["node", str(E2E), served.url, "--screenshots", str(shots)],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
            env={
                **os.environ,
                "CHROMIUM": CHROMIUM,
                "DWF_BIN": str(Path(sys.executable).with_name("dwf")),
                "DWF_KEYS": served.keys,
            },
        )
    output = done.stdout + done.stderr
    print(output)
    assert done.returncode == 0, f"e2e/run.mjs failed (exit {done.returncode}):\n{output}"
    assert output.count("PASS ") == SCENARIOS, output
    assert "FAIL " not in output, output
    assert "latency form submit -> next step shown on the run page: median" in output, output
    assert "(n=20," in output.split("next step shown on the run page:")[1], output
