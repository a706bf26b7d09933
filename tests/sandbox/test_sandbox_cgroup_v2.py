"""cgroup v2 (the unified hierarchy) for a step's limits and leftovers (issue 11, cases 4 and 9).

Tested against the kernel's real cgroup2 files where this machine has them: on a v1-hybrid host the
unified hierarchy exists (/sys/fs/cgroup/unified) but the memory and pids controllers are bound to v1, so
cgroup.procs, cgroup.kill and cgroup.events are real here and memory.max / pids.max are tested only where the
kernel offers them in v2 (skipped with the reason otherwise). The choice of hierarchy is tested with a fake
cgroupfs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandbox_testlib import IS_ROOT, STEP_PYTHON, needs_landlock

from runnerlib.execution.process import run_process
from runnerlib.security import cgroups, proctree
from runnerlib.security.limits import StepLimits, mechanism
from runnerlib.testing import reachable_tempdir

# --- choosing the hierarchy (no privileges needed) ---------------------------------------------------------

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PURE = """\
22 1 0:5 / /proc rw - proc proc rw
30 23 0:26 /kubepods/pod1 /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate
"""


@pytest.mark.parametrize("text,expected", [(HYBRID, ("/sys/fs/cgroup/unified", "/")),
                                           (PURE, ("/sys/fs/cgroup", "/kubepods/pod1")),
                                           ("22 1 0:5 / /proc rw - proc proc rw\n", None)])
def test_the_cgroup2_mount_is_found(tmp_path, text, expected):
    info = tmp_path / "mountinfo"
    info.write_text(text)
    assert cgroups.v2_mount(str(info)) == expected


def _fake_v2(tmp_path: Path, controllers: str) -> str:
    base = tmp_path / "cg"
    base.mkdir()
    (base / "cgroup.controllers").write_text(controllers + "\n")
    (base / "cgroup.subtree_control").write_text("")
    (base / "cgroup.procs").write_text("")
    return str(base)


def test_v2_is_chosen_where_it_offers_the_controller(tmp_path, monkeypatch):
    base = _fake_v2(tmp_path, "cpu memory pids")
    monkeypatch.setattr(cgroups, "v2_base", lambda: base)
    where = cgroups.available()
    assert where["memory"] == cgroups.Hierarchy(2, base) and where["pids"].version == 2
    assert cgroups.version_of("memory") == 2
    assert mechanism("memory", by_cgroup=["memory"]).startswith("cgroup v2 memory.max")
    assert mechanism("pids", by_cgroup=["pids"]).startswith("cgroup v2 pids.max")


def test_a_hybrid_host_keeps_v1_for_the_limits(tmp_path, monkeypatch):
    """The unified hierarchy of a hybrid host offers neither memory nor pids: v1 (as root) or nothing."""
    base = _fake_v2(tmp_path, "hugetlb")
    monkeypatch.setattr(cgroups, "v2_base", lambda: base)
    monkeypatch.setattr(cgroups, "_own_dirs", lambda: {"memory": str(tmp_path), "pids": str(tmp_path)})
    where = cgroups.available()
    if IS_ROOT:
        assert {c: h.version for c, h in where.items()} == {"memory": 1, "pids": 1}
        assert mechanism("memory", by_cgroup=["memory"]).startswith("cgroup v1 memory.limit_in_bytes")
    else:
        assert where == {}
    assert mechanism("memory").startswith("RLIMIT_AS")


def test_v2_step_cgroup_writes_its_limit_files(tmp_path):
    """The files written, against a fake cgroupfs (the real ones are tested below where the kernel has them)."""
    base = _fake_v2(tmp_path, "memory pids")
    Path(base, "cgroup.subtree_control").write_text("memory pids\n")  # delegated with both enabled
    made = cgroups.StepCgroup.create(64 << 20, 100, where={"memory": cgroups.Hierarchy(2, base),
                                                           "pids": cgroups.Hierarchy(2, base)}, v2=base)
    assert made is not None and made.v2 is not None and made.controllers == ["memory", "pids"]
    # a fake directory has no cgroup.procs/memory.swap.max of its own: only the limits were written
    assert Path(made.v2, "memory.max").read_text() == str(64 << 20)
    assert Path(made.v2, "pids.max").read_text() == "100"
    assert made.procs_files() == [os.path.join(made.v2, "cgroup.procs")]
    Path(made.v2, "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    Path(made.v2, "pids.events").write_text("max 0\n")
    assert made.memory_killed() and not made.pids_refused()
    for name in os.listdir(made.v2):
        os.unlink(os.path.join(made.v2, name))
    made.remove()
    assert made.v2 is None


def test_controllers_not_delegated_fall_back(tmp_path):
    """Offered but not enabled, and the write refused (not our cgroup to change): no v2 cgroup for them."""
    base = _fake_v2(tmp_path, "memory pids")
    sub = Path(base, "cgroup.subtree_control")
    sub.chmod(0o444)
    if os.access(sub, os.W_OK):
        pytest.skip("root writes a read-only file anyway: the kernel's refusal is tested below")
    made = cgroups.StepCgroup.create(64 << 20, None, where={"memory": cgroups.Hierarchy(2, base)}, v2=base)
    assert made is None


# --- the kernel's own cgroup2 files ------------------------------------------------------------------------


@pytest.fixture
def v2_base():
    """A fresh cgroup beneath this process's own v2 cgroup, removed afterwards; skipped where none is writable."""
    base = cgroups.v2_base()
    if base is None:
        mount = cgroups.v2_mount()
        pytest.skip("no writable cgroup2 hierarchy here" + (f" ({mount[0]} is not writable by this uid, and "
                                                            "nothing is delegated to it)" if mount else ""))
    path = os.path.join(base, f"runnerlib-test-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(path)
    yield path
    _remove_tree(path)


DAEMON = ("import os, sys, time\n"
          "open(sys.argv[1] + '/cgroup.procs', 'w').write('0')\n"
          "if os.fork() == 0:\n"
          "    os.setsid()\n"
          "    if os.fork() == 0:\n"
          "        open(sys.argv[2], 'w').write(str(os.getpid()))\n"
          "        time.sleep(120)\n"
          "    os._exit(0)\n"
          "time.sleep(0.2)\n")


def _alive(pid: int) -> bool:
    return pid in proctree.parent_map()  # zombies excluded


def test_cgroup_kill_ends_a_daemon_that_left_its_session(v2_base, tmp_path):
    """Attack: a step's process double-forks and calls setsid (out of its process group and session). Control:
    after the step's main process exited, the daemon lives on. cgroup.kill of the step's cgroup ends it,
    and cgroup.events says the cgroup is empty."""
    made = cgroups.StepCgroup.create(None, None, kill=True, where={}, v2=v2_base)
    assert made is not None and made.v2 is not None and made.controllers == []
    for name in ("cgroup.procs", "cgroup.kill", "cgroup.events"):
        assert os.path.exists(os.path.join(made.v2, name)), name
    pidfile = tmp_path / "daemon.pid"
    subprocess.run([sys.executable, "-I", "-c", DAEMON, made.v2, str(pidfile)], check=True, timeout=60)
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    daemon = int(pidfile.read_text())
    try:
        assert _alive(daemon) and made.populated() is True  # control: it outlived its parent
        assert os.getsid(daemon) != os.getsid(0)
        killed = made.kill()
        assert daemon in killed
        deadline = time.monotonic() + 30
        while made.populated():
            assert time.monotonic() < deadline, "cgroup.kill left a process in the step's cgroup"
            time.sleep(0.01)
        assert not _alive(daemon)
    finally:
        if _alive(daemon):
            os.kill(daemon, signal.SIGKILL)
        made.remove()
    assert not os.path.exists(os.path.join(v2_base, os.path.basename(made.v2 or "x")))


def test_controller_enabling_moves_only_our_own_processes(v2_base):
    """The no-internal-process rule against the real kernel, with a controller this kernel offers in v2:
    a cgroup holding our own child is emptied into runnerlib-runner and the controller enabled; one holding
    somebody else's process is left alone (the controller stays off)."""
    parent_sub = os.path.join(os.path.dirname(v2_base), "cgroup.subtree_control")
    offered = cgroups.v2_controllers(os.path.dirname(v2_base)) - {"cpuset"}
    if not offered:
        pytest.skip("this kernel's v2 hierarchy offers no controller to enable")
    controller = sorted(offered)[0]
    enabled_before = controller in Path(parent_sub).read_text().split()
    if not enabled_before:
        Path(parent_sub).write_text(f"+{controller}")
    child = subprocess.Popen(["sleep", "60"])
    stranger = subprocess.run(["sh", "-c", "setsid sleep 60 >/dev/null 2>&1 & echo $!"], capture_output=True,
                              text=True, check=True).stdout.strip()
    other = os.path.join(v2_base, "other")
    mine = os.path.join(v2_base, "mine")
    try:
        assert controller in cgroups.v2_controllers(v2_base)
        Path(v2_base, "cgroup.subtree_control").write_text(f"+{controller}")
        for d in (mine, other):
            os.mkdir(d)
        Path(mine, "cgroup.procs").write_text(str(child.pid))
        Path(other, "cgroup.procs").write_text(stranger)
        # owner=child: the stranger descends from the test process when pytest's worker is a subreaper (an
        # earlier test made it one), never from `child`
        assert cgroups.prepare_v2(other, {controller}, owner=child.pid) == set()
        assert Path(other, "cgroup.procs").read_text().split() == [stranger]
        assert cgroups.prepare_v2(mine, {controller}, owner=os.getpid()) == {controller}
        assert Path(mine, cgroups.RUNNER_LEAF, "cgroup.procs").read_text().split() == [str(child.pid)]
    finally:
        child.kill()
        child.wait()
        os.kill(int(stranger), signal.SIGKILL)
        for d in (os.path.join(mine, cgroups.RUNNER_LEAF), mine, other):
            for _ in range(500):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        Path(v2_base, "cgroup.subtree_control").write_text(f"-{controller}")
        if not enabled_before:
            Path(parent_sub).write_text(f"-{controller}")


@pytest.mark.parametrize("controller", ["memory", "pids"])
def test_v2_limit_files_are_the_kernels(v2_base, controller):
    if controller not in cgroups.v2_controllers(os.path.dirname(v2_base)):
        pytest.skip(f"this kernel's v2 hierarchy does not offer {controller} (on a v1-hybrid host it is bound "
                    "to its v1 hierarchy); its v1 driver is tested in test_sandbox_limits.py")
    made = cgroups.StepCgroup.create(64 << 20 if controller == "memory" else None,
                                     100 if controller == "pids" else None,
                                     where={controller: cgroups.Hierarchy(2, v2_base)}, v2=v2_base)
    try:
        assert made is not None and made.controllers == [controller]
        name = {"memory": "memory.max", "pids": "pids.max"}[controller]
        assert Path(made.v2, name).read_text().strip() == str(64 << 20 if controller == "memory" else 100)
    finally:
        if made is not None:
            made.remove()


# --- through the runner ----------------------------------------------------------------------------------------

HOG = "x = []\nfor _ in range(200):\n    x.append(bytearray(1 << 20))\nprint('survived')"


@needs_landlock
def test_a_step_without_pid_namespace_is_ended_by_cgroup_kill(workspace, registry, monkeypatch, tmp_path):
    """A step with a cgroup and no PID namespace: its daemon is killed through cgroup.kill (counted as a
    leftover), where the runner can make a v2 cgroup."""
    if cgroups.v2_base() is None or not cgroups.available():
        pytest.skip("no writable cgroup2 hierarchy and cgroup for limits here: the sweep of the process tree is "
                    "the mechanism (tested in test_sandbox_private_world.py)")
    calls: list[list[int]] = []
    real = cgroups.StepCgroup.kill

    def spy(self):  # type: ignore[no-untyped-def]
        pids = real(self)
        calls.append(pids)
        return pids

    monkeypatch.setattr(cgroups.StepCgroup, "kill", spy)
    pidfile = workspace.src / "daemon.pid"
    script = DAEMON.replace("open(sys.argv[1] + '/cgroup.procs', 'w').write('0')\n", "")
    result = run_process([STEP_PYTHON, "-I", "-c", script, "-", str(pidfile)], registry=registry, trusted=False,
                         policy=workspace.policy(namespaces="off", limits=StepLimits(pids=500)),
                         env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.src), timeout=60, grace=1)
    assert result.exit_code == 0 and result.leftover_killed >= 1, result
    assert any(calls), "cgroup.kill found nobody: the daemon was not in the step's cgroup"
    daemon = int(pidfile.read_text())
    assert not _alive(daemon)


