"""The escape battery: each attack runs as an untrusted step and must be blocked, and the same attack
from a trusted step (no sandbox) must succeed, which shows the test could fail."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import threading

import pytest
from sandbox_testlib import (
    IS_ROOT,
    SECRET,
    attack,
    caps,
    fragments,
    needs_landlock,
    needs_root,
    needs_scoping,
)

pytestmark = needs_landlock

CI_WRITES = [
    ("write", ["{ci}/x"]),
    ("append", ["{ci}/x"]),
    ("create", ["{ci}/new"]),
    ("unlink", ["{ci}/x"]),
    ("rename", ["{ci}/x", "{src}/stolen"]),
    ("rename", ["{src}/own.txt", "{ci}/planted"]),
    ("truncate", ["{ci}/x"]),
    ("mkdir", ["{ci}/d"]),
    ("write", ["{src}/../ci/x"]),
    ("create", ["{src}/../ci/dotdot"]),
    ("hardlink_write", ["{ci}/x", "{src}/link"]),
    ("symlink_write", ["{ci}/x", "{src}/sl"]),
    ("symlink_write", ["{src}/own.txt", "{ci}/sl"]),
]


def _fmt(ws, args):
    return [a.format(ci=ws.ci, src=ws.src) for a in args]


def _ci_state(ws):
    return sorted((p.name, p.read_bytes() if p.is_file() else b"") for p in ws.ci.iterdir())


@pytest.mark.parametrize("name,args", CI_WRITES, ids=[f"{n}:{'->'.join(a)}" for n, a in CI_WRITES])
def test_ci_cannot_be_changed(workspace, registry, name, args):
    before = _ci_state(workspace)
    verdict, result = attack(workspace, registry, name, *_fmt(workspace, args))
    assert verdict.startswith("BLOCKED"), (verdict, result)
    assert _ci_state(workspace) == before
    # The same attack from a trusted step changes ci: the protection is what stopped it.
    verdict, result = attack(workspace, registry, name, *_fmt(workspace, args), sandboxed=False)
    assert verdict.startswith("SUCCEEDED"), (verdict, result)
    assert _ci_state(workspace) != before


def test_ci_chmod(workspace, registry):
    if not IS_ROOT:
        pytest.skip("known limit, documented: Landlock does not cover chmod/utime, and an unprivileged "
                    "runner's step owns /job/ci; only the contents are protected")
    verdict, _ = attack(workspace, registry, "chmod", workspace.ci / "x")
    assert verdict.startswith("BLOCKED")
    assert stat.S_IMODE(os.stat(workspace.ci / "x").st_mode) == 0o644
    verdict, _ = attack(workspace, registry, "chmod", workspace.ci / "x", sandboxed=False)
    assert verdict.startswith("SUCCEEDED")


def test_src_and_artifacts_stay_writable(workspace, registry):
    for target in (workspace.src / "new", workspace.artifacts / "out"):
        verdict, result = attack(workspace, registry, "create", target)
        assert verdict.startswith("SUCCEEDED"), (verdict, result)


@pytest.mark.parametrize("what", ["environ", "mem"])
@pytest.mark.parametrize("protect", [True, False], ids=["protected-runner", "dumpable-runner"])
def test_runner_memory_and_environ(workspace, registry, victim, what, protect):
    v = victim(protect=protect)
    name, args = ("read_proc", [v.pid, "environ", SECRET]) if what == "environ" else ("read_mem", [v.pid])
    verdict, result = attack(workspace, registry, name, *args)
    assert verdict.startswith("BLOCKED"), (verdict, result)
    if not protect:  # control: a plain same-uid (or root) process reads a dumpable runner
        verdict, result = attack(workspace, registry, name, *args, sandboxed=False)
        assert verdict.startswith("SUCCEEDED"), (verdict, result)


def test_runner_cmdline_scrubbed(workspace, registry, victim):
    """cmdline is world-readable: without the step's private /proc (namespaces off) the runner's own scrub
    is what hides the secret (test_sandbox_private_world.py covers the private /proc)."""
    verdict, _ = attack(workspace, registry, "read_proc", victim(protect=True, secret_on_argv=True).pid,
                        "cmdline", SECRET, policy=workspace.policy(namespaces="off"))
    assert verdict.startswith("BLOCKED readable but the secret is not there")
    verdict, _ = attack(workspace, registry, "read_proc", victim(protect=False, secret_on_argv=True).pid,
                        "cmdline", SECRET, policy=workspace.policy(namespaces="off"))
    assert verdict.startswith("SUCCEEDED")


@needs_scoping
def test_signal_runner(workspace, registry, victim):
    v = victim(protect=True)
    verdict, result = attack(workspace, registry, "signal", v.pid)
    assert verdict.startswith("BLOCKED"), (verdict, result)
    verdict, result = attack(workspace, registry, "signal", v.pid, sandboxed=False)
    assert verdict.startswith("SUCCEEDED"), (verdict, result)


def test_ptrace_runner(workspace, registry, victim):
    verdict, result = attack(workspace, registry, "ptrace_attach", victim(protect=False).pid)
    assert verdict.startswith("BLOCKED"), (verdict, result)
    verdict, result = attack(workspace, registry, "ptrace_attach", victim(protect=False).pid, sandboxed=False)
    assert verdict.startswith("SUCCEEDED"), (verdict, result)


def test_ptrace_own_child(workspace, registry):
    verdict, _ = attack(workspace, registry, "ptrace_child")
    assert verdict.startswith("BLOCKED errno 1")
    verdict, _ = attack(workspace, registry, "ptrace_child", sandboxed=False)
    assert verdict.startswith("SUCCEEDED")


@needs_root
@pytest.mark.root
def test_setuid_binary(workspace, registry):
    suid = workspace.ci / "suid-id"
    shutil.copy("/usr/bin/id", suid)
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
    verdict, result = attack(workspace, registry, "setuid_binary", suid)
    assert verdict == "BLOCKED euid stayed 65534", (verdict, result)
    # Without no_new_privs (a plain uid switch), the setuid bit gives root back.
    out = subprocess.run([str(suid), "-u"], user=65534, group=65534, extra_groups=[], capture_output=True,
                         text=True).stdout.strip()
    assert out == "0"


@pytest.mark.parametrize("name", ["unshare_user", "mount_in_userns", "clone_newuser"])
def test_namespaces_and_mount(workspace, registry, name):
    args = [workspace.src] if name == "mount_in_userns" else []
    verdict, result = attack(workspace, registry, name, *args)
    assert verdict.startswith("BLOCKED errno 1"), (verdict, result)
    if not caps.user_namespaces:
        pytest.skip("user namespaces are disabled here: the control cannot succeed")
    verdict, result = attack(workspace, registry, name, *args, sandboxed=False)
    assert verdict.startswith("SUCCEEDED"), (verdict, result)


def test_clone3_is_enosys(workspace, registry):
    verdict, _ = attack(workspace, registry, "clone3")
    assert verdict == "ERRNO 38"  # ENOSYS: libc falls back to clone, which the filter can inspect
    verdict, _ = attack(workspace, registry, "clone3", sandboxed=False)
    assert verdict != "ERRNO 38"


def test_tiocsti(workspace, registry):
    verdict, result = attack(workspace, registry, "tiocsti")
    assert verdict.startswith("BLOCKED"), (verdict, result)
    try:
        legacy = open("/proc/sys/dev/tty/legacy_tiocsti").read().strip()
    except OSError:
        legacy = "unknown"
    if legacy != "1":
        pytest.skip("the kernel itself refuses TIOCSTI here (legacy_tiocsti != 1): no control")
    verdict, result = attack(workspace, registry, "tiocsti", sandboxed=False)
    assert verdict.startswith("SUCCEEDED"), (verdict, result)


def test_secret_not_in_step_environment(workspace, registry):
    job_env = {"PATH": "/usr/bin:/bin", "DEPLOY_TOKEN": SECRET, "HARMLESS": "yes", "DB_URL": f"pg://u:{SECRET}@h",
               "REACTORCIDE_SECRETS_SOCKET": "/run/x.sock", "REACTORCIDE_SECRETS_TOKEN": "tok-abcdef123456",
               "REACTORCIDE_API_TOKEN": "api-abcdef123456"}
    dump = workspace.artifacts / "env.bin"
    verdict, result = attack(workspace, registry, "dump_env", dump, env=job_env)
    assert verdict.startswith("SUCCEEDED"), result
    data = dump.read_bytes().decode()
    for frag in fragments(SECRET) + ["tok-abcdef", "api-abcdef", "x.sock"]:
        assert frag not in data
    assert "HARMLESS=yes" in data
    dump.unlink()
    attack(workspace, registry, "dump_env", dump, env=job_env, sandboxed=False)
    assert SECRET in dump.read_bytes().decode()  # control: a trusted step gets its environment as given


def _serve_unix(address):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(address)
    srv.listen(8)
    return srv


def test_registration_socket(workspace, registry):
    from runnerlib.security.secret_socket import SecretSocketServer

    with SecretSocketServer(registry) as server:
        if server.path.startswith("/tmp/") and caps.step_namespaces:
            # The step's own /tmp does not hold the socket at all (test_sandbox_private_world.py).
            verdict, result = attack(workspace, registry, "connect_unix", server.path)
            assert verdict.startswith("BLOCKED errno 2"), (verdict, result)
        off = workspace.policy(namespaces="off")  # below: the uid / file-mode layer on its own
        if not IS_ROOT:
            verdict, _ = attack(workspace, registry, "connect_unix", server.path, policy=off)
            pytest.skip("unprivileged runner: a step with the runner's uid can reach a path socket "
                        f"(connect {verdict.split()[0].lower()}); the server's token, absent from the step's "
                        "environment, is the protection (test_secret_not_in_step_environment)")
        verdict, result = attack(workspace, registry, "connect_unix", server.path, policy=off)
        assert verdict.startswith("BLOCKED errno 13"), (verdict, result)
        verdict, result = attack(workspace, registry, "connect_unix", server.path, sandboxed=False)
        assert verdict.startswith("SUCCEEDED"), (verdict, result)


@needs_scoping
def test_abstract_socket_of_runner(workspace, registry):
    name = f"@runnerlib-test-{os.getpid()}-{id(workspace)}"
    srv = _serve_unix("\0" + name[1:])
    try:
        verdict, result = attack(workspace, registry, "connect_unix", name)
        assert verdict.startswith("BLOCKED"), (verdict, result)
        verdict, result = attack(workspace, registry, "connect_unix", name, sandboxed=False)
        assert verdict.startswith("SUCCEEDED"), (verdict, result)
    finally:
        srv.close()


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_deny_network(workspace, registry, kind):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    if kind == "tcp":
        srv.listen(8)
        stop = threading.Event()

        def accept():
            srv.settimeout(0.2)
            while not stop.is_set():
                try:
                    srv.accept()[0].close()
                except OSError:
                    pass
        threading.Thread(target=accept, daemon=True).start()
    name = "connect_tcp" if kind == "tcp" else "udp_socket"
    try:
        verdict, result = attack(workspace, registry, name, port, policy=workspace.policy(deny_network=True))
        assert verdict.startswith("BLOCKED"), (verdict, result)
        verdict, result = attack(workspace, registry, name, port)  # network allowed by default
        assert verdict.startswith("SUCCEEDED"), (verdict, result)
    finally:
        if kind == "tcp":
            stop.set()
        srv.close()
