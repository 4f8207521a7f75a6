"""``dwf serve --ui DIR`` serves a web app from the engine's own origin (issue 13): the
files at ``/``, and at ``/ui/session.json`` the namespace, the workflows with their input
schemas and a client token that can start, read and answer ``ui-`` runs and nothing else."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import REPO_ROOT

from .engine_support import Process, dwf_serve, unique, wait_until

pytestmark = pytest.mark.slow

PAGE = "<!doctype html><title>app</title><p>hello</p>"


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ui")
    (directory / "index.html").write_text(PAGE)
    (directory / "assets").mkdir()
    (directory / "assets" / "app.js").write_text("console.log('app')")
    (directory / "assets" / "big.js").write_text("console.log('big');\n" * 2000)
    return directory


@pytest.fixture(scope="module")
def served(app_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    data = tmp_path_factory.mktemp("data")
    with dwf_serve("--ui", str(app_dir), "--data", str(data), auth=True) as running:
        yield running


def start_request(run_id: str, workflow: str = "expense-approval") -> dict[str, object]:
    value = {"run_id": run_id, "workflow": workflow, "input": {"report_id": "R", "items": []}}
    return {"type": "start", "key": run_id, "value": value, "headers": {"operation": "insert"}}


def test_the_app_is_served_at_the_root(served: Process) -> None:
    page = httpx.get(f"{served.url}/", timeout=10)
    assert page.status_code == 200 and "hello" in page.text
    assert page.headers["content-type"].startswith("text/html")
    asset = httpx.get(f"{served.url}/assets/app.js", timeout=10)
    assert asset.status_code == 200 and "console.log" in asset.text
    assert httpx.get(f"{served.url}/../../etc/passwd", timeout=10).status_code == 404
    assert httpx.get(f"{served.url}/%2e%2e/%2e%2e/etc/passwd", timeout=10).status_code == 404
    # the engine's own paths still answer as before
    assert httpx.get(f"{served.url}/wake", timeout=10).status_code == 405
    assert httpx.post(f"{served.url}/wake", json={"run_id": "x"}, timeout=10).status_code == 401


def test_the_session_names_the_namespace_the_workflows_and_a_scoped_token(
    served: Process,
) -> None:
    reply = httpx.get(f"{served.url}/ui/session.json", timeout=10)
    assert reply.status_code == 200 and reply.headers["cache-control"] == "no-store"
    session = reply.json()
    assert session["namespace"] == "/v1/stream/workflows"
    assert session["run_prefix"] == "ui-"
    names = [w["name"] for w in session["workflows"]]
    assert names == ["agent-confirm", "expense-approval", "onboarding-wizard"]
    expense = next(w for w in session["workflows"] if w["name"] == "expense-approval")
    assert expense["input_schema"]["required"] == ["report_id", "items"]
    token = session["token"]
    assert isinstance(token, str) and session["expires_at"] > 0
    auth = {"Authorization": f"Bearer {token}"}
    ns = f"{served.url}{session['namespace']}"
    # It may start a ui- run and read its history ...
    run_id = unique("ui-r")
    started = httpx.post(f"{ns}/index", json=start_request(run_id), headers=auth, timeout=10)
    assert started.status_code in (200, 204), started.text
    wait_until(
        lambda: (
            httpx.get(f"{ns}/runs/{run_id}/history", headers=auth, timeout=10).status_code == 200
        ),
        20,
        "the run's history is readable with the session token",
    )
    # ... and nothing else: another run id, the index, a history append.
    other = unique("r")
    assert (
        httpx.post(f"{ns}/index", json=start_request(other), headers=auth, timeout=10).status_code
        == 403
    )
    assert httpx.get(f"{ns}/index", headers=auth, timeout=10).status_code == 403
    forged = httpx.post(f"{ns}/runs/{run_id}/history", json=[{}], headers=auth, timeout=10)
    assert forged.status_code == 403


@pytest.mark.req("SEC-038")
@pytest.mark.parametrize(
    "host",
    ["rebind.attacker.example:4590", "attacker.example", "127.0.0.1.attacker.example", "[::2]:80"],
)
def test_the_session_token_goes_only_to_requests_addressed_to_a_loopback_name(
    served: Process, host: str
) -> None:
    # DNS rebinding: the browser sends the attacker's name, resolved to 127.0.0.1.
    reply = httpx.get(f"{served.url}/ui/session.json", headers={"Host": host}, timeout=10)
    assert reply.status_code == 403, reply.text
    assert "token" not in reply.json() and "loopback" in reply.json()["error"]


@pytest.mark.req("SEC-038")
@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:4437", "app.localhost", "127.0.0.9"])
def test_loopback_names_get_the_session(served: Process, host: str) -> None:
    reply = httpx.get(f"{served.url}/ui/session.json", headers={"Host": host}, timeout=10)
    assert reply.status_code == 200 and reply.json()["token"]


@pytest.mark.req("SEC-039")
@pytest.mark.parametrize("path", ["/", "/assets/app.js", "/ui/session.json", "/no-such-file"])
def test_no_page_of_the_app_may_be_framed_by_another_origin(served: Process, path: str) -> None:
    reply = httpx.get(f"{served.url}{path}", timeout=10)
    assert reply.headers["x-frame-options"] == "DENY"
    policy = reply.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    assert reply.headers["x-content-type-options"] == "nosniff"


def test_the_apps_files_are_sent_compressed_when_the_browser_accepts_it(served: Process) -> None:
    url = f"{served.url}/assets/big.js"
    packed = httpx.get(url, headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert packed.headers["content-encoding"] == "gzip" and packed.text.count("big") == 2000
    assert int(packed.headers["content-length"]) < 4000  # 40,000 bytes as sent plain
    plain = httpx.get(url, headers={"Accept-Encoding": "identity"}, timeout=10)
    assert "content-encoding" not in plain.headers and len(plain.content) == 40000


def test_ui_without_an_index_html_or_on_a_public_address_is_refused(
    tmp_path: Path, app_dir: Path
) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "durable_workflows.cli", "serve", "--port", "0", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )

    empty = serve("--ui", str(tmp_path), "--memory")
    assert empty.returncode == 2 and "no index.html" in empty.stderr
    public = serve("--ui", str(app_dir), "--memory", "--host", "0.0.0.0")
    assert public.returncode == 2 and "loopback addresses only" in public.stderr
