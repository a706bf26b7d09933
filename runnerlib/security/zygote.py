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

Request on the socket: 4-byte big-endian length with SCM_RIGHTS [stdin, stdout, stderr, status], then a
JSON body {"argv": [...], "env": {...}, "cwd": str|null, "plan": {...}|null}.
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
from typing import Any

if __name__ == "__main__":  # run as a script under -I -S: make the package importable from its checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from runnerlib.security import proctree  # noqa: E402
from runnerlib.security.lowlevel import landlock, prctl, seccomp  # noqa: E402

_FDS_PER_REQUEST = 4
_MAX_REQUEST = 64 * 1024 * 1024


def _send_event(fd: int, event: dict) -> None:
    try:
        os.write(fd, (json.dumps(event) + "\n").encode())
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


def _apply_plan(plan: dict, supervisor: int, programs: dict[bool, bytes],
                ruleset: landlock.Ruleset | None) -> None:
    """Apply a sandbox plan to this (single-threaded, about to exec) process. Raises _StepFailed."""
    stage = "rlimits"
    try:
        for name, value in (plan.get("rlimits") or {}).items():
            if value is None:
                continue
            which = getattr(resource, f"RLIMIT_{name.upper()}")
            resource.setrlimit(which, (value, value))

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
            stage = "landlock restrict_self"
            ruleset.restrict_self()

        sc = plan.get("seccomp")
        if sc is not None:
            stage = "seccomp"
            program = programs.get(bool(sc.get("deny_network")))
            if program is None:
                raise OSError(errno.ENOTSUP, "no seccomp program for this architecture")
            seccomp.load_filter(program)
    except _StepFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure before exec is reported as a refusal
        raise _StepFailed(stage, exc) from None


def _exec_step(req: dict, stdio: list[int], errpipe: int, programs: dict[bool, bytes],
               ruleset: landlock.Ruleset | None) -> None:
    """In the step process G: wire stdio, new session, apply the plan, exec. Never returns."""
    supervisor = os.getppid()
    stage = "stdio"
    report: dict[str, Any]
    try:
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        low = 3
        for keep in sorted({errpipe, ruleset.fd if ruleset is not None else errpipe}):
            os.closerange(low, keep)
            low = keep + 1
        os.closerange(low, 1 << 16)
        os.setsid()
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; a step expects defaults
            signal.signal(sig, signal.SIG_DFL)
        plan = req.get("plan")
        if plan is not None:
            _apply_plan(plan, supervisor, programs, ruleset)
        else:
            stage = "pdeathsig"
            prctl.prctl(prctl.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != supervisor:
                os._exit(137)
        if req.get("cwd"):
            stage = "cwd"
            os.chdir(req["cwd"])
        stage = "exec"
        argv = req["argv"]
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


def _supervise(req: dict, fds: list[int], ctl: int, zygote: int, programs: dict[bool, bytes],
               ruleset: landlock.Ruleset | None) -> None:
    """In the supervisor S: subreaper for one step; fork it, report start/failure/exit, reap everything."""
    stdio, status = fds[:3], fds[3]
    prctl.prctl(prctl.PR_SET_CHILD_SUBREAPER, 1)
    prctl.prctl(prctl.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote:
        os._exit(1)
    os.close(ctl)
    io_before = _self_io()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        os.close(status)
        _exec_step(req, stdio, err_w, programs, ruleset)
    os.close(err_w)
    if ruleset is not None:
        ruleset.close()
    for fd in stdio:
        os.close(fd)
    data = b""
    while True:
        chunk = os.read(err_r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(err_r)
    if data:
        _send_event(status, {"event": "error", **json.loads(data)})
    else:
        _send_event(status, {"event": "started", "pid": pid, "supervisor": os.getpid()})
    while True:
        try:
            reaped, wstatus = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if reaped == pid:
            _send_event(status, {"event": "exited", "status": wstatus})
    _send_event(status, {"event": "rusage", **_children_usage(io_before)})
    os.close(status)


def _self_io() -> dict[str, int]:
    """/proc/self/io: the kernel adds the counters of every child reaped into the reaper's, so after the
    subtree is gone the difference from before the fork is the step's and its descendants' I/O."""
    try:
        with open("/proc/self/io", "rb") as f:
            return {k.decode(): int(v) for k, v in (line.split(b": ") for line in f.read().splitlines())}
    except (OSError, ValueError):
        return {}


def _children_usage(io_before: dict[str, int]) -> dict:
    """CPU, peak RSS and I/O of everything this supervisor reaped (the step and its whole subtree)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    io_after = _self_io()
    out = {"cpu_user_seconds": round(usage.ru_utime, 6), "cpu_system_seconds": round(usage.ru_stime, 6),
           "max_rss_bytes": usage.ru_maxrss * 1024,  # the largest process's peak, not a sum (getrusage(2))
           "disk_read_bytes": usage.ru_inblock * 512, "disk_write_bytes": usage.ru_oublock * 512}
    # /proc/self/io of a non-dumpable process is root's: an unprivileged runner gets no syscall byte counts.
    if io_before and io_after:
        for name, key in (("rchar", "read_bytes"), ("wchar", "write_bytes")):
            out[key] = max(0, io_after[name] - io_before.get(name, 0))
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
    sock = socket.socket(fileno=ctl_fd)
    programs: dict[bool, bytes] = {}
    try:
        programs = {flag: seccomp.build_filter(deny_network=flag) for flag in (False, True)}
    except OSError:
        pass  # unsupported architecture: a plan asking for seccomp fails closed in _apply_plan
    me = os.getpid()
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
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _supervise(req, fds, sock.fileno(), me, programs, ruleset)
                code = 0
            finally:
                os._exit(code)
        if ruleset is not None:
            ruleset.close()
        for fd in fds:
            os.close(fd)
    proctree.kill_tree(me, signal.SIGKILL)
    _reap()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
