"""The production recipe of docs/deploy.md, run for real: Debian's nginx with TLS and
HTTP/2 in front of ``dwf serve``, using deploy/nginx/durable-workflows.conf as shipped
(only its ports, name and certificate paths replaced).

What a browser needs from it, checked with an HTTP/2 client limited to ONE connection:
twenty live reads held open at once do not stall an answer (HTTP/1.1 allows a browser six
connections per origin), an SSE read sees the answer's outcome while it is still open,
and the UI's development token endpoint is not passed on."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from durable_workflows.access import KeySet, mint_client_token, mint_engine_token
from tests.support import REPO_ROOT

from .engine_support import Process, dwf_serve, unique

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RECIPE = REPO_ROOT / "deploy" / "nginx" / "durable-workflows.conf"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _site(upstream_port: int, port: int, cert: Path, key: Path) -> str:
    """The recipe with its CHANGE lines and certificate paths filled in."""
    text = RECIPE.read_text()
    replacements = {
        "server 127.0.0.1:4437;": f"server 127.0.0.1:{upstream_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{port} ssl http2;",
        "/etc/ssl/certs/workflows.example.com.pem": str(cert),
        "/etc/ssl/private/workflows.example.com.key": str(key),
    }
    for old, new in replacements.items():
        assert old in text, f"the recipe no longer has {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    data = tmp_path_factory.mktemp("data")
    # Reads held as long as a production server holds them (the last option wins).
    long_poll = ("--long-poll-timeout", "30")
    with dwf_serve("--data", str(data), *long_poll, auth=True) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(served: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: `make test` installs it (make system-deps)")
    prefix = tmp_path_factory.mktemp("nginx")
    cert, key = _certificate(prefix)
    port = _free_port()
    upstream = int(served.url.rsplit(":", 1)[1])
    (prefix / "site.conf").write_text(_site(upstream, port, cert, key))
    (prefix / "nginx.conf").write_text(
        f"""
worker_processes 1;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/site.conf;
}}
"""
    )
    process = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    errors = (
                        (prefix / "error.log").read_text()
                        if (prefix / "error.log").exists()
                        else ""
                    )
                    raise AssertionError(f"nginx did not start: {errors}") from None
                time.sleep(0.05)
        yield f"https://127.0.0.1:{port}", cert
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _request(run_id: str) -> dict[str, object]:
    value = {"run_id": run_id, "workflow": "expense-approval", "input": {
        "report_id": run_id, "items": [{"amount": 900}]}}  # fmt: skip
    return {"type": "start", "key": run_id, "value": value, "headers": {"operation": "insert"}}


def test_through_nginx_over_http2_one_connection_carries_every_read_and_the_answer(
    served: Process, proxy: tuple[str, Path], tmp_path: Path
) -> None:
    """curl multiplexes as a browser does (httpx's HTTP/2 client was found to hold a
    request back behind open reads, so it cannot show this)."""
    base, cert = proxy
    assert served.keys is not None
    keys = KeySet.load(served.keys)
    engine = {"Authorization": f"Bearer {mint_engine_token(keys)}"}
    ns = f"{base}/v1/stream/workflows"
    runs = [unique("px") for _ in range(21)]
    client_token = mint_client_token(keys, runs=runs, rights=["read", "submit"])
    tails: dict[str, str] = {}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=30) as http:
        for run_id in runs:
            started = http.post(f"{ns}/index", json=_request(run_id), headers=engine)
            assert started.status_code in (200, 204), started.text
        for run_id in runs:
            deadline = time.monotonic() + 20
            while run_id not in tails:
                read = http.get(f"{ns}/runs/{run_id}/history", headers=engine)
                if read.status_code == 200 and '"waiting"' in read.text:
                    tails[run_id] = read.headers["stream-next-offset"]
                assert time.monotonic() < deadline, f"{run_id} never waits"
                time.sleep(0.05)
    target = runs[0]
    answer = json.dumps(
        {
            "type": "submission",
            "key": f"s-{target}",
            "value": {"submission_id": f"s-{target}", "request": "manager", "value": {}},
            "headers": {"operation": "insert"},
        }
    ).replace("{}}", '{"approved": "yes"}}')  # refused by the schema: the run stays open
    common = ["-s", "--cacert", str(cert), "--http2", "-H", f"Authorization: Bearer {client_token}"]
    report = "%{url} %{time_total} %{http_version} %{num_connects}\\n"
    transfers: list[list[str]] = []
    for run_id in runs[1:]:  # twenty reads held open, as a task list follows twenty runs
        url = f"{ns}/runs/{run_id}/history?offset={tails[run_id]}&live=long-poll"
        transfers.append([*common, "--max-time", "6", "-o", "/dev/null", "-w", report, url])
    sse = tmp_path / "sse.txt"
    url = f"{ns}/runs/{target}/history?offset={tails[target]}&live=sse"
    transfers.append([*common, "--max-time", "6", "-o", str(sse), "-w", report, url])
    post = [*common, "-o", "/dev/null", "-w", report, "-H", "Content-Type: application/json"]
    transfers.append([*post, "--data-binary", answer, f"{ns}/runs/{target}/inbox"])
    command = ["curl", "-Z", "--parallel-max", "50"]
    for index, transfer in enumerate(transfers):
        command += (["--next"] if index else []) + transfer
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    lines = [line.split() for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == len(transfers), done.stdout + done.stderr
    held = [line for line in lines if "live=" in line[0]]
    answered = [line for line in lines if "live=" not in line[0]]
    # The reads were still open when curl gave up on them (the server holds them 30 s),
    assert len(held) == 21 and all(float(line[1]) >= 5 for line in held), held
    # the answer was answered over HTTP/2, and all of it went over one connection.
    assert {line[2] for line in answered} == {"2"}, answered
    assert sum(int(line[3]) for line in lines) == 1, lines
    posted = next(line for line in lines if line[0].endswith("/inbox"))
    # Behind HTTP/1.1 and six connections, the answer would wait for a held read (30 s).
    assert float(posted[1]) < 3, posted
    # The rejection reached the SSE reader while its read was still open (the run still
    # waits, so only curl's time limit ended it).
    assert '"schema-invalid"' in sse.read_text(), sse.read_text()[-500:]


def test_the_development_token_endpoint_is_not_passed_on(proxy: tuple[str, Path]) -> None:
    base, cert = proxy
    reply = httpx.get(
        f"{base}/ui/session.json", verify=ssl.create_default_context(cafile=str(cert)), timeout=10
    )
    assert reply.status_code == 404


@pytest.mark.req("SEC-039")
def test_no_answer_through_the_proxy_may_be_framed(
    served: Process, proxy: tuple[str, Path]
) -> None:
    base, cert = proxy
    reply = httpx.get(
        f"{base}/v1/stream/workflows/index",
        verify=ssl.create_default_context(cafile=str(cert)),
        timeout=10,
    )
    assert reply.headers.get_list("x-frame-options") == ["DENY"], reply.headers
    assert "frame-ancestors 'none'" in reply.headers["content-security-policy"]
