"""CLI commands for this area (being built; see docs/architecture.md for who owns what)."""

from __future__ import annotations

from runnerlib.cli.app import main  # noqa: F401
