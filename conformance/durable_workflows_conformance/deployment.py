"""``dwf conformance deployment``: does a stream server keep clients out of the history?

Any operator can point it at the namespace a deployment uses, on any Durable Streams
server, with the engine's credential and (optionally) a client's:

    dwf conformance deployment --namespace-url https://streams.example/v1/stream/workflows \\
        --engine-token "$ENGINE" --client-token "$CLIENT" --client-run check-1

With the engine's credential it sets up two runs as an engine would (inbox, history, a
``run-started``); the client token must be scoped to ``--client-run``. Then it tries
every forgery of security.md, once with no credential and once with the client's: writes
to a history, closing or deleting an inbox, the index or the wake stream, creating
streams, reading the index or another run. Each attempt is ``refused`` when the server
answered with an error status and the stream is byte-for-byte what it was (read back
with the engine's credential), else ``allowed``.

Exit status: 0 every attempt refused; 1 at least one allowed; 2 a usage or set-up error.
Only httpx and the standard library: the suite installs on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["Attempt", "Outcome", "main", "summary_line"]

JSON = {"content-type": "application/json"}
CLOSE = {**JSON, "stream-closed": "true"}
TIMEOUT = 15.0


class SetupError(Exception):
    """The check cannot run (exit 2)."""


@dataclass(frozen=True)
class Attempt:
    """One forgery: a request that a server keeping clients out must refuse."""

    name: str
    method: str
    path: str  # relative to the namespace URL; {run} and {other} are filled in
    headers: dict[str, str]
    body: bytes
    requirements: tuple[str, ...]
    reads: bool = False  # a read: refused when the answer carries no data


@dataclass(frozen=True)
class Outcome:
    attempt: str
    credential: str
    method: str
    path: str
    status: int | None
    result: str  # "refused" or "allowed"
    changed: bool
    requirements: tuple[str, ...]


def _message(kind: str, key: str, value: dict[str, Any], operation: str) -> bytes:
    return json.dumps(
        {"type": kind, "key": key, "value": value, "headers": {"operation": operation}}
    ).encode()


def _run_started(run_id: str) -> bytes:
    """A schema-valid ``run-started`` of a workflow no engine serves."""
    value = {
        "run_id": run_id,
        "workflow": "dwf-deployment-check",
        "protocol": "1.0",
        "input": None,
        "status": "running",
        "started_at": "2026-01-01T00:00:00Z",
        "waiting_for": None,
        "output": None,
        "error": None,
        "finished_at": None,
    }
    headers = {"operation": "insert", "txid": run_id}
    return json.dumps({"type": "run", "key": run_id, "value": value, "headers": headers}).encode()


def attempts() -> list[Attempt]:
    """Every forgery of security.md (SEC-001..004, SEC-019..021, PRIV-005)."""
    received = _message(
        "input",
        "approval",
        {"status": "received", "value": {"approved": True}, "submission_id": "forged"},
        "update",
    )
    completed = _message("run", "{run}", {"status": "completed", "output": "forged"}, "update")
    submission = _message(
        "submission",
        "forged-1",
        {"submission_id": "forged-1", "request": "approval", "value": {"approved": True}},
        "insert",
    )
    history, inbox = "runs/{run}/history", "runs/{run}/inbox"
    fresh = "runs/{fresh}/history"
    return [
        Attempt("append a forged input-received to a history", "POST", history, JSON,
                received, ("SEC-001", "SEC-002")),
        Attempt("append a forged run-completed and close the history", "POST", history, CLOSE,
                completed, ("SEC-001", "SEC-002")),
        Attempt("pre-create a history with a forged run-started", "PUT", fresh, JSON,
                b"", ("SEC-001", "SEC-002")),
        Attempt("delete a history", "DELETE", history, {}, b"", ("SEC-001", "SEC-002")),
        Attempt("delete an inbox", "DELETE", inbox, {}, b"", ("SEC-020", "SEC-021")),
        Attempt("close an inbox", "POST", inbox, CLOSE, b"", ("SEC-019", "SEC-021")),
        Attempt("create an inbox closed", "PUT", "runs/{fresh}/inbox", CLOSE, b"",
                ("SEC-020", "SEC-021")),
        Attempt("append a history event to an inbox", "POST", inbox, JSON, received,
                ("SEC-003",)),
        Attempt("append a submission to another run's inbox", "POST", "runs/{other}/inbox",
                JSON, submission, ("SEC-003",)),
        Attempt("delete the run index", "DELETE", "index", {}, b"", ("SEC-020", "SEC-021")),
        Attempt("close the run index", "POST", "index", CLOSE, b"", ("SEC-019", "SEC-021")),
        Attempt("put the run index again", "PUT", "index", JSON, b"", ("SEC-020", "SEC-021")),
        Attempt("delete the wake stream", "DELETE", "wake", {}, b"", ("SEC-020", "SEC-021")),
        Attempt("close the wake stream", "POST", "wake", CLOSE, b"", ("SEC-020", "SEC-021")),
        Attempt("read the run index", "GET", "index?offset=-1", {}, b"", ("PRIV-005",),
                reads=True),
        Attempt("read another run's history", "GET", "runs/{other}/history?offset=-1", {}, b"",
                ("SEC-003", "PRIV-006"), reads=True),
        Attempt("read another run's inbox", "GET", "runs/{other}/inbox?offset=-1", {}, b"",
                ("SEC-003", "PRIV-006"), reads=True),
    ]  # fmt: skip


class Check:
    """Runs the attempts against one namespace."""

    def __init__(
        self,
        namespace_url: str,
        engine_token: str,
        client_token: str | None,
        client_run: str | None,
        http: httpx.Client,
    ) -> None:
        self.ns = namespace_url.rstrip("/")
        self.http = http
        self.engine = {"authorization": f"Bearer {engine_token}"}
        self.client = None if client_token is None else {"authorization": f"Bearer {client_token}"}
        self.client_run = client_run or f"dwf-check-{uuid.uuid4().hex[:8]}"
        self.names: dict[str, str] = {}
        self.notes: list[str] = []
        self.rename("client")

    def rename(self, who: str) -> None:
        """Fresh runs for each attempt, so one allowed forgery cannot make a later one
        look refused; a client's own run is the one its token names."""
        tag = uuid.uuid4().hex[:8]
        own = self.client_run if who == "client" else f"dwf-check-{tag}"
        self.names = {
            "run": own,
            "other": f"dwf-check-other-{tag}",
            "fresh": f"dwf-check-new-{tag}",
        }

    def url(self, path: str) -> str:
        return f"{self.ns}/{path.format(**self.names)}"

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        """Create what an engine creates for two runs; refuse to go on if it cannot."""
        self._create("index")
        self._create("wake")
        for run in ("run", "other"):
            self._create(f"runs/{{{run}}}/inbox")
            path = f"runs/{{{run}}}/history"
            if self._create(path):
                reply = self._send("POST", path, JSON, _run_started(self.names[run]), self.engine)
                if reply.status_code not in (200, 204):
                    status = reply.status_code
                    raise SetupError(f"the engine credential cannot append to a history: {status}")

    def _create(self, path: str) -> bool:
        """PUT as the engine; True when the stream is new."""
        reply = self._send("PUT", path, JSON, b"", self.engine)
        if reply.status_code == 201:
            return True
        if reply.status_code == 200:
            return False
        if reply.status_code == 409 and self._send("HEAD", path, {}, b"", self.engine).is_success:
            return False  # it exists (for example closed): leave it as it is
        raise SetupError(
            f"the engine credential cannot create {self.url(path)}: HTTP {reply.status_code} "
            f"{reply.text[:200]}"
        )

    def _send(
        self, method: str, path: str, headers: dict[str, str], body: bytes, who: dict[str, str]
    ) -> httpx.Response:
        try:
            return self.http.request(
                method, self.url(path), headers={**headers, **who}, content=body or None
            )
        except httpx.HTTPError as exc:
            raise SetupError(f"{method} {self.url(path)}: no answer ({exc})") from exc

    def snapshot(self, path: str) -> tuple[Any, ...]:
        """Existence, closed status, tail and every byte, read with the engine's credential."""
        bare = path.split("?", 1)[0]
        head = self._send("HEAD", bare, {}, b"", self.engine)
        if head.status_code == 404:
            return ("absent",)
        read = self._send("GET", bare + "?offset=-1", {}, b"", self.engine)
        return (
            head.status_code,
            head.headers.get("stream-closed"),
            head.headers.get("stream-next-offset"),
            read.content,
        )

    # ------------------------------------------------------------------ attempts

    def credentials(self) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {"anonymous": {}}
        if self.client is not None:
            found["client"] = self.client
        return found

    def run_all(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for attempt in attempts():
            for who, credential in self.credentials().items():
                outcomes.append(self.try_one(attempt, who, credential))
        # A token that proves nothing must not read anything either.
        history = "runs/{run}/history?offset=-1"
        bad = Attempt("read a history with a malformed token", "GET", history, {}, b"",
                      ("SEC-023",), reads=True)  # fmt: skip
        outcomes.append(self.try_one(bad, "bad-token", {"authorization": "Bearer not-a-token"}))
        if self.client is not None:
            token = self.client["authorization"].removeprefix("Bearer ")
            flipped = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
            tampered = Attempt("read a history with a tampered token", "GET", history, {}, b"",
                               ("SEC-023",), reads=True)  # fmt: skip
            outcomes.append(
                self.try_one(tampered, "tampered-token", {"authorization": f"Bearer {flipped}"})
            )
        return outcomes

    def try_one(self, attempt: Attempt, who: str, credential: dict[str, str]) -> Outcome:
        self.rename(who)
        self.setup()  # what an earlier allowed attempt deleted is there again
        before = self.snapshot(attempt.path)
        reply = self._send(attempt.method, attempt.path, attempt.headers, attempt.body, credential)
        changed = self.snapshot(attempt.path) != before
        if before[0] != "absent" and before[1] == "true" and not attempt.reads:
            # An earlier allowed attempt closed a stream this one shares (the index, the
            # wake stream, the client's run): its answer proves nothing now.
            result = "untestable"
        else:
            result = "refused" if reply.status_code >= 400 and not changed else "allowed"
        return Outcome(
            attempt.name,
            who,
            attempt.method,
            attempt.path.format(**self.names),
            reply.status_code,
            result,
            changed,
            attempt.requirements,
        )

    def client_reads_its_run(self) -> None:
        """The client token must work where it should (else every refusal proves nothing),
        and its reads must stay out of shared caches (PRIV-006)."""
        if self.client is None:
            self.notes.append("no client token: only anonymous attempts were made")
            return
        self.setup()
        reply = self._send("GET", "runs/{run}/history?offset=-1", {}, b"", self.client)
        if reply.status_code != 200:
            raise SetupError(
                f"the client token cannot read the history of run {self.client_run!r} "
                f"(HTTP {reply.status_code}): is it scoped to --client-run?"
            )
        cache = reply.headers.get("cache-control", "")
        if "private" not in cache and "no-store" not in cache:
            self.notes.append(
                f"PRIV-006: a read with the client token is served with Cache-Control {cache!r}, "
                "not private or no-store: a shared cache may keep it"
            )


def summary_line(outcomes: Sequence[Outcome]) -> str:
    counts = {r: sum(o.result == r for o in outcomes) for r in ("refused", "allowed", "untestable")}
    line = f"{len(outcomes)} attempts, {counts['refused']} refused, {counts['allowed']} allowed"
    if counts["untestable"]:
        line += f", {counts['untestable']} untestable (a stream they need was closed by then)"
    return line


def render_text(outcomes: Sequence[Outcome], notes: Sequence[str], namespace: str) -> str:
    lines = [f"deployment check of {namespace}", ""]
    width = max(len(o.attempt) for o in outcomes)
    lines.append(f"{'attempt':<{width}}  {'credential':<14}  status  result")
    for o in outcomes:
        status = "-" if o.status is None else str(o.status)
        flag = "" if o.result == "refused" else f"   <-- {', '.join(o.requirements)}"
        lines.append(f"{o.attempt:<{width}}  {o.credential:<14}  {status:>6}  {o.result}{flag}")
    lines += ["", summary_line(outcomes)]
    writes = [o for o in outcomes if o.credential == "anonymous" and o.method != "GET"]
    if any(o.result == "allowed" for o in writes):
        lines.append(
            "this server does not enforce write permissions: an HTTP client with no "
            "credential can forge or destroy a run's streams (SEC-002)"
        )
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def render_markdown(outcomes: Sequence[Outcome], notes: Sequence[str], namespace: str) -> str:
    lines = [
        f"# Deployment check of `{namespace}`",
        "",
        summary_line(outcomes),
        "",
        "| attempt | credential | status | result | requirements |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.attempt} | {o.credential} | {o.status} | {o.result} | "
            f"{', '.join(o.requirements)} |"
        )
    lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dwf conformance deployment",
        description="Try every forgery of a run's history against a stream server and "
        "report which were refused (exit 1 if any was allowed).",
    )
    p.add_argument(
        "--namespace-url",
        help="the namespace, e.g. http://127.0.0.1:4437/v1/stream/workflows (default: $DWF_URL)",
    )
    p.add_argument(
        "--engine-token", help="the engine's bearer credential (default: $DWF_ENGINE_TOKEN)"
    )
    p.add_argument(
        "--client-token", help="a client's bearer credential (default: $DWF_CLIENT_TOKEN)"
    )
    p.add_argument("--client-run", help="the run id the client token is scoped to")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument("--report-md", metavar="FILE", help="also write a Markdown report")
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    namespace = args.namespace_url or os.environ.get("DWF_URL")
    engine = args.engine_token or os.environ.get("DWF_ENGINE_TOKEN")
    client = args.client_token or os.environ.get("DWF_CLIENT_TOKEN")
    problem = None
    if not namespace or urlsplit(namespace).scheme not in ("http", "https"):
        problem = "give the namespace URL (--namespace-url or $DWF_URL)"
    elif not engine:
        problem = "give the engine's credential (--engine-token or $DWF_ENGINE_TOKEN)"
    elif client and not args.client_run:
        problem = "with a client token, name the run it is scoped to (--client-run)"
    if problem is not None:
        print(f"dwf conformance deployment: {problem}", file=sys.stderr)
        return 2
    assert namespace is not None and engine is not None
    try:
        with httpx.Client(timeout=TIMEOUT) as http:
            check = Check(namespace, engine, client, args.client_run, http)
            check.client_reads_its_run()
            outcomes = check.run_all()
    except SetupError as exc:
        print(f"dwf conformance deployment: {exc}", file=sys.stderr)
        return 2
    if args.json:
        report = {
            "namespace": namespace,
            "summary": summary_line(outcomes),
            "allowed": sum(o.result == "allowed" for o in outcomes),
            "attempts": [asdict(o) for o in outcomes],
            "notes": check.notes,
        }
        print(json.dumps(report, indent=2))
    else:
        print(render_text(outcomes, check.notes, namespace))
    if args.report_md:
        with open(args.report_md, "w", encoding="utf-8") as handle:
            handle.write(render_markdown(outcomes, check.notes, namespace))
    return 1 if any(o.result == "allowed" for o in outcomes) else 0
