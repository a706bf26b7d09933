"""run_process: masked streaming, no deadlock, timeouts, cancellation, descendants killed, runner death."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sandbox_testlib import CHECKOUT, SECRET, STEP_PYTHON, fragments

from runnerlib.execution.process import ProcessError, run_process
from runnerlib.security import proctree


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_output_masked_streamed_and_attributed(registry):
    seen: list[tuple[str, bytes]] = []
    result = run_process(f"echo out-{SECRET}; echo err-{SECRET} >&2", registry=registry,
                         on_output=lambda s, d: seen.append((s, d)))
    assert result.exit_code == 0
    everything = result.output + result.stdout + result.stderr + "".join(d.decode() for _, d in seen)
    for frag in fragments(SECRET):
        assert frag not in everything
    assert result.stdout == "out-***\n" and result.stderr == "err-***\n"
    assert {s for s, _ in seen} == {"stdout", "stderr"}


def test_secret_split_across_writes_is_masked(registry):
    half = len(SECRET) // 2
    cmd = f"printf '%s' '{SECRET[:half]}'; sleep 0.2; printf '%s\\n' '{SECRET[half:]}'"
    result = run_process(cmd, registry=registry)
    assert result.stdout == "***\n"


def test_command_line_and_errors_masked(registry, caplog):
    caplog.set_level(logging.INFO, logger="runnerlib")
    result = run_process(["/nonexistent/" + SECRET], registry=registry)
    assert result.exit_code == 127
    assert SECRET not in (result.reason or "") and "***" in caplog.text
    for frag in fragments(SECRET):
        assert frag not in caplog.text


def test_no_deadlock_with_large_stdout_and_stderr(registry):
    # Each stream is larger than a pipe buffer, interleaved: a reader of one pipe at a time would hang.
    script = ("import sys\nfor i in range(20000):\n"
              "    sys.stdout.write(f'o{i:06d}\\n'); sys.stderr.write(f'e{i:06d}\\n')\n")
    result = run_process([STEP_PYTHON, "-c", script], registry=registry, timeout=60)
    assert result.exit_code == 0
    out, err = result.stdout.splitlines(), result.stderr.splitlines()
    assert out == [f"o{i:06d}" for i in range(20000)]  # complete and in order within the stream
    assert err == [f"e{i:06d}" for i in range(20000)]


def test_timeout_sigterm_then_exit_124(registry):
    result = run_process("sleep 30", registry=registry, timeout=0.3, grace=5)
    assert result.exit_code == 124 and result.timed_out
    assert result.duration < 5  # sleep dies on SIGTERM: no need to wait for the grace period


def test_timeout_escalates_to_sigkill(registry):
    result = run_process("trap '' TERM; sleep 30", registry=registry, timeout=0.3, grace=0.3)
    assert result.exit_code == 124 and result.timed_out
    assert result.duration < 10


def test_cancel_exit_143(registry):
    ev = threading.Event()
    threading.Timer(0.2, ev.set).start()
    result = run_process("sleep 30", registry=registry, cancel_event=ev, grace=1)
    assert result.exit_code == 143 and result.cancelled


def _daemon_script(pidfile: str) -> str:
    # Double fork + setsid: the grandchild leaves the step's process group and session.
    return textwrap.dedent(f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.closerange(0, 3)
                open({pidfile!r}, "w").write(str(os.getpid()))
                time.sleep(60)
            os._exit(0)
        time.sleep({{wait}})
    """)


@pytest.mark.parametrize("how", ["exit", "timeout"])
def test_daemonised_descendants_are_killed(registry, tmp_path, how):
    pidfile = str(tmp_path / "daemon.pid")
    script = _daemon_script(pidfile).replace("{wait}", "0.3" if how == "exit" else "30")
    result = run_process([sys.executable, "-c", script], registry=registry,
                         timeout=2 if how == "timeout" else None, grace=0.5)
    pid = int(open(pidfile).read())
    assert _wait_dead(pid), "the daemonised grandchild survived"
    assert result.exit_code == (124 if how == "timeout" else 0)


def test_daemon_would_survive_a_group_kill(tmp_path):
    """Control: without the subreaper walk, a process-group kill misses the daemon."""
    pidfile = str(tmp_path / "daemon.pid")
    proc = subprocess.Popen([sys.executable, "-c", _daemon_script(pidfile).replace("{wait}", "30")],
                            start_new_session=True)
    while not os.path.exists(pidfile) or not open(pidfile).read():
        time.sleep(0.02)
    pid = int(open(pidfile).read())
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.2)
    try:
        assert _alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)


