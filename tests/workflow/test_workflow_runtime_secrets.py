"""A secret registered at run time by one trusted step never reaches triggers.json or workflow-output.json
written by another: the workflow API has the runner mask every payload over the secrets socket, since the
writing process's own registry cannot know that secret. If the socket is configured but cannot mask, nothing
is written (fail closed)."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runnerlib.security.registry import SecretRegistry
from runnerlib.security.secret_socket import SecretSocketServer
from runnerlib.workflow.api import PayloadMaskingError, log_next_job, trigger_job, workflow_context

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]


def new_value() -> str:
    return "rt-" + secrets.token_hex(12)


def fragments(value: str, size: int = 6) -> list[str]:
    return [value[i:i + size] for i in range(len(value) - size + 1)]


def leaked(text: str, value: str) -> list[str]:
    """Every 6-character fragment of `value` found in `text` (tests look for fragments, not whole values)."""
    return [piece for piece in fragments(value) if piece in text]


@pytest.fixture
def runner_side() -> Iterator[tuple[SecretRegistry, SecretSocketServer]]:
    """The runner's side: its registry and the registration socket, as runner.py starts them."""
    registry = SecretRegistry()
    with SecretSocketServer(registry) as server:
        yield registry, server


def step_env(server: SecretSocketServer | None, **extra: str) -> dict[str, str]:
    """A trusted step's environment: no REACTORCIDE_* of the test process, the socket when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    env["PYTHONPATH"] = str(REPO)
    if server is not None:
        env.update(server.env())
    env.update(extra)
    return env


def run_step(code: str, env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    """A separate process; the value arrives on stdin (as a fetched token would), never in its environment."""
    return subprocess.run([PYTHON, "-c", code], env=env, input=stdin, capture_output=True, text=True, timeout=60)


REGISTER = "import sys, runnerlib; runnerlib.register_secret(sys.stdin.read())"
TRIGGER = ("import sys, runnerlib; v = sys.stdin.read(); "
           "runnerlib.trigger_job('deploy', env={'DSN': 'postgres://app:' + v + '@db', 'RAW': v})")


@pytest.mark.parametrize("mask_call", [True, False], ids=["socket-mask", "control-no-mask-call"])
def test_value_registered_by_one_step_never_reaches_the_triggers_file_of_another(runner_side, shared_dir,
                                                                                 mask_call):
    registry, server = runner_side
    value = new_value()
    triggers = shared_dir / "triggers.json"
    first = run_step(REGISTER, step_env(server), value)
    assert first.returncode == 0, first.stderr
    assert value.encode() in registry.secrets()
    env = step_env(server, REACTORCIDE_TRIGGERS_FILE=str(triggers))
    assert value not in json.dumps(env)
    if not mask_call:
        del env["REACTORCIDE_SECRETS_SOCKET"]  # the second step masks with its own registry only
    second = run_step(TRIGGER, env, value)
    assert second.returncode == 0, second.stderr
    text = triggers.read_text()
    # Readable by every uid (an untrusted step running in parallel too): what is in it is what leaks.
    assert stat.S_IMODE(triggers.stat().st_mode) & 0o004
    if mask_call:
        assert leaked(text, value) == []
        job = json.loads(text)["jobs"][0]
        assert job["env"] == {"DSN": "postgres://app:***@db", "RAW": "***"}
    else:
        assert value in text  # without the runner's mask the value is written in clear


def test_in_process_control_with_the_mask_call_patched_out(runner_side, shared_dir, monkeypatch):
    """The same, in one process: with secrets_client.mask_texts replaced by the identity the value leaks."""
    registry, server = runner_side
    value = new_value()
    registry.add(value, source="another step")
    env = step_env(server, REACTORCIDE_TRIGGERS_FILE=str(shared_dir / "t.json"))
    trigger_job("deploy", env={"V": value}, environ=env)
    assert leaked((shared_dir / "t.json").read_text(), value) == []
    from runnerlib import secrets_client

    monkeypatch.setattr(secrets_client, "mask_texts", lambda texts, **_: list(texts))
    env["REACTORCIDE_TRIGGERS_FILE"] = str(shared_dir / "u.json")
    trigger_job("deploy", env={"V": value}, environ=env)
    assert value in (shared_dir / "u.json").read_text()


def test_local_secrets_are_masked_as_well(runner_side, shared_dir):
    """Both maskers apply: a secret only the step itself knows (its env) is masked even though the runner
    has never heard of it."""
    _, server = runner_side
    own = new_value()
    env = step_env(server, REACTORCIDE_TRIGGERS_FILE=str(shared_dir / "t.json"), DEPLOY_TOKEN=own)
    trigger_job("deploy", env={"X": own}, environ=env)
    assert leaked((shared_dir / "t.json").read_text(), own) == []


def test_outputs_vars_and_log_next_job_go_through_the_runner(runner_side, shared_dir):
    registry, server = runner_side
    value = new_value()
    registry.add(value, source="another step")
    env = step_env(server, REACTORCIDE_WORKFLOW_OUTPUT=str(shared_dir / "out.json"))
    ctx = workflow_context(environ=env)
    ctx.set_output("image", f"registry/app:{value}")
    ctx.set_var("PASSWORD_HINT", value)
    ctx.set_output(value, {"nested": [value, 3]})
    text = (shared_dir / "out.json").read_text()
    assert leaked(text, value) == []
    assert json.loads(text)["outputs"] == {"image": "registry/app:***", "***": {"nested": ["***", 3]}}
    printed = log_next_job("deploy", reason=f"built {value}", environ=env, stream=open(os.devnull, "w"))
    assert "reason: built ***" in printed
    # Control: without the socket, the same calls write the value.
    plain = step_env(None, REACTORCIDE_WORKFLOW_OUTPUT=str(shared_dir / "plain.json"))
    workflow_context(environ=plain).set_output("image", value)
    assert value in (shared_dir / "plain.json").read_text()


def test_a_byte_list_is_masked_by_the_runner(runner_side, shared_dir):
    """A value only the runner knows, held as a list of byte values, also in a list longer than one text the
    socket takes (windows): every item becomes "***". Control: the same list without the socket is written."""
    registry, server = runner_side
    value = new_value()
    registry.add(value, source="another step")
    env = step_env(server, REACTORCIDE_WORKFLOW_OUTPUT=str(shared_dir / "out.json"))
    ctx = workflow_context(environ=env)
    long = [0xFF, 0x00] * 49_147 + list(value.encode()) + [0x80] * 30_000  # across the edge at 96 Ki items
    ctx.set_output("short", list(value.encode()))
    ctx.set_output("long", long)
    outputs = json.loads((shared_dir / "out.json").read_text())["outputs"]
    assert set(outputs["short"]) == {"***"} and set(outputs["long"]) == {"***"}
    plain = step_env(None, REACTORCIDE_WORKFLOW_OUTPUT=str(shared_dir / "plain.json"))
    workflow_context(environ=plain).set_output("short", list(value.encode()))
    assert bytes(json.loads((shared_dir / "plain.json").read_text())["outputs"]["short"]) == value.encode()


# --- fail closed ----------------------------------------------------------------------------------------------


def test_unreachable_socket_writes_nothing(shared_dir):
    value = new_value()
    env = step_env(None, REACTORCIDE_SECRETS_SOCKET=str(shared_dir / "gone.sock"),
                   REACTORCIDE_SECRETS_TOKEN="t" * 43, REACTORCIDE_TRIGGERS_FILE=str(shared_dir / "t.json"),
                   REACTORCIDE_WORKFLOW_OUTPUT=str(shared_dir / "out.json"))
    with pytest.raises(PayloadMaskingError, match="cannot connect to the secrets socket") as info:
        trigger_job("deploy", env={"V": value}, environ=env)
    assert "nothing was written" in str(info.value) and value not in str(info.value)
    assert not (shared_dir / "t.json").exists()
    with pytest.raises(PayloadMaskingError):
        workflow_context(environ=env).set_output("v", value)
    assert not (shared_dir / "out.json").exists()
    with open(shared_dir / "printed", "w") as stream, pytest.raises(PayloadMaskingError):
        log_next_job("deploy", reason=value, environ=env, stream=stream)
    assert (shared_dir / "printed").read_text() == ""


def test_socket_that_refuses_writes_nothing(runner_side, shared_dir):
    registry, server = runner_side
    value = new_value()
    registry.add(value, source="another step")
    env = step_env(server, REACTORCIDE_TRIGGERS_FILE=str(shared_dir / "t.json"))
    env["REACTORCIDE_SECRETS_TOKEN"] = "not-the-token"
    with pytest.raises(PayloadMaskingError, match="authentication failed"):
        trigger_job("deploy", env={"V": value}, environ=env)
    assert not (shared_dir / "t.json").exists()


def test_trigger_cli_fails_closed_too(shared_dir):
    """`runnerlib trigger` (the shell form) goes through the same API: exit non-zero, no file."""
    env = step_env(None, REACTORCIDE_SECRETS_SOCKET=str(shared_dir / "gone.sock"),
                   REACTORCIDE_SECRETS_TOKEN="t" * 43, REACTORCIDE_TRIGGERS_FILE=str(shared_dir / "t.json"))
    proc = subprocess.run([PYTHON, "-m", "runnerlib.cli", "trigger", "deploy"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "secrets socket" in proc.stdout + proc.stderr
    assert not (shared_dir / "t.json").exists()


# --- end to end: a real job ---------------------------------------------------------------------------------


JOB = """
name: runtime-secret
steps:
  - name: fetch
    command: |
      {python} -c "{register}"
  - name: trigger
    depends_on: [fetch]
    command: |
      {prefix}{python} -c "import runnerlib; v = open('{value_file}').read(); runnerlib.trigger_job('deploy', env={{'DSN': 'postgres://app:' + v + '@db'}})"
