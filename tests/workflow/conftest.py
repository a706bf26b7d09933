"""Fixtures of the workflow tests: a TLS certificate for the 127.0.0.1 coordinator, the coordinator, and a
scratch directory every uid can enter."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from wf_coordinator_server import TOKEN, CoordinatorServer, make_certificate

from runnerlib.testing import reachable_tempdir


@pytest.fixture(scope="session")
def certificate() -> tuple[Path, Path]:
    return make_certificate(Path(tempfile.mkdtemp(prefix="wf-cert-")))


@pytest.fixture
def https_server(certificate: tuple[Path, Path]) -> Iterator[CoordinatorServer]:
    with CoordinatorServer(TOKEN, certificate) as server:
        yield server


@pytest.fixture
def http_server() -> Iterator[CoordinatorServer]:
    with CoordinatorServer(TOKEN) as server:
        yield server


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A fresh directory outside pytest's 0700 tmp dir (steps of another uid can reach it), removed after."""
    with reachable_tempdir("wf-shared-") as path:
        yield path
