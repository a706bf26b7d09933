"""The fork server's fast path keeps what a step gets: default signal actions, its exit and usage reports, a
network set-up loaded only when a step needs it (docs/internals/sandbox.md, "Spawn cost")."""

from __future__ import annotations

import os
import select
import signal

import pytest

from runnerlib.execution.process import run_process
from runnerlib.security import spawn as sp

# SIGPIPE, SIGXFSZ, SIGTERM, SIGINT: the server catches them with a handler that does nothing; exec must
# hand the step their default actions (neither ignored nor caught).
_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT)


def _dispositions(ws, registry, trusted: bool, prefix: list[str] | None = None) -> str:
    """Which of _SIGNALS the step has ignored or caught (grep, not Python: Python changes them at start-up)."""
    argv = [*(prefix or []), "/bin/grep", "-E", "^Sig(Ign|Cgt):", "/proc/self/status"]
    result = run_process(argv, registry=registry, trusted=trusted, policy=None if trusted else ws.policy(),
                         env={"PATH": "/usr/bin:/bin"}, cwd=str(ws.src), timeout=60)
    assert result.exit_code == 0, result.stderr
    masks = {line.split(":")[0]: int(line.split()[1], 16) for line in result.stdout.splitlines()}
    return " ".join(f"{name} {[int(s) for s in _SIGNALS if masks[name] >> (s - 1) & 1]}"
                    for name in ("SigIgn", "SigCgt"))


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_a_step_gets_the_default_signal_actions(workspace, registry, trusted):
    """A step that ignored SIGTERM would survive a timeout's SIGTERM; one that ignored SIGPIPE would write on
    into a closed pipe. Python itself ignores SIGPIPE and SIGXFSZ at start-up, so the server has them too."""
    assert _dispositions(workspace, registry, trusted) == "SigIgn [] SigCgt []"


def test_the_check_sees_an_ignored_signal(workspace, registry):
    """Control: the same check run beneath a process that ignores SIGTERM and SIGPIPE (inherited through exec)
    reports them, so an empty report above means defaults and not a blind check."""
    shell = ["/bin/sh", "-c", 'trap "" TERM PIPE; exec "$@"', "sh"]
    assert _dispositions(workspace, registry, True, shell) == f"SigIgn [{int(signal.SIGPIPE)}, {int(signal.SIGTERM)}] SigCgt []"


def test_exit_and_usage_both_reach_the_runner_and_a_left_daemon_does_not_delay_the_exit(workspace, registry):
    """The supervisor writes "exited" and "rusage" together when nothing is left beneath it; when the step left
    a process running, "exited" still comes at once (the runner then deals with what is left)."""
    out_r, out_w = os.pipe()
    try:
        step = sp.spawn(["/bin/sh", "-c", "sleep 30 </dev/null >/dev/null 2>&1 & exit 3"], env={"PATH": "/usr/bin:/bin"},
                        stdout=out_w, stderr=out_w)
    finally:
        os.close(out_w)
    try:
        while step.wait_status is None and not step.eof:
            ready, _, _ = select.select([step.status_fd], [], [], 20)
            assert ready, "no exit report while the step's daemon runs"
            step.read_events()
        assert step.exit_code == 3 and step.rusage is None  # the daemon still runs: no usage yet
        step.kill_all()  # the daemon (in the step's process group) dies; then the subtree is empty
        while not step.eof:
            select.select([step.status_fd], [], [], 20)
            step.read_events()
        assert step.rusage is not None
    finally:
        step.kill_all()
        step.close()
        os.close(out_r)

    out_r, out_w = os.pipe()
    try:
        step = sp.spawn(["/bin/true"], env={}, stdout=out_w, stderr=out_w)
    finally:
        os.close(out_w)
    try:
        while not step.eof:
            select.select([step.status_fd], [], [], 20)
            step.read_events()
        assert step.exit_code == 0 and step.rusage is not None and "cpu_user_seconds" in step.rusage
    finally:
        step.close()
        os.close(out_r)


@pytest.mark.root  # the server is not dumpable: its maps are root's
def test_the_server_loads_the_network_set_up_only_for_a_step_that_needs_it(workspace, registry):
    """libnftables and the forwarder's imports double the server's heap, which every fork copies."""
    sp.stop_fork_server()
    assert run_process(["/bin/true"], registry=registry, env={"PATH": "/usr/bin:/bin"}).exit_code == 0
    server = sp.fork_server_pid()
    assert server is not None
    with open(f"/proc/{server}/maps") as f:
        assert "libnftables" not in f.read()
