"""libnftables (Debian package libnftables1, a dependency of nftables) through ctypes: load once, run a transaction.

In-process rather than the `nft` program: a step process holds CAP_NET_ADMIN of its own namespace only as
itself (an exec'd nft would lose it as a non-zero uid of a user namespace), and it saves an exec per step.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from typing import Any


@functools.lru_cache(maxsize=1)
def library() -> Any:
    """The loaded library, or None when it is not installed. Loaded once in the fork server (`preload`), so
    forked steps find it mapped."""
    try:
        lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    return lib


def preload() -> None:
    """Load libnftables now (the fork server calls this once; a missing library is not an error here)."""
    library()


class Session:
    """One libnftables context kept open: its netlink socket is what a table with `flags owner` belongs to
    (the kernel removes such a table when the socket closes: at `close()`, or when this process ends however
    it ends, SIGKILL included), and only this socket may change that table."""

    def __init__(self) -> None:
        lib = library()
        if lib is None:
            raise OSError(errno.ENOENT, "libnftables.so.1 is not installed (Debian package nftables)")
        self._lib = lib
        before = _socket_fds()
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise OSError(errno.ENOMEM, "nft_ctx_new failed")
        # libmnl opens its netlink socket inheritable: a program the process execs later (a step started
        # without close_fds) would keep an owned table alive after the process ends.
        for fd in _socket_fds() - before:
            os.set_inheritable(fd, False)
        lib.nft_ctx_buffer_error(self._ctx)
        lib.nft_ctx_buffer_output(self._ctx)

    def run(self, text: str, *, dry_run: bool = False) -> str:
        """Apply a transaction (nft syntax); its output (for `list` commands). `dry_run`: the kernel checks it
        (rights included) and nothing is changed. OSError naming the first error line if refused."""
        if not self._ctx:
            raise OSError(errno.EBADF, "nftables session closed")
        lib = self._lib
        lib.nft_ctx_set_dry_run(self._ctx, dry_run)
        try:
            if lib.nft_run_cmd_from_buffer(self._ctx, text.encode()) != 0:
                first = ((lib.nft_ctx_get_error_buffer(self._ctx) or b"?").decode(errors="replace").strip()
                         .splitlines() or ["?"])[0]
                raise OSError(errno.EPERM, first)
            return (lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
        finally:
            lib.nft_ctx_set_dry_run(self._ctx, False)

    def close(self) -> None:
        """Free the context (and with it the tables this session owns)."""
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


def _socket_fds() -> set[int]:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                found.add(int(name))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, another thread's)
    return found


def run(text: str, *, dry_run: bool = False) -> str:
    """Apply an nftables transaction (nft syntax) in this process's network namespace, in a context of its own
    (tables it makes with `flags owner` vanish at once: use a Session for those); its output; OSError if
    refused."""
    session = Session()
    try:
        return session.run(text, dry_run=dry_run)
    finally:
        session.close()
