"""What the runner does with the triggers of a job: announce the signing key first, publish after the steps.

The runner (runnerlib/runner.py) calls, in this order:

1. `signer = start_trigger_signing(workspace, job_id=..., emit=...)` before source preparation: makes the
   job's Ed25519 key pair, writes the public key to <workspace>/trigger-signing.pub and prints the key
   announcement line. The private key stays in the runner's memory.
2. `publish_triggers(triggers_file, signer=signer, registry=registry, job_id=..., emit=...,
   coordinator=...)` after the job's steps: reads the triggers file (which only trusted steps can write),
   masks every payload with the job's registry (again: trusted steps already had the runner mask what they
   wrote, api.mask_payload), and for each operation the coordinator has not already
   accepted prints one signed line on the runner's own stdout and (when a coordinator is configured) POSTs
   it.

Only the runner itself writes these lines, and only from what trusted code wrote: the stdout transport
carries nothing an untrusted step printed (its lines fail verification, see signing.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runnerlib.workflow import triggers_file
from runnerlib.workflow.coordinator import CoordinatorClient, CoordinatorError
from runnerlib.workflow.signing import TriggerSigner, emit_stdout_line, start_trigger_signing
from runnerlib.workflow.triggers_file import COORDINATOR

__all__ = ["PublishResult", "mask_document", "publish_triggers", "start_trigger_signing"]

log = logging.getLogger("runnerlib.workflow")


class TextMasker(Protocol):
    def mask_text(self, text: str) -> str: ...


@dataclass
class PublishResult:
    """What publish_triggers did: counts, the lines it printed, and transport errors (masked)."""

    operations: int = 0
    jobs: int = 0
    lines: list[str] = field(default_factory=list)
    posted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def mask_document(value: Any, registry: TextMasker | None) -> Any:
    """Every string in a JSON-like value, keys included, masked (structure kept, so it stays valid JSON)."""
    if registry is None:
        return value
    if isinstance(value, str):
        return registry.mask_text(value)
    if isinstance(value, dict):
        return {mask_document(k, registry): mask_document(v, registry) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_document(item, registry) for item in value]
    return value


def publish_triggers(
    triggers_file_path: str | os.PathLike[str] | None = None,
    *,
    signer: TriggerSigner | None = None,
    registry: TextMasker | None = None,
    job_id: str | None = None,
    emit: Callable[[str], None] | None = None,
    coordinator: CoordinatorClient | None = None,
    workspace: str | os.PathLike[str] | None = None,
) -> PublishResult:
    """Publish the triggers that trusted steps wrote: signed stdout lines, and coordinator POSTs.

    - `triggers_file_path`: default REACTORCIDE_TRIGGERS_FILE, else <workspace>/triggers.json.
    - `signer`: from start_trigger_signing. Without one a key is made now (written to
      <workspace>/trigger-signing.pub and announced) - weaker, since the announcement then follows the steps'
      output; the runner should always pass one.
    - `registry`: the job's SecretRegistry; every payload is masked with it before it leaves.
    - `emit`: writes one line to the runner's stdout (default: sys.stdout, flushed).
    - `coordinator`: when given, operations not yet delivered to it are POSTed (idempotent by operation id).

    Never raises for a transport failure: errors are returned (masked) in PublishResult.errors and logged,
    so the job's own outcome is reported whatever happens to its triggers. A malformed triggers file is an
    error too (returned, not raised).
    """
    emit = emit or emit_stdout_line
    result = PublishResult()
    path = Path(triggers_file_path) if triggers_file_path else default_triggers_path(workspace)

    def fail(message: str) -> None:
        text = registry.mask_text(message) if registry is not None else message
        result.errors.append(text)
        log.error("triggers: %s", text)

    try:
        document = triggers_file.read_triggers(path)
    except ValueError as exc:
        fail(str(exc))
        return result
    if not document.pending(COORDINATOR):
        return result
    if signer is None:
        try:
            signer = start_trigger_signing(workspace if workspace is not None else path.parent, job_id=job_id,
                                           emit=emit)
        except OSError as exc:
            fail(f"cannot write the trigger signing key: {exc.strerror}")
            return result
    delivered: list[str] = []
    for operation in document.operations:
        if COORDINATOR in operation.delivered:
            continue  # the coordinator has it: sending it again would rely on every reader de-duplicating
        body = mask_document(operation.document(), registry)
        line = signer.sign_document(body, job_id=job_id)
        emit(line)
        result.lines.append(line)
        result.operations += 1
        result.jobs += len(operation.jobs)
        if coordinator is not None:
            try:
                coordinator.post_triggers(job_id or "", body)
            except CoordinatorError as exc:
                fail(f"operation {operation.operation_id}: {exc}")
            else:
                delivered.append(operation.operation_id)
                result.posted.append(operation.operation_id)
    if delivered:
        try:
            triggers_file.mark_delivered(path, delivered, COORDINATOR)
        except OSError as exc:
            # Only the bookkeeping failed: the coordinator has them, and a repost is idempotent.
            log.warning("triggers: could not record delivery in %s: %s", path, exc.strerror)
    return result


def default_triggers_path(workspace: str | os.PathLike[str] | None = None,
                          environ: dict[str, str] | None = None) -> Path:
    """REACTORCIDE_TRIGGERS_FILE, else <workspace>/triggers.json (workspace: argument, else the job's)."""
    env = os.environ if environ is None else environ
    explicit = env.get("REACTORCIDE_TRIGGERS_FILE")
    if explicit:
        return Path(explicit)
    return Path(workspace if workspace is not None else default_workspace(env)) / "triggers.json"


def default_workspace(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """The job's workspace root: REACTORCIDE_WORKSPACE_ROOT / REACTORCIDE_WORKSPACE (as config.py reads
    them), else /job inside a container, else the cwd."""
    env = os.environ if environ is None else environ
    for name in ("REACTORCIDE_WORKSPACE_ROOT", "REACTORCIDE_WORKSPACE"):
        if env.get(name):
            return Path(env[name])
    if env.get("REACTORCIDE_IN_CONTAINER", "").lower() == "true" or Path("/job").is_dir():
        return Path("/job")
    return Path.cwd()
