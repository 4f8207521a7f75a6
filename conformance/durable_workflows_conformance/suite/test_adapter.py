"""The adapter interface itself (spec/adapter.md)."""

from __future__ import annotations

import ipaddress
import time
from urllib.parse import urlsplit

import pytest

from durable_workflows_conformance import schemas
from durable_workflows_conformance.driver import Target, new_id


@pytest.mark.req("ADAPT-001", "ADAPT-004")
def test_info_validates_and_names_protocol_1_0(target: Target) -> None:
    info = target.info()
    schemas.check("info", info)
    assert "1.0" in info["protocol_versions"], "the engine implements protocol 1.0"


@pytest.mark.req("ADAPT-005")
def test_namespace_is_on_a_reachable_stream_server(target: Target) -> None:
    index = f"{target.namespace}/index"
    target.create(index)
    response = target.http.request("HEAD", index)
    assert response.status_code == 200, f"HEAD {index} answered {response.status_code}"
    assert response.headers.get("Content-Type", "").startswith("application/json")


def _error_body(response_json: object) -> None:
    schemas.check("error", response_json)


@pytest.mark.req("ADAPT-002", "ADAPT-017")
def test_settling_an_unknown_run_is_not_found(target: Target) -> None:
    response = target.http.request(
        "POST", target.adapter(f"runs/{new_id('never')}/settle"), body={"timeout_ms": 1000}
    )
    assert response.status_code == 404
    _error_body(response.json())
    assert response.json()["error"]["code"] == "not-found"


@pytest.mark.req("ADAPT-002", "ADAPT-003")
def test_an_invalid_program_is_refused(target: Target) -> None:
    body = {"program": {"ops": [{"op": "teleport"}]}}
    response = target.http.request("PUT", target.adapter("workflows/" + new_id("bad")), body=body)
    assert response.status_code == 400
    _error_body(response.json())
    assert response.json()["error"]["code"] == "bad-request"


@pytest.mark.req("ADAPT-006")
def test_an_undeclared_feature_is_unsupported(target: Target) -> None:
    features = target.features
    if "virtual-clock" not in features:
        response = target.http.request("GET", target.adapter("clock"))
    elif "concurrent-workers" not in features:
        response = target.http.request(
            "PUT", target.adapter("runs/" + new_id("run")), body={"workers": 2}
        )
    elif "always-replay" not in features:
        response = target.http.request(
            "PUT", target.adapter("runs/" + new_id("run")), body={"always_replay": True}
        )
    else:
        return  # every feature with an endpoint or option is declared
    assert response.status_code == 501, response.text
    _error_body(response.json())
    assert response.json()["error"]["code"] == "unsupported"


@pytest.mark.req("ADAPT-019")
@pytest.mark.feature("virtual-clock")
def test_the_virtual_clock_stands_still_until_advanced(target: Target) -> None:
    first = target.clock()
    time.sleep(0.2)
    assert target.clock() == first, "the virtual clock moved on its own"
    moved = target.advance(86_400_000)
    assert (moved - first).total_seconds() == 86_400


@pytest.mark.req("SEC-018")
def test_the_adapter_listens_on_a_loopback_address(target: Target) -> None:
    host = urlsplit(target.url).hostname or ""
    loopback = host == "localhost" or (
        host.replace(".", "").replace(":", "").isalnum() and _is_loopback(host)
    )
    assert loopback, f"the adapter is reached at {host}, not a loopback address"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
