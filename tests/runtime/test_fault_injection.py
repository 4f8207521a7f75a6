"""Fault injection: a batch of mixed runs survives a worker and a stream server that are
killed and restarted at random points, and a hostile client that appends junk.

One stream server (``dwf streams serve``, SQLite) and one worker (``dwf worker``) run as
separate processes. First an undisturbed batch of runs of ``fi-mixed`` (steps, one of
them retried, two in parallel, two sleeps, an input answered early and one answered once
pending) gives the expected outputs. Then the same inputs run again in another namespace
while:

- the worker and the stream server are SIGKILLed, in a seeded random order, at random
  moments (at least 20 kills, at least 5 of each), and restarted on the same port and
  the same SQLite directory; sometimes both at once;
- a hostile client appends junk over plain HTTP to the runs' inboxes and to the run
  index: malformed JSON, arrays of non-objects, objects of the wrong types, submissions
  naming unknown requests or carrying values the schema refuses, large strings (one
  past the submission size limit), duplicate submission ids (its own, and the ids of
  the valid answers with other values), rival answers, run requests that repeat a run
  id with another input, and run requests of a workflow no worker has;
- the test answers each input (early, or once pending), sometimes twice.

Once the kills stop and every run has ended, the test checks that every run completed
with the output of the undisturbed run, accepted the valid answers and ignored the rest;
that no step body ran again once its result was recorded, and that every re-run of a body
had a crash before it; that every history validates message by message, parses as a
whole, and replays against the workflow code; and that the hostile client's run requests
of an unknown workflow ended as failed runs. Seed: ``DWF_FI_SEED`` (printed either way).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

from durable_workflows.core import PROTOCOL, replay_check
from durable_workflows.core.history import parse_history
from durable_workflows.schemas import identify

from . import fault_support as fs
from .engine_support import Process, read_history, spawn, submission

RUNS = 20
KILLS = 30
MIN_KILLS_EACH = 5
#: How long, after the last kill, every run has to end.
SETTLE_SECONDS = 60.0
CALM_SECONDS = 60.0
#: Runs requested before the first kill; the others are requested during the kills.
EARLY_RUNS = RUNS // 2

HEADERS = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_inputs() -> dict[str, int]:
    return {f"fi-{k:02d}": 13 * k + 5 for k in range(RUNS)}


def run_request(run_id: str, workflow: Any, value: Any) -> dict[str, Any]:
    return {
        "type": "start",
        "key": run_id,
        "value": {"run_id": run_id, "workflow": workflow, "input": value},
        "headers": {"operation": "insert"},
    }


# ---------------------------------------------------------------------- processes


@dataclass
class Cluster:
    """The stream server (always on one port and one SQLite directory) and the worker."""

    data: Path
    log: Path
    port: int = field(default_factory=free_port)
    server: Process | None = None
    worker: Process | None = None
    namespace: str = ""
    kills: Counter[str] = field(default_factory=Counter)
    #: processes that ended without being killed: (what, exit code, stderr tail)
    deaths: list[str] = field(default_factory=list)
    started: list[Process] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/stream"

    def start_server(self) -> None:
        args = ["streams", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--data", str(self.data), "--insecure-no-auth", "--long-poll-timeout", "1"]
        for attempt in range(3):  # the port is ours, but a shared machine may hold it briefly
            try:
                self.server = spawn(args)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                time.sleep(0.5)
        assert self.server is not None
        self.started.append(self.server)
        fs.log_event(self.log, ev="up", what="server")

    def start_worker(self, wait_ready: bool = False) -> None:
        args = ["worker", "--url", self.namespace, "--workflows", "tests.runtime.fault_support"]
        args += ["--name", f"fi{len(self.started)}", "--unknown-workflow-grace", "1"]
        self.worker = spawn(args, env={fs.LOG_ENV: str(self.log)}, wait_ready=wait_ready)
        self.started.append(self.worker)

    def kill(self, what: str) -> None:
        running = self.server if what == "server" else self.worker
        assert running is not None
        code = running.process.poll()
        if code is not None:
            self.deaths.append(f"the {what} exited by itself ({code}): {running.stderr()[-3000:]}")
        running.kill()
        self.kills[what] += 1
        # Written once the process is gone: every line it wrote is before this one.
        fs.log_event(self.log, ev="kill", what=what)

    def check_alive(self) -> None:
        """Record a server or worker that ended without being killed."""
        for what, running in (("server", self.server), ("worker", self.worker)):
            if running is not None and running.process.poll() is not None:
                code = running.process.poll()
                self.deaths.append(
                    f"the {what} exited by itself ({code}): {running.stderr()[-3000:]}"
                )

    def stop(self) -> None:
        for running in self.started:
            running.stop()
        for running in self.started:
            shutil.rmtree(running.log_dir, ignore_errors=True)

    def logs(self) -> str:
        """The stderr tails of the last server and worker, for a failure message."""
        parts = []
        for what, running in (("server", self.server), ("worker", self.worker)):
            if running is not None:
                parts.append(f"--- last {what} stderr:\n{running.stderr()[-4000:]}")
        return "\n".join(parts)


# ---------------------------------------------------------------------- clients


@dataclass
class Shared:
    """What the test's client threads know, under one lock."""

    inputs: dict[str, int]
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: runs whose run-requested the server acknowledged
    requested: set[str] = field(default_factory=set)
    #: per run, the submission ids of valid answers the server acknowledged
    answered: dict[str, set[str]] = field(default_factory=dict)
    #: rival answers acknowledged (a valid value under another id, after the first)
    rivals: dict[str, str] = field(default_factory=dict)
    #: junk run requests of an unknown workflow the server acknowledged
    foreign_runs: set[str] = field(default_factory=set)
    #: run ids that only invalid run requests (acknowledged) named
    ignored_runs: set[str] = field(default_factory=set)
    figures: Counter[str] = field(default_factory=Counter)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.figures[name] += n


def post(http: httpx.Client, url: str, **kwargs: Any) -> int | None:
    """POST; the status code, or None when there was no answer (the server is down)."""
    try:
        return http.post(url, **kwargs).status_code
    except httpx.HTTPError:
        return None


def request_run(http: httpx.Client, ns: str, shared: Shared, run_id: str) -> None:
    """Append the run's run-requested until the server acknowledges it (a resend of one
    that landed is a duplicate the engine ignores, MODEL-014)."""
    message = run_request(run_id, fs.WORKFLOW, {"n": shared.inputs[run_id]})
    deadline = time.monotonic() + 30
    while post(http, f"{ns}/index", json=message) not in (200, 204):
        assert time.monotonic() < deadline, f"could not request {run_id}"
        time.sleep(0.2)
    with shared.lock:
        shared.requested.add(run_id)


class Client(threading.Thread):
    """A client thread of the test: runs until ``stop`` is set; ``errors`` are its bugs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.errors: list[str] = []


class Answerer(Client):
    """Answers ``early`` as soon as the run's inbox exists (before the run asks) and
    ``late`` once it is pending (not before the run's gate time); sometimes sends an
    answer twice, and sometimes a rival valid answer under another id afterwards, which
    the engine must reject as ``already-answered``."""

    def __init__(
        self, ns: str, shared: Shared, rng: random.Random, gates: dict[str, float] | None = None
    ) -> None:
        super().__init__()
        self.ns, self.shared, self.rng = ns, shared, rng
        self.gates = gates or {}

    def run(self) -> None:
        try:
            with httpx.Client(timeout=5) as http:
                while not self.stop.is_set():
                    with self.shared.lock:
                        runs = sorted(self.shared.requested)
                    for run_id in runs:
                        self.serve(http, run_id)
                    self.stop.wait(0.3)
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))

    def send(self, http: httpx.Client, run_id: str, sub_id: str, request: str, value: Any) -> bool:
        status = post(
            http,
            f"{self.ns}/runs/{run_id}/inbox",
            json=submission(sub_id, request, value),
        )
        if status == 409:
            self.errors.append(f"{run_id}: {sub_id} refused: the inbox is closed")
        return status in (200, 204)

    def serve(self, http: httpx.Client, run_id: str) -> None:
        n = self.shared.inputs[run_id]
        with self.shared.lock:
            answered = self.shared.answered.setdefault(run_id, set())
        if fs.EARLY_ID not in answered:
            # 404 (no inbox yet: the run has not started) or no answer: try again later.
            if self.send(http, run_id, fs.EARLY_ID, "early", fs.early_answer(n)):
                with self.shared.lock:
                    answered.add(fs.EARLY_ID)
                if self.rng.random() < 0.3:
                    self.shared.count("answer duplicates")
                    self.send(http, run_id, fs.EARLY_ID, "early", fs.early_answer(n))
            return
        if fs.LATE_ID in answered or time.monotonic() < self.gates.get(run_id, 0.0):
            return
        try:
            history, _ = read_history(self.ns, run_id)
        except Exception:
            return  # the server is down: next round
        pending = any(
            m["type"] == "input" and m["key"] == "late" and m["value"]["status"] == "pending"
            for m in history
        )
        if not pending:
            return
        if not self.send(http, run_id, fs.LATE_ID, "late", fs.late_answer(n)):
            return
        with self.shared.lock:
            answered.add(fs.LATE_ID)
        if self.rng.random() < 0.3:
            self.shared.count("answer duplicates")
            self.send(http, run_id, fs.LATE_ID, "late", fs.late_answer(n))
        if self.rng.random() < 0.5:
            rival = {"code": "c-1", "n": -1}  # valid, but second: already-answered
            for _ in range(20):
                if self.send(http, run_id, "rival-late", "late", rival):
                    with self.shared.lock:
                        self.shared.rivals[run_id] = "rival-late"
                    self.shared.count("rival answers")
                    break
                time.sleep(0.2)


def _invalid(schema: dict[str, Any], value: Any) -> Any:
    assert not Draft202012Validator(schema).is_valid(value), value
    return value


class Hostile(Client):
    """Appends junk to random inboxes and to the run index until stopped. It never
    creates a stream, never cancels a run (a cancel it sends has a key that differs from
    its cancel id, which makes it malformed) and never sends a valid answer first."""

    def __init__(self, ns: str, shared: Shared, rng: random.Random) -> None:
        super().__init__()
        self.ns, self.shared, self.rng = ns, shared, rng
        self.serial = 0
        #: runs whose inbox refused junk with 409 (closed: the run ended), aimed at less
        self.ended: set[str] = set()

    def run(self) -> None:
        try:
            with httpx.Client(timeout=5) as http:
                while not self.stop.is_set():
                    if self.rng.random() < 0.7:
                        self.inbox_junk(http)
                    else:
                        self.index_junk(http)
                    self.stop.wait(self.rng.uniform(0.02, 0.1))
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))

    def next_id(self) -> str:
        self.serial += 1
        return f"junk-{self.serial}"

    def send(self, http: httpx.Client, target: str, kind: str, **kwargs: Any) -> int | None:
        status = post(http, target, **kwargs)
        if status in (200, 204):
            self.shared.count(f"junk landed: {kind}")
            self.shared.count("junk landed")
        elif status is None:
            self.shared.count("junk lost (server down)")
        else:
            self.shared.count(f"junk refused by the server: {status}")
        return status

    def inbox_junk(self, http: httpx.Client) -> None:
        with self.shared.lock:
            runs = sorted(self.shared.requested)
            answered = {r: sorted(ids) for r, ids in self.shared.answered.items()}
        if not runs:
            return
        open_runs = [r for r in runs if r not in self.ended]
        run_id = self.rng.choice(open_runs if open_runs and self.rng.random() < 0.9 else runs)
        url = f"{self.ns}/runs/{run_id}/inbox"
        jid = self.next_id()
        big = "A" * self.rng.randint(20_000, 50_000)
        kinds: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("malformed JSON", lambda: {"content": b'{"type": "submission", "key": '}),
            ("array of non-objects", lambda: {"json": [1, "two", None, True, 3.5, [jid]]}),
            ("a bare string", lambda: {"json": f"text {jid}"}),
            (
                "wrong types",
                lambda: {
                    "json": self.rng.choice(
                        [
                            {"type": "submission", "key": 7, "value": "x"},
                            {"type": "submission", "key": jid},
                            {"type": "submission", "key": jid, "value": {"submission_id": jid}},
                            submission(jid, "early", 5) | {"headers": {"operation": "upsert"}},
                            {"type": "submission", "key": jid, "value": {"request": 5}},
                            {"type": "run", "key": run_id, "value": {"status": "completed"}},
                            # a cancel whose key is not its cancel id: malformed, no cancel
                            {
                                "type": "cancel",
                                "key": jid,
                                "value": {"cancel_id": "other", "reason": None},
                                "headers": {"operation": "insert"},
                            },
                        ]
                    )
                },
            ),
            ("unknown request", lambda: {"json": submission(jid, "no-such-request", 1)}),
            (
                "schema-invalid value",
                lambda: {
                    "json": self.rng.choice(
                        [
                            submission(jid, "early", _invalid(fs.EARLY_SCHEMA, "seven")),
                            submission(jid, "early", _invalid(fs.EARLY_SCHEMA, -5)),
                            submission(jid, "early", _invalid(fs.EARLY_SCHEMA, 2.5)),
                            submission(jid, "late", _invalid(fs.LATE_SCHEMA, {"code": "c-1"})),
                            submission(
                                jid, "late", _invalid(fs.LATE_SCHEMA, {"code": "x", "n": 1})
                            ),
                            submission(
                                jid,
                                "late",
                                _invalid(fs.LATE_SCHEMA, {"code": "c-2", "n": 2, "extra": 1}),
                            ),
                        ]
                    )
                },
            ),
            (
                "large schema-invalid value",
                lambda: {
                    "json": submission(jid, "late", _invalid(fs.LATE_SCHEMA, {"code": big, "n": 1}))
                },
            ),
            (
                "value past the size limit",
                lambda: {"json": submission(jid, "early", "B" * 70_000)},
            ),
            (
                "duplicate junk id",
                lambda: {
                    "json": submission(
                        f"junk-{self.rng.randint(1, self.serial)}", "late", {"code": "c-3"}
                    )
                },
            ),
            (
                "producer headers",
                lambda: {
                    "json": submission(jid, "early", "nine"),
                    "headers": {
                        **HEADERS,
                        "Producer-Id": "hostile",
                        "Producer-Epoch": "0",
                        "Producer-Seq": str(self.rng.randint(0, 3)),
                    },
                },
            ),
            (
                "wrong content type",
                lambda: {"content": b"not json", "headers": {"content-type": "text/plain"}},
            ),
        ]
        # A valid answer's id again, with another value that would pass the schema: a
        # duplicate, which must change nothing (INPUT-015). Only once the server has
        # acknowledged the original, so that the original is first in the inbox.
        ids = answered.get(run_id, [])
        if ids:
            sub_id = self.rng.choice(ids)
            other = 999 if sub_id == fs.EARLY_ID else {"code": "c-999", "n": 999}
            request = "early" if sub_id == fs.EARLY_ID else "late"
            kinds.append(
                (
                    "valid answer's id, other value",
                    lambda: {"json": submission(sub_id, request, other)},
                )
            )
        kind, make = self.rng.choice(kinds)
        options = make()
        options.setdefault("headers", HEADERS)
        if self.send(http, url, kind, **options) == 409:
            self.ended.add(run_id)

    def index_junk(self, http: httpx.Client) -> None:
        with self.shared.lock:
            requested = sorted(self.shared.requested)
            foreign = len(self.shared.foreign_runs)
        url = f"{self.ns}/index"
        jid = self.next_id()
        kinds: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("malformed JSON", lambda: {"content": b'[{"type": "start", "key": "x",'}),
            ("array of non-objects", lambda: {"json": [None, 0, "start", [jid]]}),
            (
                "wrong types",
                lambda: {
                    "json": self.rng.choice(
                        [
                            {"type": "start", "key": 7, "value": {"run_id": 7}},
                            run_request("bad id!", fs.WORKFLOW, {"n": 1}),
                            run_request(jid, fs.WORKFLOW, {"n": 1}) | {"key": jid + "-other"},
                            run_request(jid, 12, {"n": 1}),
                            {"type": "start", "key": jid, "headers": {"operation": "insert"}},
                            run_request(jid, fs.WORKFLOW, {"n": 1})
                            | {"headers": {"operation": "delete"}},
                        ]
                    )
                },
            ),
            (
                "large junk",
                lambda: {"json": {"type": "start", "key": "x" * 40_000, "value": None}},
            ),
        ]
        if requested:
            # A run id that was requested (and acknowledged) already, with other input:
            # MODEL-014, the first request wins.
            run_id = self.rng.choice(requested)
            kinds.append(
                (
                    "repeated run id, other input",
                    lambda: {"json": run_request(run_id, fs.WORKFLOW, {"n": -1})},
                )
            )
        if foreign < 3 and self.rng.random() < 0.2:
            # A run of a workflow no worker has: it must end, failed (MODEL-019).
            run_id = f"foreign-{jid}"
            status = post(http, url, json=run_request(run_id, "no-such-workflow", {}))
            if status in (200, 204):
                with self.shared.lock:
                    self.shared.foreign_runs.add(run_id)
                self.shared.count("junk landed: run of an unknown workflow")
                self.shared.count("junk landed")
            return
        kind, make = self.rng.choice(kinds)
        options = make()
        options.setdefault("headers", HEADERS)
        if self.send(http, url, kind, **options) in (200, 204) and kind == "wrong types":
            with self.shared.lock:  # MODEL-015: never a run
                self.shared.ignored_runs.update({jid, f"{jid}-other"})


@contextmanager
def threads(*running: Client) -> Iterator[None]:
    for thread in running:
        thread.start()
    try:
        yield
    finally:
        for thread in running:
            thread.stop.set()
        for thread in running:
            thread.join(15)


# ---------------------------------------------------------------------- checks


def wait_all_closed(ns: str, run_ids: set[str], seconds: float) -> dict[str, list[Any]]:
    """Every run's history once closed; AssertionError naming the open ones otherwise."""
    closed: dict[str, list[Any]] = {}
    deadline = time.monotonic() + seconds
    while True:
        for run_id in sorted(run_ids - set(closed)):
            try:
                items, is_closed = read_history(ns, run_id)
            except Exception:
                continue
            if is_closed:
                closed[run_id] = items
        if len(closed) == len(run_ids):
            return closed
        if time.monotonic() > deadline:
            states = {}
            for run_id in sorted(run_ids - set(closed)):
                try:
                    items, _ = read_history(ns, run_id)
                    runs = [m["value"] for m in items if m["type"] == "run"]
                    states[run_id] = (
                        f"{len(items)} messages, last run status "
                        f"{runs[-1]['status'] if runs else None}, "
                        f"waiting for {runs[-1].get('waiting_for') if runs else None}"
                    )
                except Exception as exc:
                    states[run_id] = repr(exc)
            raise AssertionError(f"runs still open after {seconds} s: {states}")
        time.sleep(0.3)


def last_run(history: list[Any]) -> dict[str, Any]:
    runs: list[dict[str, Any]] = [m["value"] for m in history if m["type"] == "run"]
    return runs[-1]


def history_problems(run_id: str, history: list[Any]) -> list[str]:
    """Every message validates; the whole history parses; it replays against the code."""
    problems = []
    for index, message in enumerate(history):
        try:
            identify(message, "history")
        except Exception as exc:
            problems.append(f"{run_id}: message {index} does not validate: {exc}")
    inserts = [(m["type"], m["key"]) for m in history if m["headers"]["operation"] == "insert"]
    if len(inserts) != len(set(inserts)):
        problems.append(f"{run_id}: an entity is inserted twice (EVT-006)")
    try:
        parse_history(history, protocol=PROTOCOL)
    except Exception as exc:
        problems.append(f"{run_id}: the history does not parse: {exc}")
    report = replay_check(fs.mixed, history)
    if not report.ok:
        problems.append(f"{run_id}: the history does not replay: {report.message}")
    return problems


def answer_problems(run_id: str, history: list[Any], rival: str | None) -> list[str]:
    """The valid answers were taken; their duplicates left no trace; a rival was
    rejected as already-answered."""
    problems = []
    inputs = {m["key"]: m["value"] for m in history if m["type"] == "input"}
    for key, sub_id in (("early", fs.EARLY_ID), ("late", fs.LATE_ID)):
        got = inputs.get(key, {})
        if got.get("status") != "received" or got.get("submission_id") != sub_id:
            problems.append(f"{run_id}: input {key} is {got}, not received from {sub_id}")
    rejections = {m["key"]: m["value"] for m in history if m["type"] == "submission"}
    for sub_id in (fs.EARLY_ID, fs.LATE_ID):
        if sub_id in rejections:
            problems.append(f"{run_id}: a duplicate of {sub_id} was recorded: {rejections[sub_id]}")
    if rival is not None and rejections.get(rival, {}).get("reason") != "already-answered":
        problems.append(f"{run_id}: the rival answer got {rejections.get(rival)}")
    return problems


def outputs_of(histories: dict[str, list[Any]]) -> dict[str, Any]:
    return {run_id: last_run(items).get("output") for run_id, items in histories.items()}


# ---------------------------------------------------------------------- the test


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.req("REPLAY-023", "RETRY-010", "MODEL-014", "MODEL-027", "INPUT-015", "INPUT-017")
def test_mixed_runs_survive_kills_of_worker_and_server_and_a_hostile_client(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("DWF_FI_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    print(f"\nfault injection: seed {seed} (DWF_FI_SEED={seed} repeats it)")
    inputs = run_inputs()
    began = time.monotonic()
    calm_log, chaos_log = tmp_path / "calm-bodies.log", tmp_path / "chaos-bodies.log"
    cluster = Cluster(data=tmp_path / "streams", log=chaos_log)
    cluster.data.mkdir()
    try:
        cluster.start_server()

        # 1. The undisturbed batch: same inputs, no kill, no junk.
        calm = Shared(inputs)
        cluster.namespace = f"{cluster.base}/fi-calm"
        calm_worker = spawn(
            ["worker", "--url", cluster.namespace, "--workflows", "tests.runtime.fault_support"],
            env={fs.LOG_ENV: str(calm_log)},
        )
        cluster.started.append(calm_worker)
        answerer = Answerer(cluster.namespace, calm, random.Random(seed))
        with threads(answerer), httpx.Client(timeout=5) as http:
            for run_id in inputs:
                request_run(http, cluster.namespace, calm, run_id)
            calm_histories = wait_all_closed(cluster.namespace, set(inputs), CALM_SECONDS)
        calm_worker.stop()
        assert not answerer.errors, answerer.errors
        calm_outputs = outputs_of(calm_histories)
        calm_seconds = time.monotonic() - began
        print(f"undisturbed batch: {RUNS} runs in {calm_seconds:.1f} s")
        for run_id, n in inputs.items():
            assert last_run(calm_histories[run_id])["status"] == "completed", run_id
            assert calm_outputs[run_id] == fs.expected_output(n), run_id
        calm_bodies = fs.parse_body_log(calm_log.read_text().splitlines())
        problems = fs.body_problems(calm_bodies, calm_histories, crashes=False)
        for run_id, history in calm_histories.items():
            problems += history_problems(run_id, history)
            problems += answer_problems(run_id, history, calm.rivals.get(run_id))
        assert not problems, "\n".join(problems)

        # 2. The same runs under kills and junk.
        chaos_began = time.monotonic()
        shared = Shared(inputs)
        cluster.namespace = f"{cluster.base}/fi-chaos"
        cluster.start_worker(wait_ready=True)
        # The late answers are spread over most of the kills (about 1.4 s apart).
        gates = {r: chaos_began + rng.uniform(0, KILLS) for r in inputs}
        run_ids = list(inputs)
        rng.shuffle(run_ids)
        later = run_ids[EARLY_RUNS:]
        workers = rng.randint(KILLS // 2 - 4, KILLS // 2 + 4)
        plan = ["worker"] * workers + ["server"] * (KILLS - workers)
        rng.shuffle(plan)
        starts: dict[int, list[str]] = {}
        for run_id in later:  # the rest are requested during the first two thirds
            starts.setdefault(rng.randrange(KILLS * 2 // 3), []).append(run_id)
        answerer = Answerer(cluster.namespace, shared, random.Random(seed + 1), gates)
        hostile = Hostile(cluster.namespace, shared, random.Random(seed + 2))
        with threads(answerer, hostile), httpx.Client(timeout=5) as http:
            for run_id in run_ids[:EARLY_RUNS]:
                request_run(http, cluster.namespace, shared, run_id)
            for step, victim in enumerate(plan):
                for run_id in starts.get(step, []):
                    request_run(http, cluster.namespace, shared, run_id)
                time.sleep(rng.uniform(0.2, 2.0))
                both = rng.random() < 0.15
                if victim == "server" or both:
                    cluster.kill("server")
                if victim == "worker" or both:
                    cluster.kill("worker")
                if victim == "server" or both:
                    time.sleep(rng.uniform(0, 0.5))  # a worker without its server, a while
                    cluster.start_server()
                if victim == "worker" or both:
                    cluster.start_worker()
            chaos_seconds = time.monotonic() - chaos_began
            hostile.stop.set()
            hostile.join(15)
            settle_began = time.monotonic()
            for run_id in inputs:  # any gate not passed yet opens now
                gates[run_id] = 0.0
            try:
                histories = wait_all_closed(cluster.namespace, set(inputs), SETTLE_SECONDS)
                foreign = wait_all_closed(cluster.namespace, shared.foreign_runs, 20)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}: {exc}\n{cluster.logs()}") from None
            settle_seconds = time.monotonic() - settle_began
        cluster.check_alive()
        assert not cluster.deaths, "\n".join(cluster.deaths)
        assert not answerer.errors and not hostile.errors, answerer.errors + hostile.errors

        bodies = fs.parse_body_log(chaos_log.read_text().splitlines())
        executions = sum(len(e) for e in bodies.executions.values())
        reruns = sum(len(e) - len({x.attempt for x in e}) for e in bodies.executions.values())
        cut = sum(x.how is None for e in bodies.executions.values() for x in e)
        # Bodies that finished more than once for one attempt: killed after the body and
        # before its result was recorded, which at-least-once allows.
        finished_twice = sum(
            1
            for e in bodies.executions.values()
            for attempt in {x.attempt for x in e}
            if sum(x.attempt == attempt and x.how == "finish" for x in e) > 1
        )
        print(
            f"kills: {cluster.kills['worker']} worker, {cluster.kills['server']} server "
            f"({sum(cluster.kills.values())} in all) over {chaos_seconds:.1f} s; "
            f"every run ended {settle_seconds:.1f} s after the last kill"
        )
        print(
            f"runs: {RUNS} ({len(foreign)} foreign run requests of an unknown workflow); "
            f"body executions: {executions} ({cut} cut short by a kill, {reruns} re-runs, "
            f"{finished_twice} attempts that finished twice)"
        )
        for name, count in sorted(shared.figures.items()):
            print(f"  {name}: {count}")
        print(f"elapsed: {time.monotonic() - began:.1f} s")

        outputs = outputs_of(histories)
        problems = []
        for run_id in inputs:
            run = last_run(histories[run_id])
            if run["status"] != "completed" or outputs[run_id] != calm_outputs[run_id]:
                problems.append(
                    f"{run_id}: {run['status']} with {json.dumps(run.get('output'))} "
                    f"{run.get('error')}, expected {json.dumps(calm_outputs[run_id])}"
                )
        problems += fs.body_problems(bodies, histories, crashes=True)
        for run_id, history in histories.items():
            problems += history_problems(run_id, history)
            problems += answer_problems(run_id, history, shared.rivals.get(run_id))
        for run_id, history in foreign.items():
            run = last_run(history)
            if run["status"] != "failed" or run["error"]["type"] != "UnknownWorkflow":
                problems.append(f"{run_id}: a run of an unknown workflow ended {run}")
            for index, message in enumerate(history):
                try:
                    identify(message, "history")
                except Exception as exc:
                    problems.append(f"{run_id}: message {index} does not validate: {exc}")
        for run_id in sorted(shared.ignored_runs):
            if read_history(cluster.namespace, run_id)[0]:
                problems.append(f"{run_id}: an invalid run request started a run (MODEL-015)")
        assert not problems, f"seed {seed}:\n" + "\n".join(problems)
        assert (
            cluster.kills["worker"] >= MIN_KILLS_EACH and cluster.kills["server"] >= MIN_KILLS_EACH
        )
        assert sum(cluster.kills.values()) >= 20
        assert shared.figures["junk landed"] >= 100, shared.figures
    finally:
        cluster.stop()


# ---------------------------------------------------------------------- the detector


def _completed(key: str, attempt: int, token: str) -> dict[str, Any]:
    value = {"status": "completed", "attempt": attempt, "result": {"v": 1, "token": token}}
    return {"type": "step", "key": key, "value": value, "headers": {"operation": "update"}}


def _problems(events: list[dict[str, Any]], *recorded: tuple[str, int, str]) -> list[str]:
    lines = []
    for event in events:
        if event["ev"] in ("start", "finish", "fail"):
            event = {"run": "r", "key": "s", "attempt": 1, **event}
        lines.append(json.dumps(event))
    history = [_completed(key, attempt, token) for key, attempt, token in recorded]
    crashes = any(e["ev"] == "kill" for e in events)
    return fs.body_problems(fs.parse_body_log(lines), {"r": history}, crashes=crashes)


def _start(token: str, attempt: int = 1) -> dict[str, Any]:
    return {"ev": "start", "token": token, "attempt": attempt}


def _finish(token: str, attempt: int = 1) -> dict[str, Any]:
    return {"ev": "finish", "token": token, "attempt": attempt}


KILL_WORKER = {"ev": "kill", "what": "worker"}
KILL_SERVER, SERVER_UP = {"ev": "kill", "what": "server"}, {"ev": "up", "what": "server"}


def test_the_body_log_check_accepts_what_a_crash_explains() -> None:
    # Killed mid-body, or after the body but before its result was recorded.
    assert not _problems([_start("a"), KILL_WORKER, _start("b"), _finish("b")], ("s", 1, "b"))
    assert not _problems(
        [_start("a"), _finish("a"), KILL_WORKER, _start("b"), _finish("b")], ("s", 1, "b")
    )
    # The server went down while the body ran: its activation failed, the next re-ran it.
    assert not _problems(
        [_start("a"), KILL_SERVER, _finish("a"), SERVER_UP, _start("b"), _finish("b")],
        ("s", 1, "b"),
    )
    assert not _problems(
        [KILL_SERVER, _start("a"), SERVER_UP, _start("b"), _finish("b")], ("s", 1, "b")
    )
    # A retry the history shows: attempt 1 failed, attempt 2 was recorded.
    failed = {"ev": "fail", "token": "a", "attempt": 1}
    assert not _problems([_start("a"), failed, _start("b", 2), _finish("b", 2)], ("s", 2, "b"))


def test_the_body_log_check_catches_a_body_that_ran_twice() -> None:
    # A completed step's body ran again after the recorded one (crash or not).
    twice = _problems(
        [_start("a"), _finish("a"), KILL_WORKER, _start("b"), _finish("b")], ("s", 1, "a")
    )
    assert any("started after the one whose result was recorded" in p for p in twice), twice
    # Re-run with no crash in between.
    again = _problems([_start("a"), _finish("a"), _start("b"), _finish("b")], ("s", 1, "b"))
    assert any("with no crash between" in p for p in again), again
    outage_before = _problems(
        [KILL_SERVER, SERVER_UP, _start("a"), _finish("a"), _start("b"), _finish("b")],
        ("s", 1, "b"),
    )
    assert any("with no crash between" in p for p in outage_before), outage_before
    # An undisturbed run runs each attempt once.
    calm = _problems([_start("a"), _start("b"), _finish("b")], ("s", 1, "b"))
    assert any("undisturbed" in p for p in calm), calm
    # A retried attempt that had not failed; a result no logged body produced; a body
    # of a step that is not completed.
    retried = _problems([_start("a"), _finish("a"), _start("b", 2), _finish("b", 2)], ("s", 2, "b"))
    assert any("did not fail, yet was retried" in p for p in retried), retried
    assert any("from no logged body" in p for p in _problems([_start("a")], ("s", 1, "z")))
    assert any("not completed" in p for p in _problems([_start("a"), _finish("a")]))
