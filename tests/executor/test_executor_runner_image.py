"""The runner image (images/build.sh, built offline here) and what runs in it: the worker's default mode
end to end, and `workflow run --engine podman` with each job in its own container. Real Podman, as root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/reactorcide/runner:latest"
SECRET = "img-S3cr3t-" + "Wx4" * 6


@pytest.fixture(scope="module")
def runner_image() -> str:
    if os.geteuid() != 0 or shutil.which("podman") is None:
        pytest.skip("needs root and podman (scripts/bootstrap.sh installs it)")
    if shutil.which("debootstrap") is None:
        pytest.skip("needs debootstrap (scripts/bootstrap.sh installs it)")
    # Always rebuilt, so the image holds this tree's runnerlib; the debootstrapped base is kept.
    result = subprocess.run(["bash", "images/build.sh", "python3.11"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PY": sys.executable})
    assert result.returncode == 0, result.stdout + result.stderr
    return IMAGE


def _git_repo(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *args], cwd=path, check=True, env=env)
    return f"file://{path}"


def _podman_workflow(wf: Path, tmp_path: Path) -> str:
    """`workflow run WF --engine podman` (run dir tmp_path/run); its output, after checking it succeeded."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    result = subprocess.run([sys.executable, "-m", "runnerlib.cli", "workflow", "run", str(wf), "--engine", "podman",
                             "--code-dir", str(tmp_path), "--run-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, env=env, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


def _fragments(value: str, size: int = 8) -> list[str]:
    return [value[i:i + size] for i in range(0, len(value) - size + 1, 3)]


def test_worker_default_mode_in_the_runner_image(runner_image: str, tmp_path: Path) -> None:
    """`podman run -v WS:/job -e REACTORCIDE_... IMAGE python -m runnerlib.cli run`, checked from outside:
    dual source (trusted ci, untrusted src), the secret masked, a trigger written and signed."""
    repos = tmp_path / "repos"
    src_url = _git_repo(repos / "app", {"app.py": "print('pull request code')\n"})
    ci_url = _git_repo(repos / "ci", {"ci.sh": 'echo "ci sees $(cat /job/src/app.py)"\n'
                                               'echo "token=$DEPLOY_TOKEN"\n'
                                               'runnerlib trigger deploy --job-command "echo deploy"\n'})
    ws = tmp_path / "ws"
    ws.mkdir()
    env = {"REACTORCIDE_SOURCE_TYPE": "git", "REACTORCIDE_SOURCE_URL": src_url, "REACTORCIDE_SOURCE_REF": "main",
           "REACTORCIDE_CI_SOURCE_TYPE": "git", "REACTORCIDE_CI_SOURCE_URL": ci_url,
           "REACTORCIDE_CI_SOURCE_REF": "main", "REACTORCIDE_JOB_COMMAND": "sh /job/ci/ci.sh",
           "REACTORCIDE_JOB_ID": "job-42", "REACTORCIDE_SECRET_ENV_NAMES": "DEPLOY_TOKEN", "DEPLOY_TOKEN": SECRET}
    argv = ["podman", "run", "--rm", "-v", f"{ws}:/job", "-v", f"{repos}:{repos}:ro"]
    for name in env:
        argv += ["-e", name]
    argv += [runner_image, "python", "-m", "runnerlib.cli", "run"]
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "ci sees print('pull request code')" in out
    assert "token=***" in out
    for fragment in _fragments(SECRET):
        assert fragment not in out
        assert fragment not in " ".join(argv)
    triggers = json.loads((ws / "triggers.json").read_text())
    assert [j["job_name"] for j in triggers["jobs"]] == ["deploy"]
    assert '"reactorcide_trigger"' in out  # the signed trigger line for the worker
    assert (ws / "src" / "app.py").exists() and (ws / "ci" / "ci.sh").exists()


def test_workflow_jobs_in_their_own_containers(runner_image: str, tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text("""
id: boxed
name: jobs in containers
jobs:
  limits:
    command: cat /sys/fs/cgroup/memory/memory.limit_in_bytes; id -u; grep CapBnd /proc/self/status
    resources: {memory: 256Mi, cpu: "500m"}
    capabilities: [NET_BIND_SERVICE]
  other-user:
    needs: [limits]
    command: id -u
    run_as: {user: 1000}
""")
    out = _podman_workflow(wf, tmp_path)
    assert "[limits] 268435456" in out  # resources.memory applied as the container's memory limit
    cap_line = next(line for line in out.splitlines() if "CapBnd:" in line)
    assert int(cap_line.split()[-1], 16) & (1 << 10)  # CAP_NET_BIND_SERVICE was added
    assert "[other-user] 1000" in out
    leftovers = subprocess.run(["podman", "ps", "-a", "--filter", "label=io.reactorcide.runnerlib=step",
                                "--format", "{{.Names}}"], capture_output=True, text=True).stdout.split()
    assert leftovers == []
    # Control: the process engine runs the same workflow without applying them, and says so once.
    plain = subprocess.run([sys.executable, "-m", "runnerlib.cli", "workflow", "run", str(wf), "--code-dir",
                            str(tmp_path), "--run-dir", str(tmp_path / "run2")], capture_output=True, text=True,
                           env={**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]},
                           timeout=600)
    assert plain.stdout.count("these job settings are not applied") == 1
    assert "resources (limits)" in plain.stdout and "run_as (other-user)" in plain.stdout


def test_job_containers_see_the_workflow_state_read_only(runner_image: str, tmp_path: Path) -> None:
    """`get_job_result`/`is_job_running` inside a job container answer from the run's state.json, as in
    process mode; the job cannot change it (attack), though it can write its own workspace (control)."""
    query = ("from runnerlib.workflow.api import get_job_result as r, is_job_running as i; "
             "print('first:', r('first')['status'], r('first')['exit_code'], 'second running:', i('second'))")
    wf = tmp_path / "wf.yaml"
    wf.write_text(f"""
id: stateful
name: state in containers
jobs:
  first:
    command: echo first ran
  second:
    needs: [first]
    command: >-
      python -c "{query}";
      echo forged > "$REACTORCIDE_WORKFLOW_STATE" || echo state-is-read-only;
      echo mine > /job/mine.txt && echo workspace-writable
""")
    out = _podman_workflow(wf, tmp_path)
    assert "[second] first: success 0 second running: True" in out
    assert "[second] state-is-read-only" in out and "[second] workspace-writable" in out
    saved = json.loads((tmp_path / "run" / "state.json").read_text())
    assert saved["jobs"]["second"]["status"] == "success"
    assert "forged" not in (tmp_path / "run" / "shared-state" / "state.json").read_text()


def test_sigterm_to_a_podman_workflow_leaves_no_container(runner_image: str, tmp_path: Path) -> None:
    # Job containers are removed off the jobs' critical path (a thread per job); the run still waits for
    # every removal before it returns.
    import signal
    import time

    wf = tmp_path / "wf.yaml"
    wf.write_text("id: slow\nname: slow\njobs:\n  sleeper:\n    command: echo started; sleep 120\n")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.Popen([sys.executable, "-m", "runnerlib.cli", "workflow", "run", str(wf), "--engine", "podman",
                             "--code-dir", str(tmp_path), "--run-dir", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 120
    while "started" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    assert "started" in seen, seen
    proc.send_signal(signal.SIGTERM)
    out = seen + proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out
    leftovers = subprocess.run(["podman", "ps", "-a", "--filter", "label=io.reactorcide.runnerlib=step",
                                "--format", "{{.Names}}"], capture_output=True, text=True).stdout.split()
    assert not [n for n in leftovers if "sleeper" in n], leftovers
