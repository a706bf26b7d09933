"""One exit-code and error convention for every command (issue 13, item 3): 78 for configuration errors on
stderr, Ctrl-C 130 everywhere (a second one kills at once), each signal once per step, a job timeout shown
as "timed out" on the step. Signals are sent as a terminal sends them: to the command's process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_testlib import clean_env, rl

PY = sys.executable


def _start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([PY, "-m", "runnerlib", *args], cwd=cwd, env=env or clean_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _wait_for(path: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


# --- configuration errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("steps, fragment", [
    ("  - name: a\n    command: 'true'\n    depends_on: [nope]\n", "unknown step 'nope'"),
    ("  - name: build\n    command: 'true'\n  - name: b\n    command: 'true'\n    depends_on: [biuld]\n",
     "unknown step 'biuld' (did you mean 'build'?)"),
    ("  - name: a\n    command: 'true'\n    depends_on: [b]\n  - name: b\n    command: 'true'\n    depends_on: [a]\n",
     "dependency cycle"),
    ("  - name: a\n    command: 'true'\n    condition: brnch == 'main'\n",
     "unknown variable 'brnch' (did you mean 'branch'?)"),
    ("  - name: a\n", "command"),
])
def test_job_file_errors_are_78_on_stderr_for_run_job_and_validate(tmp_path: Path, steps: str, fragment: str) -> None:
    job = tmp_path / "bad.yaml"
    job.write_text("steps:\n" + steps)
    for command in ("run-job", "validate"):
        r = rl(command, str(job), "--workspace-root", str(tmp_path / "ws"))
        assert r.returncode == 78, (command, r.stdout, r.stderr)
        lines = [line for line in r.stderr.splitlines() if line.startswith("runnerlib: error: ")]
        assert len(lines) == 1 and fragment in lines[0], r.stderr
        assert "Error:" not in r.stderr.replace("runnerlib: error:", "")  # no Python class names


def test_step_key_typo_suggests_the_key(tmp_path: Path) -> None:
    job = tmp_path / "typo.yaml"
    job.write_text("steps:\n  - name: a\n    command: 'true'\n    depend_on: [b]\n")
    r = rl("validate", str(job))
    assert r.returncode == 78 and "did you mean 'depends_on'" in r.stderr, r.stderr
    assert "Extra inputs are not permitted" not in r.stderr


def test_workflow_validate_agrees_with_validate(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: x\njobs:\n  a:\n    comand: echo\n")
    r = rl("workflow", "validate", str(wf))
    assert r.returncode == 78 and "did you mean 'command'" in r.stderr, r.stderr


# --- signals ------------------------------------------------------------------------------------------------


def test_a_cancelled_step_gets_sigterm_once(tmp_path: Path) -> None:
    count = tmp_path / "terms"
    ready = tmp_path / "ready"
    command = (f"trap 'echo x >> {count}; exit 0' TERM; touch {ready}; "
               "while :; do sleep 0.1; done")
    p = _start(["run", "--workspace-root", str(tmp_path / "ws"), "--job-command", command], tmp_path)
    _wait_for(ready)
    os.killpg(p.pid, signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode == 143
    time.sleep(0.2)
    assert count.read_text().count("x") == 1


def test_ctrl_c_twice_kills_at_once_with_130(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    p = _start(["run", "--workspace-root", str(tmp_path / "ws"), "--kill-grace", "60", "--job-command",
                f"trap '' TERM; touch {ready}; while :; do sleep 0.1; done"], tmp_path)
    _wait_for(ready)
    os.killpg(p.pid, signal.SIGINT)
    time.sleep(0.5)
    assert p.poll() is None  # the step ignores SIGTERM: the first Ctrl-C waits for the grace
    start = time.monotonic()
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, out + err
    assert time.monotonic() - start < 20  # not the 60 s grace
    assert "killing the running steps now" in err


def test_ctrl_c_during_workflow_run_is_130_without_a_vanished_supervisor(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    wf = tmp_path / "ci.yaml"
    wf.write_text(f"name: ci\njobs:\n  slow:\n    command: \"touch {ready}; sleep 30 & wait\"\n"
                  "  other:\n    command: \"sleep 30\"\n")
    p = _start(["workflow", "run", str(wf), "--code-dir", str(tmp_path), "--run-dir", str(tmp_path / "run")],
               tmp_path)
    _wait_for(ready)
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, out + err
    assert "vanished" not in out and "exit 125" not in out, out


def test_a_job_timeout_says_timed_out_on_the_step(tmp_path: Path) -> None:
    job = tmp_path / "j.yaml"
    job.write_text("steps:\n  - name: a\n    command: sleep 30\n")
    r = rl("run-job", str(job), "--workspace-root", str(tmp_path / "ws"), "--job-timeout", "1")
    assert r.returncode == 124
    row = next(line for line in r.stdout.splitlines() if line.startswith("a "))
    assert row.split()[1:4] == ["timed_out", row.split()[2], "124"] and "job timed out" in row
    assert "[a] finished (timed out: the job's timeout of 1s)" in r.stdout and "cancelled" not in r.stdout
