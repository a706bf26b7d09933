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
            ("user namespaces", self.user_namespaces, "informational (not used by the spawner)"),
        ]

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
    )


def runner_dumpable() -> bool:
    """Whether this process is dumpable (its /proc environ/mem readable by same-uid processes). Read live."""
    return prctl(PR_GET_DUMPABLE) != 0