def test_steps_die_with_the_runner(tmp_path):
    """A runner killed with SIGKILL: the fork server sees EOF and kills every step, daemons included."""
    pidfile = tmp_path / "step.pid"
    runner = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {CHECKOUT!r})
        from runnerlib.execution.process import run_process
        from runnerlib.security.registry import SecretRegistry
        run_process("echo $$ > {pidfile}; (setsid sleep 60 &); sleep 60", registry=SecretRegistry())
    """)
    proc = subprocess.Popen([sys.executable, "-c", runner])
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    step_pid = int(pidfile.read_text())
    time.sleep(0.2)
    supervisor = int(open(f"/proc/{step_pid}/stat").read().rsplit(")", 1)[1].split()[1])
    tree = [supervisor, *proctree.descendants(supervisor)]
    assert len(tree) >= 3  # supervisor, the step, the daemonised sleep
    proc.kill()
    proc.wait()
    for pid in tree:
        assert _wait_dead(pid), f"pid {pid} outlived the runner"


def test_bad_arguments_are_one_clear_error(registry):
    with pytest.raises(ValueError, match="command"):
        run_process("   ", registry=registry)
    with pytest.raises(ValueError, match="timeout"):
        run_process("true", registry=registry, timeout=0)


def test_cwd_missing_is_reported_masked(registry):
    result = run_process("true", registry=registry, cwd=f"/nonexistent/{SECRET}")
    assert result.exit_code == 126 and not result.refused
    assert "cwd" in result.reason and SECRET not in result.reason


def test_process_error_is_a_runtime_error():
    assert issubclass(ProcessError, RuntimeError)


def test_concurrent_steps_from_threads(registry, workspace):
    """The step DAG runs steps from several threads at once: each gets its own output and exit code."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int):
        trusted = i % 2 == 0
        return run_process(f"echo step-{i}; echo {SECRET} >&2; exit {i}", registry=registry, trusted=trusted,
                           policy=None if trusted else workspace.policy(), cwd=str(workspace.src))

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(one, range(12)))
    for i, r in enumerate(results):
        assert (r.exit_code, r.stdout, r.stderr) == (i, f"step-{i}\n", "***\n"), r


def test_keep_output_false_streams_only(registry):
    seen: list[bytes] = []
    r = run_process(f"echo {SECRET}", registry=registry, keep_output=False, on_output=lambda s, d: seen.append(d))
    assert r.output == r.stdout == "" and b"".join(seen) == b"***\n"


def test_add_mask_from_trusted_step_only(registry, workspace):
    new = "fresh-value-Zq81xPw"
    r = run_process(f"echo '::add-mask::{new}'; echo {new}", registry=registry)
    assert new not in r.output and "***" in r.output
    other = "other-value-Yt55kLm"
    r = run_process(f"echo '::add-mask::{other}'; echo {other}", registry=registry, trusted=False,
                    policy=workspace.policy(), cwd=str(workspace.src))
    assert other in r.stdout  # an untrusted step cannot register (and so cannot hide its own output)


def test_forked_runner_gets_its_own_fork_server(registry):
    assert run_process("true", registry=registry).exit_code == 0  # the parent's server is running
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 99
        try:
            code = run_process("exit 5", registry=registry).exit_code
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 5
    assert run_process("exit 3", registry=registry).exit_code == 3  # the parent's still works


_BULK = textwrap.dedent("""
    import os, sys
    secret = sys.argv[1].encode()
    line = b"x" * 99 + b"\\n"
    out = bytearray()
    # 8 MiB of lines; the secret is printed at offsets that straddle 64 KiB and 1 MiB boundaries, split
    # between two writes of a pipe-filling size.
    for n in range(1, 9):
        for boundary in ((n << 20) - (64 << 10), n << 20):
            pad = boundary - len(out) - len(secret) // 2
            out += (line * (pad // 100 + 1))[:pad] if pad > 0 else b""
            out += secret + b"\\n"
    fd = sys.stdout.fileno()
    view = memoryview(bytes(out))
    while view:
        view = view[os.write(fd, view[: 256 << 10]):]
""")


