"""The Python API: trigger_job(s) through the file and the coordinator, job state, log_next_job, context."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from wf_coordinator_server import TOKEN

import runnerlib
from runnerlib.workflow import api
from runnerlib.workflow import triggers_file as tf
from runnerlib.workflow.api import TriggerDeliveryError
from runnerlib.workflow.models import WorkflowError
from runnerlib.workflow.publish import publish_triggers
from runnerlib.workflow.signing import TriggerSigner, verify_message
from runnerlib.workflow.state import write_json


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"REACTORCIDE_TRIGGERS_FILE": str(tmp_path / "triggers.json"), "REACTORCIDE_JOB_ID": "job-7", **extra}


def test_exported_from_the_package() -> None:
    assert runnerlib.trigger_job is api.trigger_job and runnerlib.workflow_context is api.workflow_context
    assert runnerlib.JobTrigger.__name__ == "JobTrigger"


def test_trigger_job_writes_the_file(tmp_path: Path) -> None:
    op = api.trigger_job("deploy-staging", env={"DEPLOY_TARGET": "staging"}, depends_on=["test", "build"],
                         condition="all_success", job_command="make deploy", timeout="30m",
                         environ=env_for(tmp_path))
    data = json.loads((tmp_path / "triggers.json").read_text())
    assert data["operation_id"] == op
    assert data["jobs"] == [{"job_name": "deploy-staging", "depends_on": ["test", "build"],
                             "condition": "all_success", "env": {"DEPLOY_TARGET": "staging"},
                             "job_command": "make deploy", "timeout": 1800}]


def test_trigger_jobs_is_one_operation_and_validates_all_first(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    api.trigger_jobs([{"job_name": "build-linux", "env": {"PLATFORM": "linux"}},
                      {"job_name": "build-macos", "env": {"PLATFORM": "macos"}}], environ=env)
    with pytest.raises(WorkflowError, match="job_name"):
        api.trigger_jobs([{"job_name": "ok"}, {"job_name": "not ok!"}], environ=env)
    with pytest.raises(WorkflowError, match="unknown_field"):
        api.trigger_job("x", unknown_field=1, environ=env)
    doc = tf.read_triggers(tmp_path / "triggers.json")
    assert len(doc.operations) == 1 and [j["job_name"] for j in doc.jobs] == ["build-linux", "build-macos"]


def test_secrets_are_masked_before_they_are_written(tmp_path: Path) -> None:
    secret = "s3cr3t-db-password-9931"
    env = env_for(tmp_path, DB_PASSWORD=secret, REACTORCIDE_SECRET_ENV_NAMES="DB_PASSWORD")
    api.trigger_job("deploy", env={"DSN": f"postgres://app:{secret}@db/x", "NOTE": "fine"}, environ=env)
    text = (tmp_path / "triggers.json").read_text()
    assert secret not in text and secret[:10] not in text and secret[-10:] not in text
    assert '"NOTE": "fine"' in text


def test_the_same_secret_is_written_when_not_registered(tmp_path: Path) -> None:
    """Control for the test above: without the secret known, the value goes through unchanged."""
    secret = "s3cr3t-db-password-9931"
    api.trigger_job("deploy", env={"DSN": f"postgres://app@db/x?p={secret}"}, environ=env_for(tmp_path))
    assert secret in (tmp_path / "triggers.json").read_text()


def test_untrusted_style_write_refused_with_a_clear_error(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes anywhere; the sandbox test covers untrusted steps")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with pytest.raises(WorkflowError, match="only trusted steps can trigger"):
        api.trigger_job("x", environ={"REACTORCIDE_TRIGGERS_FILE": str(ro / "triggers.json")})


def test_coordinator_post_and_delivery_recorded(tmp_path: Path, https_server, certificate, capsys) -> None:
    env = env_for(tmp_path, REACTORCIDE_COORDINATOR_URL=https_server.url, REACTORCIDE_API_TOKEN=TOKEN,
                  REACTORCIDE_COORDINATOR_CA_FILE=str(certificate[0]))
    op = api.trigger_job("deploy", environ=env)
    assert https_server.state.created == {op: [{"job_name": "deploy"}]}
    assert https_server.state.requests[0]["path"] == "/api/v1/jobs/job-7/triggers"
    doc = tf.read_triggers(tmp_path / "triggers.json")
    assert doc.operations[0].delivered == ["coordinator"]
    # A worker that submits the file's "jobs" does not submit it again (it moved to "delivered_jobs").
    raw = json.loads((tmp_path / "triggers.json").read_text())
    assert raw["jobs"] == [] and raw["delivered_jobs"] == [{"job_name": "deploy"}]
    # A second flush that the coordinator could not take stays in "jobs".
    https_server.state.plans += [__import__("wf_coordinator_server").Plan(status=503)] * 4
    api.trigger_job("notify", environ=env)  # an outage is a warning: the runner delivers it later
    assert "HTTP 503" in capsys.readouterr().err
    raw = json.loads((tmp_path / "triggers.json").read_text())
    assert raw["jobs"] == [{"job_name": "notify"}] and raw["operation_id"] != op
    # The runner's publish signs and posts only what the coordinator has not accepted.
    from runnerlib.workflow.coordinator import CoordinatorClient

    client = CoordinatorClient(https_server.url, TOKEN, cafile=str(certificate[0]))
    lines: list[str] = []
    signer = TriggerSigner.generate()
    result = publish_triggers(tmp_path / "triggers.json", signer=signer, job_id="job-7", emit=lines.append,
                              coordinator=client)
    assert len(result.posted) == 1 and len(lines) == 1
    assert verify_message(lines[0], signer.public_key_text())["jobs"] == [{"job_name": "notify"}]
    assert sorted(j["job_name"] for jobs in https_server.state.created.values() for j in jobs) == \
        ["deploy", "notify"]
    raw = json.loads((tmp_path / "triggers.json").read_text())
    assert raw["jobs"] == [] and [j["job_name"] for j in raw["delivered_jobs"]] == ["deploy", "notify"]


def test_publish_posts_operations_not_yet_delivered(tmp_path: Path, https_server, certificate) -> None:
    from runnerlib.workflow.coordinator import CoordinatorClient

    op = api.trigger_job("deploy", environ=env_for(tmp_path))  # no coordinator configured in the step
    client = CoordinatorClient(https_server.url, TOKEN, cafile=str(certificate[0]))
    result = publish_triggers(tmp_path / "triggers.json", signer=TriggerSigner.generate(), job_id="job-7",
                              emit=lambda _l: None, coordinator=client)
    assert result.posted == [op] and op in https_server.state.created
    again = publish_triggers(tmp_path / "triggers.json", signer=TriggerSigner.generate(), job_id="job-7",
                             emit=lambda _l: None, coordinator=client)
    assert again.posted == []


def test_coordinator_refusal_is_a_clear_masked_error(tmp_path: Path, https_server, certificate) -> None:
    env = env_for(tmp_path, REACTORCIDE_COORDINATOR_URL=https_server.url, REACTORCIDE_API_TOKEN="wrong-token-123",
                  REACTORCIDE_COORDINATOR_CA_FILE=str(certificate[0]))
    with pytest.raises(TriggerDeliveryError) as info:
        api.trigger_job("deploy", environ=env)
    assert "HTTP 401" in str(info.value) and "wrong-token-123" not in str(info.value)
    assert "the runner delivers it" in str(info.value)
    plain = env_for(tmp_path, REACTORCIDE_COORDINATOR_URL="http://127.0.0.1:1", REACTORCIDE_API_TOKEN=TOKEN)
    with pytest.raises(TriggerDeliveryError, match="allow-insecure-transport"):
        api.trigger_job("deploy", environ=plain)
    assert len(tf.read_triggers(tmp_path / "triggers.json").operations) == 2


def test_job_state_from_the_coordinator(https_server, certificate) -> None:
    https_server.state.jobs = [{"job_id": "3", "name": "deploy-production", "status": "running"},
                               {"job_id": "2", "name": "test", "status": "success", "exit_code": 0,
                                "outputs": {"coverage": 91}}]
    env = {"REACTORCIDE_COORDINATOR_URL": https_server.url, "REACTORCIDE_API_TOKEN": TOKEN,
           "REACTORCIDE_COORDINATOR_CA_FILE": str(certificate[0])}
    assert api.is_job_running("deploy-production", environ=env)
    assert not api.is_job_running("test", environ=env)
    result = api.get_job_result("test", environ=env)
    assert result["exit_code"] == 0 and result["outputs"] == {"coverage": 91}
    assert api.get_job_result("never-ran", environ=env) is None


def test_job_state_from_the_local_workflow_state(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    write_json(state, {"jobs": {
        "test[a]": {"status": "success", "exit_code": 0, "base_name": "test"},
        "test[b]": {"status": "failed", "exit_code": 2, "base_name": "test"},
        "build": {"status": "running", "base_name": "build"},
        "lint": {"status": "success", "exit_code": 0, "base_name": "lint", "outputs": {"warnings": 0}},
    }})
    env = {"REACTORCIDE_WORKFLOW_STATE": str(state)}
    assert api.is_job_running("build", environ=env) and not api.is_job_running("lint", environ=env)
    assert api.get_job_result("lint", environ=env)["outputs"] == {"warnings": 0}
    both = api.get_job_result("test", environ=env)
    assert both["status"] == "failed" and both["exit_code"] == 2 and set(both["instances"]) == {"test[a]", "test[b]"}
    assert api.get_job_result("test[a]", environ=env)["status"] == "success"
    assert api.get_job_result("nothing", environ=env) is None


def test_job_state_in_simple_mode_answers_from_the_job_itself() -> None:
    """Neither coordinator nor workflow run: no exception; an unknown job has no state (tests/test_api_simple
    covers this job's own name and its triggers)."""
    assert api.is_job_running("x", environ={}) is False
    assert api.get_job_result("x", environ={}) is None


def test_log_next_job_prints_the_design_format(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    write_json(state, {"jobs": {"test": {"status": "success"}, "build": {"status": "success"}}})
    out = io.StringIO()
    text = api.log_next_job("deploy-staging", reason="tests passed", depends_on=["test", "build"],
                            workflow_file="pipeline.yaml", stream=out,
                            environ={"REACTORCIDE_WORKFLOW_STATE": str(state)})
    assert out.getvalue() == text
    assert text == (
        "📋 Next jobs to run:\n"
        "  → deploy-staging (waiting on: test, build - all complete)\n"
        "    reason: tests passed\n\n"
        "Run the next job:\n"
        "  $ python -m runnerlib.cli run --job deploy-staging --workflow-file pipeline.yaml\n")
    write_json(state, {"jobs": {"test": {"status": "running"}}})
    text = api.log_next_job("deploy", depends_on=["test", "build"], stream=io.StringIO(),
                            environ={"REACTORCIDE_WORKFLOW_STATE": str(state)})
    assert "(waiting on: test, build - test: running, build: not started)" in text
    plain = api.log_next_job("deploy", stream=io.StringIO(), environ={})
    assert "  → deploy\n" in plain and "--workflow-file <workflow.yaml>" in plain


def test_workflow_context_outputs_and_vars(tmp_path: Path) -> None:
    env = {"REACTORCIDE_WORKFLOW_OUTPUT": str(tmp_path / "workflow-output.json"), "REACTORCIDE_BRANCH": "main",
           "REACTORCIDE_WORKFLOW_JOB": "build[x]", "REACTORCIDE_WORKFLOW_ITEM": "x",
           "REACTORCIDE_WORKFLOW_VARS": '{"A": "1"}', "API_TOKEN": "tok-abcdef-123456"}
    ctx = api.workflow_context(environ=env)
    assert (ctx.branch, ctx.job_name, ctx.item, ctx.vars) == ("main", "build[x]", "x", {"A": "1"})
    ctx.set_output("image", "app:1")
    ctx.set_output("leak", "token=tok-abcdef-123456")
    ctx.set_var("VERSION", "1.2")
    data = json.loads((tmp_path / "workflow-output.json").read_text())
    assert data == {"outputs": {"image": "app:1", "leak": "token=***"}, "vars": {"VERSION": "1.2"}}
    assert ctx.outputs()["image"] == "app:1"
    with pytest.raises(WorkflowError, match="JSON"):
        ctx.set_output("bad", object())


def test_earlier_runnerlib_context_names_still_work(tmp_path: Path) -> None:
    """Job scripts written for the earlier runnerlib: context manager, submit_job, set_workflow_*, RC_WF_*."""
    env = {"RC_WF_OUTPUT_FILE": str(tmp_path / "out.json"), "RC_WF_VARS_JSON": '{"REGION": "eu", "N": 2}',
           "RC_WF_ID": "wf-9", "REACTORCIDE_JOB_ID": "j"}
    with api.workflow_context(tmp_path / "triggers.json", environ=env) as ctx:
        ctx.trigger_job("deploy", env={"TARGET": "staging"}, depends_on=["test"])
        ctx.submit_job("notify")
        ctx.set_workflow_output("url", "https://x")
        ctx.set_workflow_var("VERSION", "2")
        ctx.flush_triggers()
        assert ctx.workflow_vars() == {"REGION": "eu", "N": "2"} and ctx.workflow_id == "wf-9"
    names = [j["job_name"] for j in tf.read_triggers(tmp_path / "triggers.json").jobs]
    assert names == ["deploy", "notify"]
    assert json.loads((tmp_path / "out.json").read_text()) == {"outputs": {"url": "https://x"},
                                                                "vars": {"VERSION": "2"}}
