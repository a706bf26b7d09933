"""Issue 11, case 6: nothing a step prints changes runnerlib's own status lines, summary table or summary.json.

The attack: an untrusted step leaves `::add-mask::failed` (and other words of runnerlib's) in an artifact; a
trusted step prints the artifact, which registers them; a later step fails, and the report must still say so.
The control in each test shows the registration did happen and would have hidden the words under the old rule
(the whole text masked with every value registered at run time).
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from runnerlib.config import get_config, load_job_file
from runnerlib.jobs import Job, JobDefinitionError
from runnerlib.plugins import PluginManager
from runnerlib.runner import JobRunner

REPO = Path(__file__).resolve().parents[2]
OWN_WORDS = ("failed", "success", "finished", "exit 3", "STATUS", "timed_out", "retrying")
MARKER = "boundary-marker-Zq81"


def _runner(ws: Path, job: Job, **settings: object) -> tuple[JobRunner, io.BytesIO]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = io.BytesIO()
    config = get_config(environ={}, workspace_root=str(ws), **settings)
    return JobRunner(config, job, plugins=PluginManager(), out=out, environ=env, handle_signals=False), out


def _skip_without_sandbox(text: str) -> None:
    if "refused" in text and "sandbox" in text:
        pytest.skip("the sandbox cannot confine a step on this kernel: " + text[-200:])


def _plant_job(plant_trust: str = "untrusted") -> Job:
    lines = "\\n".join(f"::add-mask::{word}" for word in (*OWN_WORDS, MARKER))
    job = Job("inband")
    job.add_step("plant", f"printf '{lines}\\n' > \"$REACTORCIDE_ARTIFACTS_DIR/report.txt\"", trust=plant_trust)
    job.add_step("show", "cat \"$REACTORCIDE_ARTIFACTS_DIR/report.txt\"", depends_on=["plant"])
    job.add_step("broken", f"echo {MARKER}; exit 3", depends_on=["show"], retries=1)
    return job


def test_add_mask_planted_in_an_artifact_cannot_hide_a_failure(ws: Path) -> None:
    runner, out = _runner(ws, _plant_job())
    code = runner.run()
    text = out.getvalue().decode()
    _skip_without_sandbox(text)
    assert code == 3, text
    table = text.rsplit("STEP", 1)[1]
    assert "STATUS" in text and "broken  failed" in table and "job inband: failed (exit 3)" in table, text
    assert "[broken] finished (exit 3) in" in text, text
    assert "attempt 1/2 failed (exit 3); retrying" in text, text
    summary_path = ws / "artifacts" / "logs" / "summary.json"
    summary = json.loads(summary_path.read_text())
    assert {s["name"]: s["status"] for s in summary["steps"]} == {"plant": "success", "show": "success",
                                                                  "broken": "failed"}
    assert summary["exit_code"] == 3
    # User parts are still masked with every registered value: the command line and the step's output.
    after = re.split(r"==> \S+ \[show\] finished", text, maxsplit=1)[1]
    assert MARKER not in after and "[broken] $ echo ***; ***" in after, text
    # Control: the values were registered, and masking the report whole (the old rule) hid runnerlib's words.
    assert runner.mask_text("broken  failed") == "broken  ***"
    assert '"failed"' not in runner.mask_text(summary_path.read_text())


def test_json_log_summary_keeps_its_statuses(ws: Path) -> None:
    runner, out = _runner(ws, _plant_job(plant_trust="trusted"), log_format="json")
    assert runner.run() == 3
    records = [json.loads(line) for line in out.getvalue().decode().splitlines()]
    summary = [r for r in records if r.get("stream") == "summary"][0]
    assert [s["status"] for s in summary["steps"]] == ["success", "success", "failed"]
    finished = [r["message"] for r in records if r.get("step") == "broken" and r["stream"] == "runner"]
    assert any(m.startswith("finished (exit 3) in") for m in finished), finished
    # Control: whole masking of that record would have hidden the status.
    assert '"failed"' not in runner.mask_text(json.dumps(summary))


def _add_mask_switch(ws: Path, add_mask: bool) -> str:
    job = Job("switch")
    job.add_step("show", f"echo '::add-mask::{MARKER}'; echo visible-{MARKER}", add_mask=add_mask)
    job.add_step("later", f"echo later-{MARKER}", depends_on=["show"])
    runner, out = _runner(ws, job)
    assert runner.run() == 0
    return out.getvalue().decode()


def test_add_mask_false_registers_nothing(ws: Path) -> None:
    text = _add_mask_switch(ws, add_mask=False)
    assert f"[show] ::add-mask::{MARKER}" in text and f"[show] visible-{MARKER}" in text, text
    assert f"[later] later-{MARKER}" in text, text


def test_add_mask_true_is_the_control(ws: Path) -> None:
    text = _add_mask_switch(ws, add_mask=True)
    printed = [line for line in text.splitlines() if not line.startswith("==>")]
    assert not any(MARKER in line for line in printed) and "[later] later-***" in printed, text


def test_add_mask_in_a_job_file(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("steps:\n  - name: a\n    command: cat x\n    add_mask: false\n  - name: b\n    command: 'true'\n")
    _layer, job, _doc = load_job_file(path)
    assert job is not None and [s.add_mask for s in job.steps] == [False, True]
    path.write_text("steps:\n  - name: a\n    command: cat x\n    add_mask: maybe\n")
    with pytest.raises(JobDefinitionError, match=r"job.yaml:4: step 'a': add_mask"):
        load_job_file(path)
