"""The triggers file (/job/triggers.json): written by trusted job code, read by the runner and the worker.

Format (the worker contract), with additions a worker may ignore:

    {"type": "trigger_job", "operation_id": "<uuid4>", "trigger_type": "runnerlib",
     "jobs": [ {...JobTrigger...}, ... ],                       # what the worker still has to submit
     "operations": [ {"operation_id": "<uuid4>", "jobs": 2}, {"operation_id": "<uuid4>", "jobs": 1,
                     "delivered": ["coordinator"]}, ... ],
     "delivered_jobs": [ {...JobTrigger...}, ... ]}             # already accepted by the coordinator

Every flush (one `trigger_job` / `trigger_jobs` call, or one `runnerlib trigger`) is an operation with its own
uuid4; its jobs are appended to "jobs" in order (a second flush never replaces the first), and "operations"
says, in order, how many jobs each operation added. Once the coordinator has accepted an operation its jobs
move from "jobs" to "delivered_jobs": a worker that submits everything in "jobs" (as existing workers do;
the earlier runnerlib deleted the file after a successful POST for the same reason) never submits them twice.
The top-level "operation_id" is that of the latest operation still in "jobs" (else the latest), so a worker
that de-duplicates whole files by it never mistakes a file with a new flush for one it has seen.

Writes are atomic (temp file in the same directory, fsync, rename, fsync of the directory) and serialised by
fcntl.flock on "<file>.lock", so concurrent flushes from threads or processes never lose one another.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runnerlib.workflow.models import JobTrigger, WorkflowError
from runnerlib.workflow.state import locked, replace_file

__all__ = ["Operation", "TriggersDocument", "append_operation", "locked", "mark_delivered", "read_triggers"]

# A triggers file larger than this is refused: no legitimate job triggers megabytes of jobs.
MAX_TRIGGERS_BYTES = 16 * 1024 * 1024
FILE_MODE = 0o644  # the worker reads it, possibly as another uid; values in it are masked
COORDINATOR = "coordinator"  # the transport whose delivery takes jobs out of "jobs"


@dataclass
class Operation:
    """One flush: its id and its jobs (JSON objects in the contract's form)."""

    operation_id: str
    jobs: list[dict[str, Any]]
    delivered: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """This operation alone in the triggers-file / coordinator body format."""
        return {"type": "trigger_job", "operation_id": self.operation_id, "trigger_type": "runnerlib",
                "jobs": self.jobs}


@dataclass
class TriggersDocument:
    """The parsed triggers file."""

    operations: list[Operation] = field(default_factory=list)

    @property
    def jobs(self) -> list[dict[str, Any]]:
        """Every job triggered, delivered or not, in order."""
        return [job for op in self.operations for job in op.jobs]

    def pending(self, transport: str = COORDINATOR) -> list[Operation]:
        """The operations `transport` has not accepted yet."""
        return [op for op in self.operations if transport not in op.delivered]

    def to_json(self) -> dict[str, Any]:
        pending = self.pending()
        latest = pending[-1] if pending else (self.operations[-1] if self.operations else None)
        data: dict[str, Any] = {
            "type": "trigger_job",
            "operation_id": latest.operation_id if latest else str(uuid.uuid4()),
            "trigger_type": "runnerlib",
            "jobs": [job for op in pending for job in op.jobs],
            "operations": [
                {"operation_id": op.operation_id, "jobs": len(op.jobs),
                 **({"delivered": op.delivered} if op.delivered else {})}
                for op in self.operations
            ],
        }
        delivered = [job for op in self.operations if COORDINATOR in op.delivered for job in op.jobs]
        if delivered:
            data["delivered_jobs"] = delivered
        return data


def read_triggers(path: str | os.PathLike[str]) -> TriggersDocument:
    """Parse the triggers file; an absent file is an empty document. A WorkflowError names the rule broken.

    A file in the plain contract format (no "operations", e.g. written by an older runnerlib) is read as one
    operation with the file's operation_id.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return TriggersDocument()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WorkflowError("is a symbolic link; refused", file=str(path)) from None
        raise WorkflowError(f"cannot read: {exc.strerror}", file=str(path)) from None
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(MAX_TRIGGERS_BYTES + 1)
    if len(raw) > MAX_TRIGGERS_BYTES:
        raise WorkflowError(f"larger than {MAX_TRIGGERS_BYTES} bytes", file=str(path))
    if not raw.strip():
        return TriggersDocument()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"not valid JSON: {exc}", file=str(path)) from None
    return parse_document(data, str(path))


def parse_document(data: Any, origin: str) -> TriggersDocument:
    """Validate a triggers document (file or message body): every job a valid JobTrigger."""
    if not isinstance(data, dict) or data.get("type") != "trigger_job" or not isinstance(data.get("jobs"), list):
        raise WorkflowError('must be {"type": "trigger_job", "jobs": [...]}', file=origin)
    jobs = _validated_jobs(data["jobs"], origin, "jobs")
    operations_raw = data.get("operations")
    if operations_raw is None:
        op_id = data.get("operation_id")
        if not isinstance(op_id, str) or not op_id:
            op_id = str(uuid.uuid4())
        return TriggersDocument([Operation(op_id, jobs)] if jobs else [])
    if not isinstance(operations_raw, list):
        raise WorkflowError("must be a list", file=origin, field="operations")
    delivered_raw = data.get("delivered_jobs", [])
    if not isinstance(delivered_raw, list):
        raise WorkflowError("must be a list", file=origin, field="delivered_jobs")
    delivered_jobs = _validated_jobs(delivered_raw, origin, "delivered_jobs")
    operations: list[Operation] = []
    taken = {"jobs": 0, "delivered_jobs": 0}
    sources = {"jobs": jobs, "delivered_jobs": delivered_jobs}
    for index, op in enumerate(operations_raw):
        if not (isinstance(op, dict) and isinstance(op.get("operation_id"), str)
                and isinstance(op.get("jobs"), int) and not isinstance(op.get("jobs"), bool) and op["jobs"] >= 0):
            raise WorkflowError('must be {"operation_id": str, "jobs": count}', file=origin,
                                field=f"operations[{index}]")
        delivered = op.get("delivered") or []
        if not isinstance(delivered, list) or not all(isinstance(d, str) for d in delivered):
            raise WorkflowError("must be a list of transport names", file=origin,
                                field=f"operations[{index}].delivered")
        key = "delivered_jobs" if COORDINATOR in delivered else "jobs"
        start = taken[key]
        operations.append(Operation(op["operation_id"], sources[key][start:start + op["jobs"]], list(delivered)))
        taken[key] += op["jobs"]
    for key, count in taken.items():
        if count != len(sources[key]):
            raise WorkflowError(f"operations count {count} entries of {key} but the file has "
                                f"{len(sources[key])}", file=origin, field="operations")
    return TriggersDocument(operations)


def _validated_jobs(raw: list[Any], origin: str, name: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    for index, job in enumerate(raw):
        try:
            jobs.append(JobTrigger.model_validate(job).to_dict())
        except ValidationError as exc:  # reported with its place, one line
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise WorkflowError(str(first["msg"]), file=origin,
                                field=f"{name}[{index}]" + (f".{where}" if where else "")) from None
    return jobs


def _write_atomic(path: Path, document: TriggersDocument) -> None:
    data = json.dumps(document.to_json(), indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    replace_file(path, data, FILE_MODE)


def append_operation(path: str | os.PathLike[str], jobs: Iterable[JobTrigger | dict[str, Any]],
                     *, operation_id: str | None = None) -> Operation:
    """Append one flush (a new operation with its own uuid4) to the triggers file, atomically under the lock.

    Example::

        op = append_operation("/job/triggers.json", [JobTrigger(job_name="deploy")])
        op.operation_id   # '6f1c...'; the file's "jobs" now ends with {"job_name": "deploy"}
    """
    path = Path(path)
    entries = [
        (job if isinstance(job, JobTrigger) else JobTrigger.model_validate(job)).to_dict() for job in jobs
    ]
    if not entries:
        raise WorkflowError("a trigger needs at least one job", file=str(path))
    operation = Operation(operation_id or str(uuid.uuid4()), entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        document = read_triggers(path)
        if any(op.operation_id == operation.operation_id for op in document.operations):
            raise WorkflowError(f"operation {operation.operation_id} is already in the file", file=str(path))
        document.operations.append(operation)
        _write_atomic(path, document)
    return operation


def mark_delivered(path: str | os.PathLike[str], operation_ids: Iterable[str], transport: str) -> None:
    """Record that `transport` carried these operations (so they are not sent again that way)."""
    wanted = set(operation_ids)
    if not wanted:
        return
    path = Path(path)
    with locked(path):
        document = read_triggers(path)
        for op in document.operations:
            if op.operation_id in wanted and transport not in op.delivered:
                op.delivered.append(transport)
        _write_atomic(path, document)
