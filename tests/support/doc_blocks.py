"""Doc-test harness: the fenced code blocks of README.md and docs/*.md, run as printed.

Each block says what the harness does with it by an HTML comment on the line before
its fence (the vocabulary is documented in docs/getting-started.md):

``<!-- doc-test: run -->``
    Python is executed in a fresh interpreter; a shell block (``sh``, ``bash``,
    ``console``) is run by bash. Every command must succeed, and a ``console``
    block's printed output must be what the commands print.
``<!-- doc-test: parse -->``
    Every ``dwf`` command of the block is checked against the CLI's argument parser,
    not run (for blocks that name the reader's own module, port or files).
``<!-- doc-test: output [FILE] -->``
    A ``text`` or ``json`` block is what the page's previous ``run`` block printed
    (a server's ``ready`` line for a block that started one); with FILE, what that
    file starts with. A line ``...`` stands for any lines.
``<!-- doc-test: skip REASON -->``
    Not run; the reason is required.

A ``run`` marker may span lines and add ``given: ...`` lines: set-up the page takes
for granted (a file, a variable), run before the block like its own lines but not
shown on the page.

The blocks of one page run in order, in one scratch directory that stands for the
clone (the repository's tracked top-level files copied, its directories linked, and
``.venv``; so what the blocks write at the top, ``history.json``, ``.dwf/``,
``generated/``, stays out of the repository) with one shell environment: variables
assigned in one shell block are set in the later ones, as in one terminal session.
Three kinds of shell lines are not run as printed:

* set-up lines (``make install``, ``make test``, ``make peers``, ``pip install``),
  exercised by CI, are not run at all;
* a line that starts a server (``make run``, ``dwf serve``, ``dwf streams serve``;
  ``make run`` stands for the last command of its recipe, ``make -n run``) is started
  in the background with ``--port 0`` on 127.0.0.1 and its ``ready`` line awaited; it
  replaces the page's previous server and is stopped (Ctrl-C) when the page ends;
* while a server runs, every ``127.0.0.1:PORT`` (any number, or the word ``PORT``) in
  the page's later blocks means that server: its real port is substituted.

Durations such as ``10.82s`` are not compared.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import REPO_ROOT

#: Languages whose blocks must carry a marker: runnable unless they say otherwise.
PYTHON = frozenset({"python", "py"})
SHELL = frozenset({"sh", "bash", "shell"})
CONSOLE = frozenset({"console"})
MARKED = PYTHON | SHELL | CONSOLE

VERBS = ("run", "parse", "output", "skip")

SHELL_TIMEOUT = 120.0
PYTHON_TIMEOUT = 60.0
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

SETUP_LINE = re.compile(r"^(make\s+(install|test|peers)\b|(python3?\s+-m\s+)?pip3?\s+install\b)")
SERVER_LINE = re.compile(r"^(make\s+run\b|(\S*/)?dwf\s+(streams\s+)?serve\b)")
LOCAL_URL = re.compile(r"\b(127\.0\.0\.1|localhost):(?:\d+|PORT)\b")
DURATION = re.compile(r"\b\d+\.\d+s\b")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")

#: Top-level entries of the repository the scratch directory leaves out.
NOT_COPIED = frozenset(
    {".git", ".dwf", "generated", "site", "dist", "build", ".pytest_cache", ".mypy_cache"}
    | {".ruff_cache", ".hypothesis"}
)

#: Runs a block of Python in a fresh interpreter: its line numbers are the Markdown's.
PYTHON_RUNNER = """\
import json, sys
job = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
if job["given"]:
    exec(compile(job["given"], job["file"] + " (given)", "exec"), namespace)
