"""Fixtures of the observability tests: a workspace every uid can reach, and a local OTLP/HTTP receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from otlp_receiver import OtlpReceiver

from runnerlib.testing import reachable_tempdir


@pytest.fixture
def ws() -> Iterator[Path]:
    with reachable_tempdir("rl-obs-") as root:
        yield root


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver
