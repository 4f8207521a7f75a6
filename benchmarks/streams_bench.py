"""Throughput of our embedded Durable Streams server next to the Node reference server.

    python benchmarks/streams_bench.py --out streams-bench.json

Starts, on this machine and in this run, our server (``dwf streams serve``, in
memory and on SQLite) and the Node reference server (``@durable-streams/server``,
in memory and file-backed), each on a free 127.0.0.1 port, and measures with one
writer over our sync client (the same client for every server):

- unbatched appends: one JSON message per POST, sequential;
- batched appends: ``--batch`` messages per POST (one JSON array), sequential;
- catch-up read: a stream of ``--read-messages`` messages read from the start
  until up-to-date (one ``Stream.read()``), messages/s and MB/s of message payload
  (the compact JSON of the messages, as appended).

Each measurement is repeated ``--rounds`` times (the server order rotates every
round); the report gives every round, the medians, and the ratio of each of our
servers to its Node counterpart (ours / Node: above 1 means ours is faster).
Counts are fixed and every measurement also stops at ``--max-seconds``, so a run
is bounded. This is a benchmark, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the server harnesses live in tests/support
    sys.path.insert(0, str(ROOT))

from tests.support.embedded_server import embedded_server  # noqa: E402
from tests.support.node_server import node_server  # noqa: E402

from durable_workflows.access import KeySet, mint_engine_token  # noqa: E402
from durable_workflows.streams import Stream, StreamClient  # noqa: E402

METRICS = (
    "unbatched_appends_per_s",
    "batched_messages_per_s",
    "batched_requests_per_s",
    "read_messages_per_s",
    "read_mb_per_s",
)
#: Our server -> the Node server it is compared with (same kind of storage).
PAIRS = {
    "ours-memory": "node-memory",
    "ours-sqlite": "node-file",
    # The cost of write permissions: the same server checking an engine credential.
    "ours-sqlite-auth": "ours-sqlite",
}


@dataclass(frozen=True)
class Config:
    rounds: int
    unbatched: int
    batch: int
    batches: int
    read_messages: int
    message_bytes: int
    max_seconds: float
    compression: bool
    read_repeats: int


def message(i: int, size: int) -> dict[str, Any]:
    """A State-Protocol-shaped change message of about ``size`` bytes of JSON."""
    base: dict[str, Any] = {
        "type": "step",
        "key": f"step-{i}",
        "value": {"name": f"step-{i}", "seq": i, "status": "completed", "result": ""},
        "headers": {"operation": "update", "timestamp": "2026-11-24T10:00:00.000Z"},
    }
    pad = size - len(json.dumps(base, separators=(",", ":")))
    base["value"]["result"] = "x" * max(0, pad)
    return base


def payload_size(messages: list[Any]) -> int:
    return sum(len(json.dumps(m, separators=(",", ":")).encode()) for m in messages)


def fresh(client: StreamClient) -> Stream:
    stream = client.stream(f"bench/{uuid.uuid4().hex}")
    stream.create_json()
    return stream


def bench_unbatched(client: StreamClient, cfg: Config) -> float:
    stream = fresh(client)
    messages = [message(i, cfg.message_bytes) for i in range(cfg.unbatched)]
    deadline = time.perf_counter() + cfg.max_seconds
    start = time.perf_counter()
    done = 0
    for m in messages:
        stream.append_json(m)
        done += 1
        if time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    stream.delete()
    return done / elapsed


def bench_batched(client: StreamClient, cfg: Config) -> tuple[float, float]:
    stream = fresh(client)
    batches = [
        [message(b * cfg.batch + i, cfg.message_bytes) for i in range(cfg.batch)]
        for b in range(cfg.batches)
    ]
    deadline = time.perf_counter() + cfg.max_seconds
    start = time.perf_counter()
    done = 0
    for batch in batches:
        stream.append_json_batch(batch)
        done += 1
        if time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    stream.delete()
    return done * cfg.batch / elapsed, done / elapsed


def prepare_read(client: StreamClient, cfg: Config) -> tuple[Stream, int]:
    stream = fresh(client)
    total = 0
    for start in range(0, cfg.read_messages, 1000):
        chunk = [
            message(i, cfg.message_bytes)
            for i in range(start, min(start + 1000, cfg.read_messages))
        ]
        stream.append_json_batch(chunk)
        total += payload_size(chunk)
    return stream, total


def bench_read(
    client: StreamClient, stream: Stream, payload: int, cfg: Config
) -> tuple[float, float]:
    start = time.perf_counter()
    result = stream.read()
    elapsed = time.perf_counter() - start
    if len(result.items) != cfg.read_messages:
        raise RuntimeError(
            f"read {len(result.items)} messages from {stream.url}, wrote {cfg.read_messages}"
        )
    return len(result.items) / elapsed, payload / elapsed / 1e6


def response_encoding(client: StreamClient, stream: Stream) -> str:
    """The Content-Encoding a catch-up read comes back with (identity if none)."""
    response = client._http.get(stream.url, params={"offset": "-1"}, headers=client._headers)
    encoding: str = response.headers.get("content-encoding", "identity")
    return encoding


def measure(kind: str, client: StreamClient, cfg: Config) -> dict[str, float]:
    if kind == "unbatched":
        return {"unbatched_appends_per_s": bench_unbatched(client, cfg)}
    if kind == "batched":
        messages, requests = bench_batched(client, cfg)
        return {"batched_messages_per_s": messages, "batched_requests_per_s": requests}
    stream, payload = prepare_read(client, cfg)
    rates = [bench_read(client, stream, payload, cfg) for _ in range(cfg.read_repeats)]
    stream.delete()
    return {
        "read_messages_per_s": statistics.median(r[0] for r in rates),
        "read_mb_per_s": statistics.median(r[1] for r in rates),
    }


def warm_up(client: StreamClient) -> None:
    stream = fresh(client)
    for i in range(50):
        stream.append_json(message(i, 64))
    stream.append_json_batch([message(i, 64) for i in range(100)])
    stream.read()
    stream.delete()


def servers(tmp: Path) -> dict[str, Callable[[], AbstractContextManager[Any]]]:
    return {
        "ours-memory": lambda: embedded_server(long_poll_timeout=1.0),
        "ours-sqlite": lambda: embedded_server(data_dir=tmp / "ours", long_poll_timeout=1.0),
        "ours-sqlite-auth": lambda: embedded_server(
            data_dir=tmp / "ours-auth", long_poll_timeout=1.0, auth=True
        ),
        "node-memory": lambda: node_server(long_poll_timeout_ms=1000),
        "node-file": lambda: node_server(long_poll_timeout_ms=1000, data_dir=tmp / "node"),
    }


def version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def node_package_version() -> str:
    package = ROOT / "peers/node_modules/@durable-streams/server/package.json"
    with contextlib.suppress(OSError, ValueError):
        return str(json.loads(package.read_text())["version"])
    return "unknown"


def summary(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        "median": {key: statistics.median(r[key] for r in rounds) for key in METRICS},
        "min": {key: min(r[key] for r in rounds) for key in METRICS},
        "max": {key: max(r[key] for r in rounds) for key in METRICS},
    }


def markdown(report: dict[str, Any]) -> str:
    """Medians with the (min-max) of the rounds, then the ratios of the medians."""
    names = list(report["servers"])
    pairs = [(a, b) for a, b in PAIRS.items() if f"{a}/{b}" in report["ratios"]]

    def num(value: float, key: str) -> str:
        return f"{value:,.1f}" if key == "read_mb_per_s" else f"{value:,.0f}"

    lines = [
        "| median (min-max) | "
        + " | ".join(names)
        + "".join(f" | {a} / {b}" for a, b in pairs)
        + " |",
        "| --- |" + " ---: |" * (len(names) + len(pairs)),
    ]
    for key in METRICS:
        cells = []
        for name in names:
            med, lo, hi = (report["servers"][name][k][key] for k in ("median", "min", "max"))
            cells.append(f"{num(med, key)} ({num(lo, key)}-{num(hi, key)})")
        ratios = [f"{report['ratios'][f'{a}/{b}'][key]:.2f}" for a, b in pairs]
        lines.append(f"| {key} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="write the JSON report here")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--unbatched", type=int, default=1000, help="appends per round")
    parser.add_argument("--batch", type=int, default=100, help="messages per batched append")
    parser.add_argument("--batches", type=int, default=100, help="batched appends per round")
    parser.add_argument("--read-messages", type=int, default=20_000)
    parser.add_argument(
        "--read-repeats",
        type=int,
        default=3,
        help="catch-up reads of the stream per round (their median counts)",
    )
    parser.add_argument("--message-bytes", type=int, default=200)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="cap on each measurement (the rate is over what was done)",
    )
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="send Accept-Encoding: identity (the Node server gzips reads)",
    )
    parser.add_argument("--only", nargs="*", default=None, help="servers to run (default all)")
    args = parser.parse_args(argv)
    cfg = Config(
        args.rounds,
        args.unbatched,
        args.batch,
        args.batches,
        args.read_messages,
        args.message_bytes,
        args.max_seconds,
        not args.no_compression,
        args.read_repeats,
    )
    headers = {} if cfg.compression else {"Accept-Encoding": "identity"}

    with (
        tempfile.TemporaryDirectory(prefix="streams-bench-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        factories = servers(tmp)
        names = [n for n in factories if args.only is None or n in args.only]
        clients: dict[str, StreamClient] = {}
        encodings: dict[str, str] = {}
        for name in names:
            server = stack.enter_context(factories[name]())
            credential = {}
            if getattr(server, "keys", None):  # authentication on: the engine's credential
                token = mint_engine_token(KeySet.load(server.keys), namespace="*")
                credential = {"Authorization": f"Bearer {token}"}
            client = stack.enter_context(
                StreamClient(server.stream_base, headers={**headers, **credential}, timeout=60)
            )
            warm_up(client)
            probe, _ = prepare_read(client, Config(**{**cfg.__dict__, "read_messages": 50}))
            encodings[name] = response_encoding(client, probe)
            probe.delete()
            clients[name] = client
        results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        started = time.perf_counter()
        # Measurement by measurement, every server in turn (rotating who goes first),
        # so a busy moment on the machine hits all servers alike.
        for round_no in range(cfg.rounds):
            shift = round_no % len(names)
            order = names[shift:] + names[:shift]
            row: dict[str, dict[str, float]] = {n: {} for n in names}
            for kind in ("unbatched", "batched", "read"):
                for name in order:
                    row[name].update(measure(kind, clients[name], cfg))
            for name in names:
                results[name].append(row[name])
                print(
                    f"round {round_no + 1}/{cfg.rounds} {name}: "
                    + ", ".join(f"{k}={v:,.1f}" for k, v in row[name].items()),
                    file=sys.stderr,
                    flush=True,
                )
        wall = time.perf_counter() - started

    report: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "command": "python benchmarks/streams_bench.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "python": platform.python_version(),
            "node": version(["node", "--version"]),
            "node_server_package": node_package_version(),
            "repository_commit": version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
            + ("+dirty" if version(["git", "-C", str(ROOT), "status", "--porcelain"]) else ""),
            "platform": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "wall_seconds": round(wall, 1),
            "read_content_encoding": encodings,
        },
        "config": cfg.__dict__,
        "servers": {
            name: {"rounds": rounds, **summary(rounds)} for name, rounds in results.items()
        },
        "ratios": {},
    }
    for ours, theirs in PAIRS.items():
        if ours in results and theirs in results:
            a, b = report["servers"][ours]["median"], report["servers"][theirs]["median"]
            report["ratios"][f"{ours}/{theirs}"] = {k: a[k] / b[k] for k in METRICS}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
