"""``dwf conformance deployment``: does a stream server keep clients out of the history?

Any operator can point it at a namespace on any Durable Streams server, with the
engine's credential and (optionally) a client's:

    dwf conformance deployment --namespace-url https://streams.example/v1/stream/dwf-check \\
        --engine-token "$ENGINE" --client-token "$CLIENT" --client-run check-run

With the engine's credential it sets up runs as an engine would (the index and the wake
stream if missing, an inbox, a history, a ``run-started``); the client token must be
scoped to ``--client-run``. Then it tries every forgery of security.md, once with no
credential and once with the client's: writes to a history, creating, closing or
deleting an inbox, the index or the wake stream, a history event in an inbox, a
submission to another run, a run request, reading the index or another run; and a read
with a malformed and with a tampered token. Each attempt is ``refused`` when the server
answered with an error status and the stream is byte-for-byte what it was (read back
with the engine's credential before and after), else ``allowed``; ``untestable`` when an
earlier allowed attempt had closed the stream it needs; ``informational`` for a run
request by a client token that may start runs.

Exit status: 0 every attempt refused; 1 at least one allowed; 2 a usage or set-up error.
Only httpx and the standard library: the suite installs on its own.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = [
    "Attempt",
    "Check",
    "Outcome",
    "Report",
    "SetupError",
    "attempts",
    "main",
    "render_markdown",
    "render_text",
    "run_check",
    "summary_line",
    "tamper",
]

JSON = {"content-type": "application/json"}
CLOSE = {**JSON, "stream-closed": "true"}
#: What upstream ``IdempotentProducer.close()`` sends: producer headers, no body.
PRODUCER_CLOSE = {
    **CLOSE,
    "producer-id": "dwf-deployment-check",
    "producer-epoch": "0",
    "producer-seq": "0",
}
#: Each request; the whole check is bounded by DEADLINE.
TIMEOUT = 15.0
DEADLINE = 300.0
WORKFLOW = "dwf-deployment-check"
STARTED_AT = "2026-01-01T00:00:00Z"
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STREAM_ROOT = "/v1/stream"
RESULTS = ("refused", "allowed", "untestable", "informational")
NO_PERMISSIONS = (
    "this server enforces no write permissions: any HTTP client can forge a run's history (SEC-002)"
)


class SetupError(Exception):
    """The check cannot run (exit 2)."""


@dataclass(frozen=True)
class Attempt:
    """One forgery: a request that a server keeping clients out must refuse."""

    name: str
    method: str
    path: str  # relative to the namespace URL; {run}, {other}, {fresh} are filled in
    headers: dict[str, str]
    body: str  # may hold {run}, {other}, {fresh}
    requirements: tuple[str, ...]
    #: A read: refused when the answer is an error status (it changes nothing).
    reads: bool = False
    #: Also cited when the client's credential was allowed (a browser holds it).
    client_requirements: tuple[str, ...] = ()
    #: What a client token with the start right may do (reported, not counted).
    start_right: bool = False


@dataclass(frozen=True)
class Outcome:
    attempt: str
    credential: str
    method: str
    path: str
    status: int
    result: str  # one of RESULTS
    changed: bool
    requirements: tuple[str, ...]


@dataclass
class Report:
    namespace: str
    outcomes: list[Outcome]
    notes: list[str] = field(default_factory=list)
    anonymous_only: bool = False

    def count(self, result: str) -> int:
        return sum(o.result == result for o in self.outcomes)

    @property
    def enforces_nothing(self) -> bool:
        """Every anonymous write that could be tested was allowed."""
        writes = [
            o
            for o in self.outcomes
            if o.credential == "anonymous" and o.method != "GET" and o.result != "untestable"
        ]
        return bool(writes) and all(o.result == "allowed" for o in writes)

    def exit_status(self) -> int:
        return 1 if self.count("allowed") else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "summary": summary_line(self.outcomes),
            **{result: self.count(result) for result in RESULTS},
            "enforces_no_write_permissions": self.enforces_nothing,
            "anonymous_only": self.anonymous_only,
            "attempts": [asdict(o) for o in self.outcomes],
            "notes": self.notes,
        }


# ---------------------------------------------------------------------- messages


def _run_value(run: str, status: str, output: Any, finished_at: str | None) -> dict[str, Any]:
    return {
        "run_id": run,
        "workflow": WORKFLOW,
        "protocol": "1.0",
        "input": None,
        "status": status,
        "started_at": STARTED_AT,
        "waiting_for": None,
        "output": output,
        "error": None,
        "finished_at": finished_at,
    }


def run_started(run: str) -> str:
    """A schema-valid ``run-started`` of a workflow no engine serves."""
    return json.dumps(
        {
            "type": "run",
            "key": run,
            "value": _run_value(run, "running", None, None),
            "headers": {"operation": "insert", "txid": run},
        }
    )


def run_completed(run: str) -> str:
    """A schema-valid ``run-completed`` with a made-up output."""
    return json.dumps(
        {
            "type": "run",
            "key": run,
            "value": _run_value(run, "completed", {"forged": True}, "2026-01-01T00:00:01Z"),
            "headers": {"operation": "update"},
        }
    )


def input_received() -> str:
    """A schema-valid ``input-received``: a manager's approval nobody gave."""
    value = {
        "name": "approval",
        "seq": 1,
        "status": "received",
        "prompt": "Approve?",
        "schema": {"type": "object"},
        "requested_at": STARTED_AT,
        "expires_at": None,
        "value": {"approved": True},
        "submission_id": "dwf-check-forged",
        "received_at": "2026-01-01T00:00:01Z",
        "expired_at": None,
    }
    headers = {"operation": "update", "txid": "dwf-check-forged"}
    return json.dumps({"type": "input", "key": "approval", "value": value, "headers": headers})


