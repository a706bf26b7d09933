"""atheris harness: workflow files, triggers documents, trigger messages and globs, fed random input.

Run: .venv/bin/python fuzz/fuzz_workflow.py -atheris_runs=1000

Properties:
- a workflow text either parses (and then its topological order respects every depends_on) or raises one
  WorkflowError that names the file; never another exception;
- a triggers document either parses into valid JobTriggers or raises WorkflowError;
- verify_message on any line either returns a document or raises InvalidTriggerMessage; and a line that is
  the genuine signed line with any byte changed never verifies;
- glob_match never raises, and `*` never matches a `/`.
"""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.workflow.globs import glob_match
    from runnerlib.workflow.models import WorkflowError, parse_workflow_text
    from runnerlib.workflow.signing import InvalidTriggerMessage, TriggerSigner, verify_message
    from runnerlib.workflow.triggers_file import parse_document

SIGNER = TriggerSigner.generate()
GENUINE = SIGNER.sign_document({"type": "trigger_job", "operation_id": "op", "trigger_type": "runnerlib",
                                "jobs": [{"job_name": "deploy"}]}, job_id="job-1")
KEY = SIGNER.public_key_text()
SEED_WORKFLOW = "name: x\non: {events: [push]}\njobs:\n  a: {command: 'true'}\n  b: {command: x, needs: a}\n"


def check_workflow(text: str) -> None:
    try:
        workflow = parse_workflow_text(text, "fuzz.yaml")
    except WorkflowError as exc:
        assert str(exc).startswith("fuzz.yaml"), str(exc)
        return
    order = workflow.topological_order()
    for name, job in workflow.jobs.items():
        assert all(order.index(dep) < order.index(name) for dep in job.depends_on)


def check_document(text: str) -> None:
    try:
        data = json.loads(text)
    except ValueError:
        return
    try:
        parse_document(data, "fuzz.json")
    except WorkflowError:
        pass


def check_message(line: str, flip: int) -> None:
    try:
        verify_message(line, KEY)
    except InvalidTriggerMessage:
        pass
    # Any single-character change to the genuine line must not verify (unless it is a no-op change).
    index = flip % len(GENUINE)
    replacement = chr((ord(GENUINE[index]) + 1 + flip % 7) % 128)
    mutated = GENUINE[:index] + replacement + GENUINE[index + 1:]
    try:
        document = verify_message(mutated, KEY)
    except InvalidTriggerMessage:
        return
    # json tolerates some changes (e.g. whitespace outside strings would not exist here; key order irrelevant)
    # but the verified content must then be exactly the genuine one.
    assert document == verify_message(GENUINE, KEY), mutated


def check_glob(pattern: str, text: str) -> None:
    assert glob_match(pattern, text) in (True, False)
    if "/" in text:
        assert not glob_match("*", text)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 4)
    if choice == 0:
        check_workflow(fdp.ConsumeUnicodeNoSurrogates(400))
    elif choice == 1:
        cut = fdp.ConsumeIntInRange(0, len(SEED_WORKFLOW))
        check_workflow(SEED_WORKFLOW[:cut] + fdp.ConsumeUnicodeNoSurrogates(40) + SEED_WORKFLOW[cut:])
    elif choice == 2:
        check_document(fdp.ConsumeUnicodeNoSurrogates(400))
    elif choice == 3:
        check_message(fdp.ConsumeUnicodeNoSurrogates(400), fdp.ConsumeIntInRange(0, 1 << 20))
    else:
        check_glob(fdp.ConsumeUnicodeNoSurrogates(20), fdp.ConsumeUnicodeNoSurrogates(40))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
