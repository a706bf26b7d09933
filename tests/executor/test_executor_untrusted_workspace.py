"""As root, the sandboxed steps' uid gets the directories the runner made for the job: untrusted steps build
in src and write artifacts (as on any CI system) but cannot remove the runner's step logs (sticky
artifacts dir), and a pre-existing tree (a developer's checkout) keeps its owner."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from runnerlib import Job, get_config
from runnerlib.runner import JobRunner

pytestmark = pytest.mark.root


def _run(ws: Path, job: Job) -> tuple[int, str]:
    out = ws.parent / f"{ws.name}.out"
    with open(out, "wb") as f:
        code = JobRunner(get_config(workspace_root=str(ws)), job, out=f, handle_signals=False).run()
    return code, out.read_text()


def test_untrusted_step_writes_src_and_artifacts_but_not_the_logs(ws: Path) -> None:
    job = Job("owner")
    job.add_step("build", f"sh -c 'touch built.o && touch {ws}/artifacts/report.txt'", trust="untrusted")
    job.add_step("vandal", f"rm -rf {ws}/artifacts/logs", trust="untrusted", depends_on=["build"])
    code, out = _run(ws, job)
    assert (ws / "src" / "built.o").exists() and (ws / "artifacts" / "report.txt").exists(), out
    assert code != 0 and (ws / "artifacts" / "logs" / "build.log").exists(), out
    assert (ws / "artifacts").stat().st_mode & 0o1777 == 0o1777


def test_the_same_removal_from_a_trusted_step_succeeds(ws: Path) -> None:
    """Control: the vandal step's command works when nothing stops it."""
    job = Job("control")
    job.add_step("build", "true")
    job.add_step("vandal", f"rm -rf {ws}/artifacts/logs", depends_on=["build"])
    code, out = _run(ws, job)
    assert code == 0 and not (ws / "artifacts" / "logs" / "build.log").exists(), out


def test_a_pre_existing_source_tree_keeps_its_owner(ws: Path) -> None:
    (ws / "src").mkdir()
    os.chmod(ws / "src", 0o755)
    job = Job("premounted")
    job.add_step("build", "touch built.o", trust="untrusted")
    code, out = _run(ws, job)
    assert (ws / "src").stat().st_uid == 0
    assert code != 0 and not (ws / "src" / "built.o").exists(), out


def test_a_trusted_only_job_hands_nothing_over(ws: Path) -> None:
    job = Job("trusted")
    job.add_step("build", "touch built.o")
    code, out = _run(ws, job)
    assert code == 0, out
    assert (ws / "src").stat().st_uid == 0 and (ws / "src" / "built.o").stat().st_uid == 0


def test_trusted_steps_can_use_git_in_the_handed_over_src(ws: Path) -> None:
    """The src tree belongs to the sandbox uid; git refuses such a repository to root ("dubious ownership")
    unless the runner marks this directory safe for trusted steps. The control strips that setting."""
    job = Job("git")
    job.add_step("init", "git init -q .", trust="untrusted")
    job.add_step("status", "git status --short", depends_on=["init"])
    job.add_step("control", "env -u GIT_CONFIG_COUNT git status --short", depends_on=["status"])
    code, out = _run(ws, job)
    assert "dubious ownership" in out.split("[control]", 1)[1], out
    assert "dubious ownership" not in re.split(r"==> ..:..:.. \[status\] finished", out, maxsplit=1)[0], out
    assert "[status] finished (ok)" in out, out
