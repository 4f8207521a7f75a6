"""Plot a workflow_bench report (matplotlib, from the peer environment).

benchmarks/.peer-venv/bin/python -m benchmarks.peers.plot REPORT.json OUT.svg
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {
    "ours": "#1f77b4",
    "dbos": "#2ca02c",
    "temporal": "#d62728",
    "temporal-local": "#ff9896",
}


def panels(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("seq_steps_per_s", f"1. sequential steps/s\n(1 run of {cfg['seq_steps']:,} steps)"),
        (
            "conc_steps_per_s",
            f"2. steps/s, {cfg['conc_runs']:,} runs x {cfg['conc_steps']}\nsteps at once",
        ),
        ("input_ms", "3. input -> step recorded\n(ms, median of round medians)"),
        ("input_big_ms", f"4. the same, history of\n{cfg['big_events']:,} events (ms)"),
        ("start_ms", "5. start -> first step\nrecorded (ms)"),
    ]


def bars(
    ax: Any,
    names: list[str],
    values: list[float | None],
    lows: list[float],
    highs: list[float],
    title: str,
) -> None:
    xs = range(len(names))
    heights = [v or 0 for v in values]
    err = [
        [max(0.0, h - lo) for h, lo in zip(heights, lows, strict=True)],
        [max(0.0, hi - h) for h, hi in zip(heights, highs, strict=True)],
    ]
    ax.bar(xs, heights, color=[COLOURS.get(n, "grey") for n in names], yerr=err, capsize=3)
    for x, v in zip(xs, values, strict=True):
        label = "n/a" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:,.1f}")
        ax.annotate(
            label,
            (x, v or 0),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.margins(y=0.15)


def main() -> int:
    report = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    engines: list[str] = report["engines"]
    summary = report["summary"]["engines"]
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.5))
    flat = list(axes.flat)
    for ax, (metric, title) in zip(flat, panels(report["config"]), strict=False):
        s = [summary[e].get(metric) for e in engines]
        bars(
            ax,
            engines,
            [x["median"] if x else None for x in s],
            [x["min"] if x else 0 for x in s],
            [x["max"] if x else 0 for x in s],
            title,
        )
    parked = report.get("suspended", {})
    names = [e for e in parked if "error" not in parked[e]]
    runs = next((parked[e]["runs"] for e in names), 0)
    rss = [parked[e]["processes"]["total"]["rss_mb"] for e in names]
    cpu = [parked[e]["processes"]["total"]["idle_cpu_percent"] for e in names]
    bars(
        flat[5],
        names,
        rss,
        rss,
        rss,
        f"{runs:,} suspended runs:\nRSS of the engine's processes (MB)",
    )
    bars(flat[6], names, cpu, cpu, cpu, f"{runs:,} suspended runs:\nidle CPU (% of a core)")
    durable = report.get("durability", {})
    dnames = [
        e
        for e in durable
        if (durable[e].get("sequential") or {}).get("sync_calls_per_step") is not None
    ]
    per_step = [durable[e]["sequential"]["sync_calls_per_step"] for e in dnames]
    bars(
        flat[7],
        dnames,
        per_step,
        per_step,
        per_step,
        "fsync/fdatasync calls per step\n(one run, strace -f)",
    )
    meta = report["meta"]
    fig.suptitle(
        f"Workflow engines side by side ({meta['date'][:10]}, {meta['cpus']} CPUs, "
        f"{len(report['rounds'])} rounds; bars: median, whiskers: min-max of the rounds)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, metadata={"Date": None} if out.suffix == ".svg" else None)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
