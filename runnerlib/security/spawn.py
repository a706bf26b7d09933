"""Apply a SandboxPolicy and exec a step: plan against the kernel's capabilities, refuse or spawn.

Two halves:
  * `plan_sandbox(policy)` turns a policy into a concrete plan for this kernel and this runner, or raises
    `SandboxRefused` naming what is missing. Fail closed: /job/ci must be provably read-only to the step,
    and a step may share the runner's uid only when the runner is non-dumpable and Landlock scoping stops
    it signalling the runner. Best-effort mode (opt-in) turns each gap into a logged note instead.
  * `spawn(argv, ...)` hands the step to the fork server (`runnerlib.security.zygote`), which forks a
    per-step supervisor (a subreaper) that forks the step, applies the plan and execs. No Python runs
    between fork and exec in this (threaded) process.

Order: the server builds the Landlock ruleset (paths opened with the runner's rights) and forks; in the
step: stdio, setsid, rlimits, setgroups([]) +
setresgid + setresuid, PR_SET_PDEATHSIG (after the uid switch, which clears it), PR_SET_NO_NEW_PRIVS,
Landlock restrict_self, chdir, seccomp, execve.

Example::

    plan = plan_sandbox(SandboxPolicy.for_workspace("/job"))
    try:
        step = spawn(["make", "test"], env=env, cwd="/job/src", plan=plan, stdout=w_out, stderr=w_err)
    finally:
        plan.cleanup()
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import resource
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from runnerlib.security import cgroups, namespaces, network, proctree
from runnerlib.security.limits import UNTRUSTED_DEFAULTS, StepLimits, describe_limit, mechanism, rlimits_for
from runnerlib.security.policy import BEST_EFFORT_ENV, NAMESPACES_ENV, SandboxPolicy
from runnerlib.security.probe import Capabilities, probe, runner_dumpable

log = logging.getLogger("runnerlib.sandbox")

REFUSED_EXIT = 126


class SandboxRefused(Exception):
    """The step cannot be confined as its policy asks; `missing` lists what is missing."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            "untrusted step refused: the sandbox cannot be enforced here: " + "; ".join(missing)
            + f". To run it anyway with weaker isolation, opt in explicitly: {BEST_EFFORT_ENV}=true "
            "(or SandboxPolicy(best_effort=True)); each gap is then logged."
        )


class SpawnError(Exception):
    """The fork server could not start or vanished."""


@dataclass
class SandboxPlan:
    """A policy made concrete for this kernel: what the step process will apply, and what was left out."""

    policy: SandboxPolicy
    caps: Capabilities
    plan: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    private_tmp: str | None = None
    cgroup: cgroups.StepCgroup | None = None

    def describe(self) -> str:
        ll = self.plan.get("landlock")
        parts = [
            f"identity: uid {self.plan['uid']} gid {self.plan['gid']}" if self.plan.get("uid") is not None
            else f"identity: runner's own uid {self.caps.uid} (runner is not root)",
            f"landlock ABI {ll['abi']}: ro {len(ll['ro'])} paths, rw {', '.join(ll['rw'])}"
            + (", tcp denied" if ll["deny_tcp"] else "") + (", scoped" if ll["scope"] else "")
            if ll else "landlock: OFF",
            "seccomp: " + ("deny-list" + (" + inet sockets" if self.plan["seccomp"]["deny_network"] else "")
                           if self.plan.get("seccomp") else "OFF"),
            "namespaces: " + ("pid+ipc+mount" + ("+user" if self.plan["ns"]["user"] else "")
                              + " (private /proc, /dev/shm, /tmp; leftovers die with the namespace)"
                              if self.plan.get("ns") else "OFF (leftovers swept from the step's process tree)"),
        ]
        parts += [self.plan["network"]] if self.plan.get("network") else []
        if self.plan.get("limits"):
            parts.append("limits: " + ", ".join(f"{n}={describe_limit(n, v)}"
                                                for n, v in self.plan["limits"].items()))
        parts += [f"best-effort gap: {n}" for n in self.notes]
        return "; ".join(parts)

    def limit_mechanisms(self) -> list[tuple[str, str, str]]:
        """(limit, value, mechanism) for each limit of the plan."""
        user_ns = bool((self.plan.get("ns") or {}).get("user"))
        return [(n, describe_limit(n, v), mechanism(n, by_cgroup=self.plan.get("cgroup_limits") or (),
                                                    user_namespace=user_ns))
                for n, v in (self.plan.get("limits") or {}).items()]

    def cleanup(self, wait: bool = False) -> None:
        """Remove the step's cgroups, and its private tmp directory with everything the step left in it (in
        the background unless `wait`; whatever is pending is removed before the process exits)."""
        if self.private_tmp:
            if wait:
                shutil.rmtree(self.private_tmp, ignore_errors=True)
            else:
                _remover.remove(self.private_tmp)
            self.private_tmp = None
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None


