"""Signed trigger messages: the runner's lines verify, anything an untrusted step prints does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from runnerlib.cli import main
from runnerlib.workflow import triggers_file as tf
from runnerlib.workflow.publish import publish_triggers, start_trigger_signing
from runnerlib.workflow.signing import (
    InvalidTriggerMessage,
    TriggerSigner,
    load_public_key,
    public_key_from_announcement,
    verify_message,
)


def published(tmp_path: Path, *names: str, job_id: str = "job-1") -> tuple[TriggerSigner, list[str]]:
    lines: list[str] = []
    signer = start_trigger_signing(tmp_path, job_id=job_id, emit=lines.append)
    tf.append_operation(tmp_path / "triggers.json", [{"job_name": n} for n in names])
    result = publish_triggers(tmp_path / "triggers.json", signer=signer, job_id=job_id, emit=lines.append)
    assert result.ok and result.operations == 1
    return signer, lines


def test_runner_line_verifies_with_the_announced_and_the_file_key(tmp_path: Path) -> None:
    signer, lines = published(tmp_path, "deploy")
    announcement, message = lines
    for key in (public_key_from_announcement(announcement), tmp_path / "trigger-signing.pub",
                str(tmp_path / "trigger-signing.pub"), signer.public_key_text(), signer.public_key_pem()):
        doc = verify_message(message, key, job_id="job-1")
        assert [j["job_name"] for j in doc["jobs"]] == ["deploy"]
        assert doc["job_id"] == "job-1" and doc["seq"] == 0 and doc["type"] == "trigger_job"


def test_forged_line_from_an_attacker_key_is_rejected(tmp_path: Path) -> None:
    signer, lines = published(tmp_path, "deploy")
    # The attacker knows the format and signs with a key of its own, even announcing it.
    attacker = TriggerSigner.generate()
    forged = attacker.sign_document({"type": "trigger_job", "operation_id": "x", "trigger_type": "runnerlib",
                                     "jobs": [{"job_name": "exfiltrate"}]}, job_id="job-1")
    assert verify_message(forged, attacker.public_key_text())["jobs"]  # control: valid under its own key
    with pytest.raises(InvalidTriggerMessage, match="another key"):
        verify_message(forged, signer.public_key_text())
    # Copying the genuine key_id does not help: the signature is still the attacker's.
    spoofed = json.dumps({**json.loads(forged), "key_id": signer.key_id})
    with pytest.raises(InvalidTriggerMessage, match="bad signature"):
        verify_message(spoofed, signer.public_key_text())


@pytest.mark.parametrize("change", ["payload", "signature", "domain"])
def test_tampered_line_is_rejected(tmp_path: Path, change: str) -> None:
    signer, lines = published(tmp_path, "deploy")
    data = json.loads(lines[1])
    if change == "payload":
        data["payload"] = data["payload"].replace("deploy", "deplox")
    elif change == "signature":
        sig = bytearray(__import__("base64").b64decode(data["signature"]))
        sig[0] ^= 1
        data["signature"] = __import__("base64").b64encode(bytes(sig)).decode()
    else:  # the same key signing the same bytes without the domain prefix is not a trigger signature
        raw = signer._private_key.sign(data["payload"].encode())
        data["signature"] = __import__("base64").b64encode(raw).decode()
    with pytest.raises(InvalidTriggerMessage, match="bad signature"):
        verify_message(json.dumps(data), signer.public_key_text())


def test_wrong_job_and_malformed_lines(tmp_path: Path) -> None:
    signer, lines = published(tmp_path, "deploy", job_id="job-1")
    with pytest.raises(InvalidTriggerMessage, match="not 'job-2'"):
        verify_message(lines[1], signer.public_key_text(), job_id="job-2")
    for bad in ["", "hello", "[1]", '{"reactorcide_trigger": 2}', '{"reactorcide_trigger": 1, "payload": 1}']:
        with pytest.raises(InvalidTriggerMessage):
            verify_message(bad, signer.public_key_text())
    with pytest.raises(InvalidTriggerMessage, match="public key"):
        load_public_key("ed25519:not-base64!")


def test_signer_never_shows_key_material() -> None:
    signer = TriggerSigner.generate()
    assert "PRIVATE" not in repr(signer) and signer.key_id in repr(signer)


def test_payload_is_masked_before_signing(tmp_path: Path) -> None:
    from runnerlib.security.registry import SecretRegistry

    registry = SecretRegistry()
    registry.add("hunter2-very-secret", source="test")
    tf.append_operation(tmp_path / "triggers.json", [{"job_name": "d", "env": {"P": "x-hunter2-very-secret"}}])
    lines: list[str] = []
    signer = TriggerSigner.generate()
    publish_triggers(tmp_path / "triggers.json", signer=signer, registry=registry, job_id="1", emit=lines.append)
    assert "hunter2" not in lines[0] and "very-secret" not in lines[0]
    assert verify_message(lines[0], signer.public_key_text())["jobs"][0]["env"]["P"] == "x-***"


def test_cli_verify(tmp_path: Path) -> None:
    signer, lines = published(tmp_path, "deploy")
    forged = TriggerSigner.generate().sign_document({"type": "trigger_job", "jobs": [{"job_name": "evil"}]},
                                                    job_id="job-1")
    stream = "\n".join(["build output", lines[0], forged, lines[1], "[step] " + lines[1]]) + "\n"
    result = CliRunner().invoke(main, ["workflow", "verify", "--public-key", str(tmp_path / "trigger-signing.pub")],
                                input=stream)
    assert result.exit_code == 1
    verified = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [d["jobs"][0]["job_name"] for d in verified] == ["deploy"]
    assert "rejected line 3" in result.stderr and "rejected line 5" in result.stderr
    clean = CliRunner().invoke(main, ["workflow", "verify", "--public-key", signer.public_key_text()],
                               input=lines[1] + "\n")
    assert clean.exit_code == 0


def _run_job(job_yaml: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    job_file = workspace.parent / "job.yaml"
    job_file.write_text(job_yaml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    env.update({"REACTORCIDE_WORKSPACE_ROOT": str(workspace), "REACTORCIDE_JOB_ID": "job-e2e"})
    return subprocess.run([sys.executable, "-m", "runnerlib.cli", "run-job", str(job_file)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_forged_trigger_from_an_untrusted_step_end_to_end() -> None:
    """A real job: an untrusted step prints a forged trigger and tries the triggers file; a trusted step
    triggers for real. The worker's verification keeps exactly the trusted step's trigger."""
    root = Path(tempfile.mkdtemp(prefix="wf-sign-"))
    os.chmod(root, 0o755)
    workspace = root / "ws"
    (workspace / "src").mkdir(parents=True)
    attacker = TriggerSigner.generate()
    forged = attacker.sign_document({"type": "trigger_job", "operation_id": "f", "trigger_type": "runnerlib",
                                     "jobs": [{"job_name": "evil"}]}, job_id="job-e2e")
    job = f"""
