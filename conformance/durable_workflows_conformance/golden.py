"""Golden histories: the cases of ``cases/*.yaml`` and the validation vectors, each with
the exact history the suite's model predicts, as plain JSON a port runs its core against
before it has any adapter (docs/conformance.md, "Golden histories").

    python -m durable_workflows_conformance.golden generate      # rewrite golden/v1/
    python -m durable_workflows_conformance.golden run --core-cmd "CMD" [--only ID]

``run`` starts ``CMD`` once per case, writes the case to its stdin and reads, from its
stdout, one JSON array per append the core makes, and optionally, last, an object
``{"run-status": ROW}``: the run's run-status row after its last append. The history
those appends make is scrubbed (``scrub.py``: the free fields go) and compared with the
case's ``history`` the way the suite compares histories: each entity's messages in
order, and the inserts of primitives in order (spec/model.md, "Fixed and free").
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from . import model
from .scrub import differences, scrub_all, scrub_run_error

__all__ = ["CORPUS", "Result", "corpus", "generate", "run"]

#: Where the corpus lives in the package (versioned with the protocol).
CORPUS = "golden/v1"
#: The run id and workflow name of every golden case (``request`` carries them).
RUN_ID = "golden-run"
WORKFLOW = "golden"
#: Cases the corpus leaves out, and why: they need what a core alone does not do.
UNSUITABLE = (
    ("prepared_history", "an engine must leave a prepared history alone: needs streams"),
    ("model", "the specification does not fix its history message by message"),
    ("register", "the workflow is unknown: there is no program to run"),
    ("workers", "two workers race: needs streams and fencing"),
)


def _unsuitable(case: Mapping[str, Any]) -> str | None:
    for key, why in UNSUITABLE:
        if key in case and (key != "workers" or case[key] != 1):
            return why
    ops = json.dumps(case.get("program", {}))
    if '"hang_attempts"' in ops:
        return "a hanging body times out on a real clock"
    return None


def generate() -> list[dict[str, Any]]:
    """Every suitable case with the history the model predicts for it."""
    from .case_files import load_cases, scenario_of

    out = []
    for case in load_cases():
        if _unsuitable(case):
            continue
        scenario = scenario_of(case)
        prediction = model.predict(scenario)
        schedule = []
        for sub in scenario.submissions:
            item: dict[str, Any] = {"message": sub.message(), "when": sub.when}
            if sub.when in ("waiting", "at-deadline", "late"):
                item["request"] = sub.request
            if sub.when == "suspended":
                item["at"] = sub.at
            schedule.append(item)
        final = next(m for m in reversed(prediction.history) if m["type"] == "run")
        out.append(
            {
                "id": case["id"],
                "description": case["description"],
                "requirements": case["requirements"],
                "source": case["file"],
                "program": case["program"],
                "input": case.get("input"),
                "request": {
                    "type": "start",
                    "key": RUN_ID,
                    "value": {"run_id": RUN_ID, "workflow": WORKFLOW, "input": case.get("input")},
                    "headers": {"operation": "insert"},
                },
                "limits": case.get("limits"),
                "inbox": schedule,
                "history": prediction.history,
                "status": prediction.status,
                "refused": [schedule[i]["message"]["key"] for i in prediction.refused],
                "run_status": {
                    "run_id": RUN_ID,
                    "workflow": WORKFLOW,
                    "status": prediction.status,
                    "waiting_for": None,
                    "inputs": [],
                    "error": final["value"]["error"],
                    "history_length": len(prediction.history),
                },
            }
        )
    return out


def corpus() -> list[dict[str, Any]]:
    """The committed corpus, in id order."""
    folder = resources.files("durable_workflows_conformance") / CORPUS
    cases = [
        json.loads(entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    ]
    return sorted(cases, key=lambda c: c["id"])


def write(cases: Sequence[Mapping[str, Any]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()
    for case in cases:
        text = json.dumps(case, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
        (folder / f"{case['id']}.json").write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class Result:
    case: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _row(message: Mapping[str, Any]) -> dict[str, Any]:
    """The fixed part of a run-status row (its times are free)."""
    value = message.get("value") or {}
    return {
        "run_id": value.get("run_id"),
        "workflow": value.get("workflow"),
        "status": value.get("status"),
        "waiting_for": value.get("waiting_for"),
        "inputs": [
            {k: i.get(k) for k in ("key", "name", "prompt")} for i in value.get("inputs") or []
        ],
        "error": scrub_run_error(value.get("error")),
        "history_length": value.get("history_length"),
    }


def check(
    case: Mapping[str, Any],
    appends: Sequence[Sequence[Any]],
    row: Mapping[str, Any] | None = None,
) -> Result:
    """Compare a core's appends (and, when it gives one, its final run-status row) with
    the case."""
    history = [message for append in appends for message in append]
    scrubbed = scrub_all(history, RUN_ID)
    problems = differences(case["history"], scrubbed, exact=False)
    runs = [m for m in scrubbed if m.get("type") == "run"]
    status = runs[-1]["value"].get("status") if runs else None
    if status != case["status"]:
        problems.append(f"the run ended {status!r}, expected {case['status']!r}")
    if row is not None and _row(row) != case["run_status"]:
        problems.append(f"run-status row {_row(row)!r}, expected {case['run_status']!r}")
    return Result(case["id"], tuple(problems))


def run(core_cmd: str, cases: Sequence[Mapping[str, Any]], timeout: float = 60) -> list[Result]:
    results = []
    for case in cases:
        done = subprocess.run(
            shlex.split(core_cmd),
            input=json.dumps(case),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            results.append(Result(case["id"], (f"the core exited {done.returncode}: {tail}",)))
            continue
        try:
            lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            results.append(Result(case["id"], (f"the core printed something not JSON: {error}",)))
            continue
        appends = [line for line in lines if isinstance(line, list)]
        rows = [line["run-status"] for line in lines if isinstance(line, dict)]
        results.append(check(case, appends, rows[-1] if rows else None))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_workflows_conformance.golden")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="rewrite the corpus from the model")
    gen.add_argument("--out", type=Path, default=Path(__file__).with_name("golden") / "v1")
    runner = sub.add_parser("run", help="check a core against the corpus")
    runner.add_argument("--core-cmd", required=True, help="reads a case on stdin, prints appends")
    runner.add_argument("--only", action="append", default=[], metavar="ID")
    args = parser.parse_args(argv)
    if args.command == "generate":
        cases = generate()
        write(cases, args.out)
        print(f"wrote {len(cases)} cases to {args.out}")
        return 0
    cases = [c for c in corpus() if not args.only or c["id"] in args.only]
    results = run(args.core_cmd, cases)
    for result in results:
        if not result.ok:
            print(f"FAIL {result.case}")
            for problem in result.problems:
                print(f"  {problem}")
    passed = sum(r.ok for r in results)
    print(f"golden: {passed} of {len(results)} cases reproduced")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