exec(compile("\\n" * job["line"] + job["code"], job["file"], "exec"), namespace)
"""


class DocBlockError(AssertionError):
    """A block did not do what its page says."""


@dataclass(frozen=True)
class Marker:
    verb: str
    argument: str = ""
    given: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block:
    """One fenced block: ``line`` is the 1-based line of its opening fence."""

    page: str
    line: int
    language: str
    code: str
    marker: Marker | None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


# ---------------------------------------------------------------------- reading pages


def _marker_before(lines: list[str], fence: int) -> Marker | None:
    """The ``doc-test`` comment that ends on the line before ``lines[fence]``, if any."""
    if fence == 0 or not lines[fence - 1].strip().endswith("-->"):
        return None
    start = fence - 1
    while start >= 0 and "<!--" not in lines[start]:
        start -= 1
    if start < 0:
        return None
    text = "\n".join(lines[start:fence]).strip()
    body = text.removeprefix("<!--").removesuffix("-->").strip()
    if not body.startswith("doc-test:"):
        return None
    first, *rest = body.removeprefix("doc-test:").strip().split("\n")
    verb, _, argument = first.strip().partition(" ")
    problems: list[str] = []
    given: list[str] = []
    for line in rest:
        stripped = line.strip()
        if stripped.startswith("given:"):
            given.append(stripped.removeprefix("given:").strip())
        elif stripped:
            problems.append(f"unexpected marker line {stripped!r} (only 'given: ...' lines)")
    return Marker(verb, argument.strip(), tuple(given), tuple(problems))


def find_blocks(text: str, page: str) -> list[Block]:
    """Every fenced block of a Markdown text, with its marker."""
    lines = text.split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        body = [line[indent:] if line[:indent].isspace() else line for line in lines[i + 1 : end]]
        code = "\n".join(body) + "\n" if body else ""
        language = opening["info"].strip("{}.").lower()
        blocks.append(Block(page, i + 1, language, code, _marker_before(lines, i)))
        i = end + 1
    return blocks


def page_blocks(page: str) -> list[Block]:
    """The blocks of ``page``, a path relative to the repository root."""
    return find_blocks((REPO_ROOT / page).read_text(encoding="utf-8"), page)


def marker_problems(block: Block) -> list[str]:
    """What is wrong with a block's marker (a missing one where one is required)."""
    marker = block.marker
    if marker is None:
        if block.language in MARKED:
            return [
                f"{block.where}: a {block.language} block without a marker: put "
                "<!-- doc-test: run --> (or parse, or skip REASON) on the line before it"
            ]
        return []
    problems = [f"{block.where}: {problem}" for problem in marker.problems]
    language = block.language
    if marker.verb not in VERBS:
        problems.append(f"{block.where}: unknown marker {marker.verb!r}: one of {VERBS}")
    elif marker.verb == "skip" and not marker.argument:
        problems.append(f"{block.where}: doc-test: skip needs a reason")
    elif marker.verb == "run" and language not in MARKED:
        problems.append(f"{block.where}: cannot run a {language or 'plain'} block")
    elif marker.verb == "parse" and language not in SHELL:
        problems.append(f"{block.where}: parse checks shell blocks only")
    elif marker.verb == "output" and language in MARKED:
        problems.append(f"{block.where}: output marks a text or json block, not {language}")
    if marker.verb != "run" and marker.given:
        problems.append(f"{block.where}: given: lines belong to a run block")
    if marker.verb in ("run", "parse") and marker.argument:
        problems.append(f"{block.where}: {marker.verb} takes no argument: {marker.argument!r}")
    return problems


# ---------------------------------------------------------------------- shell lines


def logical_lines(code: str, first_line: int) -> Iterator[tuple[int, str]]:
    """The block's commands with their Markdown line numbers: a backslash at the end of
    a line, or a quote still open, continues the command on the next line."""
    pending: list[str] = []
    start = first_line
    for number, line in enumerate(code.split("\n"), start=first_line):
        if not pending:
            start = number
        pending.append(line)
        text = "\n".join(pending)
        if text.endswith("\\"):
            continue
        try:
            shlex.split(text, comments=True)
        except ValueError:  # a quotation still open
            continue
        pending = []
        if text.strip():
            yield start, text
    if pending:
        yield start, "\n".join(pending)


def words(command: str) -> list[str]:
    """A command's words, as the shell splits them (no expansion)."""
    return shlex.split(command.replace("\\\n", " "), comments=True)


def _is_comment(text: str) -> bool:
    try:
        return not words(text)
    except ValueError:  # bash will say what is wrong with it
        return False


def kind_of(command: str) -> str:
    """``setup``, ``server``, ``comment`` or ``shell``."""
    stripped = command.strip()
    if _is_comment(stripped):
        return "comment"
    if SETUP_LINE.match(stripped):
        return "setup"
    if SERVER_LINE.match(stripped) and not {"-h", "--help"} & set(words(stripped)):
        return "server"
    return "shell"


