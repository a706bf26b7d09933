"""The kernel capability matrix: what this machine can enforce for a sandboxed step, probed once per process.

Probing is read-only and cheap (a Landlock version query, a few /proc reads, prctl queries); the result is
cached because a kernel's features do not change under a running job. The runner's own dumpable flag does
change (selfprotect clears it), so `runner_dumpable()` is read live, never cached.

Example::

    caps = probe()
    log.info("sandbox capabilities:\\n%s", caps.describe())
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass

from runnerlib.security.lowlevel import landlock, seccomp
from runnerlib.security.lowlevel.prctl import PR_GET_DUMPABLE, PR_GET_NO_NEW_PRIVS, prctl


@dataclass(frozen=True)
class Capabilities:
    """What the kernel and the runner's identity allow. Every field is a plain value (loggable as JSON)."""

    kernel: str
    arch: str
    is_root: bool
    uid: int
    gid: int
    landlock_abi: int
    seccomp_filter: bool
    seccomp_arch_supported: bool
    no_new_privs: bool
    user_namespaces: bool
    # The step's own PID + IPC + mount namespaces with a fresh /proc and tmpfs mounts (user namespace too when
    # not root): tried once in a throw-away process. `step_namespaces_gap` says what failed.
    step_namespaces: bool = False
    step_namespaces_gap: str = ""

    @property
    def can_switch_uid(self) -> bool:
        return self.is_root

    @property
    def landlock_fs(self) -> bool:
        return self.landlock_abi >= 1

    @property
    def landlock_net(self) -> bool:
        return self.landlock_abi >= 4

    @property
    def landlock_scoping(self) -> bool:
        return self.landlock_abi >= 6

    @property
    def seccomp(self) -> bool:
        return self.seccomp_filter and self.seccomp_arch_supported

    def rows(self) -> list[tuple[str, bool, str]]:
        """(feature, available, what it enforces) rows of the matrix."""
        return [
            ("root (uid switch)", self.is_root, "step runs as another uid/gid, no supplementary groups"),
            ("no_new_privs", self.no_new_privs, "setuid binaries and file capabilities give nothing"),
            ("landlock fs (ABI>=1)", self.landlock_fs, "/job/ci read-only, writes only to src/artifacts/tmp"),
            ("landlock truncate (ABI>=3)", self.landlock_abi >= 3, "truncate() outside writable trees"),
            ("landlock net (ABI>=4)", self.landlock_net, "TCP bind/connect denial (deny_network)"),
            ("landlock ioctl (ABI>=5)", self.landlock_abi >= 5, "device ioctls outside writable files"),
            ("landlock scoping (ABI>=6)", self.landlock_scoping, "no signals/abstract sockets to the runner"),
            ("seccomp filter", self.seccomp, f"syscall deny-list ({self.arch})"),
            ("user namespaces", self.user_namespaces,
             "unprivileged runner: the step's PID namespace is made inside one" if not self.is_root
             else "informational (root needs none)"),
            ("pid namespace", self.step_namespaces, "no process of a step outlives it (else: a tree sweep)"
             + self._gap()),
            ("private /proc", self.step_namespaces, "only the step's own processes (argv, environ) visible"
             + self._gap()),
            ("private /dev/shm, /tmp", self.step_namespaces, "empty tmpfs of its own; other steps' files and "
             "sockets there unreachable" + self._gap()),
        ]

    def _gap(self) -> str:
        return f" [unavailable: {self.step_namespaces_gap}]" if self.step_namespaces_gap else ""

    def describe(self) -> str:
        """The matrix as aligned text, one feature per line."""
        head = (f"kernel {self.kernel} ({self.arch}), running as uid {self.uid}"
                f"{' (root)' if self.is_root else ''}, Landlock ABI {self.landlock_abi}")
        width = max(len(r[0]) for r in self.rows())
        lines = [head] + [f"  {name:<{width}}  {'yes' if ok else 'NO '}  {what}" for name, ok, what in self.rows()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _user_namespaces() -> bool:
    max_ns = _read("/proc/sys/user/max_user_namespaces")
    if max_ns is not None and max_ns.isdigit() and int(max_ns) == 0:
        return False
    if os.geteuid() == 0:
        return max_ns is not None
    # Debian's switch and Ubuntu's AppArmor restriction both stop unprivileged user namespaces.
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return False
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return False
    return max_ns is not None


def _seccomp_filter() -> bool:
    actions = _read("/proc/sys/kernel/seccomp/actions_avail")
    if actions is not None:
        return "errno" in actions.split() and "kill_process" in actions.split()
    status = _read("/proc/self/status") or ""
    return "Seccomp:" in status


def _no_new_privs() -> bool:
    try:
        prctl(PR_GET_NO_NEW_PRIVS)
        return True
    except OSError:
        return False


# Run under `python -I -S` in a throw-away process (the runner is threaded: no fork here). Exit code = the step
# that failed (see _NS_STEPS).
_NS_PROBE = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def w(p, t):
    fd = os.open(p, os.O_WRONLY); os.write(fd, t.encode()); os.close(fd)
uid, gid = os.geteuid(), os.getegid()
if uid != 0:
    if libc.unshare(0x10000000): sys.exit(2)
    try:
        w("/proc/self/setgroups", "deny"); w("/proc/self/uid_map", f"{uid} {uid} 1"); w("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError: sys.exit(3)
if libc.unshare(0x20000000 | 0x08000000): sys.exit(4)
pid = os.fork()
if pid == 0:
    if libc.unshare(0x20000): os._exit(5)
    if libc.mount(None, b"/", None, 16384 | (1 << 19), None): os._exit(6)
    if libc.mount(b"proc", b"/proc", b"proc", 14, None): os._exit(7)
    if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 6, b"mode=1777"): os._exit(8)
    os._exit(0 if os.getpid() == 1 else 9)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
'''
_NS_STEPS = {2: "unshare(CLONE_NEWUSER) refused", 3: "the user namespace's uid map could not be written",
             4: "unshare(CLONE_NEWPID|CLONE_NEWIPC) refused", 5: "unshare(CLONE_NEWNS) refused",
             6: "mount propagation could not be changed", 7: "a fresh procfs could not be mounted",
             8: "a tmpfs could not be mounted", 9: "the new PID namespace did not start at pid 1"}


def _step_namespaces() -> str:
    """'' when a step's namespaces can be made here, else what failed."""
    try:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", _NS_PROBE], env={}, capture_output=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"probe did not run: {exc}"
    if done.returncode == 0:
        return ""
    return _NS_STEPS.get(done.returncode, f"probe failed (exit {done.returncode})")


@functools.lru_cache(maxsize=1)
def probe() -> Capabilities:
    """Probe the kernel once (cached for the life of the process)."""
    try:
        arch = seccomp.native_arch()
        arch_ok = True
    except OSError:
        arch, arch_ok = platform.machine(), False
    return Capabilities(
        kernel=platform.release(),
        arch=arch,
        is_root=os.geteuid() == 0,
        uid=os.geteuid(),
        gid=os.getegid(),
        landlock_abi=landlock.abi_version(),
        seccomp_filter=_seccomp_filter(),
        seccomp_arch_supported=arch_ok,
        no_new_privs=_no_new_privs(),
        user_namespaces=_user_namespaces(),
        step_namespaces=not (gap := _step_namespaces()),
        step_namespaces_gap=gap,
    )


def runner_dumpable() -> bool:
    """Whether this process is dumpable (its /proc environ/mem readable by same-uid processes). Read live."""
    return prctl(PR_GET_DUMPABLE) != 0
