"""Attack tests: an untrusted step's own world, kernel side (issue 11, cases 4, 5 and 9).

Each attack runs from an untrusted step with the protection on, and again with it off as the control that
shows the test can fail: `namespaces="off"` (no PID/mount namespaces), or a trusted step.
  * a daemon that forks, calls setsid and keeps re-forking outlives nothing: it dies with the step;
  * /proc shows only the step's processes: no runner command line (argv) is readable;
  * /dev/shm and /tmp are the step's own: a trusted step's files and its ssh-agent socket (found in
    /proc/net/unix) are unreachable.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
from sandbox_testlib import IS_ROOT, SECRET, STEP_PYTHON, attack, caps, fragments, needs_landlock

from runnerlib.execution.process import run_process
from runnerlib.security import proctree
from runnerlib.security import spawn as sp

pytestmark = needs_landlock
needs_ns = pytest.mark.skipif(not caps.step_namespaces,
                              reason=f"the kernel refuses the step's namespaces: {caps.step_namespaces_gap}")

# A daemon that leaves the step's group and session, then changes pid every few milliseconds (fork, the
# parent exits): a single /proc walk finds a pid that is already gone. The marker on its argv finds it.
RACER = r"""
import os, sys, time
marker, pidfile, linger = sys.argv[1], sys.argv[2], float(sys.argv[3])
if os.fork() == 0:
    os.setsid()
    while True:
        try:
            if os.fork() != 0:
                os._exit(0)
        except OSError as exc:
            with open(pidfile + ".err", "a") as f:
                f.write(repr(exc) + "\n")
            time.sleep(0.05)
            continue
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(0.005)
time.sleep(linger)
"""


def _with_marker(marker: str) -> list[int]:
    found = []
    for pid in proctree.parent_map():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def _racing(pidfile: Path) -> bool:
    """Whether the racer still runs: it rewrites its pidfile every few ms (a /proc scan may miss a pid that
    lives that briefly; a pidfile that stopped changing cannot)."""
    def read() -> str:
        try:
            return pidfile.read_text()
        except OSError:
            return ""
    first = read()
    deadline = time.monotonic() + 2.0  # a loaded machine may leave it unscheduled for a while
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if read() != first:
            return True
    return False


def _gone(marker: str, pidfile: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _racing(pidfile) and not _with_marker(marker):
            return True
    return False


@pytest.fixture
def marker():
    """A unique argv marker; whatever still carries it at the end is killed (a failing test leaves no racer)."""
    mark = f"rl-racer-{secrets.token_hex(6)}"
    yield mark
    for _ in range(200):
        pids = _with_marker(mark)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except OSError:
                pass
        for pid in _with_marker(mark):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def _run_bounded(seconds: float, **kw):
    """run_process in a thread: a step that never ends (the bug this file guards) fails the test, not hangs it."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", run_process(**kw)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the step never ended: the runner is still waiting for its leftovers"
    return box["result"]


def _racer_step(workspace, registry, marker, policy, linger="0.3", timeout=60):
    argv = [STEP_PYTHON, "-I", "-c", RACER, marker, str(workspace.src / "racer.pid"), linger]
    return _run_bounded(90, command=argv, registry=registry, trusted=False, policy=policy,
                        env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.src), timeout=timeout, grace=1)


# --- case 4: no process outlives its step ---------------------------------------------------------------------


@needs_ns
def test_daemon_dies_with_the_step_in_its_pid_namespace(workspace, registry, marker):
    result = _racer_step(workspace, registry, marker, workspace.policy())
    assert result.exit_code == 0, result
    assert result.leftover_killed >= 1 and "killed leftover processes:" in (result.reason or ""), result
    assert _gone(marker, workspace.src / "racer.pid"), "a daemon of the untrusted step outlived it"


def test_daemon_outlives_the_main_process_without_namespace_or_sweep(workspace, registry, marker):
    """Control: the same step spawned without namespaces, and nobody sweeping: its daemon lives on after
    the step's main process has exited (which is what the runner used to wait for, forever)."""
    plan = sp.plan_sandbox(workspace.policy(namespaces="off"))
    out_r, out_w = os.pipe()
    try:
        step = sp.spawn([STEP_PYTHON, "-I", "-c", RACER, marker, str(workspace.src / "racer.pid"), "0"],
                        env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.src), plan=plan, stdout=out_w,
                        stderr=out_w)
    finally:
        os.close(out_w)
    try:
        deadline = time.monotonic() + 30
        while step.wait_status is None and time.monotonic() < deadline:
            step.read_events() if not step.eof else time.sleep(0.01)
        assert step.wait_status is not None
        time.sleep(0.3)
        assert _racing(workspace.src / "racer.pid"), "control: the daemon should have survived its main process"
    finally:
        for _ in range(100):  # the sweep the runner does, until the supervisor's subtree is empty
            step.kill_all()
            if not _racing(workspace.src / "racer.pid"):
                break
        os.close(out_r)
        step.close()
        plan.cleanup()


