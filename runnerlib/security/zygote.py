"""The fork server that spawns every step: a long-lived, single-threaded process started once per runner.

Why a fork server: the runner is multi-threaded (step DAG, stream readers, socket server), and running
Python between fork() and exec() in a threaded process (preexec_fn) can deadlock on a lock another thread
held at fork time. An exec trampoline (`python -I -S -m ...` per step) is safe but pays Python's start-up
(about 10-20 ms) on every step. This server pays it once: it is exec'd fresh (so it has one thread, whatever
the runner does), then forks per step, where running Python before exec is safe.

It runs as `python -I -S zygote.py FD` with an empty environment (so it never holds the runner's secrets in
its own environ block), non-dumpable, as a child subreaper. FD is its end of a unix stream socket to the
runner. Per request it forks a supervisor S (a subreaper too, so nothing the step starts can leave its
subtree; PR_SET_PDEATHSIG tied to this single thread), and S forks the step G, which applies the sandbox
plan and execs. S reports on the request's status pipe, one JSON object per line:
    {"event": "started", "pid": G, "supervisor": S}
    {"event": "error", "stage": ..., "errno": ..., "message": ..., "code": 126|127}
    {"event": "exited", "status": <wait status of G>}
    {"event": "rusage", "cpu_user_seconds": ..., "max_rss_bytes": ..., "read_bytes": ..., ...}  (last)
and exits when its subtree is empty. When the runner's end of the socket closes (the runner died), the
server kills its whole subtree and exits.

A plan with "ns" (an untrusted step's own PID, IPC and mount namespaces, `runnerlib.security.namespaces`):
as root the server unshares CLONE_NEWPID|CLONE_NEWIPC, forks S (pid 1 of the new namespaces) and setns()es
back to its own; S forks the step, which makes the private mounts, and is its init. Unprivileged, S makes a
user namespace with the PID and IPC namespaces inside and forks their init, which makes the private mounts
and forks the step. Either way the "exited" event also carries "leftover" (processes killed with the
namespace) and "signals". "exited" and "rusage" go out in one write when nothing is left beneath S.

What a step costs here, and why the code between fork and exec is as short as it is: docs/internals/sandbox.md
("Spawn cost").

Request on the socket: 4-byte big-endian length with SCM_RIGHTS [stdin, stdout, stderr, status], then a
JSON body {"argv": [...], "env": {...}, "cwd": str|null, "plan": {...}|null, "keep_under_tmp": [...]} (the
last with a plan with "ns": the paths bound back over the private /tmp, `namespaces.outermost_under_tmp`).
"""

from __future__ import annotations

import array
import errno
import gc
import json
import os
import resource  # imported once here: loading an extension module in every forked step costs
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

if __name__ == "__main__":  # run as a script under -I -S: make the package importable from its checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from runnerlib.security import namespaces, proctree  # noqa: E402
from runnerlib.security.lowlevel import landlock, prctl, seccomp  # noqa: E402

_FDS_PER_REQUEST = 4
_MAX_REQUEST = 64 * 1024 * 1024


_netforward: Any = None  # runnerlib.security.netforward, imported by the server at the first step that needs it


def _load_network() -> None:
    """Import the network set-up (and libnftables) into the server, before it forks a step that needs it.

    Not at start-up: its imports (ipaddress, tempfile, threading, ...) and libnftables double the server's
    heap, and every fork pays for the heap (page tables copied, copy-on-write faults, teardown at exec):
    about 180 page faults and 0.7 ms of CPU per step measured. Not in the forked step either: importing
    there costs milliseconds per step."""
    global _netforward
    if _netforward is None:
        from runnerlib.security import netforward
        from runnerlib.security.lowlevel import nftables

        nftables.prepare()  # the redirect batch of `full` in a step's own namespace (not libnftables)
        _netforward = netforward
        gc.freeze()  # the new objects too: keep their pages shared with the forked children


def _event_line(event: dict) -> str:
    """One event as a JSON line. An event of numbers (started, exited, rusage) is formatted here, not by
    json.dumps: in a freshly forked supervisor the json encoder touches about 70 pages (copy-on-write faults)
    on the way to telling the runner that its step started. Anything else goes through json."""
    parts = []
    for key, value in event.items():
        kind = type(value)
        if kind is int or (kind is float and value - value == 0):  # finite float: repr is JSON
            parts.append(f'"{key}": {value!r}')
        elif kind is str and value.isidentifier():
            parts.append(f'"{key}": "{value}"')
        elif kind is list and all(type(v) is int for v in value):
            parts.append(f'"{key}": [{", ".join(map(str, value))}]')
        else:
            return json.dumps(event) + "\n"
    return "{" + ", ".join(parts) + "}\n"


