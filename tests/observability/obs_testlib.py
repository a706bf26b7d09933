"""Helpers of the observability tests (a module of its own: `conftest` is a shared name across test dirs)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def base_env(**extra: str) -> dict[str, str]:
    """This environment without runnerlib's or OpenTelemetry's own settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REACTORCIDE_", "OTEL_")) and k not in ("LOG_FORMAT", "LOG_LEVEL", "TRACEPARENT")}
    env.update(extra)
    return env
