"""Helpers of the secrets tests (a uniquely named module: pytest puts this directory on sys.path)."""

from __future__ import annotations

import json
import os
import secrets as secrets_module
import socket
import struct
import subprocess
import sys
import tempfile

import pytest

# Child processes (clients, attackers) run this interpreter; under the unprivileged run it must be one that
# uid 65534 can execute (the venv's, which links to /usr/bin/python3).
PYTHON = sys.executable
IS_ROOT = os.geteuid() == 0
root_only = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="needs root (switches uid)")]


def new_secret(prefix: str = "s3cr3t") -> str:
    """A random secret with a recognisable, non-secret prefix so failures are easy to read."""
    return f"{prefix}-{secrets_module.token_hex(12)}"


def fragments(secret: str | bytes, size: int = 6) -> list[bytes]:
    """Every window of `size` bytes of a secret: tests look for fragments, not only whole values."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return [raw[i : i + size] for i in range(0, max(1, len(raw) - size + 1))]


def assert_no_fragment(output: bytes, secret: str | bytes, size: int = 6) -> None:
    for piece in fragments(secret, size):
        assert piece not in output, f"fragment {piece!r} of a secret leaked"


def shared_tmpdir() -> str:
    """A directory every uid can enter (pytest's tmp_path under root is 0700)."""
    path = tempfile.mkdtemp(prefix="runnerlib-secrets-test-")
    os.chmod(path, 0o755)
    return path


def as_nobody_through_a_link(server_path: str, linkdir: str, call: str, *args: str) -> subprocess.CompletedProcess:
    """As uid 65534, against a hard link of the server's socket in a world-enterable directory, print
    "ANSWER <call's result>", or "REFUSED <error>" and exit 3 on a SecretsSocketError. `call` is an expression
    over `c` (runnerlib.secrets_client), `sys.argv[1:]` (= `args`) and `link` (the link's path).

    The link stands for an attacker who got past the 0700 directory (a bind mount, a leaked fd, a
    misconfigured container): what is left to stop it is the SO_PEERCRED check.
    """
    link = os.path.join(linkdir, "stolen.sock")
    os.link(server_path, link)
    os.chmod(link, 0o666)
    script = (
        "import sys, runnerlib.secrets_client as c\n"
        f"link = {link!r}\n"
        "try:\n"
        f"    print('ANSWER', {call})\n"
        "except c.SecretsSocketError as exc:\n"
        "    print('REFUSED', exc); sys.exit(3)\n"
    )
    # Values and the token ride on argv here because this is the attacker's own process.
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PYTHON, "-c", script, *args],
        capture_output=True, timeout=60, cwd="/",
    )


def raw_request(path: str, data: bytes, *, shutdown: bool = True, timeout: float = 10.0) -> dict:
    """Send raw bytes, read the one-line reply, return it decoded."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.endswith(b"\n"), f"no complete reply: {reply!r}"
    return json.loads(reply)


def frame(message: object) -> bytes:
    """A request frame built by hand (length prefix + JSON), as a client in another language would."""
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body