def console_commands(code: str, first_line: int) -> tuple[list[tuple[int, str]], str]:
    """A console block's ``$ `` commands (with continuation lines) and the output printed
    after them."""
    commands: list[tuple[int, str]] = []
    output: list[str] = []
    lines = code.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            output.append(line)
            i += 1
            continue
        number, text = first_line + i, line[2:]
        while True:
            try:
                shlex.split(text, comments=True)
                complete = not text.endswith("\\")
            except ValueError:
                complete = False
            if complete or i + 1 >= len(lines):
                break
            i += 1
            text += "\n" + lines[i]
        commands.append((number, text))
        i += 1
    return commands, "\n".join(output).strip("\n")


# ---------------------------------------------------------------------- output


def _normal(line: str) -> str:
    return DURATION.sub("<duration>", line.rstrip())


def output_matches(expected: str, actual: str, *, prefix: bool = False) -> bool:
    """``actual`` is what ``expected`` shows: line by line, a line ``...`` standing for
    any lines, durations not compared; with ``prefix``, ``actual`` may go on."""
    pattern = "".join(
        r"(?:.*\n)*?" if line.strip() == "..." else re.escape(_normal(line)) + r"\n"
        for line in expected.strip("\n").split("\n")
    )
    text = "".join(_normal(line) + "\n" for line in actual.strip("\n").split("\n"))
    return re.fullmatch(pattern + (r"(?:.*\n)*" if prefix else ""), text) is not None


def _diff(expected: str, actual: str) -> str:
    return "\n".join(
        difflib.unified_diff(
            expected.strip("\n").split("\n"),
            actual.strip("\n").split("\n"),
            "the page shows",
            "the commands print",
            lineterm="",
        )
    )


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


# ---------------------------------------------------------------------- parse


