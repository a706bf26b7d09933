"""Fixtures of the observability tests: a workspace every uid can reach, and a local OTLP/HTTP receiver."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from otlp_receiver import OtlpReceiver  # noqa: E402

from runnerlib.testing import reachable_tempdir  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ws() -> Iterator[Path]:
    with reachable_tempdir("rl-obs-") as root:
        yield root


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def base_env(**extra: str) -> dict[str, str]:
    """This environment without runnerlib's or OpenTelemetry's own settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REACTORCIDE_", "OTEL_")) and k not in ("LOG_FORMAT", "LOG_LEVEL", "TRACEPARENT")}
    env.update(extra)
    return env
