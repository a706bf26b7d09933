"""Fixtures for the path-safety tests: a workspace with an outside directory beside it, for each resolver."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runnerlib.security.lowlevel import openat2
from runnerlib.security.paths import Workspace

RESOLVERS = ["openat2", "walk"]


@pytest.fixture(params=RESOLVERS)
def resolver(request: pytest.FixtureRequest) -> str:
    if request.param == "openat2" and not openat2.available():
        pytest.skip("openat2 is not available on this kernel")
    return request.param


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """tmp/ws (the workspace root) and tmp/outside/secret (what an attack tries to reach)."""
    root = tmp_path / "ws"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("TOP-SECRET-CONTENT")
    return {"root": root, "outside": outside, "secret": outside / "secret"}


@pytest.fixture
def ws(layout: dict[str, Path], resolver: str) -> Workspace:
    workspace = Workspace(layout["root"], resolver=resolver)  # type: ignore[arg-type]
    yield workspace
    workspace.close()


def is_root() -> bool:
    return os.geteuid() == 0
