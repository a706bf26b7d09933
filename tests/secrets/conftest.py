"""Fixtures of the secrets tests: the job's real SecretRegistry (helpers live in secrets_testlib.py)."""

from __future__ import annotations

import shutil

import pytest
from secrets_testlib import shared_tmpdir


@pytest.fixture
def registry():
    from runnerlib.security.registry import SecretRegistry

    return SecretRegistry()


@pytest.fixture
def shared_dir():
    """A directory uid 65534 can enter (for the server's socket link), removed after the test."""
    path = shared_tmpdir()
    yield path
    shutil.rmtree(path)


@pytest.fixture
def server(registry):
    """A live SecretSocketServer on the registry (2 s request deadline)."""
    from runnerlib.security.secret_socket import SecretSocketServer

    with SecretSocketServer(registry, timeout=2.0) as srv:
        yield srv
