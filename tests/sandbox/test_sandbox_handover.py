"""The hand-over area after an untrusted step holds only regular files and directories (issue 11, case 2).

The attack: an untrusted step links /job/artifacts/coverage.txt to /job/ci/deploy.sh; a trusted step's ordinary
`> $REACTORCIDE_ARTIFACTS_DIR/coverage.txt` follows it and rewrites the script the next step runs. The control
runs the same job with the clean-up switched off.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_testlib import IS_ROOT, SECRET, job_root, needs_landlock

from runnerlib import Job, get_config
from runnerlib.runner import JobRunner
from runnerlib.security.paths import Workspace
from runnerlib.source import handover
from runnerlib.source.job_trees import JobTrees

DEPLOY = "#!/bin/sh\necho deploying\n"


@pytest.fixture
def root() -> Iterator[Path]:
    with job_root("rl-handover-") as path:
        (path / "ci" / "deploy.sh").write_text(DEPLOY)
        os.chmod(path / "ci" / "deploy.sh", 0o755)
        yield path


def run(root: Path, job: Job) -> tuple[int, str]:
    out = io.BytesIO()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "DEPLOY_TOKEN": SECRET}
    code = JobRunner(get_config(workspace_root=str(root)), job, out=out, handle_signals=False, environ=env).run()
    return code, out.getvalue().decode()


def attack_job(root: Path) -> Job:
    art = root / "artifacts"
    job = Job("handover")
    job.add_step("plant", f"sh -c 'ln -s {root}/ci/deploy.sh {art}/coverage.txt; mkfifo {art}/pipe; "
                          f"echo data > {art}/report.txt; mkdir -p {art}/sub; ln -s /etc/passwd {art}/sub/deep; "
                          f"echo x > {art}/a; ln {art}/a {art}/b; ln -s {root}/ci/deploy.sh coverage.txt; true'",
                 trust="untrusted")
    job.add_step("report", "sh -c 'echo PWNED > $REACTORCIDE_ARTIFACTS_DIR/coverage.txt; "
                           "echo PWNED > $REACTORCIDE_SOURCE_DIR/coverage.txt; "
                           "cat $REACTORCIDE_ARTIFACTS_DIR/report.txt'", depends_on=["plant"])
    return job


@needs_landlock
def test_links_and_special_files_never_reach_a_trusted_step(root: Path) -> None:
    code, out = run(root, attack_job(root))
    assert (root / "ci" / "deploy.sh").read_text() == DEPLOY, out
    assert code == 0 and "[report] data" in out, out
    for name, kind in (("coverage.txt", "symlink"), ("pipe", "FIFO"), ("sub/deep", "symlink"), ("a", "hard link")):
        assert f"hand-over: removed {root}/artifacts/{name}: a {kind}" in out, out
    art = root / "artifacts"
    assert not (art / "pipe").exists() and not (art / "sub" / "deep").is_symlink()
    assert (art / "coverage.txt").read_text() == "PWNED\n"  # the trusted step wrote a plain file of its own
    report = (art / "report.txt").stat()
    assert report.st_nlink == 1 and not stat.S_IMODE(report.st_mode) & 0o022
    if IS_ROOT:
        # What the sandbox uid wrote is the runner's now: read-only to later untrusted steps.
        assert (report.st_uid, (art / "sub").stat().st_uid) == (0, 0)
        assert stat.S_IMODE(report.st_mode) == 0o644 and stat.S_IMODE(art.stat().st_mode) == 0o1777


def _no_ci_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    # The other layer that keeps /job/ci (runnerlib.security.cilock), off: the clean-up is tested alone.
    monkeypatch.setattr(JobTrees, "trusted_command", lambda self, config, command, name: command)


@needs_landlock
def test_the_clean_up_alone_stops_the_link(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_ci_lock(monkeypatch)
    code, out = run(root, attack_job(root))
    assert (root / "ci" / "deploy.sh").read_text() == DEPLOY, out


def test_control_without_the_clean_up_the_trusted_write_rewrites_the_ci_script(root: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _no_ci_lock(monkeypatch)
    monkeypatch.setattr(handover, "sanitise_hand_over", lambda *a, **k: None)
    code, out = run(root, attack_job(root))
    assert (root / "ci" / "deploy.sh").read_text() == "PWNED\n", out


@needs_landlock
def test_later_untrusted_steps_add_artifacts_but_cannot_change_handed_over_ones(root: Path) -> None:
    art = root / "artifacts"
    job = Job("later")
    job.add_step("build", f"sh -c 'echo v1 > {art}/bin.txt'", trust="untrusted")
    job.add_step("tamper", f"sh -c 'echo v2 > {art}/bin.txt; echo new > {art}/more.txt; cat {art}/bin.txt'",
                 trust="untrusted", depends_on=["build"])
    code, out = run(root, job)
    assert (art / "more.txt").read_text() == "new\n", out
    # Unprivileged, the steps share the runner's uid: only the removal of links applies (module docstring).
    if IS_ROOT:
        assert "[tamper] v1" in out
        assert (art / "bin.txt").read_text() == "v1\n" and "bin.txt: Permission denied" in out, out


def test_sanitise_keeps_plain_files_and_names_what_it_removed(tmp_path: Path) -> None:
    area = tmp_path / "area"
    (area / "d" / "e").mkdir(parents=True)
    (area / "d" / "e" / "f.txt").write_text("keep")
    (area / "tool").write_text("#!/bin/sh\n")
    os.chmod(area / "tool", 0o4777)
    os.symlink("f.txt", area / "d" / "e" / "inner-link")
    os.mkfifo(area / "fifo")
    os.link(area / "tool", tmp_path / "outside-name")
    with Workspace(tmp_path) as ws:
        report = ws.sanitise("area")
    assert sorted(report.removed) == [("d/e/inner-link", "symlink"), ("fifo", "FIFO"), ("tool", "hard link (2 names)")]
    assert (area / "d" / "e" / "f.txt").read_text() == "keep" and report.kept == 3
    assert (tmp_path / "outside-name").exists()


def test_sanitise_refuses_a_symlinked_area(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "area")
    with Workspace(tmp_path) as ws, pytest.raises(Exception, match="symlink"):
        ws.sanitise("area")


def test_sanitise_opens_a_closed_directory_it_owns(tmp_path: Path) -> None:
    area = tmp_path / "area"
    (area / "closed").mkdir(parents=True)
    os.symlink("/etc/passwd", area / "closed" / "link")
    os.chmod(area / "closed", 0)
    with Workspace(tmp_path) as ws:
        report = ws.sanitise("area", owner=(os.geteuid(), os.getegid()) if os.geteuid() == 0 else None)
    assert report.removed == [("closed/link", "symlink")]
    assert not os.path.lexists(area / "closed" / "link")