@needs_landlock
def test_memory_hog_killed_by_a_v2_memory_limit(workspace, registry):
    if cgroups.version_of("memory") != 2:
        pytest.skip("the memory controller is not offered by cgroup v2 here (v1 hybrid, or not delegated)")
    result = run_process([STEP_PYTHON, "-I", "-c", HOG], registry=registry, trusted=False,
                         policy=workspace.policy(limits=StepLimits(memory=64 << 20)), env={"PATH": "/usr/bin:/bin"},
                         cwd=str(workspace.src), timeout=60, grace=1)
    assert result.limit_hit == "memory" and result.reason == "killed: memory limit 64 MiB", result


# --- a subtree delegated to an unprivileged runner (as systemd's Delegate=yes does) -----------------------------

DELEGATED = r"""
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("cg", sys.argv[1])  # stdlib only: no venv needed as uid 65534
cg = sys.modules["cg"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(cg)
controller = sys.argv[2]
base = cg.v2_base()
print("base", base)
print("enabled", " ".join(sorted(cg.prepare_v2(base, {controller}))))
print("own", open("/proc/self/cgroup").read().splitlines()[-1].split("/")[-1])
made = cg.StepCgroup.create(None, None, kill=True)
print("step", made.v2)
r, w = os.pipe()
if os.fork() == 0:
    open(made.v2 + "/cgroup.procs", "w").write("0")
    os.setsid()
    if os.fork() == 0:
        os.write(w, b"x")
        time.sleep(120)
    os._exit(0)
os.read(r, 1)
print("populated", made.populated())
print("killed", len(made.kill()))
deadline = time.monotonic() + 30
while made.populated() and time.monotonic() < deadline:
    time.sleep(0.01)
print("after", made.populated())
made.remove()
print("removed", not os.path.exists(made.v2 or "/nonexistent-x") if made.v2 else True)
"""


