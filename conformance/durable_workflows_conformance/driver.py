"""The HTTP driver: talks to the conformance adapter and to the stream server.

The suite reads histories and writes inboxes and the run index on the stream
server exactly as a client does; it uses the adapter (spec/adapter.md) only for
what no client can do: register scripted workflows, arm faults, wait for a run to
be at rest, read body counts and move the virtual clock. Every request and answer
is kept in an exchange log that failures print.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx

from . import schemas
from .scenario import Scenario, Submission, due, early, state_of
from .scrub import scrub_all

SETTLE_TIMEOUT_MS = 30_000
#: How long the suite lets an engine act on a run it must leave alone, per wake.
PREPARED_WAIT_MS = 1_500


class HarnessError(Exception):
    """The suite could not talk to its target at all (not a conformance failure)."""


class NotTestable(Exception):
    """A prerequisite of a check is missing (reported as a failure, never a skip)."""


class AdapterError(AssertionError):
    """The adapter refused a request that a conforming adapter carries out."""


@dataclass
class Exchange:
    method: str
    url: str
    request: Any
    status: int | None
    response: str

    def render(self) -> str:
        body = "" if self.request is None else " " + _short(json.dumps(self.request))
        return f"{self.method} {self.url}{body}\n  -> {self.status} {_short(self.response)}"


def _short(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Http:
    """An httpx client that logs every exchange."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.client = httpx.Client(timeout=timeout)
        self.log: deque[Exchange] = deque(maxlen=200)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        content: bytes | None = raw
        if body is not None:
            content = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        try:
            response = self.client.request(method, url, content=content, headers=all_headers)
        except httpx.HTTPError as error:
            with self.lock:
                self.log.append(Exchange(method, url, body, None, repr(error)))
            raise HarnessError(f"{method} {url}: {error}") from error
        with self.lock:
            self.log.append(Exchange(method, url, body, response.status_code, response.text))
        return response

    def transcript(self, last: int = 12) -> str:
        with self.lock:
            items = list(self.log)[-last:]
        return "\n".join(item.render() for item in items)


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as error:
        raise AdapterError(f"{what}: the answer is not JSON: {response.text[:200]!r}") from error


