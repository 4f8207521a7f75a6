"""Mutation testing of the reference engine against the conformance suite.

    python tools/mutation/run.py [--only NAME ...] [--seed N] [--jobs N] [--json FILE]
    python tools/mutation/run.py --check      # every mutant applies; nothing is run

Each mutant of ``mutants.yaml`` is one changed decision in the engine's core, a
violation of a MUST. For each, the runtime package is copied to a scratch folder, the
change applied there (the clone is never touched), the copy served as
``dwf serve --conformance --memory`` serves the reference (on 127.0.0.1, a free port),
and ``dwf conformance --profile quick --exitfirst --no-shrink`` run against it. The
suite *catches* the mutant when it fails at least one MUST; it *misses* it when it
passes. The unchanged reference runs first, as the control: it must pass, or nothing
the mutants show means anything. Prints one line per mutant and the score; ``--json``
writes every outcome (the failed requirements, the seconds taken).
"""

from __future__ import annotations

import argparse
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "reference" / "durable_workflows"
MUTANTS = Path(__file__).with_name("mutants.yaml")
START_TIMEOUT = 60.0
SUITE_TIMEOUT = 900.0


@dataclass(frozen=True)
class Mutant:
    name: str
    klass: str
    rule: str
    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Outcome:
    mutant: str
    klass: str
    rule: str
    #: "caught", "missed", or "error" (the engine did not start, the suite timed out).
    verdict: str
    failed: tuple[str, ...]
    seconds: float
    note: str = ""


def load(path: Path = MUTANTS) -> list[Mutant]:
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    mutants = [
        Mutant(e["name"], e["class"], e["rule"], e["file"], e["old"], e["new"]) for e in entries
    ]
    names = [m.name for m in mutants]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise SystemExit(f"{path}: duplicate mutant names {sorted(duplicates)}")
    return mutants


def mutated_source(mutant: Mutant, package: Path = PACKAGE) -> str:
    """The file's text with the change applied; the old text must occur exactly once."""
    text = (package / mutant.file).read_text(encoding="utf-8")
    found = text.count(mutant.old)
    if found != 1:
        raise ValueError(
            f"mutant {mutant.name}: its old text occurs {found} times in {mutant.file} "
            "(the engine changed: update mutants.yaml)"
        )
    return text.replace(mutant.old, mutant.new)


