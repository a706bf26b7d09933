"""End-to-end runs of the `runnerlib` command in subprocesses: exit codes, SIGTERM, DAG, config, validate."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET = "cli-secret-Hh41zzQ"


def cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 60,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_") and k not in ("LOG_FORMAT", "LOG_LEVEL")}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "runnerlib.cli", *args], env=base, cwd=cwd or REPO,
                          capture_output=True, timeout=timeout, input=input)


def test_exit_status_is_the_steps(ws: Path) -> None:
    r = cli("run", "--workspace-root", str(ws), "--", "sh", "-c", "echo out; exit 7")
    assert r.returncode == 7
    assert b"[job] out" in r.stdout


def test_step_timeout_exits_124(ws: Path) -> None:
    r = cli("run", "--workspace-root", str(ws), "--step-timeout", "0.5", "--job-command", "sleep 30",
            env={"REACTORCIDE_KILL_GRACE": "1"})
    assert r.returncode == 124, r.stdout + r.stderr
    assert b"timed_out" in r.stdout


def test_git_url_and_job_command_from_env(ws: Path) -> None:
    r = cli("run", "--workspace-root", str(ws), env={"REACTORCIDE_JOB_COMMAND": "echo from-env"})
    assert r.returncode == 0 and b"from-env" in r.stdout


PLUGIN = """
from runnerlib.plugins import Plugin, PluginPhase

class Marker(Plugin):
    def __init__(self):
        super().__init__("marker")

    def on_error(self, context):
        open({base!r} + "/on_error", "w").write(str(context.exit_code))

    def cleanup(self, context):
        open({base!r} + "/cleanup", "w").write(str(context.exit_code))

