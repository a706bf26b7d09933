"""openat2(2) through ctypes (hazmat: only runnerlib.security.paths should call this).

openat2 resolves a path relative to a directory fd and, with RESOLVE_BENEATH, refuses (EXDEV) any
resolution that would leave that directory: `..` above it, absolute paths, absolute symlinks, symlinks
that climb out. The check happens inside the kernel during the lookup itself, so there is no window
between checking a path and opening it. Python's os module has no binding for it (3.11), hence ctypes.

The syscall number is 437 on every architecture that uses the unified syscall table (x86_64, aarch64,
arm, riscv, ...), and 437 + 4000/5000/6000 style offsets only on MIPS, which is not supported here.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import threading

# linux/openat2.h
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
RESOLVE_CACHED = 0x20

# asm-generic/unistd.h and arch/x86/entry/syscalls/syscall_64.tbl agree on 437.
_SYSCALL_NUMBERS = {
    "x86_64": 437,
    "amd64": 437,
    "aarch64": 437,
    "arm64": 437,
    "riscv64": 437,
    "ppc64le": 437,
    "s390x": 437,
}
SYS_openat2: int | None = _SYSCALL_NUMBERS.get(platform.machine().lower())


class _OpenHow(ctypes.Structure):
    # struct open_how { __u64 flags; __u64 mode; __u64 resolve; } (extensible: size passed explicitly)
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)  # libc is loaded already; find_library would run ldconfig -p
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

_probe_lock = threading.Lock()
_probe_result: bool | None = None


def openat2(dirfd: int, path: str | bytes, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """Open `path` relative to `dirfd` with openat2(2); return the new fd or raise OSError(errno).

    O_CLOEXEC is always added. The return value is checked (never errno alone).

    >>> fd = openat2(root_fd, "src/setup.py", os.O_RDONLY, resolve=RESOLVE_BENEATH)  # doctest: +SKIP
    """
    if SYS_openat2 is None:
        raise OSError(errno.ENOSYS, f"openat2: unsupported architecture {platform.machine()}")
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError("openat2: path contains a NUL byte")
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if not (flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile)):
        mode = 0  # the kernel answers EINVAL to a mode without O_CREAT/O_TMPFILE
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    ret = _syscall(
        ctypes.c_long(SYS_openat2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(raw),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"openat2: {os.strerror(err)}", os.fsdecode(raw))
    return int(ret)


def available() -> bool:
    """True when openat2 with RESOLVE_BENEATH works here (kernel >= 5.6 and not blocked by seccomp).

    Probed once per process: a container runtime's seccomp profile may answer ENOSYS or EPERM.
    """
    global _probe_result
    with _probe_lock:
        if _probe_result is None:
            _probe_result = _probe()
        return _probe_result


def _probe() -> bool:
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = openat2(root, ".", os.O_PATH, resolve=RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    except OSError:
        return False
    finally:
        os.close(root)
    os.close(fd)
    return True
