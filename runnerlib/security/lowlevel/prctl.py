"""The few prctl(2) calls the sandbox needs, through ctypes.

python-prctl covers these too, but the fork server runs under `python -I -S` (no site-packages) so that it
starts fast and cannot be influenced by the environment; it can only use the standard library.
"""

from __future__ import annotations

import ctypes
import os

PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_GET_SECCOMP = 21
PR_SET_NAME = 15

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    """Call prctl and return its result; raises OSError when it returned -1."""
    ret = _libc.prctl(option, arg2, arg3, 0, 0)
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")
    return int(ret)


def get_child_subreaper() -> bool:
    """Whether the calling process is a child subreaper (the value is written through a pointer)."""
    value = ctypes.c_int(0)
    if _libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(value), 0, 0, 0) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return bool(value.value)


def set_name(name: str) -> None:
    """Name the calling thread (its /proc comm, at most 15 bytes). Unlike writing /proc/self/comm, this works
    in a non-dumpable process, whose /proc files belong to root."""
    buffer = ctypes.create_string_buffer(name.encode()[:15])
    if _libc.prctl(PR_SET_NAME, ctypes.addressof(buffer), 0, 0, 0) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
