"""Landlock through ctypes: ABI query, rulesets with filesystem rights per ABI, TCP port rules, scoping.

Hand-written on purpose: the PyPI `landlock` package (1.0.0.dev5) decides success by looking at errno instead
of the return value (it raised on a call that had succeeded), and has neither network rules (ABI >= 4) nor
scoping (ABI >= 6). This module only checks return values; errno is read only after a call returned -1.

Landlock only ALLOWS: once an access right is "handled" by a ruleset, it is denied everywhere except beneath
the paths granted it. A read-only directory cannot be carved out of a writable grant, so callers must never
grant write on a tree that contains something meant to stay read-only.

Example::

    abi = landlock.abi_version()                    # 0 when Landlock is absent
    rs = landlock.Ruleset(abi, deny_tcp=True, scope=True)
    rs.allow_path("/usr", landlock.read_only_access(abi))
    rs.allow_path("/job/src", landlock.read_write_access(abi))
    rs.restrict_self()                              # needs PR_SET_NO_NEW_PRIVS (or CAP_SYS_ADMIN)
"""

from __future__ import annotations

import ctypes
import os
import stat

# The syscall numbers are the same on every architecture (they were added after the tables were unified).
SYS_CREATE_RULESET = 444
SYS_ADD_RULE = 445
SYS_RESTRICT_SELF = 446

CREATE_RULESET_VERSION = 1 << 0

RULE_PATH_BENEATH = 1
RULE_NET_PORT = 2

# Filesystem access rights, with the ABI that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2: links and renames across directories
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5

NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_ABI1_FS = (1 << 13) - 1
# Rights that make sense on a file (not a directory); add_rule rejects directory-only rights on a file.
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


def fs_access_for_abi(abi: int) -> int:
    """Every filesystem right the kernel's Landlock ABI knows (all are handled, so all are denied by default)."""
    if abi < 1:
        return 0
    access = _ABI1_FS
    if abi >= 2:
        access |= FS_REFER
    if abi >= 3:
        access |= FS_TRUNCATE
    if abi >= 5:
        access |= FS_IOCTL_DEV
    return access


def read_only_access(abi: int) -> int:
    """Read files, list directories, execute."""
    return (FS_EXECUTE | FS_READ_FILE | FS_READ_DIR) & fs_access_for_abi(abi)


def read_write_access(abi: int) -> int:
    """Everything Landlock can grant beneath a path (create, remove, link, truncate, ...)."""
    return fs_access_for_abi(abi)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),  # ABI 4
        ("scoped", ctypes.c_uint64),  # ABI 6
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the kernel header: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: object) -> int:
    ret = _libc.syscall(ctypes.c_long(number), *args)
    if ret == -1:  # the return value decides; errno is only meaningful after a failure
        err = ctypes.get_errno()
        raise OSError(err, f"landlock syscall {number}: {os.strerror(err)}")
    return int(ret)


def abi_version() -> int:
    """The Landlock ABI version of the running kernel, 0 when Landlock is unsupported or disabled."""
    try:
        return _syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))
    except OSError:
        return 0


class Ruleset:
    """A Landlock ruleset being built; `restrict_self()` applies it to the calling thread and its future children.

    `deny_tcp` handles TCP bind/connect (ABI >= 4) with no port allowed unless `allow_tcp_port` is called.
    `scope` (ABI >= 6) stops the sandboxed process from signalling processes outside its domain and from
    connecting to abstract unix sockets created outside it.
    """

    def __init__(self, abi: int, *, deny_tcp: bool = False, scope: bool = False) -> None:
        if abi < 1:
            raise OSError(95, "Landlock is not supported by this kernel")
        if deny_tcp and abi < 4:
            raise OSError(95, f"Landlock network rules need ABI 4, the kernel has ABI {abi}")
        if scope and abi < 6:
            raise OSError(95, f"Landlock scoping needs ABI 6, the kernel has ABI {abi}")
        self.abi = abi
        self.handled_fs = fs_access_for_abi(abi)
        attr = _RulesetAttr(self.handled_fs, (NET_BIND_TCP | NET_CONNECT_TCP) if deny_tcp else 0,
                            (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if scope else 0)
        # Pass only the part of the struct this ABI knows, so older kernels do not reject the call.
        size = 8 if abi < 4 else (16 if abi < 6 else 24)
        self.fd = _syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))

    def allow_path(self, path: str, access: int) -> None:
        """Grant `access` beneath `path` (a file gets only the rights that apply to files)."""
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                access &= _FILE_RIGHTS
            attr = _PathBeneathAttr(access & self.handled_fs, fd)
            _syscall(SYS_ADD_RULE, ctypes.c_int(self.fd), ctypes.c_int(RULE_PATH_BENEATH), ctypes.byref(attr),
                     ctypes.c_uint32(0))
        finally:
            os.close(fd)

    def allow_tcp_port(self, port: int, *, bind: bool = False, connect: bool = True) -> None:
        """Allow TCP connect (and/or bind) to one port; only meaningful with deny_tcp=True."""
        access = (NET_BIND_TCP if bind else 0) | (NET_CONNECT_TCP if connect else 0)
        attr = _NetPortAttr(access, port)
        _syscall(SYS_ADD_RULE, ctypes.c_int(self.fd), ctypes.c_int(RULE_NET_PORT), ctypes.byref(attr),
                 ctypes.c_uint32(0))

    def restrict_self(self) -> None:
        """Enforce the ruleset on the calling thread (irreversible) and close it."""
        try:
            _syscall(SYS_RESTRICT_SELF, ctypes.c_int(self.fd), ctypes.c_uint32(0))
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Ruleset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
