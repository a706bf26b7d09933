"""A job's workflow outputs and vars as a signed line of its log, for engines that cannot read its files.

In process and container mode the workflow runner reads each job's workflow-output.json (`set_output`,
`set_var`) from its workspace. A Kubernetes pod's files are out of reach once it ends, but its log is not:
with REACTORCIDE_WORKFLOW_OUTPUT_TRANSPORT=log (the rendered Job manifest sets it), the runner inside the pod
prints, after the job's steps, one line signed with the job's trigger key (workflow/signing.py):

    {"reactorcide_trigger": 1, "key_id": ..., "payload": "{\"type\": \"workflow_output\", \"outputs\": {...},
     \"vars\": {...}, \"job_id\": ..., \"seq\": n, \"issued_at\": ...}", "signature": ...}

The reader verifies it against the key announced on the job's first line, like a trigger line: a step can
print a line of this form, but never one that verifies. Values are masked with the job's registry first.
Without the variable nothing is printed (the worker, which reads stdout too, knows only trigger documents).

Example (the runner, after its steps)::

    publish_workflow_output(os.environ, signer=signer, registry=registry, job_id="42", emit=print)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DOCUMENT_TYPE", "TRANSPORT_VAR", "outputs_of", "publish_workflow_output"]

log = logging.getLogger("runnerlib.workflow")

TRANSPORT_VAR = "REACTORCIDE_WORKFLOW_OUTPUT_TRANSPORT"
DOCUMENT_TYPE = "workflow_output"


def publish_workflow_output(environ: Mapping[str, str], *, signer: Any, registry: Any, job_id: str | None,
                            emit: Callable[[str], None]) -> bool:
    """Print the job's workflow-output.json as one signed line when `environ` asks for the log transport;
    True if a line was printed. A missing or empty file prints nothing; an unreadable one is logged."""
    if environ.get(TRANSPORT_VAR) != "log" or signer is None:
        return False
    from runnerlib.workflow import state
    from runnerlib.workflow.publish import default_workspace, mask_document

    path = environ.get("REACTORCIDE_WORKFLOW_OUTPUT") or str(default_workspace(dict(environ)) / "workflow-output.json")
    try:
        data = state.read_json(Path(path), {})
    except (OSError, ValueError) as exc:
        log.error("workflow output: %s", registry.mask_text(str(exc)))
        return False
    outputs, variables = outputs_of(data)
    if not outputs and not variables:
        return False
    body = mask_document({"type": DOCUMENT_TYPE, "outputs": outputs, "vars": variables}, registry)
    emit(signer.sign_document(body, job_id=job_id))
    return True


def outputs_of(document: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(outputs, vars) of a workflow-output document (the file's or a verified line's); malformed parts are
    dropped, as the local runner does with the file."""
    if not isinstance(document, dict):
        return {}, {}
    outputs, raw_vars = document.get("outputs"), document.get("vars")
    return (outputs if isinstance(outputs, dict) else {},
            {str(k): str(v) for k, v in raw_vars.items()} if isinstance(raw_vars, dict) else {})
