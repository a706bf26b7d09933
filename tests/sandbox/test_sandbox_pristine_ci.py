"""/job/ci is immutable during a job for trusted steps too, root included (runnerlib.security.cilock).

Root ignores file modes, so a read-only CI tree alone does not stop a root trusted step from rewriting a CI script,
directly or through a link an untrusted step left. The control switches the lock off.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_testlib import IS_ROOT

from runnerlib import Job, get_config
from runnerlib.runner import JobRunner
from runnerlib.source import handover
from runnerlib.source.job_trees import JobTrees
from runnerlib.testing import reachable_tempdir

pytestmark = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="the lock is for root trusted steps")]
DEPLOY = "#!/bin/sh\necho deploying\n"


@pytest.fixture
def root() -> Iterator[Path]:
    with reachable_tempdir("rl-cilock-") as path:
        for d in ("src", "ci", "artifacts"):
            (path / d).mkdir()
        (path / "ci" / "deploy.sh").write_text(DEPLOY)
        os.chmod(path / "ci" / "deploy.sh", 0o555)
        os.symlink(path / "ci" / "deploy.sh", path / "artifacts" / "coverage.txt")  # as an untrusted step left it
        yield path


def run(root: Path, job: Job) -> tuple[int, str]:
    out = io.BytesIO()
    code = JobRunner(get_config(workspace_root=str(root)), job, out=out, handle_signals=False,
                     environ={"PATH": "/usr/bin:/bin"}).run()
    return code, out.getvalue().decode()


def attack(root: Path) -> Job:
    job = Job("ci")
    job.add_step("direct", f"echo PWNED > {root}/ci/deploy.sh", allow_failure=True)
    job.add_step("link", "echo PWNED > $REACTORCIDE_ARTIFACTS_DIR/coverage.txt", allow_failure=True)
    job.add_step("here", "echo PWNED > new.txt; pwd", allow_failure=True)  # the default cwd is /job/ci
    return job


def test_no_trusted_step_writes_the_ci_tree(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handover, "sanitise_hand_over", lambda *a, **k: None)  # no untrusted step: test the lock
    code, out = run(root, attack(root))
    assert (root / "ci" / "deploy.sh").read_text() == DEPLOY, out
    assert not (root / "ci" / "new.txt").exists(), out
    assert out.count("Read-only file system") == 3, out


def test_control_without_the_lock_root_rewrites_it(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(JobTrees, "trusted_command", lambda self, config, command, name: command)
    code, out = run(root, attack(root))
    assert (root / "ci" / "deploy.sh").read_text() == "PWNED\n", out
    assert (root / "ci" / "new.txt").exists()


def test_without_a_mount_namespace_the_job_log_says_so(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runnerlib.security import cilock

    # The probe fails as it does in a container without CAP_SYS_ADMIN: the job runs, and says what is missing.
    monkeypatch.setattr(cilock, "wrap", lambda command, paths: ["/bin/sh", "-c", "echo 'x (no namespace)' >&2; exit 126"])
    job = Job("nons")
    job.add_step("t", "true")
    code, out = run(root, job)
    assert code == 0 and "stays writable for trusted steps" in out and "no namespace" in out, out


def test_the_lock_leaves_the_step_environment_as_the_runner_gave_it(root: Path) -> None:
    """The trampoline is Python: its start-up coerces a C locale (LC_CTYPE=C.UTF-8), which must not reach the step."""
    job = Job("env")
    job.add_step("env", "env; findmnt -no OPTIONS --target $REACTORCIDE_CI_SOURCE_DIR")
    code, out = run(root, job)
    assert code == 0 and "LC_CTYPE" not in out and "[env] PATH=/usr/bin:/bin" in out, out
    assert "[env] ro," in out, out