class _Remover:
    """Removes private tmp directories in a thread of its own: on this machine's ext4 one rmdir took 3.7 ms
    (a mkdir 0.1 ms), a quarter of a sandboxed step's whole start-to-end time, which the runner need not wait
    for. Nothing the step left there is read by anyone; it only has to go. Drained at exit."""

    def __init__(self) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def remove(self, path: str) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="runnerlib-tmp-remover", daemon=True)
                self._thread.start()
        self._queue.put(path)

    def _run(self) -> None:
        while True:
            path = self._queue.get()
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        """Wait until every queued directory is gone (at exit, and for tests)."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()


_remover = _Remover()
atexit.register(lambda: _remover.drain())  # the current one (a forked child gets its own)


def _dac_writable(st: os.stat_result, uid: int, gid: int) -> bool:
    """Whether uid/gid may modify the entry of `st` by DAC (owner, group or other write)."""
    return st.st_uid == uid or bool(st.st_gid == gid and st.st_mode & 0o020) or bool(st.st_mode & 0o002)


def _writable_by(path: str, uid: int, gid: int, limit: int = 100_000) -> str | None:
    """The first entry under `path` that uid/gid could modify by DAC (owner, group or other write), if any."""
    count = 0
    for top, dirs, files in os.walk(path):
        for name in [None, *dirs, *files]:
            full = top if name is None else os.path.join(top, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            if _dac_writable(st, uid, gid):
                return full
            count += 1
            if count > limit:
                return f"{path} (more than {limit} entries: not checked)"
    return None


def plan_sandbox(policy: SandboxPolicy, caps: Capabilities | None = None, *,
                 dumpable: bool | None = None, make_tmp: bool = True) -> SandboxPlan:
    """Decide how to enforce `policy` here, or raise SandboxRefused (unless policy.best_effort).

    Creates the private tmp directory when the policy asks for one (remove it with `plan.cleanup()`).
    """
    caps = caps or probe()
    dumpable = runner_dumpable() if dumpable is None else dumpable
    missing: list[str] = []
    notes: list[str] = []
    plan: dict[str, Any] = {"uid": None, "gid": None, "no_new_privs": True,
                            "rlimits": {k: v for k, v in vars(policy.rlimits).items()}}

    if caps.is_root:
        plan["uid"], plan["gid"] = policy.uid, policy.gid
        shares_uid = policy.uid == caps.uid
    else:
        shares_uid = True
        notes.append(f"runner is not root: the step runs as the runner's uid {caps.uid}")
    if shares_uid and dumpable:
        missing.append(
            f"the step would share the runner's uid {caps.uid} while the runner is dumpable (its environment "
            "and memory readable by the step): call runnerlib.security.selfprotect.protect_runner() first"
        )
    if shares_uid and not caps.landlock_scoping:
        missing.append(
            f"Landlock scoping (ABI 6, kernel has {caps.landlock_abi}) is needed to stop a step running as "
            "the runner's uid from signalling the runner"
        )

    existing_protected = [p for p in policy.protected_paths if os.path.exists(p)]
    if caps.landlock_fs:
        scope = caps.landlock_scoping
        rw = [p for p in policy.read_write_paths if os.path.exists(p)]
        rw += [p for p in policy.writable_files if os.path.exists(p)]
        ro = [p for p in policy.read_only_paths if os.path.exists(p)]
        plan["landlock"] = {"abi": caps.landlock_abi, "ro": ro, "rw": rw,
                            "deny_tcp": policy.deny_network and caps.landlock_net, "scope": scope}
    else:
        plan["landlock"] = None
        for p in existing_protected:
            writable = _writable_by(p, policy.uid, policy.gid) if caps.is_root else p
            if writable is not None:
                missing.append(f"Landlock is unavailable and {writable!r} is writable by the step's uid, so "
                               f"{p} cannot be made read-only")
        notes.append("Landlock unavailable: writes outside /job/ci limited only by file permissions")

    if caps.seccomp and caps.no_new_privs:
        plan["seccomp"] = {"deny_network": policy.deny_network}
    else:
        plan["seccomp"] = None
        missing.append(f"seccomp filtering is unavailable ({caps.arch}): ptrace, unshare, mount, TIOCSTI "
                       "and io_uring would stay open to the step")
    if policy.deny_network and not (plan["seccomp"] or (plan["landlock"] or {}).get("deny_tcp")):
        missing.append("deny_network needs seccomp or Landlock ABI 4")
    net = network.plan_for_sandbox(policy.network, caps, policy.uid)
    network.apply_denial(plan, net, caps)  # the implicit default fallen back to none (fail closed)
    plan["net"], plan["network"] = net.request, net.describe()
    missing += net.missing
    notes += net.notes

    if policy.namespaces != "off":
        if caps.step_namespaces:
            granted = policy.read_only_paths + policy.read_write_paths + policy.writable_files
            # A writable /dev/shm would make a protected path beneath it writable (the policy's invariant).
            shm = not any(p == "/dev/shm" or p.startswith("/dev/shm/") for p in policy.protected_paths)
            # A policy that grants /tmp itself asked for the shared one: keep it (and say so).
            own_tmp = "/tmp" not in granted
            if not own_tmp:
                notes.append("/tmp itself is granted to the step: it stays shared, not private")
            plan["ns"] = {"user": not caps.is_root, "proc": True, "shm": shm, "tmp": own_tmp,
                          "keep_under_tmp": [p for p in granted if p.startswith("/tmp/")],
                          "tmpfs_size": policy.limits.memory if policy.limits is not None else None}
        elif policy.namespaces == "required":
            missing.append("the step's own PID and mount namespaces (processes ending with the step, private "
                           f"/proc, /dev/shm and /tmp) are required ({NAMESPACES_ENV}=required) but impossible "
                           f"here: {caps.step_namespaces_gap}")
        else:
            notes.append(f"no PID/mount namespaces here ({caps.step_namespaces_gap}): leftover processes are "
                         "swept from the step's process tree; /proc, /dev/shm and /tmp are shared")
    if policy.limits is not None:
        plan["limits"] = dict(policy.limits.items())
        # A cgroup for a memory, pids or cpus limit somebody set (job file, --limit): exact per-step accounting
        # and a named report (about 0.3 ms per step here: v1 moves go through `tasks`, which waits for no RCU
        # grace period; see StepCgroup.procs_files). The untrusted defaults are a safety net: rlimits.
        plan["cgroup_limits"] = cgroups.cgroup_limits(policy.limits, UNTRUSTED_DEFAULTS)
        if policy.limits.cpus is not None and "cpus" not in plan["cgroup_limits"]:
            missing.append(_CPUS_GAP.format(describe_limit("cpus", policy.limits.cpus)))
        notes.extend(_limit_rlimits(plan, policy.limits))

    if missing:
        if not policy.best_effort:
            raise SandboxRefused(missing)
        for m in missing:
            log.warning("sandbox best-effort mode: running anyway although %s", m)
        notes.extend(missing)

    result = SandboxPlan(policy=policy, caps=caps, plan=plan, notes=notes)
    if plan.get("cgroup_limits") and make_tmp:
        limits = policy.limits or StepLimits()
        result.cgroup = cgroups.StepCgroup.create(
            limits.memory if "memory" in plan["cgroup_limits"] else None,
            limits.pids if "pids" in plan["cgroup_limits"] else None,
            cpus=limits.cpus if "cpus" in plan["cgroup_limits"] else None,
            kill=not plan.get("ns"))  # without a PID namespace, cgroup.kill (v2) ends its leftovers
        made = result.cgroup.limit_names if result.cgroup else []
        if "cpus" in plan["cgroup_limits"] and "cpus" not in made and not policy.best_effort:
            result.cleanup(wait=True)  # no rlimit stands in for CPU bandwidth: fail closed
            raise SandboxRefused([_CPUS_GAP.format(describe_limit("cpus", limits.cpus or 0))])
        if made != plan["cgroup_limits"]:  # could not make them all: rlimits for the others
            plan["cgroup_limits"] = made
            _limit_rlimits(plan, limits)
        plan["cgroups"] = result.cgroup.procs_files() if result.cgroup else []
    if policy.private_tmp and make_tmp:
        tmp = tempfile.mkdtemp(prefix="runnerlib-step-", dir=policy.tmp_root)
        if caps.is_root:
            os.chown(tmp, policy.uid, policy.gid)
        os.chmod(tmp, 0o700)
        result.private_tmp = tmp
        if plan.get("ns"):
            plan["ns"]["keep_under_tmp"].append(tmp)
        if plan["landlock"]:
            plan["landlock"]["rw"].append(tmp)
    return result


_CPUS_GAP = ("the cpus limit {} needs a writable cgroup cpu controller (cgroup v2 cpu.max or v1 "
             "cpu.cfs_quota_us): no rlimit caps CPU bandwidth")


def _limit_rlimits(plan: dict[str, Any], limits: StepLimits) -> list[str]:
    """Put the rlimits enforcing `limits` (those no cgroup of the plan enforces) into the plan; notes back."""
    rlimits, notes = rlimits_for(limits, by_cgroup=plan.get("cgroup_limits") or (),
                                 hard_nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    for name in ("as", "nproc"):
        plan["rlimits"].pop(name, None)
    plan["rlimits"].update(rlimits)
    return notes


class _ForkServer:
    """The runner's handle on the zygote process; started on first use, restarted if it died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._pending: socket.socket | None = None  # launched, hello not read yet (see start_fork_server)

    def _launch(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zygote.py")
        try:
            # Empty environment: the server never holds the runner's secrets in its environ block.
            # No preexec_fn: CPython's fork+exec path is safe in a threaded process.
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", script, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env={}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=None if os.environ.get("RUNNERLIB_ZYGOTE_DEBUG") else subprocess.DEVNULL,
                start_new_session=True, close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._pending = ours

    def _forget_if_dead(self) -> None:
        """Drop the sockets of a server that exited (before or after its hello), so that it is replaced."""
        if self._proc is not None and self._proc.poll() is not None:
            for sock in (self._sock, self._pending):
                if sock is not None:
                    sock.close()
            self._sock = self._pending = None

    def _start(self) -> None:
        """Launch the server unless a launch is pending, then wait for its hello."""
        self._forget_if_dead()
        if self._pending is None:
            self._launch()
        ours, self._pending = self._pending, None
        assert ours is not None
        try:
            ours.settimeout(30)
            line = b""
            while not line.endswith(b"\n"):
                chunk = ours.recv(4096)
                if not chunk:
                    raise SpawnError("the fork server exited during start-up")
                line += chunk
            ours.settimeout(None)
        except BaseException:
            ours.close()
            raise
        self._sock = ours
        log.debug("fork server started: pid %s", json.loads(line)["pid"])

    def send(self, request: dict[str, Any], fds: list[int]) -> None:
        body = json.dumps(request).encode()
        with self._lock:
            for attempt in (1, 2):
                if self._sock is None or (self._proc is not None and self._proc.poll() is not None):
                    self._start()
                assert self._sock is not None
                try:
                    sent = self._sock.sendmsg([struct.pack(">I", len(body))],
                                              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
                    if sent != 4:
                        raise OSError("short write of the request header")
                    self._sock.sendall(body)
                    return
                except OSError as exc:
                    self._sock.close()
                    self._sock = None
                    if attempt == 2:
                        raise SpawnError(f"cannot reach the fork server: {exc.strerror or exc}") from None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        with self._lock:
            for sock in (self._sock, self._pending):
                if sock is not None:
                    sock.close()  # the server sees EOF, kills its subtree and exits
            self._sock = self._pending = None
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None


_server = _ForkServer()


def _forget_server_in_child() -> None:
    # A forked copy of the runner (multiprocessing, a plugin) must not share the parent's socket to the
    # server: requests from two processes would interleave. It starts its own server if it spawns.
    global _server, _remover
    for sock in (_server._sock, _server._pending):
        if sock is not None:
            sock.close()
    _server = _ForkServer()
    _remover = _Remover()  # the parent's thread is not in the child; its queue is the parent's to finish


os.register_at_fork(after_in_child=_forget_server_in_child)


def start_fork_server(*, wait: bool = True) -> None:
    """Start the fork server now (optional: it starts on first spawn). Idempotent.

    With wait=False it is only launched: its interpreter starts while the caller goes on (a job prepares
    its secrets and sources meanwhile), and the first spawn waits for it to be ready.
    """
    with _server._lock:
        _server._forget_if_dead()
        if _server._sock is not None:
            return
        if wait:
            _server._start()
        elif _server._pending is None:
            _server._launch()


def stop_fork_server() -> None:
    """Stop the fork server; every step it spawned is killed."""
    _server.stop()


@dataclass
class SpawnedStep:
    """A running step as the runner sees it: its pid, its supervisor, and the events from the status pipe."""

    status_fd: int
    pid: int | None = None
    supervisor: int | None = None
    wait_status: int | None = None
    error: dict[str, Any] | None = None
    rusage: dict[str, Any] | None = None  # the supervisor's last event: CPU, peak RSS, I/O of the subtree
    eof: bool = False
    # From the step's PID namespace init: processes still alive when the main process exited (killed with
    # the namespace), and the signals that ended any process it reaped. None without a namespace.
    leftover: int | None = None
    signals: list[int] = field(default_factory=list)
    # Every process `kill_all` signalled beneath the supervisor (without a namespace: the leftover count).
    killed: set[int] = field(default_factory=set)
    cgroup: cgroups.StepCgroup | None = None  # the step's own cgroup, if it has one: `kill_all` uses cgroup.kill
    _buf: bytes = b""

    def read_events(self) -> None:
        """Read what is available on the status pipe (call when it is readable) and record the events."""
        try:
            chunk = os.read(self.status_fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.eof = True
            return
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            event = json.loads(line)
            kind = event.pop("event")
            if kind == "started":
                self.pid, self.supervisor = event["pid"], event["supervisor"]
            elif kind == "error":
                self.error = event
            elif kind == "exited":
                self.wait_status = event["status"]
                self.leftover = event.get("leftover")
                self.signals = list(event.get("signals") or ())
            elif kind == "rusage":
                self.rusage = event

    def wait_started(self, timeout: float = 30.0) -> None:
        """Block until the step has exec'd (pid known) or failed before exec."""
        deadline = time.monotonic() + timeout
        while self.pid is None and self.error is None and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SpawnError(f"the step did not start within {timeout:.0f} s")
            ready, _, _ = select.select([self.status_fd], [], [], left)
            if ready:
                self.read_events()
        if self.pid is None and self.error is None:
            raise SpawnError("the fork server vanished before the step started")

    @property
    def exit_code(self) -> int | None:
        """The step's exit code, shell-style (128 + signal when killed); None while it runs."""
        if self.wait_status is None:
            return None
        if os.WIFSIGNALED(self.wait_status):
            return 128 + os.WTERMSIG(self.wait_status)
        return os.WEXITSTATUS(self.wait_status)

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the step's process group (the step is its session and group leader)."""
        if self.pid is not None:
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def kill_all(self) -> int:
        """SIGKILL the step's group and everything beneath its supervisor (daemonised descendants too).

        Returns how many processes not signalled before were signalled by this call; all of them are added
        to `killed`."""
        self.signal_group(signal.SIGKILL)
        before = len(self.killed)
        if self.cgroup is not None:
            self.killed.update(self.cgroup.kill())
        if self.supervisor is not None:
            proctree.kill_tree(self.supervisor, signal.SIGKILL, seen=self.killed)
        return len(self.killed) - before

    def close(self) -> None:
        if self.status_fd >= 0:
            os.close(self.status_fd)
            self.status_fd = -1


def spawn(argv: list[str], *, env: dict[str, str], cwd: str | None = None, plan: SandboxPlan | None = None,
          stdin: int | None = None, stdout: int, stderr: int, net: dict[str, Any] | None = None,
          limits: StepLimits | None = None) -> SpawnedStep:
    """Start `argv` through the fork server (sandboxed when `plan` is given) and wait until it has exec'd.

    The caller keeps ownership of stdin/stdout/stderr (close your copies of the write ends afterwards).
    If the step fails before exec, the returned object has `.error` set ({"stage", "message", "code"}).
    `net`: a network set-up (`NetworkPlan.request`) for a step without a sandbox plan (a trusted step).
    `limits` apply to a step without a plan (a trusted step's own limits); a plan carries its own.
    """
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    status_r, status_w = os.pipe()
    devnull = None
    try:
        if stdin is None:
            devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            stdin = devnull
        request: dict[str, Any] = {"argv": list(argv), "env": dict(env), "cwd": cwd,
                                   "plan": plan.plan if plan else None, "net": net}
        if plan is not None and plan.plan.get("ns"):  # what the step's private /tmp keeps (computed here, not
            # in the step between fork and exec): its grants under /tmp and its working directory
            request["keep_under_tmp"] = namespaces.outermost_under_tmp(
                list(plan.plan["ns"].get("keep_under_tmp") or ()) + ([cwd] if cwd else []))
        if plan is None and limits is not None:
            request["rlimits"] = rlimits_for(limits, hard_nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[1])[0]
        _server.send(request, [stdin, stdout, stderr, status_w])
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
        if devnull is not None:
            os.close(devnull)
    step = SpawnedStep(status_r, cgroup=plan.cgroup if plan else None)
    try:
        step.wait_started()
    except BaseException:
        step.close()
        raise
    return step


def fork_server_pid() -> int | None:
    """The fork server's pid (for diagnostics and tests), None before it started."""
    return _server.pid
