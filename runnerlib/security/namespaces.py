"""The untrusted step's own world, kernel side: its PID, IPC and mount namespaces, and the init that ends it.

Invariant: every process an untrusted step starts lives in a PID namespace whose init is ours; when the
step's main process exits, times out or is cancelled, that init exits and the kernel kills whatever is
left in the namespace (atomically: after init is gone nothing in it can fork). A process that daemonises
(fork, setsid, parent exits) cannot leave the namespace, and a process that forks as fast as it can cannot
outrun a kill that the kernel applies to the whole namespace at once, which a /proc walk can.

Layout, in the fork server (stdlib only: it runs under `python -I -S`):
    supervisor S (outside)  --unshare_step_namespaces-->  init I (pid 1 inside)  --fork-->  step G (pid 2)
  * S: `unshare_step_namespaces`: CLONE_NEWPID | CLONE_NEWIPC, plus CLONE_NEWUSER with an identity uid/gid
    map when the runner is not root (an unprivileged runner may create a PID namespace only inside a user
    namespace it owns). Its next child is pid 1 of the new namespace.
  * I: `make_private_mounts` in a new mount namespace: a fresh procfs (shows only the step's processes, so
    no command line of the runner or of another step is readable), an empty tmpfs on /dev/shm and on /tmp
    (the step's own private tmp directory bound back at its path, so TMPDIR and HOME still work). Nothing
    propagates back to the host (MS_SLAVE on / first). Then `run_init`: fork G, reap, and when G exits
    count what it left and exit, which kills the rest.
As root the server makes the PID and IPC namespaces itself and the supervisor is their init; that init forks
the step at once and the step makes the private mounts (in a mount namespace of its own, before it applies
the rest of the plan): the init stays in the runner's mount namespace and counts what the step left through
the runner's /proc (`run_init(outer=...)`), and it forks before touching the memory it shares with the
server, so that the step's fork does not make it copy the same pages twice.
A network namespace (another policy) slots in beside CLONE_NEWIPC in `unshare_step_namespaces`.

Landlock rules are built before these mounts, on the host's inodes: the new /proc, /dev/shm and /tmp are
other inodes, so the step adds rules for them (`private_mount_rules`) before restrict_self.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat

from runnerlib.security import proctree
from runnerlib.security.lowlevel import prctl

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000

MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _check(ret: int, what: str) -> None:
    if ret != 0:  # check the return value, never errno alone
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enc(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def unshare(flags: int) -> None:
    """unshare(2); raises OSError."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2); raises OSError."""
    _check(_libc.setns(fd, nstype), "setns")


def own_namespaces() -> dict[int, int] | None:
    """As root: {CLONE_NEWPID: fd, CLONE_NEWIPC: fd} of this process's own namespaces, so that the fork
    server can give one child new ones and come back (`return_to`); None when not root."""
    if os.geteuid() != 0:
        return None
    return {CLONE_NEWPID: os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC),
            CLONE_NEWIPC: os.open("/proc/self/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)}


def return_to(own: dict[int, int]) -> None:
    """Undo `unshare(CLONE_NEWPID | CLONE_NEWIPC)` in the fork server after forking: its next children
    are born in its own PID namespace again, and it is back in its own IPC namespace."""
    for nstype, fd in own.items():
        setns(fd, nstype)


def outer_pid() -> int:
    """This process's pid as the runner's /proc numbers it (read before the private /proc is mounted; in
    its own PID namespace getpid() says 1)."""
    return int(os.readlink("/proc/self"))


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2); raises OSError naming the target."""
    if _libc.mount(_enc(source), target.encode(), _enc(fstype), flags, _enc(data)) != 0:
        _check(-1, f"mount {target}")  # the message is made only on failure (this runs between fork and exec)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def unshare_step_namespaces(user: bool) -> None:
    """In the supervisor: new PID and IPC namespaces for its next child (and a user namespace when `user`).

    With `user`, the runner's uid and gid map to themselves: files keep their owners and the step gains no
    identity it did not have. Writing the maps needs a dumpable process (the /proc/self files of a
    non-dumpable one belong to root); dumpable is cleared again at once (this process holds a copy of the
    fork server's memory).
    """
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWPID | CLONE_NEWIPC
    if user:
        unshare(CLONE_NEWUSER)
        prctl.prctl(prctl.PR_SET_DUMPABLE, 1)
        try:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{uid} {uid} 1")
            _write("/proc/self/gid_map", f"{gid} {gid} 1")
        finally:
            prctl.prctl(prctl.PR_SET_DUMPABLE, 0)
    unshare(flags)


def make_private_mounts(*, proc: bool, shm: bool, tmp: bool, keep_under_tmp: list[str],
                        tmpfs_size: int | None) -> None:
    """In the step (root) or its init (unprivileged), in the new PID namespace: a new mount namespace with the
    step's own /proc, /dev/shm and /tmp. `keep_under_tmp`: paths under /tmp the step is granted (its private
    tmp directory, a workspace that lives in /tmp), bound back at their own paths over the empty /tmp, as
    `outermost_under_tmp` gives them (the runner computes it, so that less Python runs here between fork and
    exec). Raises OSError naming the mount that failed."""
    unshare(CLONE_NEWNS)
    # Mounts made here must never appear in the runner's namespace (a shared / would propagate them).
    mount(None, "/", None, MS_REC | MS_SLAVE)
    size = f",size={tmpfs_size}" if tmpfs_size else ""
    if proc:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if shm and os.path.isdir("/dev/shm"):
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777" + size)
    if tmp:
        # Opened in this namespace (a bind source must belong to it) before /tmp is covered.
        kept: list[tuple[str, int]] = []
        try:
            for path in keep_under_tmp:
                try:
                    kept.append((path, os.open(path, os.O_PATH | os.O_CLOEXEC)))
                except FileNotFoundError:
                    continue
            # 0755 and no Landlock grant: only the paths bound back are usable. A writable /tmp would make
            # a protected path bound beneath it writable again (Landlock unions the grants along a path).
            mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=16m")
            for path, fd in kept:
                is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
                _make_dirs(path if is_dir else os.path.dirname(path))
                if not is_dir:
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
                mount(f"/proc/self/fd/{fd}", path, None, MS_BIND)
        finally:
            for _path, fd in kept:
                os.close(fd)


def _make_dirs(path: str) -> None:
    """mkdir -p beneath the fresh /tmp (0755), without os.makedirs' recursion of Python calls."""
    parts = path.split("/")
    for i in range(3, len(parts) + 1):  # "", "tmp", first component...: /tmp itself exists
        try:
            os.mkdir("/".join(parts[:i]), 0o755)
        except FileExistsError:
            pass


