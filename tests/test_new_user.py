"""A new user's path (issue 13): running on your own checkout, the Python API without traps, job state in simple
mode, and the command-line conveniences (python -m runnerlib, did-you-mean, --var KEY, log levels, times)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_testlib import clean_env, rl

from runnerlib.testing import reachable_tempdir


def _project(tmp: Path) -> Path:
    """A small git checkout with a committed file, an uncommitted new file and an ignored .venv."""
    proj = tmp / "myproject"
    (proj / ".venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, proj / ".venv" / "bin" / "python")  # an absolute link: the copy would refuse it
    (proj / ".gitignore").write_text(".venv/\n")
    (proj / "committed.txt").write_text("c\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e", "-C", str(proj)]
    subprocess.run(["git", "init", "-q", str(proj)], check=True)
    subprocess.run([*git, "add", "committed.txt", ".gitignore"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    (proj / "new_test.txt").write_text("n\n")  # untracked, not ignored: part of what the user is testing
    return proj


# --- 1. your own checkout ---------------------------------------------------------------------------------


def test_relative_source_url_runs_on_the_current_directory(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    ws = tmp_path / "ws"
    r = rl("run", "--workspace-root", str(ws), "--source-url", ".", "--", "ls", "-A", cwd=proj)
    assert r.returncode == 0, r.stdout + r.stderr
    listed = {line.split("] ", 1)[1] for line in r.stdout.splitlines() if line.startswith("[job] ")}
    assert listed == {".gitignore", "committed.txt", "new_test.txt"}  # no .venv, no .git


def test_no_workspace_and_no_job_dir_gets_a_per_run_workspace_with_the_cwd(tmp_path: Path) -> None:
    if os.path.ismount("/job") and os.access("/job", os.W_OK):
        pytest.skip("/job is a writable mount here: the worker's workspace is used, as in a container")
    proj = _project(tmp_path)
    # A short TMPDIR: the job's secrets socket lives under it (Unix socket paths are limited to 107 bytes,
    # and pytest-xdist's tmp paths come close).
    with reachable_tempdir("rl-nu-") as tmp:
        env = clean_env(TMPDIR=str(tmp))
        r = rl("run", "--", "cat", "new_test.txt", cwd=proj, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "[job] n" in r.stdout
        first = r.stderr.splitlines()
        assert first[0].startswith(f"runnerlib: workspace: {tmp}/runnerlib-job-") and "per-run" in first[0]
        assert first[1].startswith(f"runnerlib: source: the current directory {proj}")
        assert not [p for p in tmp.iterdir() if p.name.startswith("runnerlib-snapshot-")]  # snapshot removed
        assert "PermissionError" not in r.stderr


def test_a_workspace_not_writable_is_one_configuration_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    r = rl("run", "--workspace-root", str(locked), "--job-command", "true")
    assert r.returncode == 78, r.stdout + r.stderr
    assert "workspace_root (from option --workspace-root): is not writable by this user" in r.stderr
    assert "PermissionError" not in r.stderr and "Errno" not in r.stderr


def test_empty_src_is_explained_when_the_job_fails(tmp_path: Path) -> None:
    r = rl("run", "--workspace-root", str(tmp_path / "ws"), "--", "sh", "-c", "ls | grep -q . || exit 5",
           cwd=_project(tmp_path))
    assert r.returncode == 5
    assert "no source was configured" in r.stderr and "--source-url ." in r.stderr


# --- 2. the Python API ------------------------------------------------------------------------------------

SCRIPT = """
import sys, runnerlib
job = runnerlib.Job("test-and-build")
job.add_step("test", "echo name=$REACTORCIDE_JOB_NAME")
job.add_step("build", "exit 3", depends_on=["test"])
sys.exit(job.run(workspace_root=sys.argv[1]))
"""


def test_job_run_exits_with_the_code_and_uses_the_jobs_name(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(ws)], env=clean_env(), capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "[test] name=test-and-build" in r.stdout
    assert json.loads((ws / "artifacts" / "logs" / "summary.json").read_text())["job"] == "test-and-build"


def test_run_config_and_main_exit_with_the_jobs_code(tmp_path: Path) -> None:
    code = ("import runnerlib, sys\n"
            f"config = runnerlib.get_config(job_command='exit 4', workspace_root={str(tmp_path / 'ws')!r})\n"
            "assert runnerlib.run(config) == 4 and runnerlib.run_job(config=config) == 4\n"
            "runnerlib.main(config)\n")
    r = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stdout + r.stderr


def test_run_job_with_plain_job_uses_its_name(tmp_path: Path) -> None:
    import io

    from runnerlib.jobs import Job
    from runnerlib.runner import run_job

    job = Job("lint-it")
    job.add_step("a", "echo $REACTORCIDE_JOB_NAME")
    out = io.BytesIO()
    assert run_job(job=job, workspace_root=str(tmp_path / "ws"), out=out) == 0
    assert b"[a] lint-it" in out.getvalue() and b"job lint-it: success" in out.getvalue()


def test_job_state_in_simple_mode(tmp_path: Path) -> None:
    from runnerlib.workflow import api

    triggers = tmp_path / "triggers.json"
    env = {"REACTORCIDE_STEP_NAME": "s", "REACTORCIDE_JOB_NAME": "build", "REACTORCIDE_TRIGGERS_FILE": str(triggers)}
    assert api.is_job_running("build", environ=env) is True  # this job
    assert api.is_job_running("deploy", environ=env) is False and api.get_job_result("deploy", environ=env) is None
    api.trigger_job("deploy", environ=env)
    assert api.is_job_running("deploy", environ=env) is True  # triggered: pending until the worker runs it
    assert api.get_job_result("deploy", environ=env)["status"] == "pending"


def test_trigger_outside_a_job_refuses_with_one_line(tmp_path: Path) -> None:
    env = clean_env()
    r = subprocess.run([sys.executable, "-m", "runnerlib", "trigger", "deploy"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 78 and not (tmp_path / "triggers.json").exists()
    assert r.stderr.count("\n") == 1 and "not inside a job" in r.stderr and "Error" not in r.stderr
    ok = subprocess.run([sys.executable, "-m", "runnerlib", "trigger", "deploy"], cwd=tmp_path,
                        env={**env, "REACTORCIDE_WORKSPACE_ROOT": str(tmp_path)}, capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0 and (tmp_path / "triggers.json").exists()


# --- command line -----------------------------------------------------------------------------------------


def test_python_dash_m_runnerlib_and_subcommand_suggestion() -> None:
    r = rl("rn")
    assert r.returncode == 78 and "did you mean 'run'" in r.stderr
    assert rl("--version").returncode == 0


def test_text_log_lines_carry_a_time_and_log_level_filters(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    r = rl("run", "--workspace-root", ws, "--job-command", "echo hi")
    assert re.search(r"^==> \d\d:\d\d:\d\d \[job\] \$ echo hi$", r.stdout, re.M), r.stdout
    quiet = rl("run", "--workspace-root", ws, "--log-level", "warning", "--job-command", "echo hi")
    assert quiet.returncode == 0 and "[job] hi" in quiet.stdout and "==> " not in quiet.stdout
    failing = rl("run", "--workspace-root", ws, "--log-level", "error", "--job-command", "echo hi; exit 3")
    assert failing.returncode == 3 and "finished (exit 3)" not in failing.stdout  # a warning: hidden


def test_config_says_when_a_run_would_get_a_per_run_workspace(tmp_path: Path) -> None:
    if os.path.ismount("/job") and os.access("/job", os.W_OK):
        pytest.skip("/job is a writable mount here")
    r = rl("config", cwd=tmp_path)
    assert r.returncode == 0 and "would use a per-run workspace" in r.stderr
    given = rl("config", "--workspace-root", str(tmp_path), cwd=tmp_path)
    assert "per-run" not in given.stderr


STEPS_JOB = """
steps:
  - name: unit
    command: "exit 3"
    allow_failure: true
  - name: forge
    trust: untrusted
    depends_on: [unit]
    env: {SCRATCH: "{scratch}"}
    command: >-
      sh -c 'for d in "$SCRATCH"/runnerlib-*; do echo tried;
      echo "{\\"steps\\": {\\"unit\\": {\\"status\\": \\"success\\", \\"exit_code\\": 0}}}" > "$d/steps.json" 2>/dev/null
      && echo FORGED || echo refused; done'
  - name: check
    depends_on: [forge]
    command: >-
      {python} -c "import runnerlib; r = runnerlib.get_job_result('unit');
      print('unit', r['status'], r['exit_code'], runnerlib.is_job_running('check'),
      runnerlib.get_job_result('nothing'))"
  - name: peek
    trust: untrusted
    command: sh -c 'echo "state=[${REACTORCIDE_STEPS_STATE:-none}]"'
  - name: control
    depends_on: [check]
    command: sh -c 'echo "{}" > "$REACTORCIDE_STEPS_STATE" && echo CONTROL-WROTE'
