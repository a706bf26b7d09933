"""SandboxPolicy: a plain, frozen data object listing what an untrusted step may do.

The policy says WHAT a step may do; `runnerlib.security.spawn` decides HOW (given the kernel's capability
matrix from `probe`) and refuses to run a step it cannot confine as asked. Invariant checked here, once:
no read-write grant may contain, equal, or lie beneath a protected path (/job/ci by default), because
Landlock only allows: a writable grant on a parent makes everything beneath it writable again.

Example::

    policy = SandboxPolicy.for_workspace("/job", deny_network=True)
    print(policy.describe())
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from runnerlib.security.limits import UNTRUSTED_DEFAULTS, LimitError, StepLimits, limits_from_mapping
from runnerlib.security.network import NetworkPolicy, NetworkSpecError, default_policy, parse_network

NOBODY = 65534

# What an ordinary build needs to read and execute. Deliberately not "/": in unprivileged mode the step
# shares the runner's uid, and a file readable by that uid (a secrets file, the runner's home) must not be
# readable by the step just because DAC allows it.
DEFAULT_READ_ONLY = (
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc", "/sys",
    "/dev", "/var/lib", "/usr/local",
)
# Devices a step may write to; everything else under /dev is read-only.
DEFAULT_WRITABLE_FILES = ("/dev/null", "/dev/zero", "/dev/full")

# The untrusted steps' own copy of the source tree, relative to the workspace root (runnerlib.source.pristine
# makes it): what a workspace's sandbox grants for writing. The pristine <root>/src is never granted.
UNTRUSTED_SRC = ".untrusted/src"

BEST_EFFORT_ENV = "REACTORCIDE_SANDBOX_BEST_EFFORT"
NAMESPACES_ENV = "REACTORCIDE_SANDBOX_NAMESPACES"
# auto: the step's own PID/IPC/mount namespaces (private /proc, /dev/shm, /tmp) where the kernel allows them,
# a sweep of its process tree otherwise; required: refuse the step where they are impossible; off: never.
NAMESPACE_MODES = ("auto", "required", "off")


class PolicyError(ValueError):
    """A SandboxPolicy field breaks a rule; the message names the field and the rule."""

    def __init__(self, field_name: str, rule: str) -> None:
        super().__init__(f"sandbox policy: {field_name}: {rule}")
        self.field = field_name
        self.rule = rule


def _contains(parent: str, child: str) -> bool:
    """True when `child` is `parent` or lies beneath it (both normalised absolute paths)."""
    return child == parent or child.startswith(parent.rstrip("/") + "/")


@dataclass(frozen=True)
class Rlimits:
    """Resource limits for the step (None leaves the runner's limit). Core dumps are always off."""

    core: int = 0
    nproc: int | None = None
    nofile: int | None = None
    fsize: int | None = None
    cpu: int | None = None

    def __post_init__(self) -> None:
        if self.core != 0:
            raise PolicyError("rlimits.core", "must be 0: a core dump of a step can hold whatever it read")
        for name in ("nproc", "nofile", "fsize", "cpu"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise PolicyError(f"rlimits.{name}", "must be a non-negative integer or None")


@dataclass(frozen=True)
class SandboxPolicy:
    """What an untrusted step may do. Frozen; build a variant with `dataclasses.replace` or `with_()`.

    uid/gid: the identity the step runs as when the runner is root (never 0).
    read_only_paths: readable and executable (Landlock); missing paths are skipped.
    read_write_paths: fully writable beneath (Landlock); may not contain or lie beneath a protected path.
    protected_paths: must stay read-only to the step (/job/ci).
    writable_files: single files the step may write (/dev/null).
    private_tmp: a fresh 0700 directory owned by the step, used as TMPDIR and HOME, removed afterwards.
    tmp_root: where private tmp directories are created.
    deny_network: no TCP via Landlock (ABI >= 4) and no AF_INET/AF_INET6/AF_PACKET sockets via seccomp.
    network: full | none | loopback | [host:port, ...] (see runnerlib.security.network); None: the default
        (full, metadata addresses cut off). `none` and deny_network mean the same.
    best_effort: run even when the kernel cannot enforce everything (each gap is logged); off by default.
    namespaces: auto | required | off: the step's own PID, IPC and mount namespaces (its processes end
      with it; a /proc showing only them; empty private /dev/shm and /tmp). See runnerlib.security.namespaces.
    limits: resource limits (runnerlib.security.limits.StepLimits); untrusted steps default to
      UNTRUSTED_DEFAULTS.
    """

    uid: int = NOBODY
    gid: int = NOBODY
    read_only_paths: tuple[str, ...] = DEFAULT_READ_ONLY + ("/job/ci",)
    read_write_paths: tuple[str, ...] = (f"/job/{UNTRUSTED_SRC}", "/job/artifacts")
    protected_paths: tuple[str, ...] = ("/job/ci",)
    writable_files: tuple[str, ...] = DEFAULT_WRITABLE_FILES
    private_tmp: bool = True
    tmp_root: str = "/tmp"
    deny_network: bool = False
    rlimits: Rlimits = field(default_factory=Rlimits)
    best_effort: bool = False
    network: Any = None
    namespaces: str = "auto"
    limits: StepLimits | None = UNTRUSTED_DEFAULTS

    def __post_init__(self) -> None:
        for name in ("uid", "gid"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise PolicyError(name, "must be a non-negative integer")
            if value == 0:
                raise PolicyError(name, "an untrusted step never runs as root (0)")
        for name in ("read_only_paths", "read_write_paths", "protected_paths", "writable_files"):
            paths = getattr(self, name)
            if isinstance(paths, str) or not isinstance(paths, tuple | list):
                raise PolicyError(name, "must be a list of absolute paths")
            normalised = []
            for p in paths:
                if not isinstance(p, str) or not p.startswith("/") or "\0" in p:
                    raise PolicyError(name, f"{p!r} is not an absolute path")
                normalised.append(os.path.normpath(p))
            object.__setattr__(self, name, tuple(normalised))
        if not isinstance(self.tmp_root, str) or not self.tmp_root.startswith("/"):
            raise PolicyError("tmp_root", "must be an absolute path")
        try:
            net = default_policy() if self.network is None else parse_network(self.network)
        except NetworkSpecError as exc:
            raise PolicyError("network", exc.rule) from None
        if self.deny_network and net.mode != "none":
            if net.explicit:
                raise PolicyError("network", f"deny_network contradicts network {net}")
            net = NetworkPolicy("none")
        object.__setattr__(self, "network", net)
        object.__setattr__(self, "deny_network", net.mode == "none")
        if isinstance(self.rlimits, dict):
            object.__setattr__(self, "rlimits", Rlimits(**self.rlimits))
        if self.namespaces not in NAMESPACE_MODES:
            raise PolicyError("namespaces", f"{self.namespaces!r} must be one of {', '.join(NAMESPACE_MODES)}")
        if isinstance(self.limits, dict):
            try:
                object.__setattr__(self, "limits", limits_from_mapping(self.limits))
            except LimitError as exc:
                raise PolicyError("limits", str(exc)) from None
        writable = self.read_write_paths + self.writable_files
        if self.private_tmp:
            writable += (os.path.normpath(self.tmp_root) + "/runnerlib-step-x",)
        for protected in self.protected_paths:
            real_protected = os.path.realpath(protected)
            for w in writable:
                real_w = os.path.realpath(w)
                for a, b in ((w, protected), (real_w, real_protected)):
                    if _contains(a, b) or _contains(b, a):
                        raise PolicyError(
                            "read_write_paths",
                            f"{w!r} overlaps the protected path {protected!r}: a writable grant may not "
                            "contain or lie beneath it (Landlock cannot carve a read-only hole)",
                        )

    @classmethod
    def for_workspace(cls, root: str, **overrides: Any) -> SandboxPolicy:
        """The default policy for a workspace laid out as root/ci (read-only), root/src, root/artifacts: the step
        writes its own copy of the source tree (root/.untrusted/src, made by runnerlib.source.pristine) and the
        hand-over area; the pristine root/src, which trusted steps work on, is not granted at all."""
        root = os.path.normpath(root)
        overrides.setdefault("read_only_paths", DEFAULT_READ_ONLY + (f"{root}/ci",))
        overrides.setdefault("read_write_paths", (f"{root}/{UNTRUSTED_SRC}", f"{root}/artifacts"))
        overrides.setdefault("protected_paths", (f"{root}/ci",))
        return cls(**overrides)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> SandboxPolicy:
        """Default policy with best_effort taken from REACTORCIDE_SANDBOX_BEST_EFFORT (true/1/yes) and
        namespaces from REACTORCIDE_SANDBOX_NAMESPACES (auto/required/off)."""
        env: Mapping[str, str] = os.environ if environ is None else environ
        flag = env.get(BEST_EFFORT_ENV, "").strip().lower() in ("1", "true", "yes", "on")
        overrides.setdefault("best_effort", flag)
        if env.get(NAMESPACES_ENV, "").strip():
            overrides.setdefault("namespaces", env[NAMESPACES_ENV].strip().lower())
        return cls(**overrides)

    def with_(self, **changes: Any) -> SandboxPolicy:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["limits"] = self.limits.model_dump() if self.limits is not None else None
        return out

    def describe(self) -> str:
        """Human-readable summary for --help and logs (one item per line)."""
        lim = self.rlimits
        limits = ", ".join(
            f"{n}={v}" for n, v in (("core", lim.core), ("nproc", lim.nproc), ("nofile", lim.nofile),
                                    ("fsize", lim.fsize), ("cpu", lim.cpu)) if v is not None
        )
        lines = [
            f"identity: uid {self.uid} gid {self.gid}, no supplementary groups (when the runner is root)",
            "privileges: no_new_privs (setuid bits and file capabilities ignored)",
            f"read-only: {', '.join(self.read_only_paths)}",
            f"read-write: {', '.join(self.read_write_paths + self.writable_files)}"
            + (", a private tmp (TMPDIR, HOME)" if self.private_tmp else ""),
            f"protected (never writable): {', '.join(self.protected_paths)}",
            "syscalls denied: ptrace, process_vm_*, mount, umount, unshare, setns, clone with namespaces, "
            "keyctl, bpf, perf_event_open, io_uring, TIOCSTI (clone3 -> ENOSYS)",
            "scoping: no signals to, and no abstract sockets of, processes outside the sandbox",
            f"network: {self.network}"
            + (" (TCP via Landlock, inet sockets via seccomp)" if self.deny_network else "")
            + ("" if self.deny_network else "; cloud metadata addresses (169.254.0.0/16, 100.100.100.200, fd00:ec2::254, fd20:ce::254, fe80::a9fe:a9fe) never"),
            f"rlimits: {limits}",
            f"limits: {self.limits.describe() if self.limits is not None else 'none'}",
            f"namespaces: {self.namespaces} (own PID/IPC/mount namespaces: its processes end with it, a /proc "
            "of its own processes only, private /dev/shm and /tmp)",
            f"mode: {'best-effort (gaps are logged, not refused)' if self.best_effort else 'fail closed'}",
        ]
        return "\n".join(lines)
