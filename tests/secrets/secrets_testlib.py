"""Helpers of the secrets tests (a uniquely named module: pytest puts this directory on sys.path)."""

from __future__ import annotations

import os
import secrets as secrets_module
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