def input_submitted() -> str:
    """A schema-valid ``input-submitted``."""
    value = {"submission_id": "dwf-check-1", "request": "approval", "value": {"approved": True}}
    headers = {"operation": "insert"}
    return json.dumps(
        {"type": "submission", "key": "dwf-check-1", "value": value, "headers": headers}
    )


def run_requested(run: str) -> str:
    """A schema-valid ``run-requested`` that matches the check's ``run-started``."""
    value = {"run_id": run, "workflow": WORKFLOW, "input": None}
    headers = {"operation": "insert"}
    return json.dumps({"type": "start", "key": run, "value": value, "headers": headers})


def run_status_row(run: str) -> str:
    """A schema-valid ``run-status`` row saying the run completed."""
    value: dict[str, Any] = {
        "run_id": run, "workflow": WORKFLOW, "status": "completed", "waiting_for": None,
        "inputs": [], "error": None, "started_at": STARTED_AT,
        "updated_at": "2026-01-01T00:00:01Z", "finished_at": "2026-01-01T00:00:01Z",
        "history_length": 1,
    }  # fmt: skip
    headers = {"operation": "update"}
    return json.dumps({"type": "run-status", "key": run, "value": value, "headers": headers})


def attempts() -> list[Attempt]:
    """Every forgery of security.md, in an order where an allowed one spoils few others
    on a server that allows everything (a DELETE comes after a close it can undo)."""
    history, inbox, other = "runs/{run}/history", "runs/{run}/inbox", "runs/{other}"
    write_history = ("SEC-001", "SEC-002")
    manage = ("SEC-020", "SEC-021")
    close = ("SEC-019", "SEC-021")
    browser = ("SEC-004",)
    return [
        Attempt("append a forged input-received to a history", "POST", history, JSON,
                input_received(), write_history, client_requirements=browser),
        Attempt("pre-create a history with a forged run-started", "PUT", "runs/{fresh}/history",
                JSON, run_started("{fresh}"), write_history, client_requirements=browser),
        Attempt("append a forged run-completed and close the history", "POST", history, CLOSE,
                run_completed("{run}"), write_history, client_requirements=browser),
        Attempt("delete a history", "DELETE", history, {}, "", write_history,
                client_requirements=browser),
        Attempt("append a history event to an inbox", "POST", inbox, JSON, input_received(),
                ("SEC-003",)),
        Attempt("append a submission to another run's inbox", "POST", other + "/inbox", JSON,
                input_submitted(), ("SEC-003",)),
        Attempt("close an inbox", "POST", inbox, CLOSE, "", close),
        Attempt("delete an inbox", "DELETE", inbox, {}, "", manage),
        Attempt("close an inbox as an idempotent producer", "POST", inbox, PRODUCER_CLOSE, "",
                close),
        Attempt("create an inbox closed", "PUT", "runs/{fresh}/inbox", CLOSE, "", manage),
        Attempt("read the run index", "GET", "index?offset=-1", {}, "", ("PRIV-005",),
                reads=True),
        Attempt("request a run (run-requested in the index)", "POST", "index", JSON,
                run_requested("{run}"), ("SEC-003",), start_right=True),
        Attempt("create the run index (PUT)", "PUT", "index", JSON, "", manage),
        Attempt("delete the run index", "DELETE", "index", {}, "", manage),
        Attempt("close the run index", "POST", "index", CLOSE, "", close),
        Attempt("create the wake stream (PUT)", "PUT", "wake", JSON, "", manage),
        Attempt("delete the wake stream", "DELETE", "wake", {}, "", manage),
        Attempt("close the wake stream", "POST", "wake", CLOSE, "", close),
        Attempt("append a forged row to the run-status stream", "POST", "status", JSON,
                run_status_row("{run}"), ("SEC-036",)),
        Attempt("create the run-status stream (PUT)", "PUT", "status", JSON, "", ("SEC-036",)),
        Attempt("close the run-status stream", "POST", "status", CLOSE, "", ("SEC-036",)),
        Attempt("delete the run-status stream", "DELETE", "status", {}, "", ("SEC-036",)),
        Attempt("read another run's history", "GET", other + "/history?offset=-1", {}, "",
                ("PRIV-006",), reads=True),
        Attempt("read another run's inbox", "GET", other + "/inbox?offset=-1", {}, "",
                ("PRIV-006",), reads=True),
    ]  # fmt: skip


