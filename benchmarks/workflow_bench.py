"""Workflow engines side by side: our runtime, DBOS and Temporal on this machine.

    make bench-peers-venv    # once: DBOS, Temporal and matplotlib in benchmarks/.peer-venv
    .venv/bin/python benchmarks/workflow_bench.py            # the full run (make bench-peers)
    .venv/bin/python benchmarks/workflow_bench.py --smoke    # one tiny round (make bench-smoke)

Engines (each driver is a module of ``benchmarks/peers/``, run in a subprocess with
its engine's interpreter: ours with the project's ``.venv``, the peers with
``benchmarks/.peer-venv``, which never enters the project's environment):

- ``ours``: ``dwf serve --data DIR`` (embedded stream server on SQLite, worker in the
  same process), driven over loopback HTTP;
- ``dbos``: DBOS Transact in the driver's process, system database on SQLite, ``recv``
  polling every 10 ms;
- ``temporal``: the Temporal dev server (``temporal server start-dev --db-filename``,
  SQLite) and a Python SDK worker, each step an activity;
- ``temporal-local``: the same with local activities.

Workloads: 1. 1,000 sequential trivial steps in one run (steps/s); 2. 100 runs of 20
steps at once (steps/s); 3. input -> the next step recorded (ms); 4. the same on a run
whose history already holds 10,000 events; 5. start -> first step recorded (ms); then
10,000 suspended runs (memory, idle CPU), a cold ``dwf replay`` of the 10,000-event
history (ours) and, under ``strace -f``, the fsync-family calls per step.

Phases: setup (every engine's 10,000-event run is built and every engine's suspended
runs ramp up, all at once: nothing there is timed but the ramp-up), then idle windows
of the suspended runs one engine at a time, then ``--rounds`` rounds of workloads 1-5
(the engine order rotates each round), then durability. Every wait is capped and the
run stops starting rounds when ``--budget-minutes`` is spent. A benchmark, not a test:
it never fails on a number (``--smoke`` exits 1 when an engine failed a workload).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.peers.common import SYNC_CALLS, Config  # noqa: E402

OURS_PYTHON = ROOT / ".venv" / "bin" / "python"
PEER_PYTHON = ROOT / "benchmarks" / ".peer-venv" / "bin" / "python"

#: name -> (driver module, interpreter, variant, has its own suspended-runs phase)
ENGINES: dict[str, tuple[str, Path, str, bool]] = {
    "ours": ("benchmarks.peers.ours_driver", OURS_PYTHON, "", True),
    "dbos": ("benchmarks.peers.dbos_driver", PEER_PYTHON, "", True),
    "temporal": ("benchmarks.peers.temporal_driver", PEER_PYTHON, "activity", True),
    # Parked workflows run no step: the suspended phase of "temporal" covers both.
    "temporal-local": ("benchmarks.peers.temporal_driver", PEER_PYTHON, "local", False),
}
LABELS = {
    "ours": "ours (dwf serve, SQLite, HTTP)",
    "dbos": "DBOS (SQLite, in-process)",
    "temporal": "Temporal (dev server, activities)",
    "temporal-local": "Temporal (dev server, local activities)",
}
#: metric -> (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "seq_steps_per_s": ("1. sequential steps/s (1 run)", True),
    "conc_steps_per_s": ("2. steps/s, runs at once", True),
    "input_ms": ("3. input -> step recorded, ms", False),
    "input_big_ms": ("4. the same, 10,000-event history, ms", False),
    "start_ms": ("5. start -> first step recorded, ms", False),
    "start_http_ms": ("5b. the same, seen by a client reading the history, ms", False),
}

SMOKE = Config(
    seq_steps=30,
    conc_runs=5,
    conc_steps=5,
    input_probes=3,
    big_events=200,
    start_probes=3,
    suspended=50,
    idle_seconds=1.0,
    durability_steps=20,
    durability_runs=3,
    durability_run_steps=5,
    max_seconds=60.0,
)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- subprocesses


class Phase:
    """One driver subprocess; its ``RESULT`` line is the phase's result."""

    def __init__(
        self,
        engine: str,
        phase: str,
        data: Path,
        cfg: Config,
        timeout: float,
        strace: Path | None = None,
    ) -> None:
        module, python, variant, _ = ENGINES[engine]
        self.engine, self.phase, self.timeout = engine, phase, timeout
        data.mkdir(parents=True, exist_ok=True)
        self.logfile = data.parent / f"{engine}-{phase}.log"
        args = [str(python), "-m", module, "--phase", phase, "--data", str(data)]
        args += ["--config", json.dumps(asdict(cfg))]
        if variant:
            args += ["--variant", variant]
        if phase == "suspended":
            args += ["--wait-go"]
        if strace is not None:
            args += ["--strace-log", str(strace)]
            tracer = shutil.which("strace") or "strace"
            sync = ",".join(SYNC_CALLS)
            args = [
                tracer,
                "-f",
                "-qq",
                "--seccomp-bpf",
                "-e",
                f"trace={sync}",
                "-o",
                str(strace),
                *args,
            ]
        self.started = time.monotonic()
        with self.logfile.open("wb") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # its own process group: a timeout stops its servers too
            )

    def result(self) -> dict[str, Any]:
        try:
            out, _ = self.proc.communicate(timeout=max(1.0, self.timeout))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()
            return {"error": f"{self.engine} {self.phase}: over {self.timeout:.0f} s, stopped"}
        with contextlib.suppress(OSError):  # anything it left behind
            os.killpg(self.proc.pid, signal.SIGTERM)
        for line in reversed(out.decode(errors="replace").splitlines()):
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
                return result
        tail = self.logfile.read_text(errors="replace")[-1500:]
        # The report is committed: no machine paths in it.
        for prefix in (f"{ROOT}/", f"{sys.base_prefix}/"):
            tail = tail.replace(prefix, "")
        return {"error": f"{self.engine} {self.phase}: exit {self.proc.returncode}: {tail}"}


