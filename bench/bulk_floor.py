#!/usr/bin/env python3
"""The floor of runnerlib's bulk path in Python, for bench_executor.py: what its structure costs with no masking,
no filters and no start-up. Reads stdin in 512 KiB pieces (the runner's read size, on a 1 MiB pipe), writes each
piece as it is to LOG (the step log) and, with --prefix, `[job] ` before every line to CONSOLE, each file by a
thread of its own as the runner's writers do (execution/logs.py); the console's thread prefixes a piece's lines
in slices of about 64 KiB, each written at once, as the runner's does (logs.StepOutput._write_console).

Usage: cmd | bulk_floor.py [--prefix] LOG CONSOLE
"""

from __future__ import annotations

import fcntl
import os
import queue
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runnerlib.execution.allocator import keep_large_buffers_on_heap  # noqa: E402 - after the path above
from runnerlib.execution.logs import _slices  # noqa: E402
from runnerlib.execution.timestamps import prefix_after_newline  # noqa: E402

READ = 512 * 1024
PREFIX = b"[job] "


def main() -> None:
    args = sys.argv[1:]
    prefix = args[0] == "--prefix"
    log, console = args[1:] if prefix else args
    keep_large_buffers_on_heap()
    try:
        fcntl.fcntl(0, fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # not a pipe, or over the uid's pipe quota: the default size
    queues: list[queue.Queue[bytes | None]] = [queue.Queue(8), queue.Queue(8)]

    def write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def writer(q: queue.Queue[bytes | None], path: str, slices: bool) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        start_of_line = True
        while (piece := q.get()) is not None:
            if not slices:
                write_all(fd, piece)
                continue
            # The runner's own slicing and prefixing (logs._slices, timestamps.prefix_after_newline); the
            # piece's first slice from a newline put before it when a line starts there.
            end = piece.rfind(b"\n") + 1
            for start, stop in _slices(piece, end):
                if start:
                    write_all(fd, prefix_after_newline(piece[start - 1:stop], PREFIX))
                else:  # a line going on from the last piece gets no prefix
                    head = prefix_after_newline(b"\n" + piece[:stop], PREFIX)
                    write_all(fd, head if start_of_line else head[len(PREFIX):])
            if end < len(piece):  # a line going on in the next piece: written as it is, no prefix after it
                write_all(fd, (PREFIX if end or start_of_line else b"") + piece[end:])
            start_of_line = end == len(piece)
        os.close(fd)

    threads = [threading.Thread(target=writer, args=(q, p, prefix and p == console))
               for q, p in zip(queues, (log, console), strict=True)]
    for t in threads:
        t.start()
    while data := os.read(0, READ):
        queues[0].put(data)
        queues[1].put(data)
    for q in queues:
        q.put(None)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
