"""What runner.py does for workflows around the steps: the trigger key is announced before source preparation,
and --allow-insecure-transport given on the command line reaches trusted steps' own coordinator POSTs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runnerlib.workflow.signing import load_public_key, public_key_from_announcement

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def runnerlib_run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "runnerlib.cli", "run", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_key_is_announced_before_source_preparation(shared_dir: Path) -> None:
    """The worker trusts the first announcement only: it must come before anything source preparation (which
    handles untrusted input) prints. The workspace does not exist yet; the key file is still written."""
    source = shared_dir / "source"
    source.mkdir()
    (source / "README").write_text("hello\n")
    workspace = shared_dir / "ws"
    proc = runnerlib_run("--workspace-root", str(workspace), "--source-type", "copy", "--source-url", str(source),
                         "--job-command", "echo step-ran", env=clean_env(REACTORCIDE_JOB_ID="job-k"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    copying = next(i for i, line in enumerate(lines) if "copying" in line)
    announced = next(i for i, line in enumerate(lines) if line.startswith('{"reactorcide_trigger_key"'))
    assert announced == 0 < copying, lines[:5]
    assert public_key_from_announcement(lines[0]).public_bytes_raw() == \
        load_public_key(workspace / "trigger-signing.pub").public_bytes_raw()


def test_dry_run_announces_nothing(shared_dir: Path) -> None:
    proc = runnerlib_run("--workspace-root", str(shared_dir / "ws"), "--dry-run", "--job-command", "true",
                         env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reactorcide_trigger_key" not in proc.stdout


TRIGGER = f"{PYTHON} -c \"import os, runnerlib; " \
          "print('insecure=' + os.environ.get('REACTORCIDE_ALLOW_INSECURE_TRANSPORT', 'unset')); " \
          "runnerlib.trigger_job('deploy')\""


@pytest.mark.parametrize("strip", [False, True], ids=["flag-exported", "control-variable-removed"])
def test_allow_insecure_transport_flag_reaches_trusted_steps(shared_dir: Path, http_server, strip: bool) -> None:
    """With --allow-insecure-transport on the command line (not in the environment) and a plain-http
    coordinator, a trusted step's trigger_job POSTs straight to it. Control: the same step with the variable
    removed from its environment is refused by its own client, as every trusted step was before."""
    from wf_coordinator_server import TOKEN

    command = ("env -u REACTORCIDE_ALLOW_INSECURE_TRANSPORT " if strip else "") + TRIGGER
    env = clean_env(REACTORCIDE_COORDINATOR_URL=http_server.url, REACTORCIDE_API_TOKEN=TOKEN,
                    REACTORCIDE_JOB_ID="job-insecure")
    proc = runnerlib_run("--workspace-root", str(shared_dir / "ws"), "--allow-insecure-transport", "--job-command",
                         command, env=env)
    posts = [r for r in http_server.state.requests if r["method"] == "POST"]
    if strip:
        assert proc.returncode != 0
        assert "insecure=unset" in proc.stdout and "http" in proc.stdout.lower()
        # The runner (which has the flag) still delivers the operation after the step: one POST, its own.
        assert len(posts) == 1
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "insecure=true" in proc.stdout
        assert [j["job_name"] for jobs in http_server.state.created.values() for j in jobs] == ["deploy"]
        assert len(posts) == 1  # by the step; the runner saw it delivered and did not post again
    assert TOKEN not in proc.stdout + proc.stderr


def test_untrusted_steps_do_not_get_the_insecure_flag_variable_from_the_job(shared_dir: Path) -> None:
    """The variable is added to trusted steps' environment only (untrusted steps reach no coordinator)."""
    from runnerlib.config import get_config
    from runnerlib.plugins import PluginManager
    from runnerlib.runner import JobRunner

    config = get_config(environ={}, workspace_root=str(shared_dir / "ws"), allow_insecure_transport=True,
                        job_command="true")
    runner = JobRunner(config, None, plugins=PluginManager(), environ=clean_env(), handle_signals=False)
    assert runner._trusted_env()["REACTORCIDE_ALLOW_INSECURE_TRANSPORT"] == "true"
    assert "REACTORCIDE_ALLOW_INSECURE_TRANSPORT" not in runner._untrusted_env()
    plain = JobRunner(get_config(environ={}, workspace_root=str(shared_dir / "ws"), job_command="true"), None,
                      plugins=PluginManager(), environ=clean_env(), handle_signals=False)
    assert "REACTORCIDE_ALLOW_INSECURE_TRANSPORT" not in plain._trusted_env()
