"""Checking a history against code without running anything (REPLAY-028..030).

``dwf replay`` and :func:`.activation.replay_check`: replay a history offline, run no step
body, write nothing, and report non-determinism exactly as the engine would record it.
"""

from __future__ import annotations

from .decisions import ReplayReport
from .ending import NOT_BY_CODE, Ending
from .errors import same_error
from .messages import error_object
from .replayer import Replayer

__all__ = ["OfflineCheck"]


class OfflineCheck(Replayer, Ending):
    """The offline check of a history (no body runs, nothing is written)."""

    def _offline_check(self) -> ReplayReport:
        self._offline = True
        self._replayed = True
        recorded = self._history_max_seq
        run = self._parsed.run or {}
        if run.get("status") == "failed" and run["error"]["type"] == "InvalidInput":
            # MODEL-051: the code never ran on this input, so there is nothing to check.
            return ReplayReport(
                ok=True,
                run_id=self._run_id,
                workflow=self._wf_name,
                matched=0,
                recorded=recorded,
                stopped="finished",
            )
        self._start_code()
        self._pump()
        if self._nd is None:
            self._check_unreached()
        matched = min(self._cursor - 1, recorded)
        if self._nd is not None:
            nd = self._nd
            self._stop_code()
            return ReplayReport(
                ok=False,
                run_id=self._run_id,
                workflow=self._wf_name,
                matched=nd.seq - 1 if nd.seq <= recorded else recorded,
                recorded=recorded,
                stopped="nondeterminism",
                error=error_object("NonDeterminism", str(nd), nd.details),
            )
        mismatch: str | None = None
        stopped = "blocked"
        if self._code_ended():
            assert self._root is not None
            stopped, output, code_error = self._ending()
            if run.get("status") == "completed":
                if code_error is not None:
                    mismatch = (
                        f"the run completed, but the code now raises {code_error['type']}: "
                        f"{code_error['message']}"
                    )
                elif output != run.get("output"):
                    mismatch = "the run completed with another output than the code now returns"
            elif run.get("status") == "failed" and run["error"]["type"] not in NOT_BY_CODE:
                recorded_error = run["error"]
                if code_error is None:
                    mismatch = (
                        f"the run failed with {recorded_error['type']}, but the code now returns"
                    )
                elif not same_error(code_error, recorded_error):  # REPLAY-032
                    mismatch = (
                        f"the run failed with {recorded_error['type']}: "
                        f"{recorded_error['message']}, "
                        f"but the code now raises {code_error['type']}: {code_error['message']}"
                    )
        elif run.get("status") == "completed" or (
            run.get("status") == "failed" and run["error"]["type"] not in NOT_BY_CODE
        ):
            mismatch = f"the run {run['status']}, but the code is still waiting"
        if self._parsed.terminal and not self._code_ended() and mismatch is None:
            stopped = "finished"
        self._stop_code()
        return ReplayReport(
            ok=mismatch is None,
            run_id=self._run_id,
            workflow=self._wf_name,
            matched=matched,
            recorded=recorded,
            stopped=stopped,
            outcome_mismatch=mismatch,
        )
