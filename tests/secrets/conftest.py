"""Fixtures of the secrets tests: the job's real SecretRegistry (helpers live in secrets_testlib.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def registry():
    from runnerlib.security.registry import SecretRegistry

    return SecretRegistry()
