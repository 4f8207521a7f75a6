"""The long-running commands collect garbage less often than CPython's defaults
(engine/gc_tuning.py): ``dwf serve`` and ``dwf worker`` set the thresholds before
they serve."""

from __future__ import annotations

import gc
import socket
from pathlib import Path
from typing import Any

import pytest

from durable_workflows.engine import app as app_module
from durable_workflows.engine import gc_tuning
from durable_workflows.engine import worker as worker_module


def test_tune_for_server_sets_the_server_thresholds() -> None:
    before = gc.get_threshold()
    try:
        gc_tuning.tune_for_server()
        assert gc.get_threshold() == gc_tuning.SERVER_GC_THRESHOLDS
        assert gc_tuning.SERVER_GC_THRESHOLDS[0] > before[0]
    finally:
        gc.set_threshold(*before)


def test_dwf_serve_tunes_the_collector_before_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(app_module, "tune_for_server", lambda: calls.append("tuned"))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        # The port is taken, so it stops right after tuning, before serving anything.
        code = app_module.run_serve(
            "127.0.0.1", taken.getsockname()[1], str(tmp_path / "data"), [], insecure_no_auth=True
        )
    finally:
        taken.close()
    assert code == 1 and calls == ["tuned"]


def test_dwf_worker_tunes_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(worker_module, "tune_for_server", lambda: calls.append("tuned"))

    def stop(main: Any) -> None:
        main.close()  # never run: the worker would serve
        raise SystemExit(0)

    monkeypatch.setattr(worker_module.asyncio, "run", stop)
    with pytest.raises(SystemExit):
        worker_module.run_worker("http://127.0.0.1:9/v1/stream/ns", [], token="t")
    assert calls == ["tuned"]