name: e2e
steps:
  - name: attacker
    trust: untrusted
    command: |
      printf '%s\\n' '{attacker.announcement("job-e2e")}'
      printf '%s\\n' '{forged}'
      echo '{{"type":"trigger_job","jobs":[{{"job_name":"evil2"}}]}}' > {workspace}/triggers.json || true
  - name: trusted
    depends_on: [attacker]
    command: |
      {sys.executable} -c "import runnerlib; runnerlib.trigger_job('deploy')"
"""
    proc = _run_job(job, workspace)
    if "refused" in proc.stdout and "attacker" in proc.stdout and proc.returncode == 126:
        pytest.skip("the sandbox for untrusted steps is not available here")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    key_file = workspace / "trigger-signing.pub"
    # The runner announced its key first, before any step output.
    assert public_key_from_announcement(lines[0]).public_bytes_raw() == \
        load_public_key(key_file).public_bytes_raw()
    verified, rejected = [], []
    for line in lines:
        if '"reactorcide_trigger"' not in line:
            continue
        try:
            verified.append(verify_message(line, key_file, job_id="job-e2e"))
        except InvalidTriggerMessage:
            rejected.append(line)
    assert [j["job_name"] for d in verified for j in d["jobs"]] == ["deploy"]
    assert any("evil" in line for line in rejected)
    # The forged line is valid under the attacker's key: the rejection is the job key's doing.
    assert any(line.endswith(forged) for line in rejected)  # printed intact by the untrusted step
    assert verify_message(forged, attacker.public_key_text())
    # And the triggers file holds only the trusted step's trigger.
    assert [j["job_name"] for j in tf.read_triggers(workspace / "triggers.json").jobs] == ["deploy"]


def test_three_transports_end_to_end_with_a_real_coordinator(https_server, certificate) -> None:
    """A real job with a coordinator configured: the trusted step's trigger reaches the coordinator (once),
    the triggers file and a signed stdout line; the untrusted step sees no token and forges nothing."""
    from wf_coordinator_server import TOKEN

    root = Path(tempfile.mkdtemp(prefix="wf-three-"))
    os.chmod(root, 0o755)
    workspace = root / "ws"
    (workspace / "src").mkdir(parents=True)
    job = f"""
