"""The state of a job's steps, for its trusted steps to ask about (runnerlib.is_job_running / get_job_result in
simple mode): one small JSON file, {"steps": {name: {"status", "exit_code", "attempt"}}}, rewritten atomically
as steps start and finish.

It lives in the runner's private scratch directory (beside the secrets socket), and only trusted steps are
told where (REACTORCIDE_STEPS_STATE): an untrusted step can neither read nor forge it, so a trusted step's
decision ("deploy only if tests passed") cannot be steered by the code under test.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

ENV_NAME = "REACTORCIDE_STEPS_STATE"


class StepStateFile:
    """Writes the steps' state to `path` (0600, replaced atomically: a reader never sees half a file)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._steps: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def mark(self, step: str, status: str, exit_code: int | None = None, attempt: int = 1) -> None:
        """Record that `step` is running, or finished with `status` and `exit_code`."""
        with self._lock:
            self._steps[step] = {"status": status, "exit_code": exit_code, "attempt": attempt}
            data = json.dumps({"steps": self._steps}, sort_keys=True).encode()
            tmp = f"{self.path}.{threading.get_ident()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)


def read_steps(path: str) -> dict[str, dict[str, Any]]:
    """The steps recorded in a state file; {} when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    steps = data.get("steps") if isinstance(data, dict) else None
    return {str(k): v for k, v in steps.items() if isinstance(v, dict)} if isinstance(steps, dict) else {}