@pytest.mark.parametrize("known", [True, False])
def test_bulk_output_masked_on_the_console_and_in_the_step_log(tmp_path, known):
    """A step printing megabytes (big reads, enlarged pipe, the log's writer thread) with the secret cut by
    every read size: it is masked everywhere. Control: with the secret unknown to the registry it comes
    out in clear, so the output really carries it through the same path."""
    from runnerlib.execution.logs import JobLog
    from runnerlib.security.registry import SecretRegistry

    reg = SecretRegistry()
    if known:
        reg.add(SECRET, source="test")
    console = io.BytesIO()
    log = JobLog(console, logs_dir=tmp_path)
    with log.step_output("bulk") as sink:
        result = run_process([STEP_PYTHON, "-c", _BULK, SECRET], registry=reg, on_output=sink.write,
                             keep_output=False, timeout=120)
    assert result.exit_code == 0
    step_log = (tmp_path / "bulk.log").read_bytes()
    shown = console.getvalue()
    assert len(step_log) > 8_000_000 and shown.count(b"\n") == step_log.count(b"\n")
    assert all(line.startswith(b"[bulk] ") for line in shown.splitlines())
    for text in (step_log, shown):
        if known:
            assert text.count(b"***\n") == 16
            assert not any(frag.encode() in text for frag in fragments(SECRET))
        else:
            assert text.count(SECRET.encode() + b"\n") == 16


def test_only_a_pipe_that_filled_is_enlarged(registry):
    """Pipe capacity counts against the uid's quota, shared with the steps: a quiet step keeps 64 KiB pipes."""
    import fcntl

    from runnerlib.execution import process

    sizes = {}
    for label, amount in (("quiet", 1000), ("bulk", 1 << 16)):
        r, w = os.pipe()
        stream = process._Stream("stdout", r, registry, True, "test", [], None, keep=False)
        os.write(w, b"y" * amount)
        stream.read()
        sizes[label] = fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
        os.close(w)
        stream.close()
    assert sizes == {"quiet": 1 << 16, "bulk": process.PIPE_SIZE}


_PRESTART = textwrap.dedent("""
    import os, signal, sys, time
    from runnerlib.execution.process import run_process
    from runnerlib.security import spawn
    from runnerlib.security.registry import SecretRegistry

    spawn.start_fork_server(wait=False)
    first = spawn.fork_server_pid()
    spawn.start_fork_server(wait=False)           # idempotent: still the one launch
    assert spawn.fork_server_pid() == first, (first, spawn.fork_server_pid())
    assert run_process("exit 4", registry=SecretRegistry()).exit_code == 4   # the launched server serves
    assert spawn.fork_server_pid() == first
    spawn.stop_fork_server()
    spawn.start_fork_server(wait=False)
    dead = spawn.fork_server_pid()
    os.kill(dead, signal.SIGKILL)                  # dies before its hello is read
    while spawn._server._proc.poll() is None:
        time.sleep(0.01)
    assert run_process("exit 5", registry=SecretRegistry()).exit_code == 5   # a new server replaces it
    assert spawn.fork_server_pid() not in (None, dead)
    print("ok")
""")


def test_fork_server_launched_early_serves_the_first_step_and_is_replaced_if_it_died():
    """The runner launches the fork server before preparing secrets and sources (start_fork_server(wait=False))
    and the first spawn completes its start-up; a launch that died meanwhile is replaced, not an error."""
    r = subprocess.run([sys.executable, "-c", _PRESTART], cwd=CHECKOUT, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == b"ok", r.stderr.decode()


@pytest.mark.parametrize("protected", [True, False])
def test_a_step_pausing_mid_secret_leaks_no_fragment(registry, monkeypatch, protected):
    """A trusted step prints a secret in two parts with a pause longer than the idle flush between them.
    With the protection off (the idle flush emitting every held byte) the first part reaches the output."""
    from runnerlib.security import stream

    if not protected:
        monkeypatch.setattr(stream, "IDLE_KEEP_FRAGMENT", 10**9)
    half = len(SECRET) // 2
    command = f"printf '%s' '{SECRET[:half]}'; sleep 2.5; printf '%s\\n' '{SECRET[half:]}'"
    # A cancel event that is never set makes the pump check for idleness every 50 ms.
    r = run_process(command, registry=registry, cancel_event=threading.Event())
    assert r.exit_code == 0
    if protected:
        assert r.output == "***\n"
        assert not any(f in r.output for f in fragments(SECRET))
    else:
        assert SECRET[:half] in r.output
