"""libnftables (Debian package libnftables1, a dependency of nftables) through ctypes: load once, run a transaction.

In-process rather than the `nft` program: a step process holds CAP_NET_ADMIN of its own namespace only as
itself (an exec'd nft would lose it as a non-zero uid of a user namespace), and it saves an exec per step.
"""

from __future__ import annotations

import ctypes
import errno
import functools
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
    return lib


def preload() -> None:
    """Load libnftables now (the fork server calls this once; a missing library is not an error here)."""
    library()


def run(text: str) -> None:
    """Apply an nftables transaction (nft syntax) in this process's network namespace; OSError if refused."""
    lib = library()
    if lib is None:
        raise OSError(errno.ENOENT, "libnftables.so.1 is not installed (Debian package nftables)")
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise OSError(errno.ENOMEM, "nft_ctx_new failed")
    try:
        lib.nft_ctx_buffer_error(ctx)
        if lib.nft_run_cmd_from_buffer(ctx, text.encode()) != 0:
            first = ((lib.nft_ctx_get_error_buffer(ctx) or b"?").decode(errors="replace").strip().splitlines()
                     or ["?"])[0]
            raise OSError(errno.EPERM, first)
    finally:
        lib.nft_ctx_free(ctx)
