"""job_summary.py on its own: the table and summary.json, the steps' summary.md named in both, masking of the
user parts, and a summary file that cannot be written is a warning, never an exception. The runner's use of it
end to end: test_executor_runner.py, test_executor_protocol.py, test_executor_boundary_paths.py."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

from runnerlib.execution.logs import JobLog
from runnerlib.execution.scheduler import JobResult, StepResult
from runnerlib.job_summary import JobSummary, failure_text
from runnerlib.security.paths import Workspace

SECRET = "Zk4-summary-secret-99"


def mask(text: str) -> str:
    return text.replace(SECRET, "***")


def summary_for(tmp_path: Path) -> tuple[JobSummary, io.BytesIO, Path]:
    out = io.BytesIO()
    logs = tmp_path / "artifacts" / "logs"
    logs.mkdir(parents=True)
    log = JobLog(out, job_name="ci", mask=mask, logs_dir=logs)
    workspace = Workspace(str(tmp_path), create=True)
    return JobSummary(log, mask=mask, open_workspace=lambda: workspace), out, logs


class FakeProtocol:
    def __init__(self, path: str | None) -> None:
        self.path, self.order = path, None

    def write_summary(self, order: list[str]) -> str | None:
        self.order = order
        return self.path


def test_table_file_and_step_summaries(tmp_path: Path) -> None:
    summary, out, logs = summary_for(tmp_path)
    protocol = FakeProtocol(f"/job/artifacts/{SECRET}/summary.md")
    assert summary.collect(protocol, iter(["test", "build"])) == protocol.path
    assert protocol.order == ["test", "build"]
    steps = [StepResult("test", status="success", exit_code=0), StepResult("build", status="failed", exit_code=2)]
    summary.report(job_name="ci", job_id="7", steps=steps, plugins=[("p", 0.5, 1)], total=1.0, exit_code=2)
    data = json.loads((logs / "summary.json").read_text())
    assert data["exit_code"] == 2 and [s["status"] for s in data["steps"]] == ["success", "failed"]
    assert data["step_summary"] == "/job/artifacts/***/summary.md"
    console = out.getvalue().decode()
    assert "step summaries: /job/artifacts/***/summary.md" in console and "build" in console
    assert SECRET[4:12] not in console + (logs / "summary.json").read_text()
    assert not list(logs.glob("*.new"))  # written aside, renamed over


def test_no_steps_ran_table_only(tmp_path: Path) -> None:
    summary, out, logs = summary_for(tmp_path)
    summary.report(job_name="ci", job_id=None, steps=None, plugins=[], total=0.1, exit_code=78)
    assert not (logs / "summary.json").exists()
    assert b"78" in out.getvalue()


def test_summary_file_that_cannot_be_written_is_a_warning(tmp_path: Path) -> None:
    summary, out, logs = summary_for(tmp_path)
    (logs / "summary.json").mkdir()  # the rename over a directory fails
    (logs / "summary.json" / "x").write_text("x")
    summary.write_file(job_name="ci", job_id=None, steps=[], plugins=[], exit_code=0)
    assert b"could not write the summary file" in out.getvalue()


def test_read_step_log(tmp_path: Path) -> None:
    summary, _, logs = summary_for(tmp_path)
    (logs / "build.log").write_text("compiling\n")
    assert "compiling" in summary.read_step_log("build")
    assert summary.read_step_log("never-ran") == ""
    summary.log.logs_dir = None
    assert summary.read_step_log("build") == ""


def test_failure_text() -> None:
    failed = StepResult("build", status="failed", exit_code=2)
    allowed = StepResult("lint", status="failed", exit_code=1, allow_failure=True)
    assert failure_text(JobResult([allowed, failed], 2)) == "step 'build' failed (exit 2)"
    assert failure_text(SimpleNamespace(steps=[], exit_code=143)) == "job failed with exit code 143"