@pytest.mark.root
def test_a_delegated_subtree_works_for_an_unprivileged_runner(v2_base, tmp_path):
    """The v2 driver as an unprivileged runner in a subtree delegated to its uid (the directory and its
    cgroup.procs, cgroup.subtree_control and cgroup.threads chowned to it): it finds the subtree, moves itself
    into runnerlib-runner to enable a controller (the no-internal-process rule), makes a step cgroup and ends a
    setsid daemon in it with cgroup.kill. A controller this kernel offers in v2 stands in for memory and pids."""
    parent = os.path.dirname(v2_base)
    offered = cgroups.v2_controllers(parent) - {"cpuset"}
    if not offered:
        pytest.skip("this kernel's v2 hierarchy offers no controller to enable")
    controller = sorted(offered)[0]
    parent_sub = Path(parent, "cgroup.subtree_control")
    enabled_before = controller in parent_sub.read_text().split()
    if not enabled_before:
        parent_sub.write_text(f"+{controller}")
    Path(v2_base, "cgroup.subtree_control").write_text(f"+{controller}")
    delegated = os.path.join(v2_base, "delegated")
    os.mkdir(delegated)
    for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
        os.chown(os.path.join(delegated, name), 65534, 65534)
    try:
        with reachable_tempdir("rl-cg-") as where:
            script, module = where / "delegated.py", where / "cgroups.py"
            script.write_text(DELEGATED)
            shutil.copy(cgroups.__file__, module)
            for f in (script, module):
                f.chmod(0o644)
            done = _as_delegate(delegated, script, module, controller)
        out = dict(line.split(" ", 1) for line in done.stdout.splitlines())
        assert done.returncode == 0, done
        assert out["base"] == delegated and out["enabled"] == controller, done
        assert out["own"] == cgroups.RUNNER_LEAF, done  # it moved itself, to hand the controller on
        assert out["step"].startswith(delegated + "/runnerlib-"), done
        assert out["populated"] == "True" and int(out["killed"]) >= 1 and out["after"] == "False", done
        assert out["removed"] == "True", done
    finally:
        _remove_tree(delegated)
        Path(v2_base, "cgroup.subtree_control").write_text(f"-{controller}")
        if not enabled_before:
            parent_sub.write_text(f"-{controller}")


