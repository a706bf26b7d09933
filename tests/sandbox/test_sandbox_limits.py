"""Resource limits of a step (issue 11, case 9) and the namespace policy: parsing, enforcement, reporting.

Each limit is hit by a step written to hit it, and the same step without the limit (the control) is not
stopped. Which mechanism enforces a limit depends on the machine (a cgroup as root where writable,
rlimits otherwise); the tests say which they expect.
"""

from __future__ import annotations

import ast
import dataclasses
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sandbox_testlib import IS_ROOT, STEP_PYTHON, needs_landlock

from runnerlib.execution.process import run_process
from runnerlib.jobs import Job, JobDefinitionError, StepSpec
from runnerlib.security import cgroups
from runnerlib.security.limits import (
    UNTRUSTED_DEFAULTS,
    LimitError,
    StepLimits,
    format_size,
    parse_limit_options,
    parse_size,
)
from runnerlib.security.probe import probe
from runnerlib.security.spawn import SandboxRefused, plan_sandbox

# --- parsing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [("512M", 512 << 20), ("1G", 1 << 30), ("1.5GiB", 3 << 29),
                                           ("100k", 100 << 10), ("4096", 4096), ("2 GB", 2 << 30),
                                           (1024, 1024), ("1t", 1 << 40)])
def test_sizes(text, expected):
    assert parse_size(text, "memory") == expected


@pytest.mark.parametrize("bad", ["5x", "", "M", "-1G", "1.2.3G", "0", True, None, "1e9"])
def test_bad_size_names_the_field(bad):
    with pytest.raises(LimitError, match=r"^memory: "):
        parse_size(bad, "memory")


@given(st.integers(min_value=1, max_value=1 << 40), st.sampled_from(["", "k", "M", "G", "KiB", "MiB", "GB"]))
def test_size_units_are_binary_multiples(number, unit):
    factor = {"": 1, "k": 1 << 10, "M": 1 << 20, "G": 1 << 30, "KiB": 1 << 10, "MiB": 1 << 20, "GB": 1 << 30}[unit]
    if number * factor >= 1 << 62:
        with pytest.raises(LimitError):
            parse_size(f"{number}{unit}")
    else:
        assert parse_size(f"{number}{unit}") == number * factor


@given(st.text(max_size=20))
def test_size_parser_never_crashes(text):
    try:
        assert parse_size(text) >= 1
    except LimitError as exc:
        assert str(exc).startswith("size: ")


@given(st.integers(min_value=1, max_value=(1 << 50)))
def test_format_size_reads_back_within_rounding(size):
    shown = format_size(size)
    number, unit = shown.split(" ")
    back = parse_size(number + ("" if unit == "bytes" else unit))
    assert abs(back - size) <= size * 0.05 + 1


def test_cli_limit_options():
    limits = parse_limit_options(["memory=512M", "pids=256", "cpu-seconds=600", "file_size=1G", "open_files=64"])
    assert limits == StepLimits(memory=512 << 20, pids=256, cpu_seconds=600, file_size=1 << 30, open_files=64)
    for bad, rule in (["memory"], "NAME=VALUE"), (["swap=1G"], "unknown limit 'swap'"), \
                     (["pids=-3"], "--limit pids: "), (["memory=lots"], "--limit memory: 'lots' is not a size"):
        with pytest.raises(LimitError, match=rule):
            parse_limit_options(bad)


def test_job_file_limits_on_a_step():
    spec = StepSpec.model_validate({"name": "t", "command": "make", "limits": {"pids": 256, "memory": "512M",
                                                                               "cpu_seconds": 600}})
    assert spec.limits == StepLimits(pids=256, memory=512 << 20, cpu_seconds=600)
    job = Job("j")
    step = job.add_step("t", "make", limits={"file_size": "1G", "open_files": 100})
    assert step.limits == StepLimits(file_size=1 << 30, open_files=100)
    with pytest.raises(JobDefinitionError, match=r"step 't2'.*limits.*memory.*'5x' is not a size"):
        job.add_step("t2", "make", limits={"memory": "5x"})
    with pytest.raises(JobDefinitionError, match=r"limits.*swap"):
        job.add_step("t3", "make", limits={"swap": "1G"})


def test_step_limits_override_defaults_one_by_one():
    merged = StepLimits(memory=1 << 30).merged_over(UNTRUSTED_DEFAULTS)
    assert merged.memory == 1 << 30 and merged.pids == UNTRUSTED_DEFAULTS.pids


# --- enforcement --------------------------------------------------------------------------------------------

HOG = "x = []\nfor _ in range(200):\n    x.append(bytearray(1 << 20))\nprint('survived')"
BUSY = "import time\nwhile time.process_time() < 2.5:\n    pass\nprint('survived')"
FILES = "fs = [open('/dev/null') for _ in range(100)]\nprint('survived')"
FORKS = "for i in $(seq 40); do sleep 2 & done; wait; echo survived"
WRITE = "head -c 2097152 /dev/zero > \"$TMPDIR/big\" && echo survived"