def run_phase(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return Phase(*args, **kwargs).result()


# ---------------------------------------------------------------------- the report


def round_value(result: dict[str, Any] | None, metric: str) -> float | None:
    if not result or result.get(metric) is None:
        return None
    value = result[metric]
    return float(value["median"] if isinstance(value, dict) else value)


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "rounds": len(values),
    }


def summarise(engines: list[str], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds (a latency's value in a round is that round's median),
    and ratios within each round: ours / peer for rates, peer / ours for times
    (above 1: ours is faster)."""
    summary: dict[str, Any] = {"engines": {}, "ratios": {}}
    for engine in engines:
        summary["engines"][engine] = {
            metric: spread(
                [v for r in rounds if (v := round_value(r.get(engine), metric)) is not None]
            )
            for metric in METRICS
        }
        replays = [
            r[engine]["replay_seconds"]
            for r in rounds
            if r.get(engine) and r[engine].get("replay_seconds") is not None
        ]
        if replays:
            summary["engines"][engine]["replay_seconds"] = spread(replays)
    if "ours" in engines:
        for peer in engines:
            if peer == "ours":
                continue
            ratios: dict[str, Any] = {}
            for metric, (_, higher) in METRICS.items():
                per_round = []
                for r in rounds:
                    a = round_value(r.get("ours"), metric)
                    b = round_value(r.get(peer), metric)
                    if a and b:
                        per_round.append(a / b if higher else b / a)
                ratios[metric] = spread(per_round)
            summary["ratios"][peer] = ratios
    return summary


def cell(s: dict[str, float] | None, digits: int = 0) -> str:
    if not s:
        return "n/a"
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"


def markdown(report: dict[str, Any]) -> str:
    engines = report["engines"]
    summary = report["summary"]
    peers = [e for e in engines if e != "ours" and e in summary["ratios"]]
    lines = [
        "| median (min-max) | "
        + " | ".join(engines)
        + "".join(f" | ours vs {p}" for p in peers)
        + " |",
        "| --- |" + " ---: |" * (len(engines) + len(peers)),
    ]
    for metric, (label, _) in METRICS.items():
        digits = 0 if metric.endswith("per_s") else 1
        cells = [cell(summary["engines"][e][metric], digits) for e in engines]
        ratios = [cell(summary["ratios"][p][metric], 2) for p in peers]
        lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
    if "ours" in engines and summary["engines"]["ours"].get("replay_seconds"):
        replay = cell(summary["engines"]["ours"]["replay_seconds"], 2)
        lines.append(
            "| cold `dwf replay` of the 10,000-event history, s | "
            + " | ".join([replay] + ["-"] * (len(engines) - 1 + len(peers)))
            + " |"
        )
    lines += ["", "| suspended runs | " + " | ".join(report["suspended"]) + " |"]
    lines.append("| --- |" + " ---: |" * len(report["suspended"]))
    rows = [
        ("runs", lambda s: f"{s['runs']:,}"),
        ("memory (RSS of the engine's processes), MB", lambda s: _procs(s, "rss_mb", "{:,.0f}")),
        (
            "idle CPU over the window, % of a core",
            lambda s: _procs(s, "idle_cpu_percent", "{:.1f}"),
        ),
        ("time until all were waiting, s", lambda s: f"{s['seconds_to_suspend_all']:,.0f}"),
    ]
    for label, fn in rows:
        values = []
        for s in report["suspended"].values():
            values.append("n/a" if "error" in s else fn(s))
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    lines += ["", "| durability (strace -f) | " + " | ".join(report["durability"]) + " |"]
    lines.append("| --- |" + " ---: |" * len(report["durability"]))
    for key, label in (
        ("sequential", "sync calls per step, one run"),
        ("concurrent", "sync calls per step, runs at once"),
    ):
        values = []
        for d in report["durability"].values():
            value = (d.get(key) or {}).get("sync_calls_per_step")
            values.append("n/a" if value is None else f"{value:.2f}")
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def _procs(s: dict[str, Any], key: str, fmt: str) -> str:
    procs = {k: v for k, v in s["processes"].items() if k != "total"}
    total = fmt.format(s["processes"]["total"][key])
    if len(procs) == 1:
        return total
    parts = " + ".join(f"{fmt.format(v[key])} {k}" for k, v in procs.items())
    return f"{total} ({parts})"


def versions(report: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for r in report["rounds"]:
        for engine, result in r.items():
            if result and "versions" in result:
                found.setdefault(engine, result["versions"])
    return found


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny round of everything")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    parser.add_argument("--suspended", type=int, default=None, help="suspended runs (10,000)")
    parser.add_argument("--budget-minutes", type=float, default=19.0)
    parser.add_argument("--no-durability", action="store_true")
    parser.add_argument("--no-suspended", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="JSON report")
    parser.add_argument("--markdown", type=Path, default=None, help="Markdown tables")
    parser.add_argument("--plot", type=Path, default=None, help="SVG or PNG plot")
    parser.add_argument("--scratch", type=Path, default=None, help="data directories (temporary)")
    args = parser.parse_args(argv)

    cfg = SMOKE if args.smoke else Config()
    if args.suspended is not None:
        cfg.suspended = args.suspended
    rounds_wanted = 1 if args.smoke else args.rounds
    if args.smoke:
        out_dir = Path(tempfile.mkdtemp(prefix="workflow-bench-smoke-"))
        args.out = args.out or out_dir / "workflow-bench.json"
        args.markdown = args.markdown or out_dir / "workflow-bench.md"
        args.plot = args.plot or out_dir / "workflow-bench.svg"
    else:
        args.out = args.out or ROOT / "benchmarks/results/workflow-bench.json"
        args.markdown = args.markdown or ROOT / "benchmarks/results/workflow-bench.md"
        args.plot = args.plot or ROOT / "docs/img/workflow-bench.svg"

    notes: list[str] = []
    engines = []
    for name in args.engines:
        python = ENGINES[name][1]
        if python.exists():
            engines.append(name)
        else:
            notes.append(f"{name} skipped: no {python.relative_to(ROOT)} (make bench-peers-venv)")
            log(notes[-1])
    if not engines:
        log("no engine to run")
        return 1
    strace = shutil.which("strace")
    if not strace and not args.no_durability:
        notes.append("durability not counted: no strace on this machine")

    begun = time.monotonic()
    budget = args.budget_minutes * 60
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="workflow-bench-"))
    log(f"engines {engines}; data in {scratch}")

    # Setup, nothing timed but the ramp-ups: every engine's 10,000-event run is built
    # and the suspended runs ramp up, at once, except that one Temporal dev server
    # runs at a time (the Temporal phases go one after the other in a lane of their own).
    prepared: dict[str, Any] = {}
    parked: dict[str, Phase] = {}

    def setup(lane: list[str]) -> None:
        for e in lane:
            prepared[e] = Phase(e, "prepare", scratch / e / "main", cfg, timeout=1200).result()
            log(f"prepared {e}: {prepared[e]}")

    def ramp(lane: list[str]) -> None:
        for e in lane:
            if ENGINES[e][3] and not args.no_suspended:
                # The driver ramps up, then waits for the file "go" before its idle window.
                parked[e] = Phase(e, "suspended", scratch / e / "suspended", cfg, timeout=1800)

    temporal = [e for e in engines if e.startswith("temporal")]
    others = [e for e in engines if e not in temporal]
    ramp(others)
    lane = threading.Thread(target=lambda: (setup(temporal), ramp(temporal)))
    lane.start()
    setup(others)
    lane.join()
    suspended: dict[str, Any] = {}
    # Idle windows one engine at a time (DBOS first: its polling never idles).
    for e in sorted(parked, key=lambda e: e != "dbos"):
        (scratch / e / "suspended" / "go").touch()
        suspended[e] = parked[e].result()
        log(f"suspended {e}: {json.dumps(suspended[e])[:300]}")

    rounds: list[dict[str, Any]] = []
    round_seconds: list[float] = []
    for number in range(rounds_wanted):
        spent = time.monotonic() - begun
        expected = max(round_seconds) if round_seconds else 0
        if number > 0 and spent + expected + (90 if not args.no_durability else 0) > budget:
            notes.append(f"stopped after {number} rounds: the time budget")
            log(notes[-1])
            break
        started = time.monotonic()
        shift = number % len(engines)
        order = engines[shift:] + engines[:shift]
        row: dict[str, Any] = {}
        for e in order:
            row[e] = run_phase(e, "round", scratch / e / "main", cfg, timeout=900)
            log(f"round {number + 1} {e}: {json.dumps(row[e])[:400]}")
        rounds.append({e: row[e] for e in engines})
        round_seconds.append(time.monotonic() - started)

    durability: dict[str, Any] = {}
    if not args.no_durability:
        for e in engines:
            trace = scratch / e / "durability.strace" if strace else None
            durability[e] = run_phase(
                e, "durability", scratch / e / "durability", cfg, timeout=300, strace=trace
            )
            log(f"durability {e}: {json.dumps(durability[e])[:300]}")

    report: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "command": "python benchmarks/workflow_bench.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "platform": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "wall_seconds": round(time.monotonic() - begun, 1),
            "round_seconds": [round(s, 1) for s in round_seconds],
            "notes": notes,
        },
        "config": asdict(cfg),
        "engines": engines,
        "labels": {e: LABELS[e] for e in engines},
        "prepare": prepared,
        "suspended": {e: suspended[e] for e in engines if e in suspended},
        "rounds": rounds,
        "durability": durability,
    }
    report["versions"] = versions(report)
    report["summary"] = summarise(engines, rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(table + "\n")
    print(table)
    if PEER_PYTHON.exists():
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [str(PEER_PYTHON), "-m", "benchmarks.peers.plot", str(args.out), str(args.plot)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            log(f"plot failed: {done.stderr[-1500:]}")
    else:
        log("no plot: matplotlib lives in benchmarks/.peer-venv (make bench-peers-venv)")
    log(f"wrote {args.out}, {args.markdown}, {args.plot} in {report['meta']['wall_seconds']} s")
    if args.scratch is None:
        shutil.rmtree(scratch, ignore_errors=True)

    if args.smoke:
        failures = [
            f"{e} {phase}: {r.get('error') or r.get('errors')}"
            for phase, results in (
                ("prepare", prepared),
                ("suspended", suspended),
                ("durability", durability),
                *(("round", r) for r in rounds),
            )
            for e, r in results.items()
            if r is None or r.get("error") or r.get("errors")
        ]
        for failure in failures:
            log(f"FAILED {failure}")
        return 1 if failures else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