"""


REGISTER_WAYS = {
    "register_secret": "import runnerlib; runnerlib.register_secret(open('{value_file}').read())",
    "add-mask": "print('::add-mask::' + open('{value_file}').read(), flush=True)",
}


@pytest.mark.parametrize("way", sorted(REGISTER_WAYS))
@pytest.mark.parametrize("mask_call", [True, False], ids=["socket-mask", "control-no-mask-call"])
def test_real_job_two_trusted_steps(shared_dir, mask_call, way):
    """`runnerlib run-job`: step "fetch" registers a value it obtained (over the socket, or in band); step
    "trigger", a separate process whose environment never held the value, triggers a job with it. The
    triggers file holds "***"; with the mask call disabled (the socket variable removed for the trigger step)
    the value is in the file."""
    value = new_value()
    value_file = shared_dir / "value"
    value_file.write_text(value)
    workspace = shared_dir / "ws"
    (workspace / "src").mkdir(parents=True)
    prefix = "" if mask_call else "env -u REACTORCIDE_SECRETS_SOCKET "
    job_file = shared_dir / "job.yaml"
    register = REGISTER_WAYS[way].format(value_file=value_file)
    job_file.write_text(JOB.format(python=PYTHON, value_file=value_file, prefix=prefix, register=register))
    env = step_env(None, REACTORCIDE_WORKSPACE_ROOT=str(workspace), REACTORCIDE_JOB_ID="job-rt")
    proc = subprocess.run([PYTHON, "-m", "runnerlib.cli", "run-job", str(job_file)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert leaked(proc.stdout + proc.stderr, value) == []  # the runner's own output is masked either way
    text = (workspace / "triggers.json").read_text()
    if mask_call:
        assert leaked(text, value) == []
        env = json.loads(text)["jobs"][0]["env"]
        # The step's TRACEPARENT rides along (the triggered job continues the trace: docs/observability.md).
        assert {k: v for k, v in env.items() if not k.endswith("TRACEPARENT")} == {"DSN": "postgres://app:***@db"}
    else:
        assert value in text
