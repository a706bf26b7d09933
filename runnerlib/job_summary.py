"""What a job leaves behind when it ends: the summary table, summary.json and the steps' markdown summaries.

- the steps' own summaries (REACTORCIDE_STEP_SUMMARY / GITHUB_STEP_SUMMARY) are collected, in declaration
  order, into `<artifacts>/summary.md` (execution/step_protocol.py writes it) and named under the table;
- the table (or the JSON `summary` record) goes to the job log: step, status, duration, exit code, attempts,
  why; then plugin timings;
- `<artifacts>/logs/summary.json` holds the same, user fields masked and runnerlib's own words not
  (execution/own_words.py), written as a new file renamed over the old one.

Example::

    summary = JobSummary(log, mask=registry.mask_text, open_workspace=lambda: workspace)
    summary.collect(protocol, ["test", "build"])
    summary.report(job_name="ci", job_id="", steps=result.steps, plugins=[], total=1.5, exit_code=0)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["JobSummary", "failure_text"]


class JobSummary:
    """The end-of-job report of one job, written through the job's log (`log.logs_dir` says where)."""

    def __init__(self, log: Any, *, mask: Callable[[str], str], open_workspace: Callable[[], Any]) -> None:
        self.log = log
        self.mask = mask
        self.open_workspace = open_workspace
        # Where the steps' markdown summaries were collected (summary.md), None when no step wrote one.
        self.step_summary: str | None = None

    def collect(self, protocol: Any, order: Iterable[str]) -> str | None:
        """Collect the steps' markdown summaries (in `order`) into summary.md; its path, or None."""
        self.step_summary = protocol.write_summary(list(order))
        return self.step_summary

    def report(self, *, job_name: str, job_id: str | None, steps: list[Any] | None,
               plugins: list[tuple[str, float, int]], total: float, exit_code: int) -> None:
        """The table in the job log, then summary.json (when the steps ran: there is a logs directory)."""
        self.log.summary(steps or [], plugins, total=total, exit_code=exit_code,
                         notes=[f"step summaries: {self.step_summary}"] if self.step_summary else [])
        if steps is not None:
            self.write_file(job_name=job_name, job_id=job_id, steps=steps, plugins=plugins, exit_code=exit_code)

    def write_file(self, *, job_name: str, job_id: str | None, steps: list[Any],
                   plugins: list[tuple[str, float, int]], exit_code: int) -> None:
        """`<logs>/summary.json`; a warning in the log (never an exception) when it cannot be written."""
        if self.log.logs_dir is None:
            return
        from runnerlib.execution.own_words import summary_document

        # User fields masked, runnerlib's words not: masking the JSON text whole would let `::add-mask::failed`
        # rewrite the statuses (own_words.py).
        data = summary_document(job=job_name, job_id=job_id, exit_code=exit_code, steps=steps, plugins=plugins,
                                mask=self.mask)
        data["step_summary"] = self.mask(self.step_summary) if self.step_summary else None
        try:
            path = self.log.logs_dir / "summary.json"
            # A new file renamed over the old: whatever a step left at that name (a read-only file, a hard
            # link) is replaced, never written through.
            workspace = self.open_workspace()
            fresh = f"{path}.{os.getpid()}.new"
            workspace.write_text(fresh, json.dumps(data, indent=2) + "\n")
            try:
                workspace.rename(fresh, str(path))
            except OSError:
                workspace.remove(fresh, missing_ok=True)
                raise
        except OSError as exc:
            self.log.event(f"could not write the summary file: {exc.strerror}", level="warning")

    def read_step_log(self, step: str) -> str:
        """A step's masked log file (its tail) for the report; "" when it has none."""
        if self.log.logs_dir is None:
            return ""
        from runnerlib.observability.report import read_tail

        try:
            fd = self.open_workspace().open(str(self.log.logs_dir / f"{step}.log"), os.O_RDONLY)
        except (OSError, ValueError):  # no log (a skipped step), or a path the workspace refuses
            return ""
        with os.fdopen(fd, "rb") as f:
            return read_tail(f.read)


def failure_text(result: Any) -> str:
    """Why a job failed, in one line: the first required step that failed, or the job's exit code."""
    failed = [r for r in result.steps if r.failed_required]
    if not failed:
        return f"job failed with exit code {result.exit_code}"
    r = failed[0]
    return f"step {r.name!r} {r.status} (exit {r.exit_code})"
