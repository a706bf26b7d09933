"""The fork server's fast path keeps what a step gets: default signal actions, its exit and usage reports, a
network set-up loaded only when a step needs it (docs/internals/sandbox.md, "Spawn cost")."""

from __future__ import annotations

import json
import math
import os
import secrets
import select
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sandbox_testlib import SECRET, STEP_PYTHON, fragments

from runnerlib.execution.process import run_process
from runnerlib.security import spawn as sp
from runnerlib.security import zygote
from runnerlib.security.probe import probe

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


_NUMBER = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none())
_VALUE = st.one_of(_NUMBER, st.text(max_size=20), st.lists(st.integers(), max_size=5),
                   st.lists(_NUMBER, max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12), _VALUE, max_size=6))
def test_an_event_line_reads_back_as_the_event(event):
    """The supervisor's own formatting of numeric events (zygote._event_line) is JSON that reads back as the
    event, whatever the values (anything it does not format itself goes through json.dumps)."""
    line = zygote._event_line(event)
    assert line.endswith("\n") and "\n" not in line[:-1]
    back = json.loads(line)
    assert back.keys() == event.keys()
    for key, value in event.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(back[key])
        elif isinstance(value, list):
            assert len(back[key]) == len(value) and all(
                (math.isnan(a) and math.isnan(b)) if isinstance(a, float) and math.isnan(a) else a == b
                for a, b in zip(value, back[key], strict=True))
        else:
            assert back[key] == value and type(back[key]) is type(value)


@pytest.mark.skipif(not probe().step_namespaces, reason="the kernel refuses the step's namespaces")
@pytest.mark.parametrize("through", ["/proc/1/root", "/proc/1/cwd"])
def test_the_init_outside_the_steps_mounts_is_no_way_to_the_hosts_tmp(workspace, registry, through):
    """As root the namespace's init stays in the runner's mount namespace (the step makes its private mounts):
    its /proc/1/root and /proc/1/cwd lead to the host's /tmp, which the step's private /tmp hides. The step must
    not get through them (another uid, a non-dumpable init: no ptrace access). Control: the same read by a
    trusted step, and the file itself readable by uid 65534 (world-readable)."""
    secret_file = Path(f"/tmp/rl-host-{secrets.token_hex(6)}")
    secret_file.write_text(f"host-only {SECRET}")
    secret_file.chmod(0o644)
    try:
        # /proc/1/cwd of the init is / (the server's cwd), so both spellings name the same host file.
        target = f"{through}{secret_file}"
        read = ("import sys\ntry:\n    print('READ', open(sys.argv[1]).read())\n"
                "except OSError as e:\n    print('BLOCKED', e.errno)")
        result = run_process([STEP_PYTHON, "-I", "-S", "-c", read, target], registry=registry, trusted=False,
                             policy=workspace.policy(), cwd=str(workspace.src), env={"PATH": "/usr/bin:/bin"}, timeout=60)
        assert result.stdout.startswith("BLOCKED"), result
        assert not any(frag in result.output for frag in fragments(SECRET))
        control = run_process([STEP_PYTHON, "-I", "-S", "-c", read, str(secret_file)], registry=registry,
                              trusted=True, cwd=str(workspace.src), env={"PATH": "/usr/bin:/bin"}, timeout=60)
        assert control.stdout.startswith("READ"), control  # the file is there, and readable when reachable
        # And the spelling reaches the file where access is allowed: a trusted step's own /proc entry (cwd /).
        own = through.replace("/proc/1/", "/proc/self/") + str(secret_file)
        spelled = run_process([STEP_PYTHON, "-I", "-S", "-c", read, own], registry=registry, trusted=True,
                              cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=60)
        assert spelled.stdout.startswith("READ"), spelled
    finally:
        secret_file.unlink()
