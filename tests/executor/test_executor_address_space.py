"""A memory limit enforced as an address-space limit (RLIMIT_AS: no cgroup here) is named when the step fails.

RLIMIT_AS makes an allocation fail inside the step; nothing outside it can tell that the limit was reached
(no kernel counter records it). So a step that fails under such a limit says, in its status line and
summary.json, that the limit may have been reached; a cgroup-enforced limit is reported as `killed: ...`.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from runnerlib import Job, get_config
from runnerlib.plugins import PluginManager
from runnerlib.runner import JobRunner
from runnerlib.security import cgroups
from runnerlib.security.limits import StepLimits, address_space_note

HOG = "/usr/bin/python3 -I -c 'x = []\nfor _ in range(200): x.append(bytearray(1 << 20))'"
NOTE = "memory limit 64 MiB (an address-space limit) may have been reached"


def _run(ws: Path, job: Job) -> tuple[int, str, dict[str, dict]]:
    (ws / "src").mkdir(exist_ok=True)
    os.chmod(ws / "src", 0o777)
    out = io.BytesIO()
    runner = JobRunner(get_config(environ={}, workspace_root=str(ws)), job, plugins=PluginManager(), out=out,
                       environ=dict(os.environ), handle_signals=False)
    code = runner.run()
    summary = json.loads((ws / "artifacts" / "logs" / "summary.json").read_text())
    return code, out.getvalue().decode(), {s["name"]: s for s in summary["steps"]}


@pytest.fixture
def no_cgroups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory limits as rlimits, as for an unprivileged runner or a host without a writable cgroup."""
    monkeypatch.setattr(cgroups, "available", lambda: {})


def test_failing_step_under_an_address_space_limit_says_so(ws: Path, no_cgroups: None) -> None:
    job = Job("as")
    job.add_step("hog", HOG, trust="untrusted", limits=StepLimits(memory=64 << 20))
    job.add_step("hog-trusted", HOG, depends_on=["hog"], condition="always", limits=StepLimits(memory=64 << 20))
    code, out, steps = _run(ws, job)
    assert code != 0
    for name in ("hog", "hog-trusted"):
        assert f"exit 1: {NOTE}" in out and steps[name]["reason"] == NOTE, (name, out, steps[name])


def test_no_note_without_a_failure_or_without_an_address_space_limit(ws: Path, no_cgroups: None) -> None:
    """Controls: the same limit and a step that succeeds; a failing step with no memory limit set (the untrusted
    default is a safety net, not a limit somebody chose: every failing step would carry the note)."""
    job = Job("controls")
    job.add_step("fits", "true", trust="untrusted", limits=StepLimits(memory=64 << 20))
    job.add_step("fails", "exit 3", trust="untrusted", depends_on=["fits"])
    job.add_step("fails-trusted", "exit 3", depends_on=["fits"], condition="always")
    code, out, steps = _run(ws, job)
    assert code != 0 and "may have been reached" not in out, out
    assert not steps["fits"]["reason"] and not steps["fails"]["reason"] and not steps["fails-trusted"]["reason"]


def test_the_note_names_only_an_address_space_limit() -> None:
    assert address_space_note({"as": 512 << 20}) == "memory limit 512 MiB (an address-space limit) may have been reached"
    assert address_space_note({"nproc": 10}) is None and address_space_note({}) is None