def _run(workspace, registry, command, limits, *, trusted=False):
    argv = [STEP_PYTHON, "-I", "-c", command] if "\n" in command or command.startswith(("x", "fs", "import")) \
        else ["/bin/sh", "-c", command]
    policy = None if trusted else workspace.policy()
    return run_process(argv, registry=registry, trusted=trusted, policy=policy, env={"PATH": "/usr/bin:/bin"},
                       cwd=str(workspace.src), timeout=60, grace=1, limits=limits)


@needs_landlock
def test_memory_hog_is_stopped_by_the_memory_limit(workspace, registry):
    limited = _run(workspace, registry, HOG, StepLimits(memory=64 << 20))
    assert "survived" not in limited.stdout and limited.exit_code != 0, limited
    if IS_ROOT and "memory" in cgroups.available():
        assert limited.limit_hit == "memory" and limited.reason == "killed: memory limit 64 MiB", limited
    else:  # RLIMIT_AS: the allocation fails inside the step, which reports it itself
        assert "MemoryError" in limited.stderr and limited.limit_hit is None, limited
        assert limited.reason == "memory limit 64 MiB (an address-space limit) may have been reached", limited
    control = _run(workspace, registry, HOG, None)
    assert control.exit_code == 0 and "survived" in control.stdout, control


@needs_landlock
def test_cpu_hog_is_killed_by_the_cpu_limit(workspace, registry):
    limited = _run(workspace, registry, BUSY, StepLimits(cpu_seconds=1))
    assert limited.limit_hit == "cpu_seconds" and limited.reason == "killed: cpu limit 1 s", limited
    control = _run(workspace, registry, BUSY, None)
    assert control.exit_code == 0 and control.limit_hit is None, control


@needs_landlock
@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
def test_big_file_is_killed_by_the_file_size_limit(workspace, registry, trusted, tmp_path):
    command = WRITE if not trusted else WRITE.replace("$TMPDIR", str(tmp_path))
    limited = _run(workspace, registry, command, StepLimits(file_size=1 << 20), trusted=trusted)
    assert limited.limit_hit == "file_size" and limited.reason == "killed: file size limit 1 MiB", limited
    control = _run(workspace, registry, command, None, trusted=trusted)
    assert control.exit_code == 0 and "survived" in control.stdout, control


@needs_landlock
def test_fork_burst_is_stopped_by_the_pids_limit(workspace, registry):
    limited = _run(workspace, registry, FORKS, StepLimits(pids=20))
    assert limited.exit_code != 0 and "survived" not in limited.stdout, limited
    if IS_ROOT and "pids" in cgroups.available():
        assert limited.limit_hit == "pids" and limited.reason.startswith("pids limit 20 reached"), limited
    control = _run(workspace, registry, FORKS, None)
    assert control.exit_code == 0 and "survived" in control.stdout, control


@needs_landlock
def test_open_files_limit(workspace, registry):
    limited = _run(workspace, registry, FILES, StepLimits(open_files=50))
    assert limited.exit_code != 0 and "Too many open files" in limited.stderr, limited
    control = _run(workspace, registry, FILES, None)
    assert control.exit_code == 0, control


# --- the plan: mechanisms, namespaces required --------------------------------------------------------------


def test_plan_names_a_mechanism_for_every_limit(workspace):
    plan = plan_sandbox(workspace.policy(limits=StepLimits(memory=1 << 30, pids=100, cpu_seconds=9,
                                                           file_size=1 << 20, open_files=64)))
    try:
        mechanisms = {name: how for name, _value, how in plan.limit_mechanisms()}
        assert set(mechanisms) == {"memory", "pids", "cpu_seconds", "file_size", "open_files"}
        assert mechanisms["cpu_seconds"].startswith("RLIMIT_CPU")
        if IS_ROOT and "memory" in cgroups.available():
            assert mechanisms["memory"].startswith("cgroup") and "as" not in plan.plan["rlimits"]
        else:
            assert mechanisms["memory"].startswith("RLIMIT_AS") and plan.plan["rlimits"]["as"] == 1 << 30
    finally:
        plan.cleanup()


def test_open_files_above_the_hard_limit_is_lowered_with_a_note(workspace):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    plan = plan_sandbox(workspace.policy(limits=StepLimits(open_files=hard + 1)), make_tmp=False)
    assert plan.plan["rlimits"]["nofile"] == hard and any("open_files" in n for n in plan.notes)


def test_namespaces_required_fails_closed_where_impossible(workspace):
    no_ns = dataclasses.replace(probe(), step_namespaces=False, step_namespaces_gap="unshare(CLONE_NEWPID) refused")
    with pytest.raises(SandboxRefused, match="required.*unshare"):
        plan_sandbox(workspace.policy(namespaces="required"), caps=no_ns, dumpable=False, make_tmp=False)
    auto = plan_sandbox(workspace.policy(), caps=no_ns, dumpable=False, make_tmp=False)
    assert auto.plan.get("ns") is None and any("swept" in n for n in auto.notes)
    off = plan_sandbox(workspace.policy(namespaces="off"), dumpable=False, make_tmp=False)
    assert off.plan.get("ns") is None


