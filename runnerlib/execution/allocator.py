"""Keep the step-output buffers on the heap: glibc's malloc tuned once per process for large reads.

A step that prints fast is read 512 KiB at a time (`process.READ_SIZE`; `runnerlib mask` reads 1 MiB), and
each read, masked copy and prefixed console copy is a fresh bytes object of about that size. glibc serves
such blocks with mmap() and returns them with munmap() on free, so every read page-faults and zeroes fresh
pages: measured on this kind of machine, forwarding 1 GiB through `os.read(fd, 1 MiB)` took 1.13-1.34 s against 0.75-0.99 s with
the blocks kept on the heap (and 0.76-0.94 s for `cmd | cat > file`). Raising M_MMAP_THRESHOLD keeps
blocks of a few MiB on the heap; raising M_TRIM_THRESHOLD stops free() from giving the top of the heap back
at once, so the next read reuses the same pages.

Hand-written with ctypes because Python has no binding for mallopt(3). Best effort: on a libc without
mallopt (musl has a stub) or when it refuses, nothing changes but speed. The cost is that up to
TRIM_THRESHOLD bytes of freed memory stay mapped; the runner is non-dumpable, so this memory is as
private as the rest of its heap.
"""

from __future__ import annotations

import ctypes
import threading

# mallopt(3) parameter numbers (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 4 << 20  # a read (up to 1 MiB) and its prefixed copy (~1.1 MiB) fit well below
TRIM_THRESHOLD = 32 << 20

_lock = threading.Lock()
_done = False


def keep_large_buffers_on_heap() -> bool:
    """Tune malloc once for this process; True if libc accepted both settings.

    Example::

        keep_large_buffers_on_heap()   # before a loop of os.read(fd, 1 << 20)
    """
    global _done
    with _lock:
        if _done:
            return True
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
        # The trim threshold first: setting either one also turns off glibc's dynamic adjustment of both.
        _done = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD,
                                                                                  MMAP_THRESHOLD))
        return _done