BAD_TOKEN_READ = Attempt(
    "read a history with a malformed token", "GET", "runs/{run}/history?offset=-1", {}, "",
    ("SEC-023", "PRIV-006"), reads=True,
)  # fmt: skip
TAMPERED_TOKEN_READ = Attempt(
    "read a history with a tampered token", "GET", "runs/{run}/history?offset=-1", {}, "",
    ("SEC-023", "PRIV-006"), reads=True,
)  # fmt: skip


# ---------------------------------------------------------------------- tokens


def tamper(token: str) -> str:
    """The token with one character of its signature changed (the middle one of a
    JWT's third part, where every bit counts), so that only the signature is wrong."""
    head, dot, signature = token.rpartition(".")
    target = signature if dot and signature else token
    i = len(target) // 2
    flipped = target[:i] + ("B" if target[i : i + 1] == "A" else "A") + target[i + 1 :]
    return f"{head}{dot}{flipped}" if dot and signature else flipped


def token_may_start(token: str) -> bool:
    """Whether a client token's own claims (a JWT's ``dwf.rights``, read without
    verifying it) include the start right; False when they cannot be read."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return False
    grant = claims.get("dwf") if isinstance(claims, dict) else None
    rights = grant.get("rights") if isinstance(grant, dict) else None
    return isinstance(rights, list) and "start" in rights


# ---------------------------------------------------------------------- the check


class Check:
    """Runs the attempts against one namespace."""

    def __init__(
        self,
        namespace_url: str,
        engine_token: str,
        client_token: str | None,
        client_run: str | None,
        http: httpx.Client,
        *,
        client_may_start: bool = False,
        deadline: float = DEADLINE,
    ) -> None:
        self.ns = namespace_url.rstrip("/")
        self.http = http
        self.engine = {"authorization": f"Bearer {engine_token}"}
        self.client_token = client_token
        self.client_run = client_run or f"dwf-check-{uuid.uuid4().hex[:12]}"
        self.client_may_start = client_may_start or (
            client_token is not None and token_may_start(client_token)
        )
        self.deadline = deadline
        self.ends = time.monotonic() + deadline
        self.names: dict[str, str] = {}
        self.notes: list[str] = []
        self.unexplained: list[str] = []
        self.rename("client")

    def rename(self, who: str) -> None:
        """Fresh runs for each attempt, so that one allowed forgery cannot make a later
        one look refused; a client's own run is the one its token names."""
        tag = uuid.uuid4().hex[:12]
        own = self.client_run if who == "client" else f"dwf-check-{tag}"
        self.names = {
            "run": own,
            "other": f"dwf-check-other-{tag}",
            "fresh": f"dwf-check-new-{tag}",
        }

    def fill(self, text: str) -> str:
        for name, value in self.names.items():
            text = text.replace("{" + name + "}", value)
        return text

    def url(self, path: str) -> str:
        return f"{self.ns}/{self.fill(path)}"

    def _send(
        self, method: str, path: str, headers: dict[str, str], body: str, who: dict[str, str]
    ) -> httpx.Response:
        if time.monotonic() > self.ends:
            raise SetupError(f"the check did not finish within {self.deadline:.0f} seconds")
        content = self.fill(body).encode() if body else None
        try:
            return self.http.request(
                method, self.url(path), headers={**headers, **who}, content=content
            )
        except httpx.HTTPError as exc:
            raise SetupError(f"{method} {self.url(path)}: no answer ({exc})") from exc

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        """Create what an engine creates for two runs: the index, the wake stream and
        the run-status stream when missing, each run's inbox, then its history with a
        ``run-started``."""
        self._create("index")
        self._create("wake")
        self._create("status")
        for run in ("run", "other"):
            self._create(f"runs/{{{run}}}/inbox")
            path = f"runs/{{{run}}}/history"
            if self._create(path):
                reply = self._send("POST", path, JSON, run_started(f"{{{run}}}"), self.engine)
                if not reply.is_success:
                    raise SetupError(
                        f"the engine credential cannot append to {self.url(path)}: "
                        f"HTTP {reply.status_code} {reply.text[:200]}"
                    )

    def _create(self, path: str) -> bool:
        """HEAD, then PUT if missing, as the engine; True when the stream is new."""
        head = self._send("HEAD", path, {}, "", self.engine)
        if head.is_success:
            return False
        if head.status_code != 404:
            raise SetupError(
                f"the engine credential cannot read or create streams: HTTP {head.status_code} "
                f"on HEAD {self.url(path)}"
            )
        reply = self._send("PUT", path, JSON, "", self.engine)
        if reply.status_code in (200, 201):
            return reply.status_code == 201
        raise SetupError(
            f"the engine credential cannot create streams: HTTP {reply.status_code} on PUT "
            f"{self.url(path)} {reply.text[:200]}"
        )

    def snapshot(self, path: str) -> tuple[Any, ...]:
        """Existence, closed status, tail and every byte, read with the engine's credential."""
        bare = path.split("?", 1)[0]
        head = self._send("HEAD", bare, {}, "", self.engine)
        if head.status_code == 404:
            return ("absent",)
        read = self._send("GET", bare + "?offset=-1", {}, "", self.engine)
        return (
            head.status_code,
            head.headers.get("stream-closed", "").lower(),
            head.headers.get("stream-next-offset"),
            read.status_code,
            read.content,
        )

    # ------------------------------------------------------------------ attempts

    def credentials(self) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {"anonymous": {}}
        if self.client_token is not None:
            found["client"] = {"authorization": f"Bearer {self.client_token}"}
        return found

    def run_all(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for attempt in attempts():
            for who, credential in self.credentials().items():
                outcomes.append(self.try_one(attempt, who, credential))
        bad = {"authorization": "Bearer not-a-token"}
        outcomes.append(self.try_one(BAD_TOKEN_READ, "bad-token", bad, own_run=True))
        if self.client_token is not None:
            tampered = {"authorization": f"Bearer {tamper(self.client_token)}"}
            outcomes.append(
                self.try_one(TAMPERED_TOKEN_READ, "tampered-token", tampered, own_run=True)
            )
        if self.unexplained:
            self.notes.append(
                "SEC-023: refusals without a JSON body holding code and message: "
                + "; ".join(sorted(set(self.unexplained)))
            )
        return outcomes

    def try_one(
        self, attempt: Attempt, who: str, credential: dict[str, str], *, own_run: bool = False
    ) -> Outcome:
        self.rename("client" if own_run else who)
        self.setup()  # what an earlier allowed attempt deleted is there again
        before = self.snapshot(attempt.path)
        reply = self._send(attempt.method, attempt.path, attempt.headers, attempt.body, credential)
        changed = self.snapshot(attempt.path) != before
        refused = reply.status_code >= 400 and not changed
        requirements = attempt.requirements
        if who == "client":
            requirements += attempt.client_requirements
        if not refused and attempt.start_right and who == "client" and self.client_may_start:
            result = "informational"  # the token may start runs: this is what it is for
        elif (
            not changed
            and before[0] != "absent"
            and before[1] == "true"
            and attempt.method in ("POST", "PUT")
        ):
            # An earlier allowed attempt closed a stream this one needs (the index, the
            # wake stream, the client's run): the server's answer proves nothing now.
            result = "untestable"
        else:
            result = "refused" if refused else "allowed"
        if reply.status_code in (401, 403) and not _explained(reply):
            self.unexplained.append(f"{attempt.method} {reply.status_code}")
        return Outcome(
            attempt.name,
            who,
            attempt.method,
            self.fill(attempt.path),
            reply.status_code,
            result,
            changed,
            requirements,
        )

    def client_reads_its_run(self) -> None:
        """The client token must work where it should (else every refusal of it proves
        nothing), and its reads must stay out of shared caches (PRIV-006)."""
        if self.client_token is None:
            self.notes.append(
                "no client token: only anonymous attempts were made "
                "(give --client-token and --client-run to try a client's)"
            )
            return
        self.rename("client")
        self.setup()
        token = self.credentials()["client"]
        reply = self._send("GET", "runs/{run}/history?offset=-1", {}, "", token)
        if reply.status_code != 200:
            raise SetupError(
                f"the client token cannot read the history of run {self.client_run!r} "
                f"(HTTP {reply.status_code}): is it scoped to --client-run, with the read right?"
            )
        cache = reply.headers.get("cache-control", "")
        if "private" not in cache.lower() and "no-store" not in cache.lower():
            self.notes.append(
                f"PRIV-006: a read with the client token is served with Cache-Control {cache!r}, "
                "not private or no-store: a shared cache may keep it"
            )


def _explained(reply: httpx.Response) -> bool:
    try:
        body = reply.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "code" in body and "message" in body


def run_check(
    namespace: str,
    engine_token: str,
    client_token: str | None,
    client_run: str | None,
    http: httpx.Client,
    *,
    client_may_start: bool = False,
) -> Report:
    """Set up, check the client token works, try every attempt. Raises SetupError."""
    check = Check(
        namespace, engine_token, client_token, client_run, http, client_may_start=client_may_start
    )
    check.client_reads_its_run()
    outcomes = check.run_all()
    return Report(namespace, outcomes, check.notes, anonymous_only=client_token is None)


# ---------------------------------------------------------------------- reports


def summary_line(outcomes: Sequence[Outcome]) -> str:
    counts = {r: sum(o.result == r for o in outcomes) for r in RESULTS}
    line = f"{len(outcomes)} attempts, {counts['refused']} refused, {counts['allowed']} allowed"
    if counts["untestable"]:
        line += f", {counts['untestable']} untestable (a stream they need was closed by then)"
    if counts["informational"]:
        line += f", {counts['informational']} informational (the client token may start runs)"
    return line


def verdict(report: Report) -> str:
    allowed = report.count("allowed")
    if report.enforces_nothing:
        return NO_PERMISSIONS
    if allowed:
        return (
            f"{allowed} forgeries were allowed: the rows marked allowed break the "
            "requirements they name"
        )
    return "every forgery was refused"


def render_text(report: Report) -> str:
    outcomes = report.outcomes
    lines = [f"deployment check of {report.namespace}", ""]
    width = max([len("attempt"), *(len(o.attempt) for o in outcomes)])
    lines.append(f"{'attempt':<{width}}  {'credential':<14}  status  {'result':<13}  requirements")
    for o in outcomes:
        lines.append(
            f"{o.attempt:<{width}}  {o.credential:<14}  {o.status:>6}  {o.result:<13}  "
            f"{', '.join(o.requirements)}".rstrip()
        )
    lines += ["", summary_line(outcomes), verdict(report)]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    lines = [
        f"# Deployment check of `{report.namespace}`",
        "",
        f"{summary_line(report.outcomes)}: {verdict(report)}.",
        "",
        "| attempt | credential | status | result | requirements |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for o in report.outcomes:
        lines.append(
            f"| {o.attempt} | {o.credential} | {o.status} | {o.result} | "
            f"{', '.join(o.requirements)} |"
        )
    if report.notes:
        lines += ["", *[f"- {n}" for n in report.notes]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dwf conformance deployment",
        description="Try every forgery of a run's streams against a stream server and "
        "report which were refused. Exit 0: all refused; 1: some allowed; 2: usage or "
        "set-up error.",
    )
    p.add_argument(
        "--namespace-url",
        help="the namespace to check, e.g. http://127.0.0.1:4437/v1/stream/dwf-check "
        "(default: $DWF_URL)",
    )
    p.add_argument(
        "--engine-token", help="the engine's bearer credential (default: $DWF_ENGINE_TOKEN)"
    )
    p.add_argument(
        "--client-token", help="a client's bearer credential (default: $DWF_CLIENT_TOKEN)"
    )
    p.add_argument("--client-run", metavar="RUN_ID", help="the run the client token is scoped to")
    p.add_argument(
        "--client-can-start",
        action="store_true",
        help="the client token has the start right (read from its claims when it is a JWT): "
        "its run request is then reported as informational",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--report-md", metavar="FILE", help="also write the report as Markdown")
    return p  # fmt: skip


def _usage_problem(namespace: str | None, engine: str | None, client: str | None,
                   client_run: str | None) -> str | None:  # fmt: skip
    if not namespace:
        return "give the namespace URL (--namespace-url or $DWF_URL)"
    parts = urlsplit(namespace)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{namespace!r} is not an http(s) URL"
    if parts.path.rstrip("/") in ("", STREAM_ROOT):
        return (
            f"{namespace!r} is a server, not a namespace: give one used for nothing else, "
            f"e.g. {namespace.rstrip('/').removesuffix(STREAM_ROOT)}{STREAM_ROOT}/dwf-check"
        )
    if parts.query or parts.fragment:
        return f"{namespace!r}: a namespace URL has no query or fragment"
    if not engine:
        return "give the engine's credential (--engine-token or $DWF_ENGINE_TOKEN)"
    if client and not client_run:
        return "with a client token, name the run it is scoped to (--client-run)"
    if client_run and not RUN_ID.fullmatch(client_run):
        return f"--client-run {client_run!r} is not a run id (EVT-014)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    namespace = args.namespace_url or os.environ.get("DWF_URL")
    engine = args.engine_token or os.environ.get("DWF_ENGINE_TOKEN")
    client = args.client_token or os.environ.get("DWF_CLIENT_TOKEN") or None
    problem = _usage_problem(namespace, engine, client, args.client_run)
    if problem is not None:
        print(f"dwf conformance deployment: {problem}", file=sys.stderr)
        return 2
    assert namespace is not None and engine is not None
    try:
        with httpx.Client(timeout=TIMEOUT) as http:
            report = run_check(
                namespace.rstrip("/"),
                engine,
                client,
                args.client_run if client else None,
                http,
                client_may_start=args.client_can_start,
            )
    except SetupError as exc:
        print(f"dwf conformance deployment: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(render_text(report))
    if args.report_md:
        try:
            with open(args.report_md, "w", encoding="utf-8") as handle:
                handle.write(render_markdown(report))
        except OSError as exc:
            print(f"dwf conformance deployment: cannot write {args.report_md}: {exc}",
                  file=sys.stderr)  # fmt: skip
            return 2
    return report.exit_status()