name: three
steps:
  - name: attacker
    trust: untrusted
    command: |
      echo "token=${{REACTORCIDE_API_TOKEN:-absent}} url=${{REACTORCIDE_COORDINATOR_URL:-absent}}"
  - name: trusted
    depends_on: [attacker]
    command: |
      {sys.executable} -c "import runnerlib; runnerlib.trigger_job('deploy'); runnerlib.trigger_job('notify')"
"""
    job_file = root / "job.yaml"
    job_file.write_text(job)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    env.update({"REACTORCIDE_WORKSPACE_ROOT": str(workspace), "REACTORCIDE_JOB_ID": "job-3",
                "REACTORCIDE_COORDINATOR_URL": https_server.url, "REACTORCIDE_API_TOKEN": TOKEN,
                "REACTORCIDE_COORDINATOR_CA_FILE": str(certificate[0])})
    proc = subprocess.run([sys.executable, "-m", "runnerlib.cli", "run-job", str(job_file)], env=env,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode == 126 and "refused" in proc.stdout:
        pytest.skip("the sandbox for untrusted steps is not available here")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "token=absent url=absent" in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr
    # Coordinator: two operations, each created once, though the runner's publish saw them too.
    created = https_server.state.created
    assert sorted(j["job_name"] for jobs in created.values() for j in jobs) == ["deploy", "notify"]
    assert len([r for r in https_server.state.requests if r["method"] == "POST"]) == 2
    # Stdout: nothing left to carry (the coordinator has both), so no trigger line at all.
    assert not [line for line in proc.stdout.splitlines() if line.startswith('{"reactorcide_trigger":')]
    # File: both operations recorded as delivered, none left in "jobs" for a worker to submit again.
    ops = tf.read_triggers(workspace / "triggers.json").operations
    assert {o.operation_id for o in ops} == set(created) and all(o.delivered == ["coordinator"] for o in ops)
    assert json.loads((workspace / "triggers.json").read_text())["jobs"] == []


def test_private_key_never_reaches_the_workspace_or_the_lines(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    signer, lines = published(tmp_path, "deploy")
    raw = signer._private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                            serialization.NoEncryption())
    import base64

    forms = [raw, raw.hex().encode(), base64.b64encode(raw), raw[:16], base64.b64encode(raw)[:16]]
    blobs = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()] + [line.encode() for line in lines]
    assert blobs and not any(form in blob for form in forms for blob in blobs)
    # Control: the same scan finds the public key, so it would find the private one.
    public = signer._private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)
    assert any(base64.b64encode(public) in blob for blob in blobs)
