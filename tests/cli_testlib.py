"""Running the `runnerlib` command as a user does (python -m runnerlib, a clean environment), for the tests of
the new user's path, the exit-code convention and the docs' examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without runnerlib's settings (REACTORCIDE_*, LOG_FORMAT, LOG_LEVEL), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("REACTORCIDE_") and k not in ("LOG_FORMAT", "LOG_LEVEL")}
    env.update(extra)
    return env


def rl(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m runnerlib ARGS` in `cwd` (default the repository), text output captured."""
    return subprocess.run([sys.executable, "-m", "runnerlib", *args], cwd=cwd or REPO, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)
