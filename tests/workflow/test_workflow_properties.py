"""Property tests for the remaining parsers: triggers documents, trigger messages, durations."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.workflow import triggers_file as tf
from runnerlib.workflow.models import Condition, JobTrigger, WorkflowError, parse_duration
from runnerlib.workflow.publish import publish_triggers
from runnerlib.workflow.signing import InvalidTriggerMessage, TriggerSigner, verify_message

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
text = st.text(max_size=30)

triggers = st.builds(
    JobTrigger,
    job_name=names,
    depends_on=st.lists(names, max_size=3),
    condition=st.none() | st.sampled_from(list(Condition)),
    env=st.dictionaries(env_names, text, max_size=3),
    source_url=st.none() | text,
    job_command=st.none() | text,
    priority=st.none() | st.integers(-1000, 1000),
    timeout=st.none() | st.integers(1, 86400),
)

SIGNER = TriggerSigner.generate()


@settings(max_examples=40)  # each flush fsyncs: keep the run short
@given(st.lists(st.lists(triggers, min_size=1, max_size=3), min_size=1, max_size=4))
def test_flushes_round_trip_through_the_file_and_the_signed_lines(flushes: list[list[JobTrigger]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "triggers.json"
        ids = [tf.append_operation(path, flush).operation_id for flush in flushes]
        doc = tf.read_triggers(path)
        assert [op.operation_id for op in doc.operations] == ids
        assert doc.jobs == [t.to_dict() for flush in flushes for t in flush]
        lines: list[str] = []
        result = publish_triggers(path, signer=SIGNER, job_id="j", emit=lines.append)
        assert result.ok and result.jobs == sum(len(f) for f in flushes)
        verified = [verify_message(line, SIGNER.public_key_text(), job_id="j") for line in lines]
        assert [d["operation_id"] for d in verified] == ids
        assert [j for d in verified for j in d["jobs"]] == doc.jobs


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=15,
)


@given(st.one_of(json_values, st.fixed_dictionaries({"type": st.just("trigger_job"), "jobs": st.lists(json_values,
                                                                                                    max_size=3)},
                                                    optional={"operations": json_values,
                                                              "operation_id": json_values})))
def test_parse_document_returns_or_raises_workflow_error(data: object) -> None:
    try:
        doc = tf.parse_document(data, "x.json")
    except WorkflowError as exc:
        assert str(exc).startswith("x.json")
    else:
        for job in doc.jobs:
            JobTrigger.model_validate(job)


@given(st.text(max_size=200) | json_values.map(json.dumps))
def test_verify_message_only_raises_invalid_trigger_message(line: str) -> None:
    try:
        verify_message(line, SIGNER.public_key_text())
    except InvalidTriggerMessage:
        pass


@given(st.integers(0, 10_000), st.integers(0, 255))
def test_no_single_byte_change_to_a_signed_line_verifies_differently(position: int, byte: int) -> None:
    line = SIGNER.sign_document({"type": "trigger_job", "operation_id": "o", "jobs": [{"job_name": "a"}]},
                                job_id="j").encode()
    index = position % len(line)
    mutated = line[:index] + bytes([byte]) + line[index + 1:]
    original = verify_message(line, SIGNER.public_key_text())
    try:
        document = verify_message(mutated, SIGNER.public_key_text())
    except InvalidTriggerMessage:
        return
    assert document == original  # only changes JSON ignores (e.g. an escape spelt differently) may pass


@given(st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=12), st.booleans(), st.none()))
def test_parse_duration_returns_seconds_or_value_error(value: object) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert 1 <= seconds <= 7 * 24 * 3600


def test_publish_reports_a_bad_file_instead_of_raising(tmp_path: Path) -> None:
    (tmp_path / "triggers.json").write_text('{"type": "trigger_job", "jobs": [{"job_name": "../evil"}]}')
    lines: list[str] = []
    result = publish_triggers(tmp_path / "triggers.json", signer=SIGNER, job_id="j", emit=lines.append)
    assert not result.ok and "jobs[0].job_name" in result.errors[0] and lines == []


def test_publish_without_a_signer_announces_a_key_first(tmp_path: Path) -> None:
    tf.append_operation(tmp_path / "triggers.json", [{"job_name": "a"}])
    lines: list[str] = []
    result = publish_triggers(tmp_path / "triggers.json", job_id="j", emit=lines.append)
    assert result.ok and len(lines) == 2 and lines[0].startswith('{"reactorcide_trigger_key":1')
    assert verify_message(lines[1], tmp_path / "trigger-signing.pub", job_id="j")["jobs"] == [{"job_name": "a"}]


def test_publish_with_no_triggers_prints_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    assert publish_triggers(tmp_path / "triggers.json", job_id="j", emit=lines.append).operations == 0
    assert lines == [] and not (tmp_path / "trigger-signing.pub").exists()
