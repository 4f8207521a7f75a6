"""Our runtime: ``dwf serve --data DIR`` (embedded stream server on SQLite, worker and
wake handler in one process); this driver is its client over loopback HTTP.

Runs are requested by appending ``run-requested`` to ``{ns}/index``, inputs answered
by appending ``input-submitted`` to ``{ns}/runs/ID/inbox``; a step counts as recorded
when the driver, following ``{ns}/runs/ID/history`` with long-polls, reads its
``step`` message with status ``completed`` (the server acknowledged that append after
its SQLite commit). A new run's first step counts as recorded when the body of the
run's next step tells the driver so (a datagram on loopback, ``ours_flows.mark``): that
body runs only once the append holding the first step's outcome was acknowledged, as
DBOS's mark is the line after its step; the same start seen through the history (which
does not exist when the driver starts reading it) is reported too. Run with the
project's interpreter::

    .venv/bin/python -m benchmarks.peers.ours_driver --phase round --data DIR
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from benchmarks.peers.common import (
    ROOT,
    START_PAUSE_SECONDS,
    Config,
    SyncCounter,
    Timeout,
    deadline_after,
    driver_main,
    durability_window,
    latency_summary,
    package_version,
    sqlite_version,
    usage,
    wait_for,
    wait_go,
)
from benchmarks.peers.ours_flows import MARK_PORT

from durable_workflows.engine.namespace import strip_read_annotations
from durable_workflows.streams import Stream, StreamClient, StreamNotFound

FLOWS = "benchmarks.peers.ours_flows"
BIG = "big"


class Ours:
    """A ``dwf serve`` child process and a client for it."""

    def __init__(self, data: Path, max_seconds: float) -> None:
        self.data = data
        self.max_seconds = max_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.ns = ""
        self.client: StreamClient
        #: Where the runs' marks arrive (``ours_flows.mark``).
        self.marks: socket.socket

    def __enter__(self) -> Ours:
        log = Path(tempfile.mkdtemp(prefix="ours-bench-")) / "serve.log"
        self.marks = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.marks.bind(("127.0.0.1", 0))
        env = {**os.environ, MARK_PORT: str(self.marks.getsockname()[1])}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "durable_workflows.cli",
                    "serve",
                    "--data",
                    str(self.data),
                    "--port",
                    "0",
                    "--insecure-no-auth",
                    "--long-poll-timeout",
                    "30",
                    "--workflows",
                    FLOWS,
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def ready() -> str | None:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("ready "):
                    return line
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"dwf serve exited: {log.read_text()[-2000:]}")
            return None

        line = wait_for(ready, 60, "dwf serve ready")
        self.ns = line.split()[3]
        self.client = StreamClient(timeout=60, live_timeout=35)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.marks.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    # ------------------------------------------------------------------ streams

    def stream(self, path: str) -> Stream:
        return self.client.stream(f"{self.ns}/{path}", content_type="application/json")

    def request(self, runs: list[tuple[str, str, Any]]) -> None:
        """Append ``run-requested`` for each (run id, workflow, input), in one append."""
        self.stream("index").append_json_batch(
            [
                {
                    "type": "start",
                    "key": run_id,
                    "value": {"run_id": run_id, "workflow": name, "input": value},
                    "headers": {"operation": "insert"},
                }
                for run_id, name, value in runs
            ]
        )

    def submit(self, run_id: str, request: str, value: Any) -> None:
        sub = f"sub-{uuid.uuid4().hex[:12]}"
        self.stream(f"runs/{run_id}/inbox").append_json(
            {
                "type": "submission",
                "key": sub,
                "value": {"submission_id": sub, "request": request, "value": value},
                "headers": {"operation": "insert"},
            }
        )

    def status_tail(self) -> str:
        try:
            return self.stream("status").read().next_offset
        except StreamNotFound:  # the worker creates it with the first run's row
            return "-1"

    def wait_status(self, offset: str, run_ids: set[str], status: str) -> str:
        """Follow the run-status stream from ``offset`` until every run in ``run_ids``
        has ``status`` (its latest row); returns the offset reached."""
        left = set(run_ids)
        deadline = deadline_after(self.max_seconds)
        wait_exists(self.stream("status"), deadline)
        for batch in self.stream("status").follow(offset, live="long-poll"):
            for row in batch.items:
                value = row.get("value") or {}
                if value.get("run_id") in left and value.get("status") == status:
                    left.discard(value["run_id"])
                elif value.get("run_id") in left and value.get("status") == "failed":
                    raise RuntimeError(f"run failed: {value}")
            if not left:
                return batch.next_offset
            if time.monotonic() > deadline:
                raise Timeout(f"{len(left)} runs not {status}")
        raise RuntimeError("status stream closed")

    def follower(self, run_id: str) -> HistoryFollower:
        return HistoryFollower(self, run_id)

    # ------------------------------------------------------------------ workloads

    def sequential(self, steps: int) -> float:
        run_id = f"seq-{uuid.uuid4().hex[:10]}"
        tail = self.status_tail()
        started = time.perf_counter()
        self.request([(run_id, "bench-seq", {"steps": steps})])
        self.wait_status(tail, {run_id}, "completed")
        return steps / (time.perf_counter() - started)

    def concurrent(self, runs: int, steps: int) -> float:
        ids = [f"conc-{uuid.uuid4().hex[:10]}" for _ in range(runs)]
        tail = self.status_tail()
        started = time.perf_counter()
        self.request([(r, "bench-seq", {"steps": steps}) for r in ids])
        self.wait_status(tail, set(ids), "completed")
        return runs * steps / (time.perf_counter() - started)

    def input_latencies(self, run_id: str, first: int, probes: int) -> list[float]:
        """Answer inputs ``in-first`` ... one at a time; ms until ``after-K`` is recorded."""
        history = self.follower(run_id)
        history.until("input", f"in-{first}", "pending")
        out = []
        for k in range(first, first + probes):
            sent = time.perf_counter()
            self.submit(run_id, f"in-{k}", k)
            done = history.until("step", f"after-{k}", "completed")
            out.append((done - sent) * 1000)
            history.until("input", f"in-{k + 1}", "pending")
        history.close()
        return out

    def start_latencies(self, probes: int) -> list[float]:
        """Start -> the mark of the run's next step (see the module doc), ms."""

        def marked(run_id: str) -> float:
            self.request([(run_id, "bench-first", {"probe": run_id})])
            self.marks.settimeout(self.max_seconds)
            try:
                while self.marks.recv(256).decode() != run_id:
                    pass  # a mark of an earlier probe, sent again by a retried body
            except TimeoutError:
                raise Timeout(f"no mark from run {run_id}") from None
            return time.perf_counter()

        return self._starts(probes, marked)

    def start_latencies_http(self, probes: int) -> list[float]:
        """Start -> the first step's outcome read from the run's history, ms."""

        def read(run_id: str) -> float:
            self.request([(run_id, "bench-seq", {"steps": 1})])
            history = self.follower(run_id)
            try:
                return history.until("step", "s0", "completed")
            finally:
                history.close()

        return self._starts(probes, read)

    def _starts(self, probes: int, start: Callable[[str], float]) -> list[float]:
        """``probes`` new runs, one at a time and each on an engine at rest;
        ``start(run_id)`` requests one and returns when its first step was seen
        (perf_counter). The latencies, ms."""
        out = []
        for _ in range(probes):
            run_id = f"first-{uuid.uuid4().hex[:10]}"
            time.sleep(START_PAUSE_SECONDS)
            sent = time.perf_counter()
            out.append((start(run_id) - sent) * 1000)
        return out

    def history(self, run_id: str) -> list[Any]:
        return strip_read_annotations(self.stream(f"runs/{run_id}/history").read().items)