def outermost_under_tmp(paths: list[str]) -> list[str]:
    """The paths under /tmp, without those lying beneath another one (binding the parent brings them)."""
    chosen: list[str] = []
    for path in sorted({os.path.normpath(p) for p in paths if p.startswith("/tmp/")}, key=len):
        if not any(path.startswith(c.rstrip("/") + "/") for c in chosen):
            chosen.append(path)
    return chosen


def private_mount_rules(ns: dict) -> list[tuple[str, bool]]:
    """(path, writable) Landlock rules the step adds for the mounts `make_private_mounts` made: its /proc
    (read-only) and its empty /dev/shm (writable). None for /tmp: see make_private_mounts."""
    rules: list[tuple[str, bool]] = []
    if ns.get("proc"):
        rules.append(("/proc", False))
    if ns.get("shm") and os.path.isdir("/dev/shm"):
        rules.append(("/dev/shm", True))
    return rules


# The network forwarder (netforward.py), forked by the supervisor: as root that is the init of the step's PID
# namespace, so it lives there; it is the runner's helper, not something the step left behind.
FORWARDER_COMM = "rl-netforward"


def _is_forwarder(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip() == FORWARDER_COMM.encode()
    except OSError:
        return False


def children(parent: int) -> list[int]:
    """The children of `parent` (pids as this process's /proc numbers them), zombies included."""
    try:
        fd = os.open(f"/proc/{parent}/task/{parent}/children", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return [int(p) for p in os.read(fd, 1 << 16).split()]
        finally:
            os.close(fd)
    except OSError:  # no CONFIG_PROC_CHILDREN: walk /proc
        return [pid for pid, ppid in proctree.parent_map().items() if ppid == parent]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"


def _live_descendants(root: int) -> list[int]:
    """Every live process beneath `root`, through the children files (a few reads, not a walk of all /proc)."""
    found: list[int] = []
    todo = children(root)
    while todo:
        pid = todo.pop()
        if _alive(pid):
            found.append(pid)
        todo.extend(children(pid))
    return found


def run_init(step: int, outer: int | None = None) -> dict:
    """Pid 1 of the step's namespace: reap everything; when `step` exits, return {"status", "leftover",
    "signals"} (the caller reports it and exits, and the kernel kills what is left).

    `outer`: this init's pid in the runner's /proc when it has no private /proc of its own (it stayed in the
    runner's mount namespace): the namespace's processes are then its descendants there.

    `leftover` counts the processes still alive when the main process exited; they are killed with
    kill(-1, SIGKILL) first, which from a namespace's init reaches exactly that namespace, and which a
    racing fork cannot outrun (the kernel refuses a fork whose parent has a fatal signal pending).
    """
    status = None
    signals: set[int] = set()  # how reaped processes died: SIGXCPU / SIGXFSZ name a limit that was hit
    while status is None:
        try:
            pid, wstatus = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:  # cannot happen while the step lives; be safe
            status = 0
            break
        if os.WIFSIGNALED(wstatus):
            signals.add(os.WTERMSIG(wstatus))
        if pid == step:
            status = wstatus
    leftover = 0
    try:
        # This /proc is the namespace's own: every process in it but init (zombies are not counted).
        # The forwarder is not counted (a step naming a process like it only hides it from the count:
        # it is killed all the same).
        # Walked up to three times while it finds nothing: a process that forks and exits in a loop (a
        # daemon racing to outlive the step) can be between its parent's exit and its own listing during one
        # walk. Walking a namespace with nothing left costs one read of the init's children file.
        for _ in range(3):
            inside = (_live_descendants(outer) if outer is not None
                      else [pid for pid in proctree.parent_map() if pid != 1])
            leftover = len([pid for pid in inside if not _is_forwarder(pid)])
            if leftover:
                break
    except OSError:
        pass
    if leftover:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise
    return {"status": status, "leftover": leftover, "signals": sorted(signals)}
