"""Overwrite parts of this process's own argv and environment blocks, as other processes see them in /proc.

`/proc/<pid>/cmdline` and `/proc/<pid>/environ` are read by the kernel from the original blocks on the
process's stack (addresses in /proc/self/stat fields 48-51: arg_start, arg_end, env_start, env_end).
Python's `sys.argv` and `os.environ` are copies: deleting from them leaves the originals readable. Writing
through /proc/self/mem changes the originals in place. The lengths stay the same (bytes become NUL) so the
kernel's view of the blocks stays well-formed.

This narrows the window only: a secret that arrived on argv was visible from exec until the overwrite (a
poller caught it 20 times out of 20). Secrets must not travel on argv at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def block_addresses() -> tuple[int, int, int, int]:
    """(arg_start, arg_end, env_start, env_end) of the calling process, from /proc/self/stat."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    # Field 2 (comm) may contain spaces and parentheses: split after the LAST ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    # fields[0] is field 3 (state); field N is fields[N - 3].
    return int(fields[45]), int(fields[46]), int(fields[47]), int(fields[48])


def _scrub(start: int, end: int, should_clear: Callable[[bytes], bool], keep_name: bool) -> int:
    cleared = 0
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        block = mem.read(end - start)
        offset = 0
        for entry in block.split(b"\0"):
            if entry and should_clear(entry):
                skip = entry.index(b"=") + 1 if keep_name and b"=" in entry else 0
                mem.seek(start + offset + skip)
                mem.write(b"\0" * (len(entry) - skip))
                cleared += 1
            offset += len(entry) + 1
    return cleared


def scrub_argv(should_clear: Callable[[bytes], bool]) -> int:
    """Zero every argument for which `should_clear(arg)` is true; returns how many were cleared."""
    arg_start, arg_end, _, _ = block_addresses()
    return _scrub(arg_start, arg_end, should_clear, keep_name=False)


def scrub_environ(should_clear: Callable[[bytes], bool]) -> int:
    """Zero the value of every NAME=VALUE entry for which `should_clear(entry)` is true (the name stays)."""
    _, _, env_start, env_end = block_addresses()
    return _scrub(env_start, env_end, should_clear, keep_name=True)


def read_own(kind: str) -> bytes:
    """The calling process's /proc/self/cmdline or environ as other readers see it (for checks and tests)."""
    if kind not in ("cmdline", "environ"):
        raise ValueError("kind must be 'cmdline' or 'environ'")
    with open(f"/proc/{os.getpid()}/{kind}", "rb") as f:
        return f.read()