def _send_event(fd: int, *events: dict) -> None:
    """Write events to a status pipe, one JSON object a line, in one write (one wake-up of the runner)."""
    try:
        os.write(fd, "".join(map(_event_line, events)).encode())
    except OSError:
        pass  # the runner stopped listening; the step is still reaped


def _recv_request(sock: socket.socket) -> tuple[dict, list[int]] | None:
    fds = array.array("i")
    header, ancdata, _flags, _addr = sock.recvmsg(4, socket.CMSG_SPACE(_FDS_PER_REQUEST * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not header:
        return None
    while len(header) < 4:
        more = sock.recv(4 - len(header))
        if not more:
            return None
        header += more
    (length,) = struct.unpack(">I", header)
    if length > _MAX_REQUEST:
        raise ValueError("request too large")
    body = bytearray()
    while len(body) < length:
        chunk = sock.recv(min(length - len(body), 1 << 20))
        if not chunk:
            return None
        body += chunk
    return json.loads(body), list(fds)


class _StepFailed(Exception):
    def __init__(self, stage: str, err: OSError | Exception, code: int = 126) -> None:
        super().__init__(f"{stage}: {err}")
        self.stage, self.err, self.code = stage, err, code


def build_ruleset(plan: dict | None) -> landlock.Ruleset | None:
    """The plan's Landlock ruleset, built in the server before forking (opened with the runner's rights).

    Built here rather than in the step because the forked step pays copy-on-write faults on every Python
    object it touches: about 40 us per rule there, a fraction of that here.
    """
    ll = (plan or {}).get("landlock")
    if not ll:
        return None
    abi = ll["abi"]
    ruleset = landlock.Ruleset(abi, deny_tcp=ll["deny_tcp"], scope=ll["scope"])
    try:
        for path in ll["ro"]:
            ruleset.allow_path(path, landlock.read_only_access(abi))
        for path in ll["rw"]:
            ruleset.allow_path(path, landlock.read_write_access(abi))
    except BaseException:
        ruleset.close()
        raise
    return ruleset


def _set_rlimits(rlimits: dict | None) -> None:
    """setrlimit for each {name: value | [soft, hard]} (None: leave it); names as in RLIMIT_<NAME>."""
    for name, value in (rlimits or {}).items():
        if value is None:
            continue
        soft, hard = value if isinstance(value, list) else (value, value)
        resource.setrlimit(getattr(resource, f"RLIMIT_{name.upper()}"), (soft, hard))


def _apply_plan(plan: dict, supervisor: int, programs: dict[bool, seccomp.Filter],
                ruleset: landlock.Ruleset | None) -> None:
    """Apply a sandbox plan to this (single-threaded, about to exec) process. Raises _StepFailed."""
    stage = "rlimits"
    try:
        _set_rlimits(plan.get("rlimits"))

        if plan.get("cgroups"):
            stage = "cgroup"  # before the uid switch: cgroup.procs belongs to root
            for procs in plan["cgroups"]:
                fd = os.open(procs, os.O_WRONLY)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)

        if plan.get("landlock") and ruleset is None:
            raise OSError(errno.EINVAL, "the plan asks for Landlock but no ruleset was built")

        if plan.get("uid") is not None:
            stage = "identity"
            uid, gid = plan["uid"], plan["gid"]
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
                raise OSError(errno.EPERM, "identity did not change as asked")

        stage = "pdeathsig"  # after the uid switch: setresuid clears it
        prctl.prctl(prctl.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != supervisor:
            os._exit(137)  # the supervisor died before we could tie ourselves to it

        stage = "no_new_privs"
        if plan.get("no_new_privs", True):
            seccomp.set_no_new_privs()

        if ruleset is not None:
            stage = "landlock (private mounts)"
            # The private /proc, /dev/shm and /tmp are new inodes the server's rules do not name.
            for path, writable in namespaces.private_mount_rules(plan.get("ns") or {}):
                access = landlock.read_write_access if writable else landlock.read_only_access
                ruleset.allow_path(path, access(plan["landlock"]["abi"]))
            stage = "landlock restrict_self"
            ruleset.restrict_self()

        sc = plan.get("seccomp")
        if sc is not None:
            stage = "seccomp"
            program = programs.get(bool(sc.get("deny_network")))
            if program is None:
                raise OSError(errno.ENOTSUP, "no seccomp program for this architecture")
            program.load()
    except _StepFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure before exec is reported as a refusal
        raise _StepFailed(stage, exc) from None


# Signals the server ignores and its children get back with their default action.
_JOB_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Caught by a handler that does nothing, rather than ignored: the same for the server and the supervisors,
# but an exec resets a caught signal to its default action (an ignored one stays ignored), so that a step
# gets the defaults back without a Python call in every forked step (Python itself ignores SIGPIPE and
# SIGXFSZ at start-up).
_CAUGHT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, *_JOB_SIGNALS)


def _ignore(_sig: int, _frame: object) -> None:
    """The server's handler for _CAUGHT_SIGNALS: nothing (see there)."""


def _exec_step(req: dict, stdio: list[int], errpipe: int, programs: dict[bool, seccomp.Filter],
               ruleset: landlock.Ruleset | None, mounts: bool = False, net_channel: int = -1) -> None:
    """In the step process G: wire stdio, new session, (`mounts`: the step's private mounts, in a mount
    namespace of its own), (`net_channel`: its network, handed to the forwarder), apply the plan, exec.
    Never returns."""
    supervisor = os.getppid()
    stage = "stdio"
    report: dict[str, Any]
    try:
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        low = 3
        keep_fds = {errpipe, ruleset.fd if ruleset is not None else errpipe, net_channel if net_channel >= 0 else errpipe}
        for keep in sorted(keep_fds):
            os.closerange(low, keep)
            low = keep + 1
        os.closerange(low, 1 << 16)
        os.setsid()
        if mounts:
            stage = "private mounts"
            _make_private_mounts(req)
        # The server catches SIGPIPE, SIGXFSZ, SIGTERM and SIGINT with a handler that does nothing (serve):
        # execve resets caught signals to their default action, so the step gets the defaults without a
        # call here.
        plan = req.get("plan")
        net = _net_request(req)
        if net:
            stage = "network"  # before the identity switch: a namespace needs the runner's rights
            _netforward.enter_network(net, net_channel)
        if plan is not None:
            _apply_plan(plan, supervisor, programs, ruleset)
        else:
            stage = "rlimits"  # a trusted step's own limits (job file, --limit)
            _set_rlimits(req.get("rlimits"))
            stage = "pdeathsig"
            prctl.prctl(prctl.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != supervisor:
                os._exit(137)
        if req.get("cwd"):
            stage = "cwd"
            os.chdir(req["cwd"])
        stage = "exec"
        argv = req["argv"]
        if "/" in argv[0]:
            os.execve(argv[0], argv, req["env"])  # what execvpe does for a path, with less Python before it
        os.execvpe(argv[0], argv, req["env"])
    except _StepFailed as failed:
        err = failed.err
        report = {"stage": failed.stage, "errno": getattr(err, "errno", None),
                  "message": str(getattr(err, "strerror", None) or err), "code": failed.code}
    except BaseException as err:  # noqa: BLE001
        code = 126
        if stage == "exec" and isinstance(err, FileNotFoundError):
            code = 127  # like a shell: command not found
        report = {"stage": stage, "errno": getattr(err, "errno", None),
                  "message": str(getattr(err, "strerror", None) or err), "code": code}
    try:
        os.write(errpipe, json.dumps(report).encode())
    finally:
        os._exit(int(report["code"]))


def _net_request(req: dict) -> dict | None:
    return req.get("net") or (req.get("plan") or {}).get("net")


def _net_channel(req: dict) -> tuple[int, int]:
    """(forwarder's end, step's end) of the channel to the step's network forwarder, or (-1, -1) when the step
    has no network of its own."""
    return _netforward.open_channel() if _net_request(req) else (-1, -1)


def _fork_forwarder(ours: int) -> None:
    """Fork the step's network forwarder (netforward.start_forwarder) on its end of the channel, if any."""
    if ours >= 0:
        try:
            _netforward.start_forwarder(ours)
        finally:
            os.close(ours)


def _read_all(fd: int) -> bytes:
    data = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            os.close(fd)
            return data
        data += chunk


def _outer_pid_of_only_child(parent: int) -> int | None:
    """The pid, as the runner's /proc numbers it, of `parent`'s child: the step inside a PID namespace."""
    pids = namespaces.children(parent)
    return pids[0] if pids else None


def _make_private_mounts(req: dict) -> None:
    """The step's own /proc, /dev/shm and /tmp (see namespaces.make_private_mounts); raises OSError."""
    ns = req["plan"]["ns"]
    keep = req.get("keep_under_tmp")
    if keep is None:  # a request not made by spawn.spawn(): compute it here
        keep = namespaces.outermost_under_tmp(list(ns.get("keep_under_tmp") or ()) + ([req["cwd"]] if req.get("cwd") else []))
    namespaces.make_private_mounts(proc=ns["proc"], shm=ns["shm"], tmp=ns["tmp"], keep_under_tmp=keep,
                                   tmpfs_size=ns.get("tmpfs_size"))


def _private_mounts(req: dict) -> dict | None:
    """`_make_private_mounts`: None, or the error report that refuses the step."""
    try:
        _make_private_mounts(req)
    except OSError as exc:
        return {"stage": "private mounts", "errno": exc.errno, "message": str(exc.strerror or exc), "code": 126}
    return None


def _init(req: dict, stdio: list[int], err_w: int, report_w: int, programs: dict[bool, seccomp.Filter],
          ruleset: landlock.Ruleset | None, net_channel: int = -1) -> None:
    """In init I, pid 1 of the step's namespace (unprivileged runner: beneath the supervisor, which made
    the user namespace): private mounts, fork the step, reap, report. Never returns."""
    code = 1
    try:
        prctl.prctl(prctl.PR_SET_PDEATHSIG, signal.SIGKILL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # as pid 1, an unhandled signal is simply not delivered
        failed = _private_mounts(req)
        if failed is not None:
            os.write(err_w, json.dumps(failed).encode())
            os._exit(126)
        pid = os.fork()
        if pid == 0:
            os.close(report_w)
            _exec_step(req, stdio, err_w, programs, ruleset, net_channel=net_channel)
        os.close(err_w)
        if net_channel >= 0:
            os.close(net_channel)  # the forwarder sees the step's end close if the step fails before
        if ruleset is not None:
            ruleset.close()
        for fd in stdio:
            os.close(fd)
        os.write(report_w, json.dumps(namespaces.run_init(pid)).encode())
        code = 0
    finally:
        os._exit(code)


def _start_step(stdio: list[int], status: int, ruleset: landlock.Ruleset | None,
                child: Callable[[int], None]) -> tuple[int, bool]:
    """Fork `child(err_w)` (which never returns), wait until the step exec'd or failed (reporting a
    failure). Returns (pid of the child, whether the step exec'd); the caller reports start and exit."""
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        os.close(status)
        child(err_w)
    os.close(err_w)
    if ruleset is not None:
        ruleset.close()
    for fd in stdio:
        os.close(fd)
    data = _read_all(err_r)
    if data:
        _send_event(status, {"event": "error", **json.loads(data)})
    return pid, not data


def _supervise(req: dict, fds: list[int], ctl: int, zygote: int, programs: dict[bool, seccomp.Filter],
               ruleset: landlock.Ruleset | None, as_init: bool = False) -> None:
    """In the supervisor S: subreaper for one step; fork it, report start/failure/exit, reap everything.

    Namespace plans ("ns"): as root the server forked S as pid 1 of the step's new PID and IPC namespaces
    (`as_init`): S makes the private mounts, forks the step and is its init. Unprivileged, S makes a user
    namespace with PID and IPC namespaces inside, forks their init I, which forks the step; the step's
    exit status and leftover count then come from I's report pipe.
    """
    stdio, status = fds[:3], fds[3]
    if not as_init:  # an init reaps its whole namespace anyway
        prctl.prctl(prctl.PR_SET_CHILD_SUBREAPER, 1)
    prctl.prctl(prctl.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != (0 if as_init else zygote):  # an init's parent lies outside its namespace: 0
        os._exit(1)
    os.close(ctl)
    forwarder, net_channel = _net_channel(req)
    if as_init:
        _supervise_as_init(req, stdio, status, programs, ruleset, net_channel, forwarder)
        return
    # Before the namespaces: unprivileged, the forwarder then stays out of the step's PID namespace.
    _fork_forwarder(forwarder)
    ns = (req.get("plan") or {}).get("ns")
    if ns:
        try:
            namespaces.unshare_step_namespaces(user=ns["user"])
        except OSError as exc:
            _send_event(status, {"event": "error", "stage": "namespaces", "errno": exc.errno,
                                 "message": str(exc.strerror or exc), "code": 126}, {"event": "exited", "status": 126 << 8})
            os._exit(0)
    report_r, report_w = os.pipe() if ns else (-1, -1)

    def child(err_w: int) -> None:
        if ns:
            os.close(report_r)
            _init(req, stdio, err_w, report_w, programs, ruleset, net_channel)
        _exec_step(req, stdio, err_w, programs, ruleset, net_channel=net_channel)

    pid, started = _start_step(stdio, status, ruleset, child)
    if net_channel >= 0:
        os.close(net_channel)
    if ns:
        os.close(report_w)
    if started:
        # Inside a namespace the step is init's child; the runner signals it by its outer pid. If it
        # already exited and was reaped, init's pid stands in (a group kill of it then finds nothing).
        step = (_outer_pid_of_only_child(pid) or pid) if ns else pid
        _send_event(status, {"event": "started", "pid": step, "supervisor": os.getpid()})
    # Read after the fork and after "started" (off the runner's path): a child's counters reach this
    # process's only when it is reaped.
    io_before = _self_io()
    last: list[dict] = []
    while True:
        try:
            reaped, wstatus = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if reaped == pid:
            event: dict[str, Any] = {"event": "exited", "status": wstatus}
            if ns:
                report = _read_all(report_r)
                if report:  # init reported; empty when init was killed (timeout, cancel): then wstatus
                    event.update(json.loads(report))
            if _reap_exited():  # nothing left beneath: "exited" goes out with "rusage", one wake-up less
                last.append(event)
                break
            _send_event(status, event)  # now: the runner deals with what the step left running
    _send_event(status, *last, {"event": "rusage", **_children_usage(io_before)})
    os.close(status)


def _reap_exited() -> bool:
    """Reap every child that has exited; whether none is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        except InterruptedError:
            continue
        if pid == 0:
            return False


def _supervise_as_init(req: dict, stdio: list[int], status: int, programs: dict[bool, seccomp.Filter],
                       ruleset: landlock.Ruleset | None, net_channel: int = -1, forwarder: int = -1) -> None:
    """S as pid 1 of the step's namespaces (root): one process fewer on the path than init beneath S."""
    me = namespaces.outer_pid()
    # The step makes the private mounts, in a mount namespace of its own: this init forks it first thing,
    # before touching memory that the fork would make it copy twice (once before, once after), and stays
    # in the runner's mount namespace, where /proc numbers the step's processes by their outer pids.
    pid, started = _start_step(stdio, status, ruleset,
                               lambda err_w: _exec_step(req, stdio, err_w, programs, ruleset, mounts=True,
                                                        net_channel=net_channel))
    if net_channel >= 0:
        os.close(net_channel)
    if started:
        step = _outer_pid_of_only_child(me) or me
        _send_event(status, {"event": "started", "pid": step, "supervisor": me})
    # After the step is found as this init's only child; the step's hand-over waits in the socket meanwhile.
    _fork_forwarder(forwarder)
    # As pid 1, an unhandled signal is simply not delivered. Set here, after the step is told to have
    # started: the step was forked with the server's caught SIGINT, which its exec reset to the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    io_before = _self_io()  # as in _supervise
    # Reported before this init exits: the kernel's teardown of the namespaces need not delay the runner,
    # and nothing in them runs any more (every leftover has SIGKILL pending; none can fork).
    exited = {"event": "exited", **namespaces.run_init(pid, outer=me)}
    _send_event(status, exited, {"event": "rusage", **_children_usage(io_before)})
    os.close(status)


def _self_io() -> tuple[int, int] | None:
    """(rchar, wchar) of /proc/self/io: the kernel adds the counters of every child reaped into the reaper's,
    so after the subtree is gone the difference from before the fork is the step's and its descendants' I/O.
    None when unreadable (a non-dumpable process's /proc files are root's: an unprivileged runner)."""
    try:
        fd = os.open("/proc/self/io", os.O_RDONLY | os.O_CLOEXEC)  # not open(): fewer objects touched after fork
        try:
            fields = os.read(fd, 4096).split()
        finally:
            os.close(fd)
        if fields[0] == b"rchar:" and fields[2] == b"wchar:":  # the file's fixed order
            return int(fields[1]), int(fields[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _children_usage(io_before: tuple[int, int] | None) -> dict:
    """CPU, peak RSS and I/O of everything this supervisor reaped (the step and its whole subtree)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    io_after = _self_io()
    out = {"cpu_user_seconds": round(usage.ru_utime, 6), "cpu_system_seconds": round(usage.ru_stime, 6),
           "max_rss_bytes": usage.ru_maxrss * 1024,  # the largest process's peak, not a sum (getrusage(2))
           "disk_read_bytes": usage.ru_inblock * 512, "disk_write_bytes": usage.ru_oublock * 512}
    if io_before is not None and io_after is not None:
        out["read_bytes"] = max(0, io_after[0] - io_before[0])
        out["write_bytes"] = max(0, io_after[1] - io_before[1])
    return out


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(ctl_fd: int) -> None:
    """The server loop (see the module docstring)."""
    prctl.prctl(prctl.PR_SET_DUMPABLE, 0)
    prctl.prctl(prctl.PR_SET_CHILD_SUBREAPER, 1)
    # The runner stops the server by closing the socket. A SIGTERM or SIGINT meant for a job (a cancelled
    # `runnerlib run` whose subtree gets SIGTERM, a Ctrl-C) must not kill it under the steps it supervises:
    # they would die with it ("the step's supervisor vanished") instead of being cancelled. The supervisors
    # keep ignoring them (for the same reason: a nested runner's supervisors are in its job's subtree); each
    # step gets the default actions back (_exec_step).
    for sig in _CAUGHT_SIGNALS:
        signal.signal(sig, _ignore)
    sock = socket.socket(fileno=ctl_fd)
    programs: dict[bool, seccomp.Filter] = {}
    try:
        programs = {flag: seccomp.Filter(seccomp.build_filter(deny_network=flag)) for flag in (False, True)}
    except OSError:
        pass  # unsupported architecture: a plan asking for seccomp fails closed in _apply_plan
    me = os.getpid()
    own_ns = namespaces.own_namespaces()  # as root: where to come back to after forking a step's init
    # Forked children live for a few hundred microseconds before exec: no collector runs, and freezing
    # the start-up objects keeps their pages shared (no copy-on-write from reference-count or GC scans).
    gc.disable()
    gc.freeze()
    sock.sendall(json.dumps({"ready": True, "pid": me}).encode() + b"\n")
    while True:
        try:
            ready, _, _ = select.select([sock], [], [], 1.0)
        except InterruptedError:
            continue
        _reap()
        if not ready:
            continue
        try:
            request = _recv_request(sock)
        except (OSError, ValueError):
            request = None
        if request is None:
            break  # the runner is gone (or spoke nonsense): take every step with us
        req, fds = request
        if len(fds) != _FDS_PER_REQUEST:
            for fd in fds:
                os.close(fd)
            continue
        try:
            ruleset = build_ruleset(req.get("plan"))
        except Exception as exc:  # noqa: BLE001 - reported to the runner as a refusal, like any pre-exec failure
            _send_event(fds[3], {"event": "error", "stage": "landlock ruleset", "errno": getattr(exc, "errno", None),
                                 "message": str(getattr(exc, "strerror", None) or exc), "code": 126})
            for fd in fds:
                os.close(fd)
            continue
        if _net_request(req):
            _load_network()
        ns = (req.get("plan") or {}).get("ns") or {}
        as_init = bool(ns) and not ns.get("user") and own_ns is not None
        try:
            if as_init:
                namespaces.unshare(namespaces.CLONE_NEWPID | namespaces.CLONE_NEWIPC)
            pid = os.fork()
        except OSError as exc:
            as_init = own_ns is not None
            _send_event(fds[3], {"event": "error", "stage": "namespaces", "errno": exc.errno,
                                 "message": str(exc.strerror or exc), "code": 126})
            pid = -1
        if pid == 0:
            code = 1
            try:
                _supervise(req, fds, sock.fileno(), me, programs, ruleset, as_init)
                code = 0
            finally:
                os._exit(code)
        if as_init:
            try:
                namespaces.return_to(own_ns)  # type: ignore[arg-type]
            except OSError:
                break  # never spawn another step from namespaces that are not the server's own
        if ruleset is not None:
            ruleset.close()
        for fd in fds:
            os.close(fd)
    proctree.kill_tree(me, signal.SIGKILL)
    _reap()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
