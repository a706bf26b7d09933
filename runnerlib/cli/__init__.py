"""The `runnerlib` command line: one click group, no logic of its own.

Each command lives in the module named for its area and only parses options, calls the library and turns
errors into one clear line (a traceback only with --debug).
"""

from __future__ import annotations

from runnerlib.cli import (  # noqa: F401  (each module registers its commands on `main`)
    mask_cmd,
    run_cmd,
    sandbox_cmd,
    secrets_cmd,
    source_cmd,
    workflow_cmd,
)
from runnerlib.cli.app import main

__all__ = ["main"]