def _parser_for(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    from durable_workflows.cli import build_parser

    if argv[:2] == ["conformance", "deployment"]:
        from durable_workflows_conformance.deployment import parser as deployment_parser

        return deployment_parser(), argv[2:]
    if argv[:1] == ["conformance"]:
        from durable_workflows_conformance.cli import parser as conformance_parser

        return conformance_parser(), argv[1:]
    return build_parser(), argv


def parse_problem(command: str) -> str | None:
    """Why the CLI would refuse ``command`` (a ``dwf`` command line), or None."""
    argv = words(command)
    if not argv or Path(argv[0]).name != "dwf":
        return f"parse checks dwf commands only, not {command.strip()!r}"
    parser, arguments = _parser_for(argv[1:])
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(arguments)
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                return errors.getvalue().strip() or f"exit status {exit_.code}"
    return None


# ---------------------------------------------------------------------- scratch


def _tracked_top_level() -> set[str] | None:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {path.split("/")[0] for path in listing.decode().split("\0") if path}


def make_scratch(scratch: Path) -> None:
    """A stand-in for a clone in ``scratch``: the repository's top-level directories as
    links, its files as copies (so a command writing ``history.json`` writes here), and
    ``.venv`` the virtualenv running the tests."""
    tracked = _tracked_top_level()
    scratch.mkdir(parents=True, exist_ok=True)
    for entry in REPO_ROOT.iterdir():
        name = entry.name
        if name in NOT_COPIED or name == ".venv":
            continue
        if tracked is not None and name not in tracked:
            continue
        if entry.is_dir():
            (scratch / name).symlink_to(entry, target_is_directory=True)
        elif entry.is_file():
            shutil.copy2(entry, scratch / name)
    (scratch / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)


def base_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DWF_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["COLUMNS"] = "80"  # pytest's progress line, as the conformance page shows it
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


# ---------------------------------------------------------------------- a page


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    ready_line: str
    port: int
    log_dir: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Ctrl-C, as the pages say
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


@dataclass
class PageSession:
    """The state one page's blocks share: directory, environment, server, last output."""

    scratch: Path
    state: Path
    env: dict[str, str] = field(default_factory=base_environment)
    cwd: Path | None = None
    server: Server | None = None
    last_output: str | None = None
    servers_started: int = 0

    def __post_init__(self) -> None:
        self.cwd = self.cwd or self.scratch
        self.state.mkdir(parents=True, exist_ok=True)

    # -- the page's blocks

    def check(self, block: Block) -> str:
        """Do what the block's marker says; returns what was done (for the test log)."""
        problems = marker_problems(block)
        if problems:
            raise DocBlockError("\n".join(problems))
        marker = block.marker
        if marker is None or marker.verb == "skip":
            return "skipped"
        if marker.verb == "parse":
            return self._parse(block)
        if marker.verb == "output":
            return self._output(block, marker.argument)
        if block.language in PYTHON:
            self.last_output = self._python(block, marker.given)
        elif block.language in CONSOLE:
            commands, expected = console_commands(block.code, block.line + 1)
            self.last_output = self._shell(block, commands, marker.given)
            self._compare(block, self.localize(expected), self.last_output, prefix=False)
        else:
            commands = list(logical_lines(block.code, block.line + 1))
            self.last_output = self._shell(block, commands, marker.given)
        return "ran"

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> PageSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- substitution

    def localize(self, text: str) -> str:
        """``127.0.0.1:PORT`` means the page's running server."""
        if self.server is None:
            return text
        return LOCAL_URL.sub(rf"\g<1>:{self.server.port}", text)

    # -- python

    def _python(self, block: Block, given: tuple[str, ...]) -> str:
        job = {
            "file": block.page,
            "line": block.line,
            "given": self.localize("\n".join(given)),
            "code": self.localize(block.code),
        }
        try:
            done = subprocess.run(
                [sys.executable, "-c", PYTHON_RUNNER],
                input=json.dumps(job),
                cwd=self.cwd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=PYTHON_TIMEOUT,
            )
        except subprocess.TimeoutExpired as error:
            raise DocBlockError(f"{block.where}: still running after {error.timeout} s") from None
        if done.returncode != 0:
            raise DocBlockError(
                f"{block.where}: the python block failed (exit {done.returncode})\n"
                f"{_tail(done.stderr)}"
            )
        return done.stdout

    # -- shell

    def _shell(self, block: Block, commands: list[tuple[int, str]], given: tuple[str, ...]) -> str:
        """Run the given lines, then the block's; returns what the block's lines print."""
        self._lines(block, [(block.line, line) for line in given])
        output, ran = self._lines(block, commands)
        if ran == 0:
            raise DocBlockError(
                f"{block.where}: nothing to run (set-up lines only): mark it "
                "<!-- doc-test: skip set-up, exercised by CI -->"
            )
        return output

    def _lines(self, block: Block, commands: list[tuple[int, str]]) -> tuple[str, int]:
        """Run shell lines, starting servers in the background; (their output, how many
        ran)."""
        output: list[str] = []
        pending: list[tuple[int, str]] = []
        ran = 0
        for number, command in commands:
            kind = kind_of(command)
            if kind == "server":
                if pending:
                    output.append(self._bash(block, pending))
                    pending = []
                output.append(self._start_server(block, number, command) + "\n")
                ran += 1
            elif kind == "shell":
                pending.append((number, command))
                ran += 1
        if pending:
            output.append(self._bash(block, pending))
        return "".join(output), ran

    def _bash(self, block: Block, commands: list[tuple[int, str]]) -> str:
        env_file, cwd_file = self.state / "env", self.state / "cwd"
        script = "\n".join(
            [
                "set -a -e -o pipefail",  # -a: assignments reach the later blocks
                "set -x",
                *(self.localize(command) for _, command in commands),
                "set +x",
                f"pwd > {shlex.quote(str(cwd_file))}",
                f"env -0 > {shlex.quote(str(env_file))}",
            ]
        )
        try:
            done = subprocess.run(
                ["bash", "-c", script],
                cwd=self.cwd,
                env=self.env,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=SHELL_TIMEOUT,
            )
        except subprocess.TimeoutExpired as error:
            raise DocBlockError(
                f"{block.where}: line {commands[0][0]} on: still running after {error.timeout} s"
            ) from None
        if done.returncode != 0:
            traced = [line for line in done.stderr.split("\n") if line.startswith("+ ")]
            last = traced[-1][2:] if traced else "?"
            raise DocBlockError(
                f"{block.where}: a command of lines {commands[0][0]}-{commands[-1][0]} failed "
                f"(exit {done.returncode}): {last}\nstdout:\n{_tail(done.stdout)}\n"
                f"stderr (bash -x):\n{_tail(done.stderr)}"
            )
        self.cwd = Path(cwd_file.read_text().strip())
        env: dict[str, str] = {}
        for item in env_file.read_bytes().decode(errors="replace").split("\0"):
            key, sep, value = item.partition("=")
            if sep and key not in ("_", "SHLVL", "OLDPWD", "PWD"):
                env[key] = value
        self.env = env
        return done.stdout

    # -- servers

    def server_argv(self, block: Block, number: int, command: str) -> list[str]:
        text = command.strip()
        if text.startswith("make"):
            # Under an outer make (CI runs `make test`), MAKEFLAGS/MAKELEVEL would
            # make this one print "make[1]: Leaving directory" after the recipe.
            quiet_env = {
                k: v for k, v in self.env.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")
            }
            planned = subprocess.run(
                ["make", "-n", "--no-print-directory", *words(text)[1:]],
                cwd=self.cwd,
                env=quiet_env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if planned.returncode != 0 or not planned.stdout.strip():
                raise DocBlockError(
                    f"{block.where}: `make -n` of {text!r} failed: {planned.stderr}"
                )
            text = planned.stdout.strip().split("\n")[-1]
        argv = words(text)
        for i, arg in enumerate(argv):
            if arg == "--host" and i + 1 < len(argv) and argv[i + 1] not in ("127.0.0.1", "::1"):
                raise DocBlockError(f"{block.page}:{number}: servers run on loopback only")
        if "--port" in argv[:-1]:
            argv[argv.index("--port") + 1] = "0"
        else:
            argv = [a if not a.startswith("--port=") else "--port=0" for a in argv]
            if "--port=0" not in argv:
                argv += ["--port", "0"]
        program = argv[0]
        if "/" not in program:
            found = shutil.which(program, path=self.env.get("PATH"))
            if found is None:
                raise DocBlockError(f"{block.page}:{number}: {program} is not on PATH")
            argv[0] = found
        return argv

    def _start_server(self, block: Block, number: int, command: str) -> str:
        argv = self.server_argv(block, number, command)
        self.close()  # a server line replaces the page's previous server
        self.servers_started += 1
        log_dir = self.state / f"server-{self.servers_started}"
        log_dir.mkdir()
        out_path, err_path = log_dir / "stdout.log", log_dir / "stderr.log"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            process = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            for line in out_path.read_text(errors="replace").splitlines():
                if line.startswith("ready "):
                    url = line.split()[1]
                    port = int(url.rsplit(":", 1)[1].split("/")[0])
                    self.server = Server(process, line, port, log_dir)
                    return line
            time.sleep(0.05)
        Server(process, "", 0, log_dir).stop()
        raise DocBlockError(
            f"{block.page}:{number}: `{' '.join(argv)}` printed no ready line "
            f"(exit {process.poll()})\n{_tail(err_path.read_text(errors='replace'))}"
        )

    # -- parse and output

    def _parse(self, block: Block) -> str:
        problems = []
        for number, command in logical_lines(block.code, block.line + 1):
            if kind_of(command) in ("setup", "comment"):
                continue
            problem = parse_problem(command)
            if problem is not None:
                problems.append(f"{block.page}:{number}: {problem}")
        if problems:
            raise DocBlockError("\n".join(problems))
        return "parsed"

    def _output(self, block: Block, file: str) -> str:
        expected = self.localize(block.code)
        if file:
            assert self.cwd is not None
            path = self.cwd / file
            if not path.is_file():
                raise DocBlockError(f"{block.where}: no file {file} was written")
            actual = path.read_text(errors="replace")
        elif self.last_output is None:
            raise DocBlockError(f"{block.where}: output follows no run block on this page")
        else:
            actual = self.last_output
        if block.language == "json":
            try:
                same = json.loads(expected) == json.loads(actual)
            except ValueError as error:
                raise DocBlockError(f"{block.where}: not JSON: {error}\n{actual}") from None
            if not same:
                raise DocBlockError(f"{block.where}: other JSON\n{_diff(expected, actual)}")
        else:
            self._compare(block, expected, actual, prefix=bool(file))
        return "compared"

    def _compare(self, block: Block, expected: str, actual: str, *, prefix: bool) -> None:
        if not output_matches(expected, actual, prefix=prefix):
            raise DocBlockError(
                f"{block.where}: the output differs from the page\n{_diff(expected, actual)}"
            )


def run_page(
    page: str, scratch: Path, blocks: list[Block], log: Callable[[str], None] = print
) -> None:
    """Check every block of a page in order; stop every server it started."""
    make_scratch(scratch / "clone")
    with PageSession(scratch / "clone", scratch / "state") as session:
        for block in blocks:
            started = time.monotonic()
            done = session.check(block)
            log(f"{block.where} {block.language} {done} in {time.monotonic() - started:.1f} s")
