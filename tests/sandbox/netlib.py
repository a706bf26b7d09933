"""Shared by the network policy tests: a TCP server on 127.0.0.1 that says `hi`, and a step that reports
whether it reached it (REACHED-<tag>) or not (BLOCKED-<tag> and the error)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

PROBE = ("import socket,sys\ntry:\n socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)"
         ".recv(8); print('REACHED-' + sys.argv[2])\nexcept OSError as e: print('BLOCKED-' + sys.argv[2], e)\n")


@pytest.fixture
def server() -> Iterator[int]:
    """The port of a 127.0.0.1 server that greets every client with `hi`."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hi")

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


def write_probe(ws: Path) -> Path:
    """PROBE as WS/ci/probe.py (the directory made), readable by the step's uid."""
    (ws / "ci").mkdir(exist_ok=True)
    probe = ws / "ci" / "probe.py"
    probe.write_text(PROBE)
    probe.chmod(0o644)
    return probe