def wait_exists(stream: Stream, deadline: float) -> None:
    """Poll (every 2 ms) until ``stream`` exists: the worker creates histories and the
    run-status stream itself."""
    while True:
        try:
            stream.head()
            return
        except StreamNotFound:
            if time.monotonic() > deadline:
                raise Timeout(f"{stream.url} never created") from None
            time.sleep(0.002)


class HistoryFollower:
    """One live read of a run's history, message by message (long-polls at the tail)."""

    def __init__(self, ours: Ours, run_id: str) -> None:
        self.ours = ours
        self.run_id = run_id
        self.items = self._items()

    def _items(self) -> Generator[dict[str, Any], None, None]:
        history = self.ours.stream(f"runs/{self.run_id}/history")
        deadline = deadline_after(self.ours.max_seconds)
        while True:
            # The worker creates the history: until it has, the first read is a 404.
            # Polled with the read itself (every 2 ms), not a HEAD and then the read.
            try:
                batches = history.follow("-1", live="long-poll")
                first = next(batches)
                break
            except StreamNotFound:
                if time.monotonic() > deadline:
                    raise Timeout(f"{history.url} never created") from None
                time.sleep(0.002)
        for batch in itertools.chain([first], batches):
            yield from batch.items
            if not batch.items:
                yield {}  # an empty long-poll answer: lets until() check its deadline

    def until(self, kind: str, key: str, status: str) -> float:
        """Read on until message (kind, key, status); perf_counter when it was read."""
        deadline = deadline_after(self.ours.max_seconds)
        for item in self.items:
            value = item.get("value") or {}
            if (item.get("type"), item.get("key"), value.get("status")) == (kind, key, status):
                return time.perf_counter()
            if item.get("type") == "run" and value.get("status") == "failed":
                raise RuntimeError(f"run {self.run_id} failed: {value.get('error')}")
            if time.monotonic() > deadline:
                raise Timeout(f"history of {self.run_id}: no {kind} {key} {status}")
        raise RuntimeError(f"history of {self.run_id} closed before {kind} {key} {status}")

    def close(self) -> None:
        self.items.close()


