"""The network forwarder of a `loopback` / host-list step ending early (killed, out of memory) is a clear step
failure naming the cause, not an obscure SIGPIPE (exit 141). Control: the same step with its forwarder left
alone ends normally and says nothing of the kind."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from sandbox_testlib import IS_ROOT, STEP_PYTHON, caps, needs_landlock

from runnerlib.execution.process import run_process
from runnerlib.security import network, proctree, spawn
from runnerlib.security.namespaces import FORWARDER_COMM

pytestmark = [needs_landlock, pytest.mark.skipif(
    network.netns_available(IS_ROOT, caps.user_namespaces) is not None, reason="no network namespaces here")]
# Writes until the server says `e`. When its connection is cut it waits (a real tool would fail later, often
# of SIGPIPE: exit 141, unexplained), so that in the test only the forwarder's watcher can end it.
STEP = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
print("CONNECTED", flush=True)
try:
    while True:
        s.sendall(b"x" * 1024)
        answer = s.recv(1)
        if answer == b"e":
            print("SERVER-SAID-END", flush=True)
            sys.exit(0)
        if not answer:
            break
        time.sleep(0.02)
except OSError:
    pass
print("CUT", flush=True)
time.sleep(120)
"""
MESSAGE = "network forwarder ended early"


class EchoServer:
    """127.0.0.1: answers each chunk with `k`, and with `e` once `finish()` was called."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(0.2)
            while True:
                try:
                    if not conn.recv(65536):
                        return
                    conn.sendall(b"e" if self.done.is_set() else b"k")
                except TimeoutError:
                    continue
                except OSError:
                    return

    def finish(self) -> None:
        self.done.set()

    def close(self) -> None:
        self.sock.close()


def _forwarders() -> dict[int, int]:
    """pid -> parent pid of every rl-netforward process beneath the fork server."""
    server = spawn.fork_server_pid()
    assert server is not None
    found = {}
    for pid in proctree.descendants(server):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == FORWARDER_COMM:
                    found[pid] = proctree.parent_map().get(pid, 0)
        except OSError:
            continue
    return found


def _run_step(workspace, registry, port: int, during) -> tuple:
    connected = threading.Event()
    result: list = []

    def on_output(_stream: str, data: bytes) -> None:
        if b"CONNECTED" in data:
            connected.set()

    def run() -> None:
        result.append(run_process([STEP_PYTHON, "-I", "-c", STEP, str(port)], registry=registry, trusted=False,
                                  policy=workspace.policy(), env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.src),
                                  timeout=60, grace=1, network="loopback", on_output=on_output))

    thread = threading.Thread(target=run)
    thread.start()
    assert connected.wait(30), result
    during()
    thread.join(90)
    assert result, "the step did not end"
    return result[0]


def test_forwarder_killed_midway_fails_the_step_naming_the_cause(workspace, registry):
    srv = EchoServer()

    def kill_relay() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            fw = _forwarders()
            # The relay is the one beneath the watcher (a lone forwarder is the watcher before the step's first
            # connection: the relay is forked then).
            relays = [pid for pid, parent in fw.items() if parent in fw]
            if relays:
                os.kill(relays[0], signal.SIGKILL)
                return
            time.sleep(0.05)
        pytest.fail(f"no relay found among {fw}")

    try:
        result = _run_step(workspace, registry, srv.port, kill_relay)
    finally:
        srv.close()
    assert result.exit_code != 0, result.output
    assert MESSAGE in result.output and "killed by signal 9" in result.output, (result.exit_code, result.output)


def test_control_forwarder_left_alone(workspace, registry):
    srv = EchoServer()
    try:
        result = _run_step(workspace, registry, srv.port, srv.finish)
    finally:
        srv.close()
    assert result.exit_code == 0 and "SERVER-SAID-END" in result.output, (result.exit_code, result.output)
    assert MESSAGE not in result.output


# As root the forwarder lives in the step's PID namespace (its supervisor is the namespace's init), so the step
# sees it in /proc (docs/sandbox.md says why it is not hidden): the watcher, and the relay forked at the step's
# first connection (made first here). Seeing them gives nothing: it cannot be signalled, nor its memory or environment read.
# Unprivileged, the supervisor forks it before making the namespaces: the step does not see it at all.
TOUCH = """
import os, signal, socket, subprocess, sys
port = int(sys.argv[1])
first = socket.create_connection(("127.0.0.1", port), timeout=10).recv(8)  # the relay exists from here on
found = [p for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/comm").read().strip() == "rl-netforward"]
print("FORWARDERS", len(found))
for pid in found:
    for what, act in (("kill", lambda: os.kill(int(pid), signal.SIGKILL)),
                      ("environ", lambda: open(f"/proc/{pid}/environ", "rb").read()),
                      ("mem", lambda: open(f"/proc/{pid}/mem", "rb").read(1))):
        try:
            act()
            print("DONE", what)
        except OSError as e:
            print("DENIED", what, e.errno)
child = subprocess.Popen(["sleep", "60"])
os.kill(child.pid, signal.SIGKILL)  # control: the step can signal its own processes
print("OWN-CHILD", child.wait())
print("FIRST", first, "STILL", socket.create_connection(("127.0.0.1", port), timeout=10).recv(8))
"""


@pytest.mark.skipif(not caps.step_namespaces, reason="counts the forwarders in the step's own /proc")
def test_step_cannot_touch_the_forwarder_it_sees(workspace, registry, server):
    result = run_process([STEP_PYTHON, "-I", "-c", TOUCH, str(server)], registry=registry, trusted=False,
                         policy=workspace.policy(), env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.src),
                         timeout=60, grace=1, network="loopback")
    out = result.stdout
    seen = 2 if IS_ROOT else 0
    assert f"FORWARDERS {seen}" in out and "DONE" not in out, out
    assert out.count("DENIED") == 3 * seen and "OWN-CHILD -9" in out and "FIRST b'hi' STILL b'hi'" in out, out


@pytest.mark.parametrize("net", ["loopback", "none"])
def test_the_started_pid_is_the_step_not_its_forwarder(workspace, net):
    # The supervisor forks the forwarder too: the pid the runner is told (and signals on a timeout or a
    # cancel) must be the step's. Control: `none` (no forwarder).
    plan = spawn.plan_sandbox(workspace.policy(network=net, namespaces="auto"))
    out_r, out_w = os.pipe()
    try:
        step = spawn.spawn(["/bin/sleep", "30"], env={"PATH": "/usr/bin:/bin"}, cwd="/", plan=plan,
                           stdout=out_w, stderr=out_w)
        os.close(out_w)
        assert step.error is None, step.error
        with open(f"/proc/{step.pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == b"/bin/sleep"
        step.kill_all()
        while os.read(out_r, 4096):
            pass
        step.close()
    finally:
        os.close(out_r)
        plan.cleanup()
