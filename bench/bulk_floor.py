#!/usr/bin/env python3
"""The floor of runnerlib's bulk path in Python, for bench_executor.py: what its structure costs with no masking,
no filters and no start-up. Reads stdin in 512 KiB pieces (the runner's read size, on a 1 MiB pipe), writes each
piece as it is to LOG (the step log) and, with --prefix, `[job] ` before every line to CONSOLE, each file by a
thread of its own as the runner's writers do (execution/logs.py).

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

    def writer(q: queue.Queue[bytes | None], path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        while (piece := q.get()) is not None:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]
        os.close(fd)

    threads = [threading.Thread(target=writer, args=(q, p)) for q, p in zip(queues, (log, console), strict=True)]
    for t in threads:
        t.start()
    start_of_line = True
    while data := os.read(0, READ):
        queues[0].put(data)
        if prefix:  # the whole piece at once (the runner prefixes in 64 KiB slices, in the console's thread)
            body = data[:-1].replace(b"\n", b"\n" + PREFIX) + data[-1:]
            data = PREFIX + body if start_of_line else body
            start_of_line = data.endswith(b"\n")
        queues[1].put(data)
    for q in queues:
        q.put(None)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
