"""What the three engine drivers share (standard library and psutil only).

A driver is run as ``python -m benchmarks.peers.<engine>_driver --phase PHASE --data DIR
--config JSON`` with the interpreter of its engine's virtual environment, and prints
one line ``RESULT {json}`` on stdout. Phases:

- ``prepare``: build, in ``DIR``, the run whose history holds ``big_events`` events
  (workload 4); the rounds reuse it;
- ``round``: workloads 1 to 5 (and, for ours, a cold ``dwf replay`` of that history);
- ``suspended``: ``suspended`` runs that each wait for an input, then memory and
  CPU of the engine's processes while idle (in ``DIR``, a store of its own);
- ``durability``: the driver runs under ``strace -f`` and counts fsync-family calls
  made while it runs sequential and concurrent steps (``--strace-log``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: The system calls that put data on disk; what the durability phase counts.
#: Workload 5 waits this long before each run it starts, in every engine: the latency
#: of starting a run on an engine at rest, not behind the end of the run before it.
START_PAUSE_SECONDS = 0.02

SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "syncfs", "msync")
_SYNC_LINE = re.compile(r"\b(" + "|".join(SYNC_CALLS) + r")\(")


@dataclass
class Config:
    seq_steps: int = 1000  # workload 1: steps of one run
    conc_runs: int = 100  # workload 2: runs at once ...
    conc_steps: int = 20  # ... of this many steps each
    input_probes: int = 20  # workloads 3 and 4: inputs answered per round
    big_events: int = 10_000  # workload 4: events already in the history
    start_probes: int = 20  # workload 5: runs started one after the other
    suspended: int = 10_000  # runs waiting for an input
    idle_seconds: float = 10.0  # the idle window measured
    durability_steps: int = 200  # steps of the run counted under strace
    durability_runs: int = 20  # concurrent runs counted under strace ...
    durability_run_steps: int = 10  # ... of this many steps each
    max_seconds: float = 120.0  # cap on any one wait of a workload

    @classmethod
    def from_json(cls, text: str) -> Config:
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class Timeout(RuntimeError):
    """A workload did not finish within ``max_seconds``."""


def deadline_after(seconds: float) -> float:
    return time.monotonic() + seconds


def check_deadline(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise Timeout(f"{what}: not done within the cap")


def wait_for(condition: Callable[[], Any], seconds: float, what: str, every: float = 0.01) -> Any:
    deadline = deadline_after(seconds)
    while True:
        value = condition()
        if value:
            return value
        check_deadline(deadline, what)
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def latency_summary(samples: list[float], warmup: int = 1) -> dict[str, Any]:
    """Median, min and max of ``samples`` (ms) after the first ``warmup`` ones."""
    kept = samples[warmup:] if len(samples) > warmup else samples
    return {
        "median": round(statistics.median(kept), 2),
        "min": round(min(kept), 2),
        "max": round(max(kept), 2),
        "n": len(kept),
        "warmup_ms": [round(s, 2) for s in samples[:warmup]],
    }


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------- processes


def usage(pids: dict[str, int], idle_seconds: float) -> dict[str, Any]:
    """Resident memory and CPU used over ``idle_seconds`` by each named process."""
    import psutil

    procs = {name: psutil.Process(pid) for name, pid in pids.items()}

    def cpu(p: Any) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    before = {name: cpu(p) for name, p in procs.items()}
    time.sleep(idle_seconds)
    out: dict[str, Any] = {}
    for name, p in procs.items():
        info = p.memory_full_info()
        out[name] = {
            "rss_mb": round(info.rss / 2**20, 1),
            "uss_mb": round(info.uss / 2**20, 1),
            "threads": p.num_threads(),
            "fds": p.num_fds(),
            "idle_cpu_percent": round((cpu(p) - before[name]) / idle_seconds * 100, 2),
        }
    out["total"] = {
        "rss_mb": round(sum(v["rss_mb"] for v in out.values()), 1),
        "idle_cpu_percent": round(sum(v["idle_cpu_percent"] for v in out.values()), 2),
    }
    return out


class SyncCounter:
    """Counts fsync-family calls in an ``strace -f -o LOG`` log as it grows."""

    def __init__(self, log: str | None) -> None:
        self.log = Path(log) if log else None

    def count(self) -> int | None:
        if self.log is None:
            return None
        time.sleep(0.3)  # let strace write out what it saw
        with self.log.open(errors="replace") as f:
            return sum(1 for line in f if _SYNC_LINE.search(line))

    def calls(self) -> dict[str, int]:
        if self.log is None:
            return {}
        counts: dict[str, int] = {}
        with self.log.open(errors="replace") as f:
            for line in f:
                m = _SYNC_LINE.search(line)
                if m:
                    counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        return counts


def wait_go(data: Path, args: argparse.Namespace, seconds: float = 1800) -> None:
    """With ``--wait-go``: wait until the file ``data/go`` exists (the orchestrator
    measures one engine's idle window at a time)."""
    if not getattr(args, "wait_go", False):
        return
    (data / "ramped").touch()
    deadline = time.monotonic() + seconds
    while not (data / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def durability_window(counter: SyncCounter, steps: int, body: Callable[[], Any]) -> dict[str, Any]:
    """Sync calls made while ``body`` records ``steps`` steps."""
    before = counter.count()
    started = time.perf_counter()
    body()
    elapsed = time.perf_counter() - started
    after = counter.count()
    if before is None or after is None:
        return {"steps": steps, "seconds": round(elapsed, 2)}
    return {
        "steps": steps,
        "seconds": round(elapsed, 2),
        "sync_calls": after - before,
        "sync_calls_per_step": round((after - before) / steps, 2),
    }


# ---------------------------------------------------------------------- the entry point


def driver_main(phases: dict[str, Callable[[Path, Config, argparse.Namespace], Any]]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", required=True, choices=sorted(phases))
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--config", default="{}")
    parser.add_argument("--variant", default="")
    parser.add_argument("--strace-log", default=None)
    parser.add_argument(
        "--wait-go",
        action="store_true",
        help="suspended phase: after the ramp-up, wait for the file DIR/go before measuring",
    )
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    cfg = Config.from_json(args.config)
    started = time.perf_counter()
    result = phases[args.phase](args.data, cfg, args)
    result["phase_seconds"] = round(time.perf_counter() - started, 1)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    # Some SDKs leave non-daemon threads behind: the result is out, so leave now.
    os._exit(0)
