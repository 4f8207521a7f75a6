"""Cold ``dwf replay`` of a long history: build it in-process, time fresh processes.

    .venv/bin/python benchmarks/replay_bench.py [--steps 5000] [--runs 5] [--profile]
        [--baseline DIR]

Builds the history of the peer benchmark's ``bench-wait`` workflow with ``--steps``
trivial steps before its first input (two history messages per step, so 5,000 steps
make a 10,003-event history) by driving the sans-IO core directly, with no server, then
times ``python -m durable_workflows.cli replay HISTORY --workflow ... --json`` in a fresh
process ``--runs`` times (interpreter start and imports included, as a user sees it) and
prints the median, min and max of the wall time and of the process's CPU time (less
disturbed by other load on the machine) and the events per second of the median wall
time. ``--baseline DIR`` also times another version, whose ``reference`` folder is in DIR
(``git archive COMMIT reference schemas | tar -x -C DIR``), in alternating runs, for
before/after figures taken in one run. ``--profile`` also prints a cProfile of one
in-process replay (parse, validate, replay) by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FLOWS = "benchmarks.peers.ours_flows"


def build_history(steps: int) -> list[dict[str, Any]]:
    """The history of ``bench-wait`` with ``steps`` steps, resting on its first input."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.peers.ours_flows import wait

    from durable_workflows.core import Activation, StepSucceeded

    now = datetime(2030, 1, 1, tzinfo=UTC)
    request = {"run_id": "big-run", "workflow": "bench-wait", "input": {"pre": steps, "inputs": 1}}
    activation = Activation(wait, [], request=request)
    rng = random.Random(0)
    history: list[dict[str, Any]] = []
    decision = activation.advance(now, [], rng)
    while True:
        history.extend(decision.append)
        if not decision.steps:
            return history
        for task in decision.steps:
            activation.step_finished(task.key, task.attempt, StepSucceeded(task.call()), now)
        decision = activation.advance(now, [], rng)


def replay_command(path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "durable_workflows.cli",
        "replay",
        str(path),
        "--workflow",
        f"{FLOWS}:wait",
        "--json",
    ]


def time_cold(path: Path, baseline: Path | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``dwf replay`` in a fresh process."""
    env = dict(os.environ)
    if baseline is not None:
        env["PYTHONPATH"] = str(baseline / "reference")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(replay_command(path), cwd=ROOT, capture_output=True, timeout=600, env=env)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"dwf replay failed: {done.stdout.decode()[-500:]}")
    report = json.loads(done.stdout)
    if not report["ok"]:
        raise RuntimeError(f"dwf replay reported a mismatch: {report}")
    return elapsed, cpu


def profile(path: Path) -> None:
    from benchmarks.peers.ours_flows import wait

    from durable_workflows.core import replay_check

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    history = json.loads(path.read_text(encoding="utf-8"))
    report = replay_check(wait, history)
    profiler.disable()
    elapsed = time.perf_counter() - started
    print(f"in-process replay under cProfile: {elapsed:.3f} s, ok={report.ok}")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--baseline", type=Path, help="a folder holding another reference/")
    args = parser.parse_args(argv)
    history = build_history(args.steps)
    versions: dict[str, Path | None] = {"this": None}
    if args.baseline is not None:
        versions = {"baseline": args.baseline, "this": None}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big-history.json"
        path.write_text(json.dumps(history), encoding="utf-8")
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
        for _ in range(args.runs):
            for name, folder in versions.items():
                runs[name].append(time_cold(path, folder))
        for name, results in runs.items():
            wall = [w for w, _ in results]
            cpu = [c for _, c in results]
            median = statistics.median(wall)
            print(
                f"{name}: {len(history)} events, cold dwf replay over {args.runs} runs: "
                f"wall median {median:.3f} s (min {min(wall):.3f}, max {max(wall):.3f}), "
                f"CPU median {statistics.median(cpu):.3f} s "
                f"(min {min(cpu):.3f}, max {max(cpu):.3f}), "
                f"{len(history) / median:,.0f} events/s"
            )
        if args.profile:
            profile(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