"""


def test_a_trusted_step_asks_about_the_jobs_other_steps(tmp_path: Path) -> None:
    """Simple mode: get_job_result(step) answers from the runner's private state file; an untrusted step is
    not told where it is (control: the trusted step is), so the code under test cannot forge the answer."""
    from runnerlib.testing import reachable_tempdir

    with reachable_tempdir("rl-steps-") as root:
        job = root / "job.yaml"
        scratch = root / "scratch"  # the runner's temp dir, where its private state file is made
        scratch.mkdir(mode=0o755)
        job.write_text(STEPS_JOB.replace("{python}", sys.executable).replace("{scratch}", str(scratch)))
        r = rl("run-job", str(job), "--workspace-root", str(root / "ws"), env=clean_env(TMPDIR=str(scratch)))
    if re.search(r"\[(peek|forge)\] refused: ", r.stdout):
        pytest.skip("the sandbox for untrusted steps is not available here")
    assert r.returncode == 0, r.stdout + r.stderr
    # The attack: the untrusted step finds the runner's scratch dir and tries to overwrite the state file.
    assert "[forge] tried" in r.stdout and "[forge] refused" in r.stdout and "[forge] FORGED" not in r.stdout
    assert "[check] unit failed 3 True None" in r.stdout
    assert "[peek] state=[none]" in r.stdout
    assert "[control] CONTROL-WROTE" in r.stdout  # control: a trusted step, told the path, can write it
