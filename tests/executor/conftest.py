"""Fixtures of the executor tests: a workspace outside pytest's 0700 tmp dir (uid 65534 must reach it)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runnerlib.testing import reachable_tempdir

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ws() -> Iterator[Path]:
    """An empty workspace root that sandboxed steps (uid 65534 when root) can enter."""
    with reachable_tempdir("rl-exec-") as root:
        yield root


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """os.environ without any REACTORCIDE_* / LOG_* variable (the hierarchy reads them)."""
    for name in list(os.environ):
        if name.startswith("REACTORCIDE_") or name in ("LOG_LEVEL", "LOG_FORMAT"):
            monkeypatch.delenv(name, raising=False)
    return dict(os.environ)
