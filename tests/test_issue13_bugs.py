"""The bugs a new user met (issue 13, item 6), one test each."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_testlib import clean_env, rl


def test_workflow_run_does_not_pass_the_callers_settings_into_jobs(tmp_path: Path) -> None:
    wf = tmp_path / "ci.yaml"
    wf.write_text("name: ci\njobs:\n  hello:\n    command: echo hello-from-job\n")
    env = clean_env(REACTORCIDE_WORKSPACE_ROOT=str(tmp_path / "elsewhere"),
                    REACTORCIDE_GIT_URL="https://example.invalid/x.git", REACTORCIDE_LOG_LEVEL="INFO")
    r = rl("workflow", "run", str(wf), "--code-dir", str(tmp_path), "--run-dir", str(tmp_path / "run"), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hello-from-job" in r.stdout
    assert not (tmp_path / "elsewhere").exists()


def test_passes_to_jobs_keeps_how_and_drops_where() -> None:
    from runnerlib.workflow.local_runner import passes_to_jobs

    assert passes_to_jobs("PATH") and passes_to_jobs("REACTORCIDE_LOG_FORMAT")
    assert passes_to_jobs("REACTORCIDE_SECRET_ENV_NAMES") and passes_to_jobs("REACTORCIDE_SANDBOX_BEST_EFFORT")
    for name in ("REACTORCIDE_WORKSPACE_ROOT", "REACTORCIDE_GIT_URL", "REACTORCIDE_JOB_COMMAND",
                 "REACTORCIDE_CODE_DIR", "REACTORCIDE_TRIGGERS_FILE"):
        assert not passes_to_jobs(name)


@pytest.mark.parametrize("working_dir", ["../../../../etc", "/etc", "a/../../b"])
def test_working_dir_outside_the_job_is_refused_at_validation(tmp_path: Path, working_dir: str) -> None:
    job = tmp_path / "j.yaml"
    job.write_text(f"steps:\n  - name: a\n    command: pwd\n    working_dir: '{working_dir}'\n")
    for command in ("validate", "run-job"):
        r = rl(command, str(job), "--workspace-root", str(tmp_path / "ws"))
        assert r.returncode == 78 and "working_dir: must be a relative path inside the job's directory" in r.stderr
        assert "/etc" not in r.stdout.replace(str(job), "")  # never ran there


def test_working_dir_through_a_link_out_of_the_job_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "src" / "inside").mkdir(parents=True)
    os.symlink("/etc", ws / "src" / "out")
    job = tmp_path / "j.yaml"
    job.write_text("steps:\n  - name: a\n    command: pwd -P\n    working_dir: out\n")
    r = rl("run-job", str(job), "--workspace-root", str(ws))
    assert r.returncode == 78 and "through a symbolic link" in r.stderr and "[a] /etc" not in r.stdout
    # Control: the same job with a working_dir inside the tree runs there.
    job.write_text("steps:\n  - name: a\n    command: pwd -P\n    working_dir: inside\n")
    ok = rl("run-job", str(job), "--workspace-root", str(ws))
    assert ok.returncode == 0 and f"[a] {os.path.realpath(ws / 'src' / 'inside')}" in ok.stdout


def test_a_missing_working_dir_is_a_configuration_error_not_the_sandbox(tmp_path: Path) -> None:
    job = tmp_path / "j.yaml"
    job.write_text("steps:\n  - name: a\n    command: pwd\n    working_dir: nothere\n")
    r = rl("run-job", str(job), "--workspace-root", str(tmp_path / "ws"))
    assert r.returncode == 78
    assert "working_dir 'nothere': no such directory" in r.stderr and "sandbox" not in r.stdout + r.stderr


def test_var_without_equals_is_an_error_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "branch").write_text("SECRET_FROM_FILE=1\n")
    r = rl("run", "--workspace-root", str(tmp_path / "ws"), "--var", "branch", "--job-command", "true",
           cwd=tmp_path)
    assert r.returncode == 78 and "'branch' is not KEY=VALUE" in r.stderr


def test_sandbox_exec_options(tmp_path: Path) -> None:
    r = rl("sandbox", "exec", "--bogus", "echo", "hi")
    assert r.returncode == 78 and "No such option '--bogus'" in r.stderr and "hi" not in r.stdout
    (tmp_path / "src").mkdir()
    assert "--workspace-root" in rl("sandbox", "exec", "--help").stdout
    assert "--workspace " not in rl("sandbox", "exec", "--help").stdout  # the old name works, hidden


def test_validate_prints_the_dag_by_levels(tmp_path: Path) -> None:
    job = tmp_path / "j.yaml"
    job.write_text("steps:\n  - name: lint\n    command: 'true'\n  - name: test\n    command: 'true'\n"
                   "  - name: build\n    command: 'true'\n    depends_on: [lint, test]\n")
    r = rl("validate", str(job))
    assert r.returncode == 0
    assert "3 step(s) in 2 level(s)" in r.stdout
    assert "  1. lint; test\n  2. build after lint, test\n" in r.stdout


def test_dry_run_says_what_it_would_fetch(tmp_path: Path) -> None:
    r = rl("run", "--dry-run", "--workspace-root", str(tmp_path / "ws"), "--git-url",
           "https://user:pw-zz9@example.invalid/app.git", "--git-ref", "main", "--job-command", "make test")
    assert r.returncode == 0
    assert f"would fetch src: git https://***@example.invalid/app.git at main into {tmp_path}/ws/src" in r.stdout
    assert "pw-zz9" not in r.stdout + r.stderr
    assert not (tmp_path / "ws" / "src").exists()


def test_unknown_reactorcide_variable_gets_a_suggestion_on_run(tmp_path: Path) -> None:
    r = rl("run", "--workspace-root", str(tmp_path / "ws"), "--job-command", "true",
           env=clean_env(REACTORCIDE_JOB_COMAND="x"))
    assert r.returncode == 0 and "did you mean REACTORCIDE_JOB_COMMAND" in r.stderr


def test_summary_json_names_the_job_of_a_file_without_name(tmp_path: Path) -> None:
    job = tmp_path / "build-all.yaml"
    job.write_text("steps:\n  - name: a\n    command: echo $REACTORCIDE_JOB_NAME\n")
    r = rl("run-job", str(job), "--workspace-root", str(tmp_path / "ws"))
    assert r.returncode == 0 and "[a] build-all" in r.stdout
    assert json.loads((tmp_path / "ws/artifacts/logs/summary.json").read_text())["job"] == "build-all"
