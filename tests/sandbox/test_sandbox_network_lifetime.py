"""The nftables metadata rule lives exactly as long as the runner that installed it: a table per runner,
gone when it exits (normal exit, SIGTERM, SIGKILL), never removed by another runner, and `sandbox policy` /
`sandbox probe` leave nothing behind. The attack: the sandbox uid connects to 169.254.169.254 (on lo, a
server there); the control: the same connection once the last runner is gone reaches the server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from netlib import metadata_address_on_lo, serving

from runnerlib.security.lowlevel import nftables

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="host nftables rules need a root runner"),
              pytest.mark.skipif(nftables.library() is None, reason="libnftables (nftables) is not installed")]
UID = 65533  # not the default sandbox uid: other runners on this host (older versions too) guard that one
# A stand-in runner: installs the rule for UID, prints its table, exits when told (stdin line) or signalled;
# SIGTERM becomes a normal exit, as in the real runner. FALLBACK simulates a kernel without owner tables.
RUNNER = """
import signal, sys
from runnerlib.security import metadata_guard, network
from runnerlib.security.lowlevel import nftables
if sys.argv[1] == "fallback":
    real = nftables.Session.run
    def run(self, text, **kw):
        if "flags owner" in text:
            raise OSError(95, "Error: Could not process rule: Operation not supported")
        return real(self, text, **kw)
    nftables.Session.run = run
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
why = network.ensure_metadata_blocked(int(sys.argv[2]))
if sys.argv[1] == "child":  # a program started without close_fds, outliving the runner
    import subprocess
    print(subprocess.Popen(["sleep", "60"], close_fds=False).pid, flush=True)
print(metadata_guard.current_table() if why is None else "FAILED " + why, flush=True)
sys.stdin.readline()
"""
CONNECT = ("import socket,sys\ntry:\n socket.create_connection(('169.254.169.254', int(sys.argv[1])), timeout=5)"
           ".recv(8); print('REACHED')\nexcept OSError as e: print('BLOCKED', e)\n")


def tables() -> set[str]:
    out = subprocess.run(["nft", "list", "tables", "inet"], capture_output=True, text=True).stdout
    return {t for t in re.findall(r"^table inet (\S+)", out, re.M) if t.startswith("runnerlib_metadata_")}


class Runner:
    def __init__(self, mode: str = "owner") -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", RUNNER, mode, str(UID)], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.child = int(self.proc.stdout.readline()) if mode == "child" else None
        self.table = self.proc.stdout.readline().strip()
        assert self.table.startswith("runnerlib_metadata_"), self.table

    def end(self, how: str) -> None:
        assert self.proc.stdin is not None
        if how == "exit":
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        else:
            self.proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        self.proc.wait(timeout=30)


def sandbox_uid_connects(port: int) -> str:
    return subprocess.run(["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "/usr/bin/python3",
                           "-I", "-c", CONNECT, str(port)], capture_output=True, text=True,
                          timeout=30).stdout.strip()


@pytest.fixture
def metadata_server():
    with metadata_address_on_lo("169.254.169.254"), serving("169.254.169.254", b"creds") as port:
        yield port


def test_two_runners_at_once_keep_each_others_protection(metadata_server):
    a, b = Runner(), Runner()
    try:
        assert a.table != b.table and {a.table, b.table} <= tables()
        assert sandbox_uid_connects(metadata_server).startswith("BLOCKED")
        b.end("sigterm")
        assert b.table not in tables() and a.table in tables()
        assert sandbox_uid_connects(metadata_server).startswith("BLOCKED")  # A's protection holds
        # No other socket may remove a runner's table (nor the `nft` program as root).
        assert subprocess.run(["nft", "delete", "table", "inet", a.table], capture_output=True).returncode != 0
        assert a.table in tables()
    finally:
        a.end("sigkill")  # the worst end: nothing of runnerlib's code runs
        b.end("exit") if b.proc.poll() is None else None
    assert a.table not in tables()
    # Control: with no runner the rule is gone, and the same connection reaches the server.
    assert sandbox_uid_connects(metadata_server) == "REACHED"


@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_table_goes_with_the_runner(how):
    runner = Runner()
    assert runner.table in tables()
    runner.end(how)
    assert runner.table not in tables()


def test_a_program_the_runner_started_does_not_keep_its_table():
    runner = Runner("child")
    try:
        runner.end("sigkill")
        assert runner.table not in tables()  # the child did not inherit the owning socket
    finally:
        os.kill(runner.child, signal.SIGKILL)


def test_fallback_tables_removed_at_exit_and_stale_ones_at_the_next_start():
    """A kernel without owner tables: named per runner; removed at exit; a runner killed outright leaves its
    table behind, which the next runner removes, while a live runner's table is never touched."""
    killed = Runner("fallback")
    killed.end("sigkill")
    assert killed.table in tables()  # nothing could remove it
    live = Runner("fallback")
    try:
        assert killed.table not in tables() and live.table in tables()
        other = Runner("fallback")
        assert live.table in tables() and other.table in tables()  # live runners' tables are kept
        other.end("sigterm")
        assert other.table not in tables() and live.table in tables()
    finally:
        live.end("exit")
    assert live.table not in tables()


def _cli(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    proc = subprocess.run([sys.executable, "-m", "runnerlib.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    return proc.stdout + proc.stderr


def test_policy_and_probe_install_nothing():
    before = tables()
    for args in (["sandbox", "policy", "--workspace-root", "/tmp"], ["sandbox", "probe"]):
        out = _cli(*args)
        assert "metadata addresses rejected by nftables" in out, out
    assert tables() == before


def test_a_real_run_leaves_no_table(tmp_path):
    tmp_path.chmod(0o755)
    before = tables()
    out = _cli("run", "--workspace-root", str(tmp_path), "--untrusted", "--", "/bin/echo", "ran-9xQ")
    assert "ran-9xQ" in out, out
    assert tables() == before
