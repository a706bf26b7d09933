"""Shared by the network policy tests: a TCP server on 127.0.0.1 that says `hi`, and a step that reports
whether it reached it (REACHED-<tag>) or not (BLOCKED-<tag> and the error)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

PROBE = ("import socket,sys\ntry:\n socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)"
         ".recv(8); print('REACHED-' + sys.argv[2])\nexcept OSError as e: print('BLOCKED-' + sys.argv[2], e)\n")


@contextlib.contextmanager
def serving(host: str = "127.0.0.1", greeting: bytes = b"hi") -> Iterator[int]:
    """A TCP server on `host` (this machine) greeting every client; yields its port."""
    srv = socket.socket()
    srv.bind((host, 0))
    srv.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(greeting)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()


@pytest.fixture
def server() -> Iterator[int]:
    """The port of a 127.0.0.1 server that greets every client with `hi`."""
    with serving() as port:
        yield port


def write_probe(ws: Path) -> Path:
    """PROBE as WS/ci/probe.py (the directory made), readable by the step's uid."""
    (ws / "ci").mkdir(exist_ok=True)
    probe = ws / "ci" / "probe.py"
    probe.write_text(PROBE)
    probe.chmod(0o644)
    return probe


@contextlib.contextmanager
def metadata_address_on_lo(address: str) -> Iterator[None]:
    """`address` on lo while the block runs (root; skips the test where it cannot be added)."""
    ip = shutil.which("ip")
    if ip is None:
        pytest.skip("needs the `ip` program to put a metadata address on lo")
    added = subprocess.run([ip, "addr", "add", f"{address}/32", "dev", "lo"], capture_output=True)
    if added.returncode != 0:
        pytest.skip(f"cannot add {address} to lo: {added.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run([ip, "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True)