class Target:
    """An engine under test, reached through its adapter."""

    def __init__(self, url: str, http: Http | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = http or Http()
        self._info: dict[str, Any] | None = None
        #: Where the next read of the run-status stream starts, and its rows by run.
        self._status: tuple[str, dict[str, list[Any]]] = ("-1", {})

    # -- adapter -----------------------------------------------------------------------

    def adapter(self, path: str) -> str:
        return f"{self.url}/conformance/v1/{path}"

    def info(self) -> dict[str, Any]:
        if self._info is None:
            response = self.http.request("GET", self.adapter("info"))
            if response.status_code != 200:
                raise HarnessError(
                    f"GET {self.adapter('info')} answered {response.status_code}: is this a "
                    "conformance adapter?"
                )
            info = _json(response, "info")
            if not isinstance(info, dict):
                raise HarnessError("the adapter's info is not a JSON object")
            self._info = info
        return self._info

    @property
    def features(self) -> set[str]:
        return {str(f) for f in self.info().get("features", [])}

    @property
    def namespace(self) -> str:
        return str(self.info()["namespace"]).rstrip("/")

    @property
    def virtual_clock(self) -> bool:
        return "virtual-clock" in self.features

    def _expect(self, response: httpx.Response, statuses: Sequence[int], what: str) -> None:
        if response.status_code not in statuses:
            raise AdapterError(f"{what}: adapter answered {response.status_code}: {response.text}")

    def put_workflow(self, name: str, program: Mapping[str, Any]) -> None:
        body = {"program": program}
        schemas.check("workflow", body)
        url = self.adapter("workflows/" + quote(name, safe=""))
        self._expect(self.http.request("PUT", url, body=body), (200, 201, 204), "register workflow")

    def put_run(self, run_id: str, options: Mapping[str, Any]) -> None:
        schemas.check("run-options", options)
        url = self.adapter("runs/" + run_id)
        self._expect(self.http.request("PUT", url, body=dict(options)), (200, 201, 204), "arm run")

    def _settle(self, run_id: str, timeout_ms: int) -> httpx.Response:
        url = self.adapter(f"runs/{run_id}/settle")
        return self.http.request("POST", url, body={"timeout_ms": timeout_ms})

    def settle(self, run_id: str, timeout_ms: int = SETTLE_TIMEOUT_MS) -> dict[str, Any]:
        response = self._settle(run_id, timeout_ms)
        if response.status_code == 504:
            raise AssertionError(f"run {run_id} did not settle within {timeout_ms} ms")
        self._expect(response, (200,), "settle")
        report = _json(response, "settle")
        schemas.check("run-report", report)
        return dict(report)

    def settle_status(self, run_id: str, timeout_ms: int) -> int:
        """Ask the adapter to settle a run that may never settle; the status only
        (200, or 504 when it did not settle in ``timeout_ms``)."""
        response = self._settle(run_id, timeout_ms)
        if response.status_code not in (200, 504):
            raise AssertionError(f"settle answered {response.status_code}: {response.text}")
        return response.status_code

    def requests(self, run_id: str) -> list[dict[str, Any]]:
        """The engine's writes to the run's streams (feature ``request-log``)."""
        response = self.http.request("GET", self.adapter(f"runs/{run_id}/requests"))
        self._expect(response, (200,), "request log")
        log = _json(response, "request log")
        schemas.check("request-log", log)
        return list(log["requests"])

    def report(self, run_id: str) -> dict[str, Any]:
        response = self.http.request("GET", self.adapter(f"runs/{run_id}"))
        self._expect(response, (200,), "run report")
        report = _json(response, "run report")
        schemas.check("run-report", report)
        return dict(report)

    def clock(self) -> datetime:
        response = self.http.request("GET", self.adapter("clock"))
        self._expect(response, (200,), "clock")
        body = _json(response, "clock")
        schemas.check("clock", body)
        return parse_time(body["now"])

    def advance(self, ms: int) -> datetime:
        response = self.http.request("POST", self.adapter("clock"), body={"advance_ms": ms})
        self._expect(response, (200,), "advance clock")
        body = _json(response, "clock")
        schemas.check("clock", body)
        return parse_time(body["now"])

    # -- streams (as a client) -------------------------------------------------------

    def history_url(self, run_id: str) -> str:
        return f"{self.namespace}/runs/{run_id}/history"

    def inbox_url(self, run_id: str) -> str:
        return f"{self.namespace}/runs/{run_id}/inbox"

    def read(self, url: str) -> tuple[list[Any], bool]:
        """Every message of a stream (empty if it does not exist), and whether it is
        closed."""
        messages, closed, _ = self.read_from(url, "-1")
        return messages, closed

    def read_from(self, url: str, offset: str) -> tuple[list[Any], bool, str]:
        """The messages of a stream from ``offset`` to its tail (none if it does not
        exist), whether it is closed, and the offset to read from next."""
        messages: list[Any] = []
        for _ in range(10_000):
            response = self.http.request("GET", f"{url}?offset={quote(offset, safe='')}")
            if response.status_code == 404:
                return [], False, "-1"
            if response.status_code != 200:
                raise AssertionError(f"GET {url} answered {response.status_code}")
            chunk = response.json() if response.content else []
            messages.extend(without_offset(m) for m in chunk)
            offset = response.headers.get("Stream-Next-Offset", offset)
            if response.headers.get("Stream-Up-To-Date") == "true" or not chunk:
                return messages, response.headers.get("Stream-Closed") == "true", offset
        raise AssertionError(f"GET {url}: no end after 10000 reads")

    def status_rows(self, run_id: str) -> list[Any]:
        """Every message of the run-status stream keyed ``run_id`` so far, in stream
        order (MODEL-040). The stream is read on from where the last call stopped."""
        url = f"{self.namespace}/status"
        offset, rows = self._status
        messages, _, offset = self.read_from(url, offset)
        for message in messages:
            key = message.get("key") if isinstance(message, dict) else None
            rows.setdefault(key if isinstance(key, str) else "", []).append(message)
        self._status = (offset, rows)
        return list(rows.get(run_id, []))

    def create(self, url: str) -> None:
        response = self.http.request("PUT", url, headers={"Content-Type": "application/json"})
        if response.status_code not in (200, 201):
            raise AssertionError(f"PUT {url} answered {response.status_code}")

    def append(self, url: str, messages: Sequence[Any]) -> httpx.Response:
        return self.http.request("POST", url, body=list(messages))

    def request_run(
        self,
        run_id: str,
        workflow: str,
        run_input: Any,
        *,
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Append ``run-requested`` to the run index, in one append with the messages
        ``before`` and ``after`` it; ``extra`` adds members to its value."""
        index = f"{self.namespace}/index"
        self.create(index)
        value = {"run_id": run_id, "workflow": workflow, "input": run_input, **(extra or {})}
        message = {
            "type": "start",
            "key": run_id,
            "value": value,
            "headers": {"operation": "insert"},
        }
        response = self.append(index, [*before, message, *after])
        if response.status_code not in (200, 204):
            raise AssertionError(f"appending run-requested answered {response.status_code}")

    def append_index(self, messages: Sequence[Any]) -> None:
        response = self.append(f"{self.namespace}/index", messages)
        if response.status_code not in (200, 204):
            raise AssertionError(f"appending to the run index answered {response.status_code}")


@dataclass
class Untouched:
    """What the suite saw of a run whose history it prepared itself (VER-003/005/006)."""

    run_id: str
    prepared: list[Any]
    history: list[Any]
    history_closed: bool
    settles: list[int]


@dataclass
class Observation:
    """Everything the suite saw of one scenario run."""

    scenario: Scenario
    run_id: str
    workflow: str
    history: list[Any]
    history_closed: bool
    inbox: list[Any]
    report: dict[str, Any]
    batches: list[list[int]] = field(default_factory=list)
    #: submission index -> (status, Stream-Closed header) of its append
    answers: dict[int, tuple[int, bool]] = field(default_factory=dict)
    early_fires: list[str] = field(default_factory=list)
    #: submissions appended only after the run had ended (on a real clock, a deadline
    #: can end a run before the point where the schedule meant to deliver them)
    after_end: set[int] = field(default_factory=set)
    #: The run's rows in the run-status stream when the suite had seen it end.
    status_rows: list[Any] = field(default_factory=list)

    @property
    def scrubbed(self) -> list[Any]:
        return scrub_all(self.history, self.run_id)


@dataclass(frozen=True)
class IndexMessage:
    """A further message for the run index, besides the suite's own ``run-requested``.

    ``when`` is ``before`` or ``after`` (in the same append as the suite's request,
    before or after it) or ``suspended`` (appended the first time the run is at rest,
    sleeping or waiting). In ``message``, the strings ``$run_id`` and ``$workflow``
    stand for the run's id and its workflow's name.
    """

    when: Literal["before", "after", "suspended"]
    message: Mapping[str, Any]

    def render(self, run_id: str, workflow: str) -> Any:
        return fill_in(self.message, run_id, workflow)


def fill_in(item: Any, run_id: str, workflow: str) -> Any:
    """``item`` with the strings ``$run_id`` and ``$workflow`` replaced throughout."""
    if isinstance(item, str):
        return item.replace("$run_id", run_id).replace("$workflow", workflow)
    if isinstance(item, Mapping):
        return {key: fill_in(value, run_id, workflow) for key, value in item.items()}
    if isinstance(item, list):
        return [fill_in(value, run_id, workflow) for value in item]
    return item


#: Real time the suite leaves an engine to read index messages appended to a
#: suspended run before it goes on (nothing the adapter reports covers the index).
INDEX_PAUSE_SECONDS = 0.3


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Driver:
    """Runs scenarios against a target with the shared delivery policy."""

    def __init__(self, target: Target, *, max_turns: int = 400) -> None:
        self.target = target
        self.max_turns = max_turns

    def deliver(
        self, run_id: str, scenario: Scenario, indexes: Sequence[int], obs: Observation
    ) -> None:
        url = self.target.inbox_url(run_id)
        before, _ = self.target.read(url)
        groups: dict[int, list[int]] = {}
        for index in indexes:
            groups.setdefault(scenario.submissions[index].client, []).append(index)

        def send(group: list[int]) -> None:
            messages = [scenario.submissions[i].message() for i in group]
            response = self.target.append(url, messages)
            closed = response.headers.get("Stream-Closed") == "true"
            for i in group:
                obs.answers[i] = (response.status_code, closed)

        if len(groups) == 1:
            send(next(iter(groups.values())))
        else:
            threads = [threading.Thread(target=send, args=(g,)) for g in groups.values()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        after, _ = self.target.read(url)
        obs.batches.append(_order(scenario.submissions, indexes, after[len(before) :]))

    def run_prepared(
        self,
        program: Mapping[str, Any],
        history: Sequence[Mapping[str, Any]],
        *,
        wait_ms: int = PREPARED_WAIT_MS,
    ) -> Untouched:
        """Give the engine a run whose history the suite wrote (a test fixture: no
        client writes a history, SEC-001): create the inbox and the history, append
        ``history`` (``$run_id`` and ``$workflow`` filled in), request the run, let the
        engine act on it for ``wait_ms``, wake it again with an inbox message, wait
        again, and read the history back."""
        target = self.target
        workflow, run_id = new_id("wf"), new_id("run")
        target.put_workflow(workflow, program)
        target.create(target.inbox_url(run_id))
        target.create(target.history_url(run_id))
        prepared = [fill_in(m, run_id, workflow) for m in history]
        response = target.append(target.history_url(run_id), prepared)
        if response.status_code not in (200, 204):
            raise AssertionError(f"writing the prepared history answered {response.status_code}")
        target.request_run(run_id, workflow, None)
        settles = [target.settle_status(run_id, wait_ms)]
        nudge = Submission(new_id("s"), "nothing", None).message()
        target.append(target.inbox_url(run_id), [nudge])
        settles.append(target.settle_status(run_id, wait_ms))
        after, closed = target.read(target.history_url(run_id))
        return Untouched(run_id, prepared, after, closed, settles)

    def advance(
        self, run_id: str, until_text: str, obs: Observation, *, probe: bool = True
    ) -> None:
        """Move the clock to ``until``; with ``probe`` first to a millisecond before it,
        letting the run settle there, to catch a deadline that fires early."""
        until = parse_time(until_text)
        if self.target.virtual_clock:
            now = self.target.clock()
            delta = max(0, int((until - now).total_seconds() * 1000 + 0.999))
            if delta >= 2 and probe:
                length = len(self.target.read(self.target.history_url(run_id))[0])
                self.target.advance(delta - 1)
                self.target.settle(run_id)
                later, _ = self.target.read(self.target.history_url(run_id))
                if len(later) != length:
                    obs.early_fires.append(
                        f"at {delta - 1} ms before a deadline of {until_text} the engine "
                        f"recorded {later[length:]!r}"
                    )
                self.target.advance(1)
            else:
                self.target.advance(delta)
        else:
            wait = (until - datetime.now(UTC)).total_seconds()
            time.sleep(max(0.0, wait) + 0.05)

    def run(
        self,
        scenario: Scenario,
        *,
        workflow: str | None = None,
        index: Sequence[IndexMessage] = (),
        request_extra: Mapping[str, Any] | None = None,
        register: bool = True,
    ) -> Observation:
        """Run ``scenario`` to its end; ``index`` adds messages to the run index and
        ``request_extra`` members to the value of the suite's ``run-requested``; without
        ``register`` the workflow is never given to the adapter (MODEL-019)."""
        target = self.target
        workflow = workflow or new_id("wf")
        run_id = new_id("run")
        if register:
            target.put_workflow(workflow, scenario.program)
        if scenario.options():
            target.put_run(run_id, scenario.options())
        obs = Observation(scenario, run_id, workflow, [], False, [], {})
        first = early(scenario.submissions)
        if first:
            target.create(target.inbox_url(run_id))
            self.deliver(run_id, scenario, first, obs)

        def extra(when: str) -> list[Any]:
            return [m.render(run_id, workflow) for m in index if m.when == when]

        target.request_run(
            run_id,
            workflow,
            scenario.input,
            before=extra("before"),
            after=extra("after"),
            extra=request_extra,
        )
        on_suspension = extra("suspended")
        delivered: set[int] = set(first)
        for _turn in range(self.max_turns):
            obs.report = target.settle(run_id)
            history, closed = target.read(target.history_url(run_id))
            state = state_of(scrub_all(history, run_id))
            if state.finished and closed:
                break
            if on_suspension and state.status in ("sleeping", "waiting"):
                target.append_index(on_suspension)
                on_suspension = []
                time.sleep(INDEX_PAUSE_SECONDS)
                continue
            indexes = due(scenario.submissions, delivered, state)
            if indexes and not state.finished:
                delivered.update(indexes)
                self.deliver(run_id, scenario, indexes, obs)
                beside = any(scenario.submissions[i].when == "at-deadline" for i in indexes)
                if beside and state.until:  # the deadline passes with the answer unread
                    self.advance(run_id, _until(history), obs, probe=False)
                continue
            if state.status in ("sleeping", "waiting") and state.until:
                self.advance(run_id, _until(history), obs)
                continue
            if state.status == "running" or not history:
                # On a real clock a deadline may pass between the settle and the read.
                continue
            raise AssertionError(
                f"run {run_id} is at rest but neither finished nor waiting for anything the "
                f"suite can give (status {state.status!r}, report {obs.report!r})"
            )
        else:
            raise AssertionError(f"run {run_id} did not finish within {self.max_turns} turns")
        if on_suspension:
            raise AssertionError(
                f"run {run_id} never suspended, so the index messages meant for its "
                f"suspension were not sent: {on_suspension}"
            )
        rest = due(scenario.submissions, delivered, state)
        if rest:
            delivered.update(rest)
            obs.after_end.update(rest)
            self.deliver(run_id, scenario, rest, obs)
        obs.history, obs.history_closed = target.read(target.history_url(run_id))
        obs.inbox, _ = target.read(target.inbox_url(run_id))
        obs.status_rows = target.status_rows(run_id)
        obs.report = target.report(run_id)
        return obs


def _until(history: Sequence[Any]) -> str:
    """The ``waiting_for.until`` of a suspended run's last run message."""
    last_run = [m for m in history if m.get("type") == "run"][-1]
    return str(last_run["value"]["waiting_for"]["until"])


def without_offset(message: Any) -> Any:
    """EVT-097: a reader removes ``headers.offset`` (which some stream servers add to
    JSON reads) before it validates or compares a message."""
    headers = message.get("headers") if isinstance(message, Mapping) else None
    if not isinstance(headers, Mapping) or "offset" not in headers:
        return message
    return {**message, "headers": {k: v for k, v in headers.items() if k != "offset"}}


def _order(
    subs: Sequence[Submission], indexes: Sequence[int], appended: Sequence[Any]
) -> list[int]:
    """Submission indexes in the order the server placed their messages."""
    left = list(indexes)
    out: list[int] = []
    for message in appended:
        for i in left:
            if without_offset(subs[i].message()) == message:
                out.append(i)
                left.remove(i)
                break
    return out + left
