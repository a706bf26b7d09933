"""As root, untrusted steps build in their own copy of src (owned by the sandbox uid) and write artifacts but
cannot remove the runner's step logs (sticky artifacts dir); /job/src itself is never handed over: it keeps its
owner and its content (the pristine tree of trusted steps)."""

from __future__ import annotations

import os
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


def test_untrusted_step_writes_its_copy_and_artifacts_but_not_the_logs(ws: Path) -> None:
    job = Job("owner")
    job.add_step("build", f"sh -c 'touch built.o && touch {ws}/artifacts/report.txt'", trust="untrusted")
    job.add_step("vandal", f"rm -rf {ws}/artifacts/logs", trust="untrusted", depends_on=["build"])
    code, out = _run(ws, job)
    copy = ws / ".untrusted" / "src"
    assert (copy / "built.o").exists() and (ws / "artifacts" / "report.txt").exists(), out
    assert copy.stat().st_uid == 65534 and not (ws / "src" / "built.o").exists(), out
    assert code != 0 and (ws / "artifacts" / "logs" / "build.log").exists(), out
    assert (ws / "artifacts").stat().st_mode & 0o1777 == 0o1777


def test_the_same_removal_from_a_trusted_step_succeeds(ws: Path) -> None:
    """Control: the vandal step's command works when nothing stops it."""
    job = Job("control")
    job.add_step("build", "true")
    job.add_step("vandal", f"rm -rf {ws}/artifacts/logs", depends_on=["build"])
    code, out = _run(ws, job)
    assert code == 0 and not (ws / "artifacts" / "logs" / "build.log").exists(), out


def test_a_pre_existing_source_tree_keeps_its_owner_and_content(ws: Path) -> None:
    (ws / "src").mkdir()
    os.chmod(ws / "src", 0o755)
    (ws / "src" / "main.c").write_text("int main;")
    job = Job("premounted")
    job.add_step("build", "sh -c 'test -f main.c && touch built.o && echo x > main.c'", trust="untrusted")
    code, out = _run(ws, job)
    assert code == 0, out
    assert (ws / "src").stat().st_uid == 0 and not (ws / "src" / "built.o").exists(), out
    assert (ws / "src" / "main.c").read_text() == "int main;"
    assert (ws / ".untrusted" / "src" / "built.o").exists()


def test_later_untrusted_steps_keep_working_on_the_same_copy(ws: Path) -> None:
    job = Job("two")
    job.add_step("build", "touch built.o", trust="untrusted")
    job.add_step("test", 'sh -c \'test -f built.o && test "$PWD" = "$REACTORCIDE_SOURCE_DIR"\'', trust="untrusted",
                 depends_on=["build"])
    code, out = _run(ws, job)
    assert code == 0 and out.count("own copy of the source tree") == 1, out


def test_a_trusted_only_job_hands_nothing_over(ws: Path) -> None:
    job = Job("trusted")
    job.add_step("build", "touch built.o")
    code, out = _run(ws, job)
    assert code == 0, out
    assert (ws / "src").stat().st_uid == 0 and (ws / "src" / "built.o").stat().st_uid == 0
    assert not (ws / ".untrusted").exists()
