"""The triggers file: contract format, appending flushes, atomic writes, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import uuid
from pathlib import Path

import pytest

from runnerlib.workflow import triggers_file as tf
from runnerlib.workflow.models import JobTrigger, WorkflowError


def test_contract_format_and_fields_without_value_left_out(tmp_path: Path) -> None:
    path = tmp_path / "triggers.json"
    op = tf.append_operation(path, [JobTrigger(job_name="deploy", env={"A": "1"}, depends_on=["test"],
                                               condition="always", timeout="2m", priority=5)])
    data = json.loads(path.read_text())
    assert data["type"] == "trigger_job" and data["trigger_type"] == "runnerlib"
    assert data["operation_id"] == op.operation_id
    assert str(uuid.UUID(op.operation_id, version=4)) == op.operation_id
    assert data["jobs"] == [{"job_name": "deploy", "depends_on": ["test"], "condition": "always",
                             "env": {"A": "1"}, "priority": 5, "timeout": 120}]


def test_second_flush_appends_with_its_own_operation_id(tmp_path: Path) -> None:
    path = tmp_path / "triggers.json"
    first = tf.append_operation(path, [{"job_name": "a"}])
    second = tf.append_operation(path, [{"job_name": "b"}, {"job_name": "c"}])
    data = json.loads(path.read_text())
    assert [j["job_name"] for j in data["jobs"]] == ["a", "b", "c"]
    assert first.operation_id != second.operation_id
    assert data["operation_id"] == second.operation_id  # a file with a new flush never looks already seen
    doc = tf.read_triggers(path)
    assert [(o.operation_id, [j["job_name"] for j in o.jobs]) for o in doc.operations] == [
        (first.operation_id, ["a"]), (second.operation_id, ["b", "c"])]


def test_plain_contract_file_is_read_as_one_operation(tmp_path: Path) -> None:
    path = tmp_path / "triggers.json"
    path.write_text(json.dumps({"type": "trigger_job", "operation_id": "op-1", "trigger_type": "runnerlib",
                                "jobs": [{"job_name": "x"}]}))
    doc = tf.read_triggers(path)
    assert [(o.operation_id, len(o.jobs)) for o in doc.operations] == [("op-1", 1)]
    tf.append_operation(path, [{"job_name": "y"}])
    assert [j["job_name"] for j in tf.read_triggers(path).jobs] == ["x", "y"]


@pytest.mark.parametrize("content, rule", [
    ("[1, 2]", "trigger_job"),
    ('{"type": "trigger_job", "jobs": [{"job_name": "../x"}]}', "jobs[0].job_name"),
    ('{"type": "trigger_job", "jobs": [{"job_name": "a", "surprise": 1}]}', "jobs[0].surprise"),
    ('{"type": "trigger_job", "jobs": [{"job_name": "a"}], "operations": [{"operation_id": "x", "jobs": 3}]}',
     "operations"),
    ("{not json", "not valid JSON"),
])
def test_bad_files_name_the_rule(tmp_path: Path, content: str, rule: str) -> None:
    path = tmp_path / "triggers.json"
    path.write_text(content)
    with pytest.raises(WorkflowError, match=rule.replace("[", r"\[").replace("]", r"\]")):
        tf.read_triggers(path)


def test_symlinked_triggers_file_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    (tmp_path / "triggers.json").symlink_to(target)
    with pytest.raises(WorkflowError, match="symbolic link"):
        tf.read_triggers(tmp_path / "triggers.json")


def test_write_is_atomic_no_temp_left_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "triggers.json"
    tf.append_operation(path, [{"job_name": "a"}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["triggers.json", "triggers.json.lock"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_invalid_flush_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "triggers.json"
    with pytest.raises(ValueError):
        tf.append_operation(path, [{"job_name": "ok"}, {"job_name": "bad name!"}])
    assert not path.exists()


def _flush_many(path: str, worker: int, count: int) -> None:
    for i in range(count):
        tf.append_operation(path, [{"job_name": f"w{worker}-j{i}"}])


def test_concurrent_processes_lose_no_flush(tmp_path: Path) -> None:
    path = str(tmp_path / "triggers.json")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_flush_many, args=(path, w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    threads = [threading.Thread(target=_flush_many, args=(path, 100 + t, 15)) for t in range(2)]
    for t in threads:
        t.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for t in threads:
        t.join(60)
    doc = tf.read_triggers(path)
    names = sorted(j["job_name"] for j in doc.jobs)
    expected = sorted(f"w{w}-j{i}" for w in [0, 1, 2, 3, 100, 101] for i in range(15))
    assert names == expected
    assert len({o.operation_id for o in doc.operations}) == 90


def test_without_the_lock_flushes_are_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the same concurrent writers with the lock disabled lose flushes (read-modify-write race)."""
    import contextlib
    import time

    real_read = tf.read_triggers

    def slow_read(p):  # widen the race window so the control is deterministic enough
        doc = real_read(p)
        time.sleep(0.01)
        return doc

    monkeypatch.setattr(tf, "locked", lambda _p: contextlib.nullcontext())
    monkeypatch.setattr(tf, "read_triggers", slow_read)
    path = str(tmp_path / "triggers.json")
    threads = [threading.Thread(target=_flush_many, args=(path, t, 5)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(real_read(path).jobs) < 20


def test_mark_delivered(tmp_path: Path) -> None:
    path = tmp_path / "triggers.json"
    a = tf.append_operation(path, [{"job_name": "a"}])
    tf.append_operation(path, [{"job_name": "b"}])
    tf.append_operation(path, [{"job_name": "c"}])
    tf.mark_delivered(path, [a.operation_id], "coordinator")
    ops = tf.read_triggers(path).operations
    assert ops[0].delivered == ["coordinator"] and ops[1].delivered == [] and ops[2].delivered == []
    assert [[j["job_name"] for j in op.jobs] for op in ops] == [["a"], ["b"], ["c"]]
    raw = json.loads(path.read_text())
    # What a worker submits from the file excludes what the coordinator already accepted.
    assert [j["job_name"] for j in raw["jobs"]] == ["b", "c"] and raw["delivered_jobs"] == [{"job_name": "a"}]
    assert raw["operation_id"] == ops[2].operation_id


def test_unwritable_directory_is_an_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with pytest.raises(PermissionError):
        tf.append_operation(ro / "triggers.json", [{"job_name": "a"}])