def test_namespaces_mode_from_the_environment():
    from runnerlib.security.policy import PolicyError, SandboxPolicy

    assert SandboxPolicy.from_env({"REACTORCIDE_SANDBOX_NAMESPACES": "required"}).namespaces == "required"
    with pytest.raises(PolicyError, match="namespaces"):
        SandboxPolicy.from_env({"REACTORCIDE_SANDBOX_NAMESPACES": "sometimes"})


# --- CLI ------------------------------------------------------------------------------------------------------


def _cli(*args: str, **env: str):
    import subprocess
    import sys

    from sandbox_testlib import CHECKOUT

    return subprocess.run([sys.executable, "-m", "runnerlib.cli", *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT, **env}, timeout=120)


def test_cli_probe_shows_namespaces_and_policy_the_limit_mechanisms(workspace):
    probe_out = _cli("sandbox", "probe").stdout
    assert "pid namespace" in probe_out and "private /proc" in probe_out and "private /dev/shm" in probe_out
    assert "untrusted steps' namespaces" in probe_out
    off = _cli("sandbox", "probe", REACTORCIDE_SANDBOX_NAMESPACES="off").stdout
    assert "OFF (mode off" in off
    out = _cli("sandbox", "policy", "--workspace", str(workspace.root), "--limit", "memory=512M",
               "--limit", "pids=256").stdout
    assert "limit memory 512 MiB: " in out and "limit pids 256: " in out and "limit cpu_seconds" in out
    bad = _cli("sandbox", "policy", "--workspace", str(workspace.root), "--limit", "memory=5x")
    assert bad.returncode == 78 and "--limit memory: '5x' is not a size" in bad.stderr


@needs_landlock
def test_cli_exec_reports_the_limit(workspace):
    done = _cli("sandbox", "exec", "--workspace", str(workspace.root), "--limit", "cpu_seconds=1", "--",
                STEP_PYTHON, "-c", "while True: pass")
    assert done.returncode == 128 + 24 and "killed: cpu limit 1 s" in done.stderr, done


@needs_landlock
def test_the_steps_cgroup_is_removed_with_it(workspace, registry):
    if not cgroups.available():
        pytest.skip("no writable cgroup v1 hierarchy (not root): limits are rlimits here")
    from runnerlib.security import spawn as sp

    plan = plan_sandbox(workspace.policy(limits=StepLimits(memory=256 << 20, pids=100)))
    assert plan.cgroup is not None
    dirs = list(plan.cgroup.dirs.values())
    assert dirs and all(os.path.isdir(d) for d in dirs)
    plan.cleanup()
    sp._remover.drain()
    assert not any(os.path.exists(d) for d in dirs)


THREADS = ("import glob, threading\nt = threading.Thread(target=lambda: None)\nt.start(); t.join()\n"
           "ev = threading.Event()\nt = threading.Thread(target=ev.wait); t.start()\n"
           "print(sorted({open(f).read() for f in glob.glob('/proc/self/task/*/cgroup')}))\nev.set()")


@needs_landlock
def test_the_step_and_its_threads_are_in_its_cgroup(workspace, registry):
    """The step moves itself in through v1 `tasks` (one thread, before exec): every thread it makes after
    exec is in the step's cgroup of each limited controller (the move must take the whole process)."""
    if not IS_ROOT or not {"memory", "pids"} <= set(cgroups.available()):
        pytest.skip("no writable memory and pids cgroup hierarchies (not root): limits are rlimits here")

    def cgroups_of(limits):
        result = _run(workspace, registry, THREADS, limits)
        assert result.exit_code == 0, result
        seen = ast.literal_eval(result.stdout.strip())  # the distinct /proc/<tid>/cgroup texts
        assert len(seen) == 1, seen  # every thread in the same cgroups
        return dict(line.split(":", 2)[1:] for line in seen[0].splitlines())

    lines = cgroups_of(StepLimits(memory=256 << 20, pids=100))
    assert "runnerlib-" in lines["memory"] and "runnerlib-" in lines["pids"], lines
    control = cgroups_of(None)  # no job-set limit: no cgroup of its own
    assert "runnerlib-" not in control["memory"] + control["pids"], control


def test_a_policy_granting_tmp_itself_keeps_the_shared_tmp():
    from runnerlib.security.policy import SandboxPolicy

    if not probe().step_namespaces:
        pytest.skip("no namespaces here")
    plan = plan_sandbox(SandboxPolicy(read_write_paths=("/tmp",), private_tmp=False), dumpable=False,
                        make_tmp=False)
    assert plan.plan["ns"]["tmp"] is False and any("/tmp itself" in n for n in plan.notes)
    assert plan_sandbox(SandboxPolicy(), dumpable=False, make_tmp=False).plan["ns"]["tmp"] is True
