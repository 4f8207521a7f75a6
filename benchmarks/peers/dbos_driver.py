"""DBOS Transact (Python), in this process, with its system database on SQLite.

The workflows below are ordinary DBOS workflows (sync, ``@DBOS.step()`` steps); the
runs of the suspended-runs phase are async workflows awaiting ``DBOS.recv_async``
(no thread each). ``recv`` learns of a message by polling the database: the listener
polls every ``notification_listener_polling_interval_sec`` = 10 ms here (the default is
1 s). DBOS commits a step's output before the step call returns to the workflow, so a
step counts as recorded when the workflow's next line runs (the hooks below mark that
moment in this process). Run with the peer environment's interpreter::

    benchmarks/.peer-venv/bin/python -m benchmarks.peers.dbos_driver --phase round --data DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.peers.common import (
    START_PAUSE_SECONDS,
    Config,
    SyncCounter,
    Timeout,
    driver_main,
    durability_window,
    latency_summary,
    package_version,
    sqlite_version,
    usage,
    wait_go,
)
from dbos import DBOS, SetWorkflowID

POLL_SECONDS = 0.01
BIG = "big"

# ---------------------------------------------------------------------- hooks

_cond = threading.Condition()
_fired: set[str] = set()
_parked = 0


def _mark(key: str) -> None:
    with _cond:
        _fired.add(key)
        _cond.notify_all()


def wait_mark(key: str, seconds: float) -> float:
    """Wait until the workflows marked ``key``; perf_counter when seen."""
    with _cond:
        if not _cond.wait_for(lambda: key in _fired, timeout=seconds):
            raise Timeout(f"no mark {key}")
        _fired.discard(key)
    return time.perf_counter()


# ---------------------------------------------------------------------- workflows


@DBOS.step()
def trivial(i: int) -> int:
    return i


@DBOS.workflow()
def seq(steps: int) -> int:
    wid = DBOS.workflow_id
    for i in range(steps):
        trivial(i)
        if i == 0:
            _mark(f"{wid}/s0")  # the step's output is committed by now
    return steps


@DBOS.workflow()
def wait(pre: int, inputs: int) -> int:
    wid = DBOS.workflow_id
    for i in range(pre):
        trivial(i)
    for k in range(inputs):
        _mark(f"{wid}/waiting/{k}")
        value = DBOS.recv(f"in-{k}", timeout_seconds=86_400)
        trivial(value)
        _mark(f"{wid}/after/{k}")
    return inputs


@DBOS.workflow()
async def park() -> str:
    global _parked
    with _cond:
        _parked += 1
    await DBOS.recv_async("go", timeout_seconds=86_400)
    return "done"


# ---------------------------------------------------------------------- the engine


@contextlib.contextmanager
def engine(data: Path) -> Any:
    config: Any = {
        "name": "workflow-bench",
        "system_database_url": f"sqlite:///{data / 'dbos.sqlite'}",
        "notification_listener_polling_interval_sec": POLL_SECONDS,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        yield
    finally:
        DBOS.destroy(destroy_registry=False)


def sequential(steps: int) -> float:
    started = time.perf_counter()
    DBOS.start_workflow(seq, steps).get_result()
    return steps / (time.perf_counter() - started)


def concurrent(runs: int, steps: int) -> float:
    started = time.perf_counter()
    handles = [DBOS.start_workflow(seq, steps) for _ in range(runs)]
    for handle in handles:
        handle.get_result()
    return runs * steps / (time.perf_counter() - started)


def input_latencies(wid: str, first: int, probes: int, cap: float) -> list[float]:
    wait_mark(f"{wid}/waiting/{first}", cap)
    out = []
    for k in range(first, first + probes):
        sent = time.perf_counter()
        DBOS.send(wid, k, topic=f"in-{k}")
        done = wait_mark(f"{wid}/after/{k}", cap)
        out.append((done - sent) * 1000)
        wait_mark(f"{wid}/waiting/{k + 1}", cap)
    return out


def start_latencies(probes: int, cap: float) -> list[float]:
    out = []
    for _ in range(probes):
        wid = f"first-{uuid.uuid4().hex[:10]}"
        time.sleep(START_PAUSE_SECONDS)
        sent = time.perf_counter()
        with SetWorkflowID(wid):
            DBOS.start_workflow(seq, 1)
        done = wait_mark(f"{wid}/s0", cap)
        out.append((done - sent) * 1000)
    return out


def step_rows(data: Path, wid: str) -> int:
    db = sqlite3.connect(data / "dbos.sqlite")
    try:
        return int(
            db.execute(
                "SELECT count(*) FROM operation_outputs WHERE workflow_uuid = ?", (wid,)
            ).fetchone()[0]
        )
    finally:
        db.close()


def versions() -> dict[str, Any]:
    return {
        "engine": "DBOS Transact, in-process, system database on SQLite",
        "dbos": package_version("dbos"),
        "python": sys.version.split()[0],
        "sqlite": sqlite_version(),
        "recv_polling_ms": POLL_SECONDS * 1000,
    }


# ---------------------------------------------------------------------- phases


def prepare(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    with engine(data):
        started = time.perf_counter()
        with SetWorkflowID(BIG):
            DBOS.start_workflow(wait, cfg.big_events, 1_000_000)
        wait_mark(f"{BIG}/waiting/0", max(cfg.max_seconds, 900))
        built = time.perf_counter() - started
        (data / "big-next.json").write_text("0")
        return {
            "big_steps": cfg.big_events,
            "big_events": step_rows(data, BIG),
            "build_seconds": round(built, 1),
        }


def one_round(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"versions": versions(), "errors": {}}
    cap = cfg.max_seconds

    def attempt(name: str, fn: Any) -> None:
        try:
            out[name] = fn()
        except Exception as error:
            out[name] = None
            out["errors"][name] = f"{type(error).__name__}: {error}"

    with engine(data):
        sequential(20)  # warm-up
        attempt("seq_steps_per_s", lambda: round(sequential(cfg.seq_steps), 1))
        attempt("conc_steps_per_s", lambda: round(concurrent(cfg.conc_runs, cfg.conc_steps), 1))

        def fresh_inputs() -> dict[str, Any]:
            wid = f"wait-{uuid.uuid4().hex[:10]}"
            with SetWorkflowID(wid):
                DBOS.start_workflow(wait, 0, cfg.input_probes + 2)
            return latency_summary(input_latencies(wid, 0, cfg.input_probes + 1, cap))

        attempt("input_ms", fresh_inputs)

        def big_inputs() -> dict[str, Any]:
            # The run was recovered at launch (DBOS re-executes it, reading each
            # recorded step back) and waits for input ``first``.
            first = int((data / "big-next.json").read_text())
            samples = input_latencies(BIG, first, cfg.input_probes + 1, max(cap, 300))
            (data / "big-next.json").write_text(str(first + cfg.input_probes + 1))
            summary = latency_summary(samples)
            summary["history_events"] = step_rows(data, BIG)
            return summary

        attempt("input_big_ms", big_inputs)
        attempt("start_ms", lambda: latency_summary(start_latencies(cfg.start_probes + 1, cap)))
    return out


def suspended(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    import os

    with engine(data):
        started = time.perf_counter()
        for i in range(cfg.suspended):
            with SetWorkflowID(f"park-{i}"):
                DBOS.start_workflow(park)
        deadline = time.monotonic() + max(cfg.max_seconds, 900)
        while _parked < cfg.suspended:
            if time.monotonic() > deadline:
                raise Timeout(f"{_parked} of {cfg.suspended} parked")
            time.sleep(0.05)
        settle = time.perf_counter() - started
        wait_go(data, args)
        time.sleep(3)
        measured = usage({"dbos app": os.getpid()}, cfg.idle_seconds)
    return {
        "runs": cfg.suspended,
        "seconds_to_suspend_all": round(settle, 1),
        "processes": measured,
        "versions": versions(),
    }


def durability(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    counter = SyncCounter(args.strace_log)
    with engine(data):
        sequential(10)
        seq_window = durability_window(
            counter, cfg.durability_steps, lambda: sequential(cfg.durability_steps)
        )
        conc_window = durability_window(
            counter,
            cfg.durability_runs * cfg.durability_run_steps,
            lambda: concurrent(cfg.durability_runs, cfg.durability_run_steps),
        )
        idle = durability_window(counter, 1, lambda: time.sleep(5))
    db = sqlite3.connect(data / "dbos.sqlite")
    try:
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        db.close()
    return {
        "sequential": seq_window,
        "concurrent": conc_window,
        "idle_5s": idle,
        "calls": counter.calls(),
        "sqlite": {
            "journal_mode": journal,
            "synchronous": "FULL (SQLite's default; DBOS sets no synchronous pragma)",
        },
        "note": json.dumps({"recv_polling_ms": POLL_SECONDS * 1000}),
    }


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