def test_without_namespaces_the_sweep_still_ends_the_step(workspace, registry, marker):
    """The fallback where the kernel refuses namespaces: the runner sweeps the step's tree until it is
    empty, so the step ends and its leftovers are counted."""
    result = _racer_step(workspace, registry, marker, workspace.policy(namespaces="off"))
    assert result.exit_code == 0 and result.leftover_killed >= 1, result
    assert _gone(marker, workspace.src / "racer.pid")


@needs_ns
def test_timeout_kills_the_daemon_too(workspace, registry, marker):
    result = _racer_step(workspace, registry, marker, workspace.policy(), linger="30", timeout=0.5)
    assert result.timed_out and result.exit_code == 124 and result.reason.startswith("timed out"), result
    assert _gone(marker, workspace.src / "racer.pid")


@needs_ns
def test_cancel_kills_the_daemon_too(workspace, registry, marker):
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    argv = [STEP_PYTHON, "-I", "-c", RACER, marker, str(workspace.src / "racer.pid"), "30"]
    result = _run_bounded(90, command=argv, registry=registry, trusted=False, policy=workspace.policy(),
                          env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.src), cancel_event=cancel, grace=1)
    assert result.cancelled and result.exit_code == 143, result
    assert _gone(marker, workspace.src / "racer.pid")


# --- case 9: /proc shows only the step's own processes ----------------------------------------------------------


@needs_ns
def test_runner_argv_invisible_in_the_private_proc(workspace, registry, victim):
    v = victim(protect=False, secret_on_argv=True)  # argv not scrubbed: only the private /proc protects it
    verdict, result = attack(workspace, registry, "read_proc", v.pid, "cmdline", SECRET)
    assert verdict.startswith("BLOCKED errno 2"), (verdict, result)
    verdict, result = attack(workspace, registry, "read_proc", v.pid, "cmdline", SECRET,
                             policy=workspace.policy(namespaces="off"))
    assert verdict.startswith("SUCCEEDED"), (verdict, result)  # control


LIST_PROC = "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"


