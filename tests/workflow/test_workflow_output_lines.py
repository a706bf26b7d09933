"""workflow/output_lines.py: a job's outputs and vars as one signed log line (the Kubernetes engine's way
back from a pod), verified like a trigger line and never taken for one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runnerlib.security.registry import SecretRegistry
from runnerlib.workflow.output_lines import TRANSPORT_VAR, outputs_of, publish_workflow_output
from runnerlib.workflow.signing import InvalidTriggerMessage, TriggerSigner, verify_message

SECRET = "outline-S3cr3t-Qv81"


def _publish(tmp_path: Path, document: object, **environ: str) -> list[str]:
    path = tmp_path / "workflow-output.json"
    path.write_text(json.dumps(document))
    registry = SecretRegistry()
    registry.add(SECRET, source="test")
    lines: list[str] = []
    publish_workflow_output({"REACTORCIDE_WORKFLOW_OUTPUT": str(path), **environ}, signer=SIGNER,
                            registry=registry, job_id="j1", emit=lines.append)
    return lines


SIGNER = TriggerSigner.generate()


def test_signed_masked_and_only_when_asked(tmp_path: Path) -> None:
    doc = {"outputs": {"artifact": "a.tgz", "leak": SECRET}, "vars": {"V": "1"}}
    # Without the transport variable nothing is printed: the worker reads stdout too.
    assert _publish(tmp_path, doc) == []
    (line,) = _publish(tmp_path, doc, **{TRANSPORT_VAR: "log"})
    document = verify_message(line, SIGNER.public_key_text(), job_id="j1", kind=None)
    assert document["type"] == "workflow_output"
    assert outputs_of(document) == ({"artifact": "a.tgz", "leak": "***"}, {"V": "1"})
    assert SECRET[3:11] not in line
    # A reader of trigger lines (the worker, verify_message's default) never takes it for a trigger.
    with pytest.raises(InvalidTriggerMessage, match="not a trigger_job document"):
        verify_message(line, SIGNER.public_key_text())


def test_nothing_for_an_empty_or_malformed_file(tmp_path: Path) -> None:
    assert _publish(tmp_path, {"outputs": {}, "vars": {}}, **{TRANSPORT_VAR: "log"}) == []
    assert _publish(tmp_path, ["not", "a", "dict"], **{TRANSPORT_VAR: "log"}) == []
    assert outputs_of({"outputs": [1], "vars": {"n": 2}}) == ({}, {"n": "2"})


def test_another_keys_line_does_not_verify(tmp_path: Path) -> None:
    (line,) = _publish(tmp_path, {"vars": {"V": "1"}}, **{TRANSPORT_VAR: "log"})
    with pytest.raises(InvalidTriggerMessage, match="another key"):
        verify_message(line, TriggerSigner.generate().public_key_text(), kind=None)
