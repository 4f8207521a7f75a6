"""Memory and idle CPU of a worker holding many suspended runs.

    python benchmarks/suspended_runs.py --out benchmarks/results/suspended_runs.json

For each count N: start a stream server (``dwf streams serve``, in memory) and a
worker (``dwf worker``) as separate processes on 127.0.0.1; request N runs of the
``park`` workflow below (half wait for an input with no deadline, half sleep for
an hour); wait until the worker reports every run suspended; then measure for
``--idle-seconds``: the worker's resident memory (RSS and USS), open file
descriptors, threads, and CPU time used while idle (psutil), and the same for the
server. Finally it answers ``--probes`` waiting runs one at a time and measures
how long the worker takes to record the answer (submission appended -> history
grows). Writes one JSON report. A benchmark, not a test: nothing passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from durable_workflows.core import Context, workflow  # noqa: E402
from durable_workflows.streams import StreamClient  # noqa: E402


@workflow("park")
async def park(ctx: Context, start: dict[str, Any]) -> str:
    """Suspends at once: on an input (even runs) or on a one-hour sleep (odd runs)."""
    if start["n"] % 2 == 0:
        await ctx.request_input("go", schema=True, prompt="Continue?")
    else:
        await ctx.sleep("long", timedelta(hours=1))
    return "done"


def spawn(
    args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    log = Path(tempfile.mkdtemp(prefix="dwf-bench-")) / "stdout.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "durable_workflows.cli", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    return proc, log


def wait_line(log: Path, prefix: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [x for x in log.read_text().splitlines() if x.startswith(prefix)]
        if lines:
            return lines[-1]
        if proc.poll() is not None:
            raise RuntimeError(f"process exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"no {prefix!r} line within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def usage(proc: psutil.Process) -> dict[str, Any]:
    info = proc.memory_full_info()
    return {
        "rss_mb": round(info.rss / 2**20, 1),
        "uss_mb": round(info.uss / 2**20, 1),
        "fds": proc.num_fds(),
        "threads": proc.num_threads(),
    }


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def measure(
    n: int, idle_seconds: float, probes: int, long_poll: float, wake: str
) -> dict[str, Any]:
    server, server_log = spawn(
        [
            "streams",
            "serve",
            "--port",
            "0",
            "--memory",
            "--insecure-no-auth",
            "--long-poll-timeout",
            str(long_poll),
        ]
    )
    worker = None
    try:
        base = wait_line(server_log, "ready ", server, 30).split()[1]
        ns = f"{base}/v1/stream/bench-{n}"
        with StreamClient(timeout=60) as client:
            index = client.stream(f"{ns}/index", content_type="application/json")
            index.create_json()
            for first in range(0, n, 1000):
                index.append_json_batch(
                    {
                        "type": "start",
                        "key": f"park-{i}",
                        "value": {"run_id": f"park-{i}", "workflow": "park", "input": {"n": i}},
                        "headers": {"operation": "insert"},
                    }
                    for i in range(first, min(n, first + 1000))
                )
        began = time.monotonic()
        worker, worker_log = spawn(
            [
                "worker",
                "--url",
                ns,
                "--workflows",
                "benchmarks.suspended_runs",
                "--stats-every",
                "1",
                "--wake",
                wake,
            ]
        )
        deadline = time.monotonic() + 1200
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            line = wait_line(worker_log, "stats ", worker, 60)
            stats = json.loads(line.removeprefix("stats "))
            if stats["suspended"] >= n:
                break
            time.sleep(0.5)
        settle = time.monotonic() - began
        time.sleep(3.0)  # let start-up garbage settle
        wproc, sproc = psutil.Process(worker.pid), psutil.Process(server.pid)
        cpu_w, cpu_s = cpu_seconds(wproc), cpu_seconds(sproc)
        time.sleep(idle_seconds)
        idle_w = (cpu_seconds(wproc) - cpu_w) / idle_seconds
        idle_s = (cpu_seconds(sproc) - cpu_s) / idle_seconds
        worker_usage, server_usage = usage(wproc), usage(sproc)
        latencies = []
        with StreamClient(timeout=30, live_timeout=30) as client:
            for i in random.Random(n).sample(range(0, n, 2), probes):
                history = client.stream(f"{ns}/runs/park-{i}/history")
                tail = history.read().next_offset
                inbox = client.stream(f"{ns}/runs/park-{i}/inbox")
                sent = time.perf_counter()
                inbox.append_json(
                    {
                        "type": "submission",
                        "key": f"probe-{i}",
                        "value": {"submission_id": f"probe-{i}", "request": "go", "value": 1},
                        "headers": {"operation": "insert"},
                    }
                )
                for batch in history.follow(tail, live="long-poll"):
                    if batch.items:
                        break
                latencies.append((time.perf_counter() - sent) * 1000)
        latencies.sort()
        return {
            "wake": wake,
            "runs": n,
            "suspended": stats.get("suspended"),
            "inbox_follows": stats.get("inbox_follows"),
            "timers": stats.get("timers"),
            "seconds_to_suspend_all": round(settle, 1),
            "worker": {**worker_usage, "idle_cpu_percent": round(idle_w * 100, 2)},
            "server": {**server_usage, "idle_cpu_percent": round(idle_s * 100, 2)},
            "resume_latency_ms": {
                "probes": len(latencies),
                "median": round(latencies[len(latencies) // 2], 1),
                "max": round(latencies[-1], 1),
            },
        }
    finally:
        if worker is not None:
            stop(worker)
        stop(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument(
        "--long-poll-timeout",
        type=float,
        default=30.0,
        help="the stream server's long-poll wait (idle re-polls cost CPU)",
    )
    parser.add_argument(
        "--wake",
        nargs="+",
        choices=("subscription", "long-poll"),
        default=["subscription", "long-poll"],
        help="the worker's wake modes to measure",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for wake in args.wake:
        for n in args.runs:
            results.append(measure(n, args.idle_seconds, args.probes, args.long_poll_timeout, wake))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # partial results
    report = {
        "benchmark": "suspended_runs",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "settings": {
            "idle_seconds": args.idle_seconds,
            "long_poll_timeout_s": args.long_poll_timeout,
            "probes": args.probes,
        },
        "results": results,
    }
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