@needs_ns
def test_proc_lists_only_the_steps_processes(workspace, registry):
    argv = [STEP_PYTHON, "-I", "-c", LIST_PROC]
    # network none: an unprivileged runner's default network (full) adds its forwarder to the step's PID
    # namespace (security/netforward.py); this test is about the namespace's processes.
    own = run_process(argv, registry=registry, trusted=False, policy=workspace.policy(network="none"),
                      cwd=str(workspace.src), env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert own.exit_code == 0, own
    assert eval(own.stdout) == [1, 2]  # init and the step itself
    shared = run_process(argv, registry=registry, trusted=False, policy=workspace.policy(namespaces="off"),
                         cwd=str(workspace.src), env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert os.getpid() in eval(shared.stdout)  # control: the shared /proc shows the runner


# --- case 5: /dev/shm and /tmp are the step's own -----------------------------------------------------------------


@pytest.fixture
def shm_file():
    path = Path(f"/dev/shm/rl-test-{secrets.token_hex(6)}")
    path.write_text(f"deploy-key {SECRET}")
    # As root the step is another uid: a world-readable file is the leak. Unprivileged, it shares the
    # runner's uid, so even a 0600 file was readable.
    path.chmod(0o644 if IS_ROOT else 0o600)
    yield path
    path.unlink(missing_ok=True)


READ = "import sys\ntry:\n    print('SUCCEEDED', open(sys.argv[1]).read())\nexcept OSError as e:\n    print('BLOCKED errno', e.errno)"


def _read_in_step(workspace, registry, path, **kw):
    result = run_process([STEP_PYTHON, "-I", "-c", READ, str(path)], registry=registry, cwd=str(workspace.src),
                         env={"PATH": "/usr/bin:/bin"}, timeout=60, **kw)
    return result.stdout.strip(), result


@needs_ns
def test_dev_shm_of_a_trusted_step_unreadable(workspace, registry, shm_file):
    verdict, result = _read_in_step(workspace, registry, shm_file, trusted=False, policy=workspace.policy())
    assert verdict.startswith("BLOCKED errno 2"), (verdict, result)
    verdict, _ = _read_in_step(workspace, registry, shm_file, trusted=False,
                               policy=workspace.policy(namespaces="off"))
    assert verdict.startswith("SUCCEEDED") and "***" in verdict  # control: the shared /dev/shm (masked)
    verdict, _ = _read_in_step(workspace, registry, shm_file, trusted=True)
    assert verdict.startswith("SUCCEEDED")  # a trusted step sees it


@needs_ns
def test_own_dev_shm_is_usable_and_private(workspace, registry):
    name = f"rl-own-{secrets.token_hex(6)}"
    script = (f"open('/dev/shm/{name}', 'w').write('x'); import os; "
              f"print(sorted(os.listdir('/dev/shm')))")
    result = run_process([STEP_PYTHON, "-I", "-c", script], registry=registry, trusted=False,
                         policy=workspace.policy(), cwd=str(workspace.src), env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.exit_code == 0 and result.stdout.strip() == repr([name]), result
    assert not os.path.exists(f"/dev/shm/{name}")  # gone with the step, never on the host


AGENT_THIEF = r"""
import socket
paths = [line.split()[-1] for line in open("/proc/net/unix").read().splitlines()[1:]
         if len(line.split()) >= 8 and "rl-ssh-" in line.split()[-1]]
if not paths:
    print("NOT LISTED"); raise SystemExit(0)
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(paths[0])
    print("SUCCEEDED", s.recv(64).decode())
except OSError as e:
    print("BLOCKED errno", e.errno)
"""


@pytest.fixture
def agent_socket():
    """A stand-in for a parallel trusted step's ssh-agent: a socket in /tmp/rl-ssh-XXXX answering 'SIGNED'."""
    d = Path(f"/tmp/rl-ssh-{secrets.token_hex(6)}")
    d.mkdir()
    d.chmod(0o755 if IS_ROOT else 0o700)  # ssh-agent's own 0700 keeps uid 65534 out, not the runner's uid
    path = d / "agent.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    path.chmod(0o777)
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.sendall(b"SIGNED")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join()
    srv.close()
    shutil.rmtree(d, ignore_errors=True)


@needs_ns
def test_ssh_agent_of_a_parallel_step_unreachable(workspace, registry, agent_socket):
    def steal(policy):
        r = run_process([STEP_PYTHON, "-I", "-c", AGENT_THIEF], registry=registry, trusted=False, policy=policy,
                        cwd=str(workspace.src), env={"PATH": "/usr/bin:/bin"}, timeout=60)
        return r.stdout.strip(), r

    # network none in both: a network namespace (an unprivileged runner's default) would also hide the
    # socket from /proc/net/unix; this test is about the private /tmp.
    verdict, result = steal(workspace.policy(network="none"))
    assert verdict.startswith("BLOCKED errno 2"), (verdict, result)  # listed in /proc/net/unix, not reachable
    verdict, result = steal(workspace.policy(namespaces="off", network="none"))
    assert verdict == "SUCCEEDED SIGNED", (verdict, result)  # control


@needs_ns
def test_tmp_shows_only_the_steps_own_directories(workspace, registry):
    probe_file = Path(f"/tmp/rl-trusted-{secrets.token_hex(6)}")
    probe_file.write_text(SECRET)
    probe_file.chmod(0o644)
    try:
        verdict, result = _read_in_step(workspace, registry, probe_file, trusted=False, policy=workspace.policy())
        assert verdict.startswith("BLOCKED errno 2"), (verdict, result)
        assert not any(f in result.output for f in fragments(SECRET))
        script = "import os; print(os.environ['TMPDIR']); open(os.environ['TMPDIR'] + '/t', 'w').write('ok')"
        own = run_process([STEP_PYTHON, "-I", "-c", script], registry=registry, trusted=False,
                          policy=workspace.policy(), cwd=str(workspace.src), env={"PATH": "/usr/bin:/bin"}, timeout=60)
        assert own.exit_code == 0, own  # its own TMPDIR still works
    finally:
        probe_file.unlink()


def test_mounts_never_reach_the_host(workspace, registry):
    """The step's /proc, /dev/shm and /tmp mounts stay in its namespace (MS_SLAVE): the host sees none. (Only
    mounts added are compared: a container test in the other worker mounts and unmounts overlays meanwhile.)"""
    before = set(Path("/proc/self/mountinfo").read_text().splitlines())
    result = run_process(["/bin/true"], registry=registry, trusted=False, policy=workspace.policy(),
                         cwd=str(workspace.src), env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.exit_code == 0, result
    added = set(Path("/proc/self/mountinfo").read_text().splitlines()) - before
    points = [line.split()[4] for line in added]
    assert not [p for p in points if p in ("/proc", "/dev/shm", "/tmp") or p.startswith(("/tmp/", "/proc/"))
                or p.startswith(str(workspace.root))], added
    assert stat.S_ISDIR(os.stat("/tmp").st_mode)


@needs_ns
def test_steps_after_an_untrusted_one_run_in_the_runners_namespaces(workspace, registry):
    """As root the fork server enters new PID/IPC namespaces to fork a step's init and must come back: a
    trusted step spawned afterwards sees the runner's own namespaces."""
    show = "import os; print(os.readlink('/proc/self/ns/pid'), os.readlink('/proc/self/ns/ipc'))"
    untrusted = run_process([STEP_PYTHON, "-I", "-c", show], registry=registry, trusted=False,
                            policy=workspace.policy(), cwd=str(workspace.src), env={"PATH": "/usr/bin:/bin"},
                            timeout=60)
    trusted = run_process([STEP_PYTHON, "-I", "-c", show], registry=registry, timeout=60)
    own = f"{os.readlink('/proc/self/ns/pid')} {os.readlink('/proc/self/ns/ipc')}"
    assert trusted.stdout.strip() == own, (trusted, own)
    assert untrusted.exit_code == 0 and untrusted.stdout.strip() != own, untrusted  # control: it had its own