def _as_delegate(delegated: str, script: Path, module: Path, controller: str) -> subprocess.CompletedProcess[str]:
    """Run `script` as uid 65534 inside the delegated cgroup (root's shell moves itself in, then drops to it)."""
    return subprocess.run(
        ["sh", "-c", f'echo $$ > {delegated}/cgroup.procs && exec setpriv --reuid=65534 --regid=65534 '
                     f'--clear-groups {STEP_PYTHON} -I "$0" "$1" "$2"', str(script), str(module), controller],
        capture_output=True, text=True, timeout=120, cwd="/")


def _remove_tree(path: str) -> None:
    """Kill what is left in a cgroup subtree and remove it, deepest first."""
    for top, _dirs, _files in os.walk(path):
        cgroups._kill_v2(top)
    for top, _dirs, _files in os.walk(path, topdown=False):
        for _ in range(500):
            try:
                os.rmdir(top)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)


# --- what `sandbox probe` and `sandbox policy` say -----------------------------------------------------------


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    from sandbox_testlib import CHECKOUT

    return subprocess.run([sys.executable, "-m", "runnerlib.cli", *args], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT, **env})


def test_probe_and_policy_say_which_cgroup_and_which_leftover_mechanism(workspace):
    import json

    data = json.loads(_cli("sandbox", "probe", "--json").stdout)["cgroups"]
    where = cgroups.available()
    assert {c: v["version"] for c, v in data["limits"].items()} == {c: h.version for c, h in where.items()}
    assert data["v2"] == cgroups.v2_base()
    text = _cli("sandbox", "probe").stdout
    assert "cgroup.kill  " + ("yes" if data["v2"] else "NO") in text, text
    off = _cli("sandbox", "policy", "--workspace-root", str(workspace.root), "--namespaces", "off",
               "--limit", "pids=100").stdout
    line = next(x for x in off.splitlines() if "leftover processes:" in x)
    assert "sweep of the step's process tree" in line
    assert ("cgroup.kill" in line) == bool(data["v2"] and where), line
    on = _cli("sandbox", "policy", "--workspace-root", str(workspace.root)).stdout
    from runnerlib.security.probe import probe

    if probe().step_namespaces:
        assert "leftover processes: its own PID namespace" in on, on
