"""Small JSON files shared between the local workflow runner and the jobs it runs.

- The workflow state (REACTORCIDE_WORKFLOW_STATE): which jobs of a local workflow run exist and how they are
  doing; the local runner writes it, `is_job_running` / `get_job_result` read it when no coordinator is
  configured.

      {"workflow": "ci", "run_id": "...", "jobs": {"test": {"status": "success", "exit_code": 0,
       "base_name": "test", "item": null, "started_at": 1.0, "finished_at": 2.5, "duration": 1.5,
       "outputs": {...}}, ...}}

  status is one of pending, running, success, failed, skipped, cancelled.

- workflow-output.json (the contract): {"vars": {...}, "outputs": {...}} written by a job through
  `workflow_context().set_output(...)`, and for a whole local run by the local runner.

Both, like the triggers file, are replaced atomically and durably (`replace_file`: temp file, fsync, rename,
fsync of the directory) under a flock on "<file>.lock" (`locked`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["FINISHED", "locked", "read_json", "replace_file", "update_json", "write_json"]

FINISHED = frozenset({"success", "failed", "skipped", "cancelled"})
MAX_STATE_BYTES = 16 * 1024 * 1024


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the exclusive lock of the shared file `path` (a lock file "<path>.lock" beside it; blocks until free)."""
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data`, atomically and durably (caller holds the lock if others write).

    A reader sees the old file or the new one, never a part: the data goes to a temporary file in the same
    directory (fsync), which is renamed over `path`; the directory is then fsynced so the rename survives a crash.
    """
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: str | os.PathLike[str], default: Any) -> Any:
    """The JSON in `path`, or `default` if there is no file. ValueError names the file if it is not JSON."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return default
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(MAX_STATE_BYTES + 1)
    if len(raw) > MAX_STATE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_STATE_BYTES} bytes")
    if not raw.strip():
        return default
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def write_json(path: str | os.PathLike[str], data: Any, *, mode: int = 0o644) -> None:
    """Replace `path` with `data` as JSON, atomically and durably (caller holds the lock if others write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    replace_file(path, text.encode("utf-8"), mode)


def update_json(path: str | os.PathLike[str], default: Any, change: Callable[[Any], Any]) -> Any:
    """Read-modify-write `path` under its lock: `change(current)` returns the new content (which is written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        new = change(read_json(path, default))
        write_json(path, new)
    return new