def check(mutants: Sequence[Mutant]) -> list[str]:
    """Problems: a mutant whose text is stale, or whose result does not compile."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dwf-mutant-check-") as scratch:
        for mutant in mutants:
            try:
                source = mutated_source(mutant)
            except ValueError as error:
                problems.append(str(error))
                continue
            target = Path(scratch) / f"{mutant.name}.py"
            target.write_text(source, encoding="utf-8")
            try:
                py_compile.compile(str(target), doraise=True)
            except py_compile.PyCompileError as error:
                problems.append(f"mutant {mutant.name}: does not compile: {error.msg}")
    return problems


@contextmanager
def engine(mutant: Mutant | None) -> Iterator[str]:
    """Serve a copy of the runtime (mutated, or the reference for the control); yield its URL."""
    scratch = Path(tempfile.mkdtemp(prefix="dwf-mutant-"))
    # The clone's layout (reference/durable_workflows beside schemas/), so that the copy
    # finds the schemas as a source checkout does.
    copy = scratch / "reference" / "durable_workflows"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (scratch / "schemas").symlink_to(ROOT / "schemas", target_is_directory=True)
    if mutant is not None:
        (copy / mutant.file).write_text(mutated_source(mutant), encoding="utf-8")
    log = scratch / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(scratch / "reference")}
    where = subprocess.run(
        [sys.executable, "-c", "import durable_workflows; print(durable_workflows.__file__)"],
        cwd=scratch / "reference",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).is_relative_to(scratch):  # the copy must shadow the installed runtime
        raise RuntimeError(f"the engine would import {where}, not the copy in {scratch}")
    argv = [sys.executable, "-m", "durable_workflows.cli", "serve", "--conformance", "--memory"]
    argv += ["--host", "127.0.0.1", "--port", "0", "--long-poll-timeout", "2"]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=scratch / "reference", env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            lines = log.read_text(errors="replace").splitlines()
            ready = next((line for line in lines if line.startswith("ready ")), None)
            if ready is not None:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the engine did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield ready.split()[1]
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)
        shutil.rmtree(scratch, ignore_errors=True)


def suite(url: str, seed: str) -> tuple[int, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="dwf-mutant-report-") as scratch:
        report = Path(scratch) / "report.json"
        argv = [sys.executable, "-m", "durable_workflows.cli", "conformance", "--target-url", url]
        argv += ["--profile", "quick", "--seed", seed, "--exitfirst", "--no-shrink"]
        argv += ["--report-json", str(report)]
        # The runner runs the clone's own code: the copy is only on the engine's path.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT
        )
        if not report.exists():
            raise RuntimeError(f"no report (exit {done.returncode}):\n{done.stdout[-3000:]}")
        parsed: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
        return done.returncode, parsed


def failed_musts(report: dict[str, Any]) -> tuple[str, ...]:
    rows = report.get("requirements", [])
    return tuple(
        sorted(
            str(row.get("id"))
            for row in rows
            if row.get("level") == "MUST" and row.get("status") == "failed"
        )
    )


def run_one(mutant: Mutant | None, seed: str) -> Outcome:
    started = time.monotonic()
    name = mutant.name if mutant else "control (the reference)"
    klass = mutant.klass if mutant else ""
    rule = mutant.rule if mutant else ""
    try:
        with engine(mutant) as url:
            code, report = suite(url, seed)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
        seconds = time.monotonic() - started
        return Outcome(name, klass, rule, "error", (), seconds, str(error)[-500:])
    seconds = time.monotonic() - started
    failed = failed_musts(report)
    if code == 0 and not failed:
        return Outcome(name, klass, rule, "missed", (), seconds)
    if code not in (0, 1):
        return Outcome(name, klass, rule, "error", failed, seconds, f"suite exit {code}")
    return Outcome(name, klass, rule, "caught", failed, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument("--seed", default="11")
    parser.add_argument("--jobs", type=int, default=1, help="mutants served at once")
    parser.add_argument("--json", type=Path, metavar="FILE")
    parser.add_argument("--check", action="store_true", help="check the mutants apply; run none")
    parser.add_argument("--list", action="store_true", help="list the mutants")
    args = parser.parse_args(argv)

    mutants = load()
    unknown = set(args.only) - {m.name for m in mutants}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    if args.only:
        mutants = [m for m in mutants if m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name:40} {m.rule:11} {m.klass}")
        return 0
    problems = check(mutants)
    if problems or args.check:
        print("\n".join(problems) or f"ok: {len(mutants)} mutants apply and compile")
        return 1 if problems else 0

    control = run_one(None, args.seed)
    passed = control.verdict == "missed"  # the suite found nothing: the reference passes
    print(f"control: {'passed' if passed else 'FAILED'} in {control.seconds:.0f} s")
    if not passed:
        print(f"the reference does not pass the suite: {' '.join(control.failed)} {control.note}")
        return 2
    outcomes = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each job is two processes
        for outcome in pool.map(lambda m: run_one(m, args.seed), mutants):
            outcomes.append(outcome)
            caught_by = " ".join(outcome.failed) or " ".join(outcome.note.splitlines()[-1:])
            print(
                f"{outcome.verdict:7} {outcome.mutant:40} {outcome.rule:11} "
                f"{outcome.seconds:5.0f} s  {caught_by}",
                flush=True,
            )
    caught = sum(o.verdict == "caught" for o in outcomes)
    errors = sum(o.verdict == "error" for o in outcomes)
    print(
        f"mutation score: {caught} of {len(outcomes)} caught"
        + (f" ({errors} errors)" if errors else "")
        + f", seed {args.seed}, profile quick"
    )
    if args.json:
        rows = [o.__dict__ for o in [control, *outcomes]]
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