def pending_input(history: list[Any]) -> int:
    pending = [
        m["key"] for m in history if m.get("type") == "input" and m["value"]["status"] == "pending"
    ]
    received = {
        m["key"] for m in history if m.get("type") == "input" and m["value"]["status"] == "received"
    }
    left = [k for k in pending if k not in received]
    return int(left[-1].removeprefix("in-"))


# ---------------------------------------------------------------------- phases


def versions() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "unknown"

    return {
        "engine": "durable-workflows (dwf serve --data: embedded stream server on SQLite)",
        "durable_workflows": package_version("durable-workflows"),
        "commit": git("rev-parse", "--short", "HEAD")
        + ("+dirty" if git("status", "--porcelain") else ""),
        "python": sys.version.split()[0],
        "sqlite": sqlite_version(),
    }


def prepare(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    steps = cfg.big_events // 2  # each step is two history messages (running, completed)
    with Ours(data, max(cfg.max_seconds, 900)) as ours:
        tail = ours.status_tail()
        started = time.perf_counter()
        ours.request([(BIG, "bench-wait", {"pre": steps, "inputs": 1_000_000})])
        ours.wait_status(tail, {BIG}, "waiting")
        built = time.perf_counter() - started
        history = ours.history(BIG)
    (data / "big-history.json").write_text(json.dumps(history))
    return {"big_steps": steps, "big_events": len(history), "build_seconds": round(built, 1)}


def replay_seconds(data: Path) -> float:
    """Wall time of ``dwf replay`` of the saved 10,000-event history, a fresh process."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "durable_workflows.cli",
            "replay",
            str(data / "big-history.json"),
            "--workflow",
            f"{FLOWS}:wait",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"dwf replay failed: {done.stdout.decode()[-500:]}")
    return elapsed


def one_round(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"versions": versions(), "errors": {}}
    with Ours(data, cfg.max_seconds) as ours:

        def attempt(name: str, fn: Any) -> None:
            try:
                out[name] = fn()
            except Exception as error:  # a benchmark reports, it does not stop
                out[name] = None
                out["errors"][name] = f"{type(error).__name__}: {error}"

        ours.sequential(20)  # warm-up: imports, connections, SQLite pages
        attempt("seq_steps_per_s", lambda: round(ours.sequential(cfg.seq_steps), 1))
        attempt(
            "conc_steps_per_s",
            lambda: round(ours.concurrent(cfg.conc_runs, cfg.conc_steps), 1),
        )

        def fresh_inputs() -> dict[str, Any]:
            run_id = f"wait-{uuid.uuid4().hex[:10]}"
            ours.request([(run_id, "bench-wait", {"inputs": cfg.input_probes + 2})])
            return latency_summary(ours.input_latencies(run_id, 0, cfg.input_probes + 1))

        attempt("input_ms", fresh_inputs)

        def big_inputs() -> dict[str, Any]:
            first = pending_input(ours.history(BIG))
            summary = latency_summary(ours.input_latencies(BIG, first, cfg.input_probes + 1))
            summary["history_events"] = len(ours.history(BIG))
            return summary

        attempt("input_big_ms", big_inputs)
        attempt("start_ms", lambda: latency_summary(ours.start_latencies(cfg.start_probes + 1)))
        attempt(
            "start_http_ms",
            lambda: latency_summary(ours.start_latencies_http(cfg.start_probes + 1)),
        )
    try:
        out["replay_seconds"] = round(replay_seconds(data), 2)
    except Exception as error:
        out["replay_seconds"] = None
        out["errors"]["replay_seconds"] = f"{type(error).__name__}: {error}"
    return out


def suspended(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    # 10,000 runs take about 6 minutes alone, and more while the other engines set up.
    with Ours(data, max(cfg.max_seconds, 1700)) as ours:
        assert ours.proc is not None
        ids = [f"park-{i}" for i in range(cfg.suspended)]
        tail = ours.status_tail()
        started = time.perf_counter()
        for first in range(0, len(ids), 1000):
            ours.request([(r, "bench-park", {}) for r in ids[first : first + 1000]])
        ours.wait_status(tail, set(ids), "waiting")
        settle = time.perf_counter() - started
        wait_go(data, args)
        time.sleep(3)  # the last acknowledgements, start-up garbage
        measured = usage({"dwf serve": ours.proc.pid}, cfg.idle_seconds)
    return {
        "runs": cfg.suspended,
        "seconds_to_suspend_all": round(settle, 1),
        "processes": measured,
        "versions": versions(),
    }


def durability(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    counter = SyncCounter(args.strace_log)
    with Ours(data, cfg.max_seconds) as ours:
        ours.sequential(10)
        seq = durability_window(
            counter, cfg.durability_steps, lambda: ours.sequential(cfg.durability_steps)
        )
        conc = durability_window(
            counter,
            cfg.durability_runs * cfg.durability_run_steps,
            lambda: ours.concurrent(cfg.durability_runs, cfg.durability_run_steps),
        )
        idle = durability_window(counter, 1, lambda: time.sleep(5))
    settings: dict[str, Any] = {}
    with contextlib.suppress(OSError, sqlite3.Error):
        settings = _sqlite_settings(data / "streams.sqlite3")
    return {
        "sequential": seq,
        "concurrent": conc,
        "idle_5s": idle,
        "calls": counter.calls(),
        "sqlite": settings,
    }


def _sqlite_settings(path: Path) -> dict[str, Any]:
    # The server sets these on its own connection (storage.py); read back what sticks.
    db = sqlite3.connect(path)
    try:
        return {
            "journal_mode": db.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": "FULL (set by the server on its connection)",
        }
    finally:
        db.close()


if __name__ == "__main__":
    raise SystemExit(
        driver_main(
            {
                "prepare": prepare,
                "round": one_round,
                "suspended": suspended,
                "durability": durability,
            }
        )
    )