PLUGINS = [Marker()]
"""


def _run_and_interrupt(ws: Path, sig: int, command: str, *options: str,
                       env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """`runnerlib run` of `command` with the Marker plugin; `sig` once the command has touched ws/started.

    Returns (exit code, stdout, stderr)."""
    plugins = ws / "plugins"
    plugins.mkdir()
    (plugins / "marker.py").write_text(PLUGIN.format(base=str(ws)))
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    proc = subprocess.Popen([sys.executable, "-m", "runnerlib.cli", "run", "--workspace-root", str(ws),
                             "--plugin-dir", str(plugins), *options, "--job-command", command],
                            env={**clean_env, **(env or {})}, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (ws / "started").exists():
            assert time.monotonic() < deadline, "the step never started"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def test_sigterm_cancels_steps_runs_cleanup_and_exits_143(ws: Path) -> None:
    # The step starts a grandchild that ignores SIGTERM: the kill must still reach it after the grace.
    command = (f"(trap '' TERM; sleep 120) & echo $! > {ws}/grandchild; touch {ws}/started; wait")
    code, out, err = _run_and_interrupt(ws, signal.SIGTERM, command, env={"REACTORCIDE_KILL_GRACE": "1"})
    assert code == 143, out + err
    assert (ws / "cleanup").read_text() == "143"
    assert (ws / "on_error").read_text() == "143"
    pid = int((ws / "grandchild").read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the step's grandchild survived the cancellation"
    assert b"cancelled" in out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


BARRIER = ("import os, sys, time\n"
           "ws, me, other = sys.argv[1:4]\n"
           "t = repr(time.time())  # taken before the file appears (the other step polls for it)\n"
           "open(os.path.join(ws, me + '.tmp'), 'w').write(t)\n"
           "os.rename(os.path.join(ws, me + '.tmp'), os.path.join(ws, me + '.start'))\n"
           "deadline = time.time() + 30\n"
           "while not os.path.exists(os.path.join(ws, other + '.start')):\n"
           "    if time.time() > deadline: sys.exit('the other step never started: not parallel')\n"
           "    time.sleep(0.01)\n"
           "open(os.path.join(ws, me + '.end'), 'w').write(repr(time.time()))\n")


def test_run_job_file_parallel_steps_overlap(ws: Path) -> None:
    (ws / "barrier.py").write_text(BARRIER)
    job = ws / "job.yaml"
    job.write_text(
        "name: dag\n"
        "concurrency: 2\n"
        "steps:\n"
        f"  - name: left\n    command: [{sys.executable!r}, {str(ws / 'barrier.py')!r}, {str(ws)!r}, left, right]\n"
        f"  - name: right\n    command: [{sys.executable!r}, {str(ws / 'barrier.py')!r}, {str(ws)!r}, right, left]\n"
        f"  - name: after\n    command: python3 -c \"import time; open('{ws}/after.start','w').write(repr(time.time()))\"\n"
        "    depends_on: [left, right]\n"
        "  - name: deploy\n    command: 'false'\n    condition: branch == 'main'\n"
    )
    r = cli("run-job", str(job), "--workspace-root", str(ws), env={"REACTORCIDE_BRANCH": "feature"})
    assert r.returncode == 0, r.stdout + r.stderr
    read = lambda name: float((ws / name).read_text())  # noqa: E731
    left, right = (read("left.start"), read("left.end")), (read("right.start"), read("right.end"))
    assert max(left[0], right[0]) < min(left[1], right[1])  # intervals overlap
    assert read("after.start") >= max(left[1], right[1])
    assert b"condition `branch == 'main'` is false (branch='feature')" in r.stdout
    summary = json.loads((ws / "artifacts" / "logs" / "summary.json").read_text())
    assert {s["name"]: s["status"] for s in summary["steps"]} == {
        "left": "success", "right": "success", "after": "success", "deploy": "skipped"}
    for name in ("left", "right", "after"):
        assert (ws / "artifacts" / "logs" / f"{name}.log").exists()


def test_run_job_cycle_refused_before_anything_runs(ws: Path) -> None:
    job = ws / "job.yaml"
    job.write_text(f"steps:\n  - name: a\n    command: touch {ws}/ran\n    depends_on: [b]\n"
                   "  - name: b\n    command: 'true'\n    depends_on: [a]\n")
    r = cli("run-job", str(job), "--workspace-root", str(ws))
    assert r.returncode == 78
    assert b"dependency cycle" in r.stderr  # on stderr: `run-job bad.yaml >/dev/null` still shows it
    assert not (ws / "ran").exists()


def test_config_shows_origins_and_masks(ws: Path) -> None:
    job = ws / "job.yaml"
    job.write_text("job_command: from-file\nconcurrency: 3\n")
    r = cli("config", "--config-file", str(job), "--workspace-root", str(ws), "--log-format", "json",
            "--secret-values-list", SECRET,
            env={"REACTORCIDE_JOB_ID": "42", "REACTORCIDE_API_TOKEN": "tok-" + SECRET})
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.decode().splitlines()}
    assert lines["job_id"].endswith("env REACTORCIDE_JOB_ID")
    assert lines["log_format"].endswith("option --log-format")
    assert lines["concurrency"].endswith(f"{job}:2")
    assert lines["job_command"].endswith(f"{job}:1")
    assert "***" in lines["api_token"] and SECRET[:8] not in r.stdout.decode()
    r = cli("config", "--json", "--workspace-root", str(ws))
    assert json.loads(r.stdout)["workspace_root"]["origin"] == "option --workspace-root"


def test_config_schema_is_json_schema() -> None:
    r = cli("config", "schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert "steps" in schema["properties"] and schema["$schema"].startswith("https://json-schema.org")


def test_validate_one_line_errors(ws: Path) -> None:
    job = ws / "job.yaml"
    job.write_text("steps:\n  - name: a\n    command: x\n    depends_on: [missing]\n")
    r = cli("validate", str(job), "--workspace-root", str(ws))
    assert r.returncode == 78
    err = r.stderr.decode().strip()
    assert err.count("\n") == 0 and "unknown step 'missing'" in err and f"{job}:2" in err
    assert b"Traceback" not in r.stderr
    r = cli("validate", "--workspace-root", str(ws), "--source-url", "https://e.com/x.git", "--source-type", "none")
    assert r.returncode == 78 and b"source_url (from option --source-url)" in r.stderr
    r = cli("validate", "--workspace-root", str(ws), "--job-command", "true")
    assert r.returncode == 0 and b"valid" in r.stdout


def test_debug_shows_traceback(ws: Path) -> None:
    r = cli("--debug", "validate", "--workspace-root", str(ws), "--source-type", "git")
    assert r.returncode != 0 and b"Traceback" in r.stderr


def test_container_option_fails_clearly_without_an_engine(ws: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-engines"
    empty.mkdir()
    r = cli("run", "--workspace-root", str(ws), "--runner-image", "alpine:latest", "--job-command", "true",
            env={"PATH": f"{empty}:{os.path.dirname(sys.executable)}"})
    assert r.returncode == 78 and b"container mode needs a container engine" in r.stderr


def test_job_from_workflow_file(ws: Path) -> None:
    wf = ws / "ci.yaml"
    wf.write_text("name: pipeline\nvars:\n  KIND: demo\njobs:\n  hello:\n    command: echo hi-$GREETING\n"
                  "    environment:\n      GREETING: world\n")
    r = cli("run", "--workspace-root", str(ws), "--job", "hello", "--workflow-file", str(wf))
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"[hello] hi-world" in r.stdout
    r = cli("run", "--workspace-root", str(ws), "--job", "nope", "--workflow-file", str(wf))
    assert r.returncode == 78 and b"no such job" in r.stderr


def test_help_documents_exit_codes() -> None:
    r = cli("run", "--help")
    text = r.stdout.decode()
    for fragment in ("124", "126", "143", "--git-url", "--untrusted", "--plugin-dir", "--work-dir", "--dry-run"):
        assert fragment in text


def test_secrets_on_the_command_line_are_masked(ws: Path) -> None:
    r = cli("run", "--workspace-root", str(ws), "--secret-values-list", SECRET, "--job-command",
            f"echo value={SECRET}")
    assert r.returncode == 0
    text = (r.stdout + r.stderr).decode()
    assert "value=***" in text and SECRET[2:10] not in text


@pytest.mark.parametrize("fmt", ["json"])
def test_log_format_env(ws: Path, fmt: str) -> None:
    r = cli("run", "--workspace-root", str(ws), "--job-command", "echo x", env={"LOG_FORMAT": fmt,
                                                                             "REACTORCIDE_JOB_ID": "j1"})
    records = [json.loads(line) for line in r.stdout.decode().splitlines() if line.startswith('{"time"')]
    assert any(rec["step"] == "job" and rec["message"] == "x" and rec["job_id"] == "j1" for rec in records)


def test_var_option_feeds_conditions_and_argv_secret_warning(ws: Path) -> None:
    job = ws / "job.yaml"
    job.write_text("steps:\n  - name: deploy\n    command: echo deploying\n    condition: branch == 'main'\n")
    r = cli("run-job", str(job), "--workspace-root", str(ws), "--var", "branch=main",
            "--secret-values-list", SECRET)
    assert r.returncode == 0 and b"[deploy] deploying" in r.stdout
    assert b"secret value(s) passed on the command line (--secret-values-list)" in r.stdout
    assert SECRET.encode() not in r.stdout + r.stderr
    r = cli("run-job", str(job), "--workspace-root", str(ws), "--var", "branch=dev")
    assert r.returncode == 0 and b"is false (branch='dev')" in r.stdout


def _git_repo(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "x"]):
        subprocess.run(["git", *args], cwd=path, check=True, env=env, capture_output=True)
    return f"file://{path}"


def test_git_url_and_git_ref_check_out_the_source(ws: Path) -> None:
    url = _git_repo(ws.parent / (ws.name + "-repo"), {"README": "hello from the repo\n"})
    try:
        r = cli("run", "--workspace-root", str(ws), "--git-url", url, "--git-ref", "main",
                "--job-command", "cat README")
        assert r.returncode == 0, r.stdout + r.stderr
        assert b"[job] hello from the repo" in r.stdout
    finally:
        import shutil

        shutil.rmtree(ws.parent / (ws.name + "-repo"), ignore_errors=True)


def test_secrets_file_fd_and_stdin_are_masked(ws: Path) -> None:
    secrets_file = ws / "secrets.env"
    secrets_file.write_text("A_VALUE=file-secret-7788aa\n")
    r = cli("run", "--workspace-root", str(ws), "--secrets-file", str(secrets_file), "--job-command",
            f"echo v=$(sed -n 's/A_VALUE=//p' {secrets_file})")
    assert r.returncode == 0 and b"v=***" in r.stdout and b"7788aa" not in r.stdout
    r = cli("run", "--workspace-root", str(ws), "--secrets-stdin", "--job-command", "echo v=stdin-secret-99zz",
            input=b"X=stdin-secret-99zz\n")
    assert r.returncode == 0 and b"v=***" in r.stdout and b"99zz" not in r.stdout
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"Y=fd-secret-5544qq\n")
    os.close(write_fd)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    p = subprocess.run([sys.executable, "-m", "runnerlib.cli", "run", "--workspace-root", str(ws),
                        "--secrets-fd", str(read_fd), "--job-command", "echo v=fd-secret-5544qq"],
                       pass_fds=(read_fd,), capture_output=True, env=env, cwd=REPO, timeout=60)
    os.close(read_fd)
    assert p.returncode == 0 and b"v=***" in p.stdout and b"5544qq" not in p.stdout


def test_config_notes_unknown_reactorcide_variables(ws: Path) -> None:
    r = cli("config", "--workspace-root", str(ws), env={"REACTORCIDE_JOB_COMAND": "x", "REACTORCIDE_SOURCE_DIR": "/job/src"})
    assert r.returncode == 0
    err = r.stderr.decode()
    assert "REACTORCIDE_JOB_COMAND is not a runnerlib setting" in err and "REACTORCIDE_JOB_COMMAND" in err
    assert "REACTORCIDE_SOURCE_DIR" not in err


def test_workflow_job_working_dir_and_job_file(ws: Path) -> None:
    repo = ws / "repo"
    (repo / ".reactorcide" / "workflows").mkdir(parents=True)
    (repo / "ci").mkdir()
    (repo / "ci" / "job.yaml").write_text("steps:\n  - name: from-file\n    command: echo job-file-step\n")
    wf = repo / ".reactorcide" / "workflows" / "ci.yaml"
    wf.write_text("name: p\njobs:\n  sub:\n    command: pwd\n    working_dir: pkg\n"
                  "  filed:\n    job_file: ci/job.yaml\n")
    (ws / "src" / "pkg").mkdir(parents=True)
    r = cli("run", "--workspace-root", str(ws), "--job", "sub", "--workflow-file", str(wf))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[sub] {ws}/src/pkg".encode() in r.stdout
    r = cli("run", "--workspace-root", str(ws), "--job", "filed", "--workflow-file", str(wf))
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"[from-file] job-file-step" in r.stdout


def test_validate_refuses_trusted_steps_from_the_source_tree(ws: Path) -> None:
    (ws / "src").mkdir()
    job = ws / "src" / "job.yaml"
    job.write_text("steps:\n  - name: a\n    command: 'true'\n")
    r = cli("validate", str(job), "--workspace-root", str(ws))
    assert r.returncode == 78 and b"untrusted source tree" in r.stderr
    r = cli("validate", str(job), "--workspace-root", str(ws), "--untrusted")
    assert r.returncode == 0, r.stderr


def test_ctrl_c_cancels_like_sigterm_with_exit_130(ws: Path) -> None:
    code, out, err = _run_and_interrupt(ws, signal.SIGINT, f"touch {ws}/started; sleep 60", "--kill-grace", "1")
    assert code == 130, out + err
    assert (ws / "cleanup").read_text() == "130"
    assert b"Traceback" not in err


# --- `--debug`: the /proc audit after each step (a process still holding a secret is reported, masked) ---

AUDIT_SECRET = "Qm7vX2aUdZk9Lw"


def _audit_job(ws: Path) -> Path:
    # `holder` keeps the secret on its command line while `quick` finishes: the audit after `quick` sees it.
    job = ws / "job.yaml"
    job.write_text(
        "steps:\n"
        f"  - name: holder\n    command: sh -c 'sleep 3' {AUDIT_SECRET}\n"
        "  - name: quick\n    command: sleep 0.5\n")
    return job


def test_debug_audit_reports_a_process_holding_a_secret(ws: Path) -> None:
    r = cli("--debug", "run-job", str(_audit_job(ws)), "--workspace-root", str(ws),
            env={"REACTORCIDE_SECRET_VALUES_LIST": AUDIT_SECRET})
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0, out
    assert "[quick] audit: pid" in out and "exposes a secret in its cmdline" in out
    assert "cmdline: ***" in out
    for i in range(len(AUDIT_SECRET) - 5):
        assert AUDIT_SECRET[i:i + 6] not in out


def test_no_audit_without_debug(ws: Path) -> None:
    r = cli("run-job", str(_audit_job(ws)), "--workspace-root", str(ws),
            env={"REACTORCIDE_SECRET_VALUES_LIST": AUDIT_SECRET})
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0, out
    assert "audit" not in out


def test_a_step_that_cannot_exec_is_reported_once_in_the_job_log_not_on_stderr(ws: Path) -> None:
    """The wrapper's "failed before exec" record used to reach stderr through logging's last-resort handler,
    a second time and outside the job's format; the reason belongs to the job log (step line and summary)."""
    r = cli("run", "--workspace-root", str(ws), "--secret-values-list", SECRET, "--",
            f"/nonexistent/{SECRET}/tool", "arg")
    assert r.returncode == 127, r.stdout + r.stderr
    assert b"before exec" not in r.stderr and b"No such file" not in r.stderr
    assert r.stdout.count(b"exec: No such file or directory") == 2  # the step's finished line and the summary
    text = (r.stdout + r.stderr).decode()
    assert "/nonexistent/***/tool" in text and SECRET[2:10] not in text


