"""Shared test set-up: hypothesis profile, and markers for tests that need root or a kernel feature."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# No example database: the suite also runs as an unprivileged uid in a read-only checkout, and CI is noisy,
# so no deadlines either (never a test that fails on timing).
settings.register_profile(
    "runnerlib",
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=int(os.environ.get("RUNNERLIB_HYPOTHESIS_EXAMPLES", "150")),
)
settings.load_profile("runnerlib")
