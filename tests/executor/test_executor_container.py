"""Container mode (`runnerlib run --runner-image IMG`): each step in a container of a real Podman.

The image is made here from Debian's busybox-static (no registry is reachable). Podman needs root on this
machine (rootless Podman needs subuid ranges the CI user does not have), so the tests are marked root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

IMAGE = "localhost/runnerlib-test-busybox:2"  # :2 has mkdir, chmod, printf
SECRET = "ctr-S3cr3t-" + "Kp7" * 6


def _podman() -> str:
    path = shutil.which("podman")
    if path is None:
        pytest.skip("podman is not installed (scripts/bootstrap.sh installs it as root)")
    if os.geteuid() != 0:
        pytest.skip("rootful podman needs root")
    return path


@pytest.fixture(scope="module")
def image() -> str:
    podman = _podman()
    if subprocess.run([podman, "image", "exists", IMAGE]).returncode == 0:
        return IMAGE
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        for sub in ("bin", "tmp", "etc", "proc", "sys", "dev"):
            (root / sub).mkdir(parents=True)
        shutil.copy(busybox, root / "bin" / "busybox")
        for applet in ("sh", "echo", "cat", "id", "ls", "sleep", "env", "touch", "grep", "true", "trap",
                       "mkdir", "chmod", "printf", "test", "cut"):
            (root / "bin" / applet).symlink_to("busybox")
        tar = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
        subprocess.run([podman, "import", "-q", str(tar), IMAGE], check=True, stdout=subprocess.DEVNULL)
    return IMAGE


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "ci").mkdir(parents=True)
    (ws / "ci" / "deploy.sh").write_text("echo trusted deploy\n")
    return ws


def _run(ws: Path, command: str, *extra: str, env: dict[str, str] | None = None, job_file: Path | None = None,
         **popen: object) -> subprocess.Popen[str]:
    # The job's name is in its containers' names: _our_containers() looks for this test's only.
    what = ["run-job", str(job_file)] if job_file else ["run", "--job-command", command]
    argv = [sys.executable, "-m", "runnerlib.cli", *what, "--workspace-root", str(ws), "--job-name", ws.parent.name,
            "--runner-image", IMAGE, "--secret-env-names", "DEPLOY_TOKEN", *extra]
    full_env = {**os.environ, "DEPLOY_TOKEN": SECRET, **(env or {})}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
                            start_new_session=True, **popen)  # type: ignore[call-overload]


def _lines(out: str) -> str:
    """The output without the `[step] ` prefixes."""
    return re.sub(r"^\[[^\]]+\] ", "", out, flags=re.M)


def _fragments(value: str, size: int = 8) -> list[str]:
    return [value[i:i + size] for i in range(0, len(value) - size + 1, 3)]


def _our_containers(ws: Path) -> list[str]:
    out = subprocess.run(["podman", "ps", "-a", "--filter", "label=io.reactorcide.runnerlib=step", "--format",
                          "{{.Names}}"], capture_output=True, text=True, check=True).stdout
    return [name for name in out.split() if name.startswith(f"runnerlib-{ws.parent.name}-")]


def _cmdlines() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("which", ["first", "second"])
def test_exit_code_masking_and_secret_never_on_a_command_line(image: str, tmp_path: Path, which: str) -> None:
    """The job's first step runs in the container started while the job was prepared (its variables come
    through a FIFO); a later step's container is started for it (`-e NAME`, values in the engine's
    environment). Neither puts a secret on a command line."""
    ws = _workspace(tmp_path)
    seen: list[str] = []
    stop = threading.Event()

    def scan() -> None:
        while not stop.is_set():
            seen.extend(c for c in _cmdlines() if "runnerlib-" in c or "podman" in c or "conmon" in c)
            time.sleep(0.02)

    step = 'echo "token=$DEPLOY_TOKEN"; sleep 1; exit 7'
    scanner = threading.Thread(target=scan)
    scanner.start()
    try:
        if which == "first":
            proc = _run(ws, step)
        else:
            job = tmp_path / "job.yaml"
            job.write_text(f"name: j\nsteps:\n  - name: a\n    command: 'true'\n  - name: b\n    depends_on: [a]\n"
                           f"    command: '{step}'\n")
            proc = _run(ws, "", job_file=job)
        out, _ = proc.communicate(timeout=120)
    finally:
        stop.set()
        scanner.join()
    assert proc.returncode == 7, out
    assert "token=***" in out
    for fragment in _fragments(SECRET):
        assert fragment not in out
        assert not any(fragment in line for line in seen), "the secret was on a command line"
    # The scan did see the engine's command line while the container ran, with the secret's NAME only.
    assert any("--cap-drop=ALL" in line for line in seen)
    if which == "second":
        assert any("-e DEPLOY_TOKEN" in line for line in seen)
    assert _our_containers(ws) == []


def test_ci_is_read_only_in_the_container(image: str, tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    proc = _run(ws, "echo evil > /job/ci/deploy.sh; echo wrote-src > /job/src/out.txt; cat /job/ci/deploy.sh")
    out, _ = proc.communicate(timeout=120)
    assert "Read-only file system" in out
    assert (ws / "ci" / "deploy.sh").read_text() == "echo trusted deploy\n"
    # Control: the same step could write the workspace beside it, so the refusal is the ci mount's.
    assert (ws / "src" / "out.txt").read_text() == "wrote-src\n"


def test_untrusted_step_runs_as_nobody_without_secrets(image: str, tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    probe = 'id -u; env; echo "token=[$DEPLOY_TOKEN]"'
    proc = _run(ws, probe, "--untrusted")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "\n65534\n" in _lines(out) and "token=[]" in out
    assert "DEPLOY_TOKEN" not in out.split("token=")[0]
    # Control: the same command as a trusted step gets the secret (masked in the output) and runs as root.
    trusted = _run(ws, probe)
    trusted_out, _ = trusted.communicate(timeout=120)
    assert "token=[***]" in trusted_out and "\n0\n" in _lines(trusted_out)


def test_hardening_no_capabilities_no_new_privileges(image: str, tmp_path: Path) -> None:
    proc = _run(_workspace(tmp_path), "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status")
    out, _ = proc.communicate(timeout=120)
    assert "CapEff:\t0000000000000000" in out and "CapBnd:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out


def test_sigterm_stops_the_container_and_exits_143(image: str, tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    proc = _run(ws, "echo started; sleep 300", "--kill-grace", "5")
    assert proc.stdout is not None
    for line in proc.stdout:
        if "started" in line:
            break
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert time.monotonic() - started < 30
    assert _our_containers(ws) == []


def test_step_timeout_leaves_no_container(image: str, tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    proc = _run(ws, "sleep 300", "--step-timeout", "2", "--kill-grace", "2")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    assert _our_containers(ws) == []


def test_missing_engine_is_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = _run(_workspace(tmp_path), "true", "--container-engine", "podman",
                env={"PATH": f"{empty}:{os.path.dirname(sys.executable)}"})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "container mode needs a container engine: podman is not on PATH" in out


# --- the step protocol in containers -----------------------------------------------------------------------

PROTOCOL = """
name: proto
steps:
  - name: build
    command: |
      echo "version=1.2.3" >> "$GITHUB_OUTPUT"
      echo "GREETING=hello" >> "$GITHUB_ENV"
      echo "TOKEN_COPY=$DEPLOY_TOKEN" >> "$REACTORCIDE_ENV"
      echo "TOKEN_B64=$(printf %s "$DEPLOY_TOKEN" | base64 -w0)" >> "$GITHUB_ENV"
      mkdir -p /job/artifacts/tools && printf '#!/bin/sh\\necho mytool ran\\n' > /job/artifacts/tools/mytool
      chmod +x /job/artifacts/tools/mytool
      echo /job/artifacts/tools >> "$GITHUB_PATH"
      echo "### Build 1.2.3" >> "$GITHUB_STEP_SUMMARY"
      echo "::notice title=N::built in a container"
  - name: use
    depends_on: [build]
    env:
      VERSION: ${{ steps.build.outputs.version }}
    command: 'echo "v=$VERSION cmd=${{ steps.build.outputs.version }} g=$GREETING t=$TOKEN_COPY b=$TOKEN_B64"; mytool'
  - name: scan
    trust: untrusted
    depends_on: [use]
    command: 'echo "found=yes" >> "$GITHUB_OUTPUT"; echo "u=$(id -u) g=[$GREETING]"; env > /job/artifacts/leak'
  - name: after
    trust: untrusted
    depends_on: [scan]
    command: 'echo "scan said ${{ steps.scan.outputs.found }}"'
"""


def test_step_protocol_files_work_inside_containers(image: str, tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(PROTOCOL)
    argv = [sys.executable, "-m", "runnerlib.cli", "run-job", str(job), "--workspace-root", str(ws),
            "--job-name", ws.parent.name, "--runner-image", IMAGE, "--secret-env-names", "DEPLOY_TOKEN"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "DEPLOY_TOKEN": SECRET})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # GITHUB_OUTPUT reached ${{ steps.build.outputs.version }} (in env: and in the command), GITHUB_ENV the
    # next container's environment (a secret copied there stays masked), GITHUB_PATH its PATH.
    assert "[use] v=1.2.3 cmd=1.2.3 g=hello t=*** b=***" in out
    assert "[use] mytool ran" in out
    assert (ws / "artifacts" / "summary.md").read_text() == "### Build 1.2.3\n"
    # Workflow commands of the first step (run in its early-started container) are collected too.
    steps = {s["name"]: s for s in json.loads((ws / "artifacts" / "logs" / "summary.json").read_text())["steps"]}
    assert steps["build"]["annotations"] == [{"level": "notice", "message": "built in a container", "title": "N"}]
    # An untrusted container step's files work too (they live under /job/artifacts), as uid 65534. It gets
    # what trusted steps set for later steps, as in process mode, but never a secret they copied there: the
    # trusted `use` above got TOKEN_COPY and its base64 (the control), the untrusted step's whole environment
    # lacks both.
    assert "[scan] u=65534 g=[hello]" in out
    assert "[after] scan said yes" in out
    leak = (ws / "artifacts" / "leak").read_text()
    assert "GREETING=hello" in leak and "TOKEN_COPY" not in leak and "TOKEN_B64" not in leak
    for fragment in _fragments(SECRET):
        assert fragment not in out and fragment not in leak
    assert _our_containers(ws) == []


def test_step_files_are_mounted_for_that_step_only(image: str, tmp_path: Path) -> None:
    # A later step cannot reach an earlier trusted step's files: they are gone, and were never mounted for it.
    ws = _workspace(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text("name: j\nsteps:\n  - name: a\n    command: 'echo \"$GITHUB_OUTPUT\" > /job/artifacts/a-path'\n"
                   "  - name: b\n    depends_on: [a]\n    command: 'test -e \"$(cat /job/artifacts/a-path)\" "
                   "&& echo a-files-visible || echo a-files-gone'\n")
    proc = subprocess.run([sys.executable, "-m", "runnerlib.cli", "run-job", str(job), "--workspace-root",
                           str(ws), "--job-name", ws.parent.name, "--runner-image", IMAGE],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[b] a-files-gone" in proc.stdout


# --- the first step's container, started while the job is prepared (execution/container_prestart.py) -----

def _prestart_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("runnerlib-ctr-*")}


def test_a_job_failing_before_its_first_step_leaves_no_container(image: str, tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    before = _prestart_dirs()
    proc = _run(ws, "echo never", "--source-type", "git", "--source-url", f"file://{tmp_path}/no-such-repo")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    assert "never" not in _lines(out).replace("$ echo never", "")
    assert "cancelled" not in out  # the unused container is removed quietly: no step was running
    assert _our_containers(ws) == []
    assert _prestart_dirs() - before == set()


def test_a_retry_and_later_steps_run_in_containers_of_their_own(image: str, tmp_path: Path) -> None:
    # Attempt 1 of the first step runs in the prestarted container, attempt 2 in a new one; both get the
    # step's files (the second attempt's output is the one kept), as does the next step.
    ws = _workspace(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text("""
