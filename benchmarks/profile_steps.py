"""Where a step's time goes in ``dwf serve`` (docs/benchmarks.md, "Profile").

One process, as ``dwf serve --data DIR`` runs it: the embedded stream server on SQLite
behind uvicorn on a free 127.0.0.1 port, its own worker, and one run of ``--steps``
trivial sequential steps started over HTTP. It reports

- the requests the engine sent per step, by method and stream (counted where every
  request is routed, whether it came over HTTP or in-process);
- where the busy time went: every thread of the server runs under cProfile, and each
  function's own time is filed under the part it belongs to (the replay core, the
  stream server, SQLite, an HTTP stack...); waiting (select, locks, sleep) is left out.
  cProfile slows Python code more than C code, so the shares lean towards Python.

    .venv/bin/python benchmarks/profile_steps.py --steps 1000 --out profile.json

It is a measurement, not a test: numbers move with the machine's load.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import pstats
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from durable_workflows.core import Context, WorkflowRegistry
from durable_workflows.engine.app import ServeApp

#: (pattern in a frame's file name, bucket), first match from the innermost frame out.
BUCKETS = [
    ("durable_workflows/streams/server/storage", "stream server: SQLite storage"),
    ("sqlite3", "stream server: SQLite storage"),
    ("durable_workflows/streams/server/", "stream server: protocol"),
    ("durable_workflows/access/", "stream server: credentials and write checks"),
    ("durable_workflows/streams/client/", "engine: stream client"),
    ("durable_workflows/engine/bridge", "engine: in-process transport"),
    ("durable_workflows/core/", "engine: replay core"),
    ("durable_workflows/validate", "engine: message validation"),
    ("durable_workflows/schemas", "engine: message validation"),
    ("jsonschema", "engine: message validation"),
    ("durable_workflows/engine/", "engine: worker and runner"),
    ("httpx", "HTTP client (httpx, httpcore, h11)"),
    ("httpcore", "HTTP client (httpx, httpcore, h11)"),
    ("uvicorn", "HTTP server (uvicorn, h11)"),
    ("h11", "HTTP (h11, either side)"),
    ("starlette", "HTTP server (Starlette routing)"),
    ("json/", "JSON encoding and decoding"),
    ("asyncio", "event loop"),
    ("concurrent/futures", "thread pool"),
]
#: Built-ins a waiting thread sits in.
IDLE = ("select", "poll", "acquire", "sleep", "_wait_for_tstate_lock")


def sequential_registry(steps: int) -> WorkflowRegistry:
    registry = WorkflowRegistry()

    def one() -> int:
        return 1

    @registry.workflow("profile-seq")
    async def seq(ctx: Context, _: Any) -> int:
        total = 0
        for i in range(steps):
            total += await ctx.step(f"s{i}", one)
        return total

    return registry


class CountRequests:
    """ASGI middleware that counts requests by method and the kind of stream."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: collections.Counter[str] = collections.Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            stream = scope["path"].rsplit("/", 1)[-1]  # history, inbox, index, status...
            who = "client" if (b"x-profile-client", b"1") in scope["headers"] else "engine"
            self.counts[f"{who} {scope['method']} {stream}"] += 1
        await self.app(scope, receive, send)


class ThreadProfiles:
    """A cProfile of every thread started while it is installed (the server's, the
    worker's, the step pool's), summed by :data:`BUCKETS` on each function's own time."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        #: Own seconds per function (``file:line(name)``), summed over threads.
        self.functions: collections.Counter[str] = collections.Counter()

    def install(self) -> None:
        def begin(*_: Any) -> None:
            profile = cProfile.Profile()
            self.profiles.append(profile)
            profile.enable()  # replaces this hook in the new thread

        threading.setprofile(begin)

    def buckets(self) -> collections.Counter[str]:
        threading.setprofile(None)  # type: ignore[arg-type]
        spent: collections.Counter[str] = collections.Counter()
        for profile in self.profiles:
            stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
            for (filename, line, function), (_, _, own, _, _) in stats.items():
                bucket = bucket_of(filename, function)
                spent[bucket] += own
                if bucket != "idle":
                    short = "/".join(filename.replace("\\", "/").split("/")[-2:])
                    self.functions[f"{short}:{line}({function})"] += own
        spent.pop("idle", None)
        return spent


def bucket_of(filename: str, function: str) -> str:
    if filename == "~":  # a built-in: its name says what it is
        if any(word in function for word in IDLE) or function.startswith("<method 'get' of"):
            return "idle"
        if "sqlite3" in function:
            return "stream server: SQLite storage"
        if "json" in function or "encode" in function or "decode" in function:
            return "JSON encoding and decoding"
        if "socket" in function or "recv" in function or "send" in function:
            return "sockets (HTTP, and wake-ups between event loops)"
        return "built-ins (other)"
    name = filename.replace("\\", "/")
    for pattern, bucket in BUCKETS:
        if pattern in name:
            return bucket
    return "other"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--top", type=int, default=0, help="also list the N costliest functions")
    args = parser.parse_args(argv)

    profiles = ThreadProfiles()
    profiles.install()  # before any thread of the server starts
    data = Path(tempfile.mkdtemp(prefix="dwf-profile-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = ServeApp(base, sequential_registry(args.steps), data_dir=data, namespace="profile")
    counter = CountRequests(app._router)
    app._router = counter  # type: ignore[assignment]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    ns = f"{base}/v1/stream/profile"
    with httpx.Client(timeout=30, headers={"x-profile-client": "1"}) as http:
        for _ in range(200):
            try:
                if http.get(f"{ns}/index").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        counter.counts.clear()
        began = time.monotonic()
        run_id = "profile-1"
        request = {
            "type": "start",
            "key": run_id,
            "value": {"run_id": run_id, "workflow": "profile-seq", "input": None},
            "headers": {"operation": "insert"},
        }
        http.post(f"{ns}/index", json=request).raise_for_status()
        offset, ended = "-1", False
        while not ended and time.monotonic() - began < args.timeout:
            # A catch-up read every 50 ms: the client costs the server little.
            time.sleep(0.05)
            reply = http.get(f"{ns}/runs/{run_id}/history", params={"offset": offset})
            if reply.status_code == 404:
                continue
            offset = reply.headers.get("stream-next-offset", offset)
            ended = reply.headers.get("stream-closed") == "true"
        took = time.monotonic() - began
    server.should_exit = True
    serving.join(10)
    ours = {k[7:]: v for k, v in counter.counts.items() if k.startswith("engine ")}
    reader = {k[7:]: v for k, v in counter.counts.items() if k.startswith("client ")}
    engine_requests = sum(ours.values())
    spent = profiles.buckets()
    busy = sum(spent.values())
    report = {
        "steps": args.steps,
        "ended": ended,
        "seconds": round(took, 3),
        "steps_per_second": round(args.steps / took, 1),
        "engine_requests_per_step": round(engine_requests / args.steps, 3),
        "requests": dict(sorted(ours.items())),
        "reader_requests": reader,
        "busy_seconds": round(busy, 3),
        "busy_share": {bucket: round(100.0 * n / busy, 1) for bucket, n in spent.most_common()},
    }
    if args.top:
        report["top_functions_ms_per_step"] = {
            name: round(1000.0 * n / args.steps, 3)
            for name, n in profiles.functions.most_common(args.top)
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0 if ended else 1


if __name__ == "__main__":
    raise SystemExit(main())