def test_runner_log_records_go_to_the_job_log_not_raw_stderr(ws: Path) -> None:
    """The process wrapper's timeout warning is a `logging` record: it appears once, in the job log's format
    (masked), and nothing reaches stderr raw through Python's last-resort handler."""
    r = cli("run", "--workspace-root", str(ws), "--step-timeout", "0.5", "--kill-grace", "1",
            "--job-command", "sleep 30")
    assert r.returncode == 124
    assert len(re.findall(r"==> \d\d:\d\d:\d\d job: timed out: SIGTERM to the process group", r.stdout.decode())) == 1
    assert r.stderr == b""


def test_every_command_is_found_through_the_lazy_map() -> None:
    """The root group imports a command's module only when it is invoked; the map must name every command."""
    import importlib

    from runnerlib.cli.app import COMMAND_MODULES, main

    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(f"runnerlib.cli.{module}")
    registered = {name: cmd.callback.__module__ for name, cmd in main.commands.items()}  # type: ignore[union-attr]
    assert registered == {name: f"runnerlib.cli.{module}" for name, module in COMMAND_MODULES.items()}


def test_run_imports_only_what_a_job_needs(ws: Path) -> None:
    """Start-up is part of every job's cost (issue 6's 1 GiB target): `run` must not load the other commands,
    the workflow models, cryptography or YAML."""
    code = ("import sys, runpy; sys.argv = ['runnerlib', 'run', '--workspace-root', sys.argv[1], "
            "'--job-command', 'true']\n"
            "try:\n    runpy.run_module('runnerlib.cli', run_name='__main__')\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "print(' '.join(sorted(sys.modules)))")
    base = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    r = subprocess.run([sys.executable, "-c", code, str(ws)], env=base, cwd=REPO, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    loaded = set(r.stdout.decode().split("\n")[-2].split())
    for heavy in ("runnerlib.cli.workflow_cmd", "runnerlib.cli.secrets_cmd", "runnerlib.cli.sandbox_cmd",
                  "runnerlib.cli.source_cmd", "runnerlib.workflow.models", "cryptography.fernet", "yaml"):
        assert heavy not in loaded, heavy


ATEXIT_PLUGIN = """
import atexit, threading, time
from runnerlib.plugins import Plugin

class Late(Plugin):
    def __init__(self):
        super().__init__("late")

    def cleanup(self, context):
        def finish():
            time.sleep(0.3)
            open({base!r} + "/thread-done", "w").write("1")
        threading.Thread(target=finish).start()   # a non-daemon thread still running when the job ends
        atexit.register(lambda: open({base!r} + "/atexit-ran", "w").write("1"))

PLUGINS = [Late()]
"""


def test_the_quick_exit_keeps_what_a_normal_exit_does(ws: Path) -> None:
    """The command skips CPython's teardown (cli.app.entry) but still joins non-daemon threads, runs atexit
    handlers (a plugin's, logging's), flushes every byte of output and keeps the job's exit status."""
    plugins = ws / "plugins"
    plugins.mkdir()
    (plugins / "late.py").write_text(ATEXIT_PLUGIN.format(base=str(ws)))
    r = cli("run", "--workspace-root", str(ws), "--plugin-dir", str(plugins), "--",
            "sh", "-c", "seq 1 200000; exit 3")
    assert r.returncode == 3, r.stderr
    assert (ws / "thread-done").exists() and (ws / "atexit-ran").exists()
    assert b"[job] 200000\n" in r.stdout


def test_a_reader_that_left_is_not_an_error(ws: Path) -> None:
    """`runnerlib config schema | head -1`: the pipe closes early; like the shell tools, no error line and
    status 141 (128 + SIGPIPE) instead of "runnerlib: error: [Errno 32] Broken pipe"."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    proc = subprocess.Popen([sys.executable, "-m", "runnerlib.cli", "config", "schema"], cwd=REPO, env=base,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    assert err == b""