name: retried
steps:
  - name: flaky
    retry: {max: 2, exit_codes: [3]}
    command: 'n=$(cat /job/artifacts/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /job/artifacts/n;
      echo "attempt=$n" >> "$GITHUB_OUTPUT"; test $n = 2 || exit 3'
  - name: show
    depends_on: [flaky]
    command: echo "got ${{ steps.flaky.outputs.attempt }}"
""")
    proc = _run(ws, "", job_file=job)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert "[show] got 2" in out
    assert _our_containers(ws) == []


def test_ci_prepared_after_the_early_start_is_still_read_only(image: str, tmp_path: Path) -> None:
    # The first step's container starts before sources are prepared, when /job/ci does not exist yet, so
    # it could not mount it read-only: the step must not run in it (attack: rewrite the trusted CI code).
    ci_src = tmp_path / "ci-repo"
    ci_src.mkdir()
    (ci_src / "deploy.sh").write_text("echo trusted deploy\n")
    ws = tmp_path / "ws"
    proc = _run(ws, "echo evil > /job/ci/deploy.sh; echo wrote-src > /job/src/out.txt; cat /job/ci/deploy.sh",
                "--ci-source-type", "copy", "--ci-source-url", str(ci_src))
    out, _ = proc.communicate(timeout=120)
    assert "Read-only file system" in out, out
    assert (ws / "ci" / "deploy.sh").read_text() == "echo trusted deploy\n"
    # Control: the same step could write the workspace beside it, so the refusal is the ci mount's.
    assert (ws / "src" / "out.txt").read_text() == "wrote-src\n"
    assert _our_containers(ws) == []
