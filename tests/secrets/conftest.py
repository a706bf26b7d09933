"""Fixtures of the secrets tests: the job's real SecretRegistry, and a secret generator."""

from __future__ import annotations

import pytest
from secrets_testlib import new_secret


@pytest.fixture
def registry():
    from runnerlib.security.registry import SecretRegistry

    return SecretRegistry()


@pytest.fixture
def make_secret():
    return new_secret
