"""Fail closed where cloud metadata cannot be kept out: with no nftables rule and no network namespace
possible, an untrusted step's IMPLICIT default network becomes `none` (seccomp/Landlock), said once; an
explicit `full` is refused. The attack: the step connects to a 127.0.0.1 server standing in for the metadata
service. The control: the same step where the mechanisms work (the default `full`) reaches it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from netlib import PROBE, write_probe
from sandbox_testlib import IS_ROOT, STEP_PYTHON, caps, needs_landlock

from runnerlib.execution.process import run_process
from runnerlib.security import network
from runnerlib.security.lowlevel import nftables
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import reachable_tempdir

pytestmark = needs_landlock
REPO = Path(__file__).resolve().parents[2]
# Both mechanisms gone, as on an unprivileged runner whose kernel forbids user namespaces (or a root runner
# without nftables and without CAP_SYS_ADMIN): what the runner's planner sees.
NO_MECHANISMS = ("import runnerlib.security.network as n\n"
                 "n.netns_available = lambda is_root, user_namespaces: 'simulated: no namespaces'\n"
                 "n.ensure_metadata_blocked = lambda uid: 'simulated: no nftables'\n")
# The real mechanisms reach everything but metadata here (the control's precondition).
MECHANISMS_WORK = nftables.library() is not None and (
    IS_ROOT or network.netns_available(IS_ROOT, caps.user_namespaces) is None)


@pytest.fixture
def no_mechanisms(monkeypatch):
    monkeypatch.setattr(network, "netns_available", lambda is_root, user_namespaces: "simulated: no namespaces")
    monkeypatch.setattr(network, "ensure_metadata_blocked", lambda uid: "simulated: no nftables")
    monkeypatch.setattr(network, "_told", set())


@pytest.mark.parametrize("is_root", [True, False])
def test_plan_implicit_default_becomes_none_and_explicit_full_is_refused(no_mechanisms, is_root):
    kw = {"trusted": False, "is_root": is_root, "sandbox_uid": 65534 if is_root else None,
          "user_namespaces": False, "landlock_net": True, "seccomp": True}
    plan = network.plan_network(network.default_policy(), **kw)
    assert plan.policy.mode == "none" and plan.deny_sockets and not plan.missing, plan
    assert len(plan.notes) == 1 and "metadata" in plan.notes[0] and "network: none" in plan.notes[0]
    assert ("root" in plan.notes[0]) != is_root  # what to do: root / user namespaces, or nftables as root
    explicit = network.plan_network(network.parse_network("full"), **kw)
    assert explicit.missing and "metadata" in explicit.missing[0], explicit
    # Nothing to enforce `none` with either: refused too, never run open.
    bare = network.plan_network(network.default_policy(), **{**kw, "landlock_net": False, "seccomp": False})
    assert bare.missing and "seccomp" in bare.missing[0]


def test_plan_control_default_stays_full_where_a_mechanism_works(monkeypatch):
    monkeypatch.setattr(network, "ensure_metadata_blocked", lambda uid: None)
    plan = network.plan_network(network.default_policy(), trusted=False, is_root=True, sandbox_uid=65534,
                                user_namespaces=False)
    assert plan.policy.mode == "full" and not plan.deny_sockets and not plan.notes


def _connect(ws: Path, port: int, tag: str, network_policy=None) -> str:
    from runnerlib.security.policy import SandboxPolicy

    argv = [STEP_PYTHON, "-I", "-c", PROBE, str(port), tag]
    result = run_process(argv, registry=SecretRegistry(), trusted=False, policy=SandboxPolicy.for_workspace(str(ws)),
                         env={"PATH": "/usr/bin:/bin"}, cwd=str(ws), timeout=60, grace=1, network=network_policy)
    if result.refused:
        return f"REFUSED: {result.reason}"
    return result.stdout.strip()


@pytest.mark.skipif(not MECHANISMS_WORK, reason="the control needs a working metadata mechanism here")
def test_control_default_step_reaches_the_stand_in(workspace, server):
    assert _connect(workspace.root, server, "control").startswith("REACHED-control")


def test_untrusted_default_step_cannot_reach_the_stand_in_without_mechanisms(workspace, server, no_mechanisms,
                                                                             caplog):
    caplog.set_level(logging.WARNING, logger="runnerlib.security.network")
    for tag in ("first", "second"):
        verdict = _connect(workspace.root, server, tag)
        assert verdict.startswith(f"BLOCKED-{tag}"), verdict
    notices = [r.getMessage() for r in caplog.records if "metadata" in r.getMessage()]
    assert len(notices) == 1, notices  # one notice, not one per step
    verdict = _connect(workspace.root, server, "explicit", network_policy="full")
    assert verdict.startswith("REFUSED") and "metadata" in verdict, verdict
    # A trusted step is not affected: it has the runner's network (control of the same server).
    trusted = run_process([STEP_PYTHON, "-I", "-c", PROBE, str(server), "trusted"], trusted=True,
                          registry=SecretRegistry(),
                          env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.root), timeout=60, grace=1)
    assert "REACHED-trusted" in trusted.stdout, trusted.output


def _cli(*args: str, simulate: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    code = (NO_MECHANISMS if simulate else "") + "from runnerlib.cli import entry\nentry()\n"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=180)


def test_job_end_to_end_falls_back_with_one_notice(server):
    with reachable_tempdir("rl-netfb-") as ws:
        probe = write_probe(ws)
        steps = [{"name": f"s{i}", "command": [STEP_PYTHON, str(probe), str(server), f"s{i}"], "trust": "untrusted",
                  **({"depends_on": [f"s{i - 1}"]} if i else {})} for i in range(2)]
        job_file = ws / "ci" / "job.json"
        job_file.write_text(json.dumps({"steps": steps}))
        proc = _cli("run-job", str(job_file), "--workspace-root", str(ws), simulate=True)
        out = proc.stdout + proc.stderr
        assert "BLOCKED-s0" in out and "BLOCKED-s1" in out and "REACHED" not in out, out
        notices = [line for line in out.splitlines() if "untrusted steps that name no network get none" in line]
        assert len(notices) == 1, out
        if MECHANISMS_WORK:  # control: the same job with the mechanisms reaches the stand-in
            control = _cli("run-job", str(job_file), "--workspace-root", str(ws), simulate=False)
            assert "REACHED-s0" in control.stdout + control.stderr, control.stdout + control.stderr


def test_policy_and_probe_say_which_applies():
    policy = _cli("sandbox", "policy", "--workspace-root", "/tmp", simulate=True)
    assert "network none" in policy.stdout and "cannot keep cloud metadata addresses out" in policy.stdout, (
        policy.stdout + policy.stderr)
    assert "note: untrusted steps that name no network get none" in policy.stdout, policy.stdout
    probe = _cli("sandbox", "probe", simulate=True)
    assert "default network here: none" in probe.stdout, probe.stdout + probe.stderr
    explicit = _cli("sandbox", "policy", "--workspace-root", "/tmp", "--network", "full", simulate=True)
    assert explicit.returncode == 1 and "REFUSED" in explicit.stdout and "metadata" in explicit.stdout
    if MECHANISMS_WORK:  # control
        probe = _cli("sandbox", "probe", simulate=False)
        assert "default network here: full" in probe.stdout, probe.stdout
