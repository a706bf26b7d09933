"""The state of a job's steps, for its trusted steps to ask about (runnerlib.is_job_running / get_job_result in
simple mode): one small file of JSON lines, {"step", "status", "exit_code", "attempt"}, appended as steps
start and finish; the last line of a step is its state.

Appended, not rewritten: one short write per event (a rewrite of the whole document and a rename cost about
a millisecond each on a busy machine, per step start and end). A reader skips a line it cannot parse (one
being written).

It lives in the runner's private scratch directory (beside the secrets socket), and only trusted steps are
told where (REACTORCIDE_STEPS_STATE): an untrusted step can neither read nor forge it, so a trusted step's
decision ("deploy only if tests passed") cannot be steered by the code under test.
"""

from __future__ import annotations

import json
import os
from typing import Any

ENV_NAME = "REACTORCIDE_STEPS_STATE"


class StepStateFile:
    """Appends the steps' state to `path` (0600, never through a symlink)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def mark(self, step: str, status: str, exit_code: int | None = None, attempt: int = 1) -> None:
        """Record that `step` is running, or finished with `status` and `exit_code`."""
        line = json.dumps({"step": step, "status": status, "exit_code": exit_code, "attempt": attempt}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode())  # one write of a short line: whole for any reader
        finally:
            os.close(fd)


def read_steps(path: str) -> dict[str, dict[str, Any]]:
    """Each step's latest state in a state file; {} when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    steps: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), str):
            steps[entry["step"]] = entry
    return steps
