"""The conformance runner: ``dwf conformance`` (``main(argv) -> int``).

Runs the suite's own test modules (``suite/``) with pytest, against the engine whose
conformance adapter is at ``--target-url`` (else ``$DWF_CONFORMANCE_TARGET``), and
scores every MUST and SHOULD requirement.

Exit status:

- 0: every selected MUST check passed (or failed as the expected-failures file says),
  and, under ``--strict``, every SHOULD check too;
- 1: an unexpected MUST failure (a "Not testable" check counts as a failure), a stale
  expected-failures entry (a listed check that passes), or a SHOULD failure under
  ``--strict``;
- 2: a harness error: no target, an unreachable adapter, an unreadable file, a
  selection that matches nothing, or pytest itself failing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import Phase, settings

from . import __version__, schemas
from .driver import HarnessError, Target
from .plugin import PROFILES, CheckResult, ConformancePlugin, RunConfig, requirements_index

SUITE_DIR = Path(__file__).resolve().parent / "suite"
ENV_TARGET = "DWF_CONFORMANCE_TARGET"
FAILED = ("failed", "error", "not-testable")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{datetime.now(UTC).microsecond // 1000:03d}Z"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dwf conformance",
        description="Test a Durable Workflows engine through its conformance adapter.",
    )
    p.add_argument("--target-url", help=f"the adapter's base URL (default: ${ENV_TARGET})")
    p.add_argument(
        "--req",
        action="append",
        default=[],
        metavar="GLOB",
        help="run only checks citing a matching requirement id (glob or prefix; repeatable)",
    )
    p.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME",
        help="test this optional feature; fails as 'Not testable' if the adapter lacks it",
    )
    p.add_argument("--strict", action="store_true", help="a SHOULD failure fails the run")
    p.add_argument("--expected-failures", type=Path, metavar="FILE", help="baseline (YAML)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--seed", type=int, help="hypothesis seed (default: random, reported)")
    p.add_argument("--report-json", type=Path, metavar="FILE")
    p.add_argument("--report-md", type=Path, metavar="FILE")
    p.add_argument(
        "-x",
        "--exitfirst",
        action="store_const",
        const=1,
        dest="maxfail",
        help="stop at the first failing check (same as --maxfail 1)",
    )
    p.add_argument(
        "--maxfail",
        type=int,
        metavar="N",
        help="stop after N failing checks; the report lists the checks that ran",
    )
    p.add_argument(
        "--no-shrink",
        action="store_true",
        help="report a failing property's first counterexample as found, without shrinking it "
        "(shrinking runs many more scenarios against the engine)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="pytest's verbose output")
    return p


def load_expected_failures(path: Path) -> dict[str, str]:
    """A YAML list of check ids, or a mapping of check id to reason."""
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if loaded is None:
        return {}
    if isinstance(loaded, list):
        return {str(item): "" for item in loaded}
    if isinstance(loaded, dict):
        return {str(k): str(v or "") for k, v in loaded.items()}
    raise ValueError(f"{path}: expected a YAML list or mapping of check ids")


@dataclass
class Outcome:
    results: list[CheckResult]
    expected: dict[str, str]
    strict: bool
    index: dict[str, dict[str, Any]]
    harness_errors: list[str] = field(default_factory=list)

    def level_of(self, result: CheckResult) -> str:
        levels = {self.index.get(r, {}).get("level", "MUST") for r in result.requirements}
        if not levels or "MUST" in levels:
            return "MUST"
        return "SHOULD" if "SHOULD" in levels else "MAY"

    @property
    def stale(self) -> list[str]:
        return sorted(r.id for r in self.results if r.id in self.expected and r.outcome == "passed")

    def unexpected(self, level: str) -> list[CheckResult]:
        return [
            r
            for r in self.results
            if r.outcome in FAILED and r.id not in self.expected and self.level_of(r) == level
        ]

    def exit_status(self) -> int:
        if self.harness_errors:
            return 2
        if self.unexpected("MUST") or self.stale:
            return 1
        if self.strict and self.unexpected("SHOULD"):
            return 1
        return 0

    def requirement_rows(self) -> list[dict[str, Any]]:
        by_req: dict[str, list[CheckResult]] = {}
        for result in self.results:
            for req in result.requirements:
                by_req.setdefault(req, []).append(result)
        ids = {i for i, e in self.index.items() if e.get("level") in ("MUST", "SHOULD")}
        rows: list[dict[str, Any]] = []
        for req in sorted(ids | set(by_req)):
            tests = by_req.get(req, [])
            outcomes = [
                "expected-failure" if t.outcome in FAILED and t.id in self.expected else t.outcome
                for t in tests
            ]
            if not tests:
                status = "not-run"
            elif any(o in ("failed", "error") for o in outcomes):
                status = "failed"
            elif "not-testable" in outcomes:
                status = "not-testable"
            elif "expected-failure" in outcomes:
                status = "expected-failure"
            elif all(o == "skipped" for o in outcomes):
                status = "not-run"
            else:
                status = "passed"
            rows.append(
                {
                    "id": req,
                    "level": self.index.get(req, {}).get("level", "MUST"),
                    "status": status,
                    "tests": [t.id for t in tests],
                }
            )
        return rows

    def summary(self, rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
        names = {
            "passed": "passed",
            "failed": "failed",
            "expected-failure": "expected_failures",
            "not-testable": "not_testable",
            "not-run": "not_run",
        }
        out = {level: dict.fromkeys(names.values(), 0) for level in ("MUST", "SHOULD")}
        for row in rows:
            if row["level"] in out:
                out[row["level"]][names[row["status"]]] += 1
        return out


def build_report(
    outcome: Outcome,
    *,
    url: str | None,
    info: dict[str, Any] | None,
    args: argparse.Namespace,
    seed: int | None,
    started: str,
) -> dict[str, Any]:
    rows = outcome.requirement_rows()
    return {
        "suite": {"name": "durable-workflows-conformance", "version": __version__},
        "target": {"url": url, "info": info},
        "profile": args.profile,
        "seed": seed,
        "strict": bool(args.strict),
        "selection": {"req": list(args.req), "features": list(args.feature)},
        "started_at": started,
        "finished_at": _now(),
        "exit_status": outcome.exit_status(),
        "summary": outcome.summary(rows),
        "requirements": rows,
        "tests": [
            {
                "id": r.id,
                "requirements": r.requirements,
                "outcome": r.outcome,
                "expected_failure": r.id in outcome.expected and r.outcome in FAILED,
                "duration_ms": r.duration_ms,
                "message": r.message,
                "examples": r.examples,
            }
            for r in outcome.results
        ],
        "stale": outcome.stale,
    }


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Durable Workflows conformance report",
        "",
        f"- target: `{report['target']['url']}`",
        f"- profile: {report['profile']}, seed: {report['seed']}, strict: {report['strict']}",
        f"- exit status: {report['exit_status']}",
    ]
    for level, counts in report["summary"].items():
        described = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items())
        lines.append(f"- {level}: {described}")
    if report["stale"]:
        lines.append("- stale expected-failure entries: " + ", ".join(report["stale"]))
    lines += ["", "| requirement | level | status | checks |", "| --- | --- | --- | --- |"]
    for row in report["requirements"]:
        checks = "<br>".join(f"`{t}`" for t in row["tests"]) or ""
        lines.append(f"| {row['id']} | {row['level']} | {row['status']} | {checks} |")
    return "\n".join(lines) + "\n"


class CollectionErrors:
    """Suite modules that cannot be collected (a harness error, also under ``-x``,
    where pytest then reports a test failure rather than an interruption)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.errors.append(f"cannot collect {report.nodeid or 'the suite'}")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["deployment"]:  # the stream server's permissions, not the engine
        from .deployment import main as deployment_main

        return deployment_main(arguments[1:])
    args = parser().parse_args(arguments)
    started = _now()
    url = args.target_url or os.environ.get(ENV_TARGET) or None
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    index = requirements_index()
    harness: list[str] = []
    expected: dict[str, str] = {}
    info: dict[str, Any] | None = None
    results: list[CheckResult] = []
    if args.expected_failures is not None:
        try:
            expected = load_expected_failures(args.expected_failures)
        except (OSError, ValueError, yaml.YAMLError) as error:
            harness.append(f"cannot read the expected-failures file: {error}")
    if url is None:
        harness.append(f"no target: give --target-url or set {ENV_TARGET}")
    elif not harness:
        try:
            info = Target(url).info()
        except HarnessError as error:
            harness.append(f"the adapter at {url} does not answer: {error}")
    if not harness:
        profile = args.profile
        if args.no_shrink:
            profile = f"{args.profile}-no-shrink"
            settings.register_profile(
                profile,
                parent=settings.get_profile(args.profile),
                phases=[p for p in Phase if p is not Phase.shrink],
            )
        plugin = ConformancePlugin(
            RunConfig(target_url=url, req=args.req, features=args.feature, profile=profile)
        )
        pytest_args = [
            str(SUITE_DIR),
            "-c",
            str(SUITE_DIR / "pytest.ini"),
            "--rootdir",
            str(SUITE_DIR),
            "--confcutdir",
            str(SUITE_DIR),
            f"--hypothesis-seed={seed}",
            "-W",
            "ignore::pytest.PytestAssertRewriteWarning",
            "-v" if args.verbose else "-q",
        ]
        if args.maxfail is not None:
            pytest_args.append(f"--maxfail={args.maxfail}")
        collection = CollectionErrors()
        code = pytest.main(pytest_args, plugins=[plugin, collection])
        results = sorted(plugin.results.values(), key=lambda r: r.id)
        harness.extend(plugin.harness_errors)
        harness.extend(collection.errors)
        if code == pytest.ExitCode.NO_TESTS_COLLECTED or (not results and code == 5):
            harness.append("no check matches the selection")
        elif code in (
            pytest.ExitCode.INTERRUPTED,
            pytest.ExitCode.INTERNAL_ERROR,
            pytest.ExitCode.USAGE_ERROR,
        ):
            harness.append(f"pytest ended with {code!r}")
    outcome = Outcome(results, expected, args.strict, index, harness)
    report = build_report(outcome, url=url, info=info, args=args, seed=seed, started=started)
    schemas.check("report", report)
    if args.report_json is not None:
        args.report_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.report_md is not None:
        args.report_md.write_text(render_markdown(report), encoding="utf-8")
    for problem in harness:
        print(f"conformance: harness error: {problem}", file=sys.stderr)
    for stale in outcome.stale:
        print(f"conformance: stale expected-failure entry (it passes now): {stale}")
    must, should = report["summary"]["MUST"], report["summary"]["SHOULD"]
    examples = sum(r.examples or 0 for r in results)
    print(
        f"conformance: seed {seed}, profile {args.profile}, {examples} generated examples; "
        "MUST requirements: "
        f"{must['passed']} passed, {must['failed']} failed, {must['not_testable']} not testable, "
        f"{must['expected_failures']} expected failures; SHOULD: {should['passed']} passed, "
        f"{should['failed']} failed; exit {outcome.exit_status()}"
    )
    return outcome.exit_status()


if __name__ == "__main__":
    sys.exit(main())
