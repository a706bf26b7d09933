"""`runnerlib workflow render --target kubernetes`: batch/v1 Job manifests, checked against the official
Kubernetes schemas (kubernetes-validate, strict) for 1.29 and 1.37. No API server can run here."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runnerlib.workflow.kubernetes import RenderOptions, dns_label, render_workflow, to_yaml
from runnerlib.workflow.models import WorkflowError, load_workflow, parse_workflow_text

kubernetes_validate = pytest.importorskip("kubernetes_validate")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "ci.yaml"
VERSIONS = ("1.29.0", "1.37.0")


def _render(text: str, **options: object) -> list[dict]:
    return render_workflow(parse_workflow_text(text, "wf.yaml"), RenderOptions(run_id="t1", **options))


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_of_the_example_passes_strict_validation(version: str) -> None:
    manifests = render_workflow(load_workflow(EXAMPLE), RenderOptions(branch="main", event="push", run_id="r1"))
    assert len(manifests) == 6  # five jobs, build twice (for_each)
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_validator_rejects_what_it_should() -> None:
    """Control: a typo'd field and a wrong type fail the same strict validation the test above passes."""
    manifest = render_workflow(load_workflow(EXAMPLE), RenderOptions(run_id="r1"))[0]
    typo = copy.deepcopy(manifest)
    typo["spec"]["template"]["spec"]["automountServiceAcountToken"] = False
    wrong = copy.deepcopy(manifest)
    wrong["spec"]["activeDeadlineSeconds"] = "300"
    for broken in (typo, wrong):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, "1.37.0", strict=True)


def test_pod_is_hardened() -> None:
    for manifest in render_workflow(load_workflow(EXAMPLE), RenderOptions(run_id="r1")):
        pod = manifest["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["restartPolicy"] == "Never"
        (container,) = pod["containers"]
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["privileged"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert set(ctx["capabilities"]["add"]) <= {"CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"}
        assert container["command"] == ["python", "-m", "runnerlib.cli", "run"]
        assert {"name": "job", "mountPath": "/job"} in container["volumeMounts"]
        assert {"name": "job", "emptyDir": {}} in pod["volumes"]


def test_dag_timeout_resources_and_labels() -> None:
    manifests = {m["metadata"]["annotations"]["reactorcide.dev/job-name"]: m
                 for m in render_workflow(load_workflow(EXAMPLE), RenderOptions(run_id="r1"))}
    assert set(manifests) == {"lint", "test", "build[linux]", "build[darwin]", "report", "deploy"}
    deploy = manifests["deploy"]
    deps = deploy["metadata"]["annotations"]["reactorcide.dev/depends-on"].split(",")
    assert sorted(deps) == sorted(manifests[b]["metadata"]["name"] for b in ("build[linux]", "build[darwin]"))
    assert manifests["report"]["metadata"]["annotations"]["reactorcide.dev/condition"] == "always"
    assert manifests["lint"]["spec"]["activeDeadlineSeconds"] == 300
    assert manifests["test"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == \
        {"cpu": "1", "memory": "512Mi"}
    for m in manifests.values():
        labels = m["metadata"]["labels"]
        assert labels["reactorcide.dev/workflow"] == "example-ci" and labels["reactorcide.dev/run"] == "r1"
        assert m["spec"]["template"]["metadata"]["labels"] == labels
    env = {e["name"]: e.get("value") for e in manifests["build[linux]"]["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["PLATFORM"] == "linux" and env["REACTORCIDE_JOB_NAME"] == "build[linux]"


def test_secrets_travel_as_references_and_are_named_for_masking() -> None:
    manifests = _render("""
name: d
jobs:
  deploy:
    command: ./deploy.sh
    secrets: {DEPLOY_TOKEN: deploy-credentials/token, DB_PASSWORD: db/password}
""")
    env = manifests[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs == {"DEPLOY_TOKEN": {"name": "deploy-credentials", "key": "token"},
                    "DB_PASSWORD": {"name": "db", "key": "password"}}
    names = next(e["value"] for e in env if e["name"] == "REACTORCIDE_SECRET_ENV_NAMES")
    assert names.split(",") == ["DB_PASSWORD", "DEPLOY_TOKEN"]
    assert not any("envFrom" in c for c in manifests[0]["spec"]["template"]["spec"]["containers"])


@pytest.mark.parametrize("env_line, rule", [
    ("DEPLOY_TOKEN: s3cr3t-value-123", "looks like a secret"),
    ("CONFIG: ${secret:ci/deploy:token}", "local secret store"),
])
def test_secret_values_never_reach_a_manifest(env_line: str, rule: str) -> None:
    """The attack: a secret written into a job's plain environment would be stored in the cluster (etcd,
    kubectl get -o yaml) in clear. The render refuses, naming the field."""
    text = f"name: d\njobs:\n  deploy:\n    command: ./deploy.sh\n    environment:\n      {env_line}\n"
    with pytest.raises(WorkflowError) as info:
        _render(text)
    assert rule in str(info.value) and "jobs.deploy.environment" in str(info.value)
    assert "s3cr3t" not in str(info.value)
    # Control: the same workflow with a harmless name renders, value in clear, which is what the refusal
    # prevents for secrets.
    harmless = text.replace("DEPLOY_TOKEN", "DEPLOY_TARGET").replace("CONFIG: ${secret:ci/deploy:token}",
                                                                    "CONFIG: s3cr3t-value-123")
    assert "s3cr3t-value-123" in to_yaml(_render(harmless))


def test_bad_secret_reference_and_named_user_are_refused() -> None:
    with pytest.raises(WorkflowError, match=r"jobs\.d\.secrets\.TOKEN.*SECRET-NAME/KEY"):
        _render("name: x\njobs:\n  d:\n    command: x\n    secrets: {TOKEN: no-key}\n")
    with pytest.raises(WorkflowError, match=r"jobs\.d\.run_as\.user.*numeric uid"):
        _render("name: x\njobs:\n  d:\n    command: x\n    run_as: {user: builder}\n")
    unprivileged = _render("name: x\njobs:\n  d:\n    command: x\n    run_as: {user: 1000}\n")[0]
    ctx = unprivileged["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert ctx["runAsUser"] == 1000 and ctx["runAsNonRoot"] is True and "add" not in ctx["capabilities"]
    for version in VERSIONS:
        kubernetes_validate.validate(unprivileged, version, strict=True)


def test_names_are_dns_labels() -> None:
    assert dns_label("lint") == "lint"
    long = dns_label("x" * 100)
    assert len(long) <= 63 and dns_label("Build[linux]") != dns_label("build-linux")
    import re
    for name in ("Build[linux]", "a_b", "-x-", "ÄÖ", "x" * 100):
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", dns_label(name)), name


def test_cli_render_to_stdout_and_to_a_directory(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "runnerlib.cli", "workflow", "render", "--target", "kubernetes", str(EXAMPLE),
           "--run-id", "c1", "--source-url", "https://git.example/repo.git", "--source-ref", "main"]
    env = {**os.environ, "DEPLOY_TOKEN": "tok-" + "q" * 20}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert len(docs) == 6 and "qqqqqqqq" not in out
    env_of_lint = {e["name"]: e.get("value") for e in docs[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env_of_lint["REACTORCIDE_SOURCE_URL"] == "https://git.example/repo.git"
    assert env_of_lint["REACTORCIDE_SOURCE_TYPE"] == "git"
    written = subprocess.run(cmd + ["--output", str(tmp_path / "out")], capture_output=True, text=True,
                             check=True).stdout.split()
    assert len(written) == 6
    for path in written:
        result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", "1.29.0", path],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: x\njobs:\n  d:\n    command: x\n    environment: {API_TOKEN: abcdefgh12345}\n")
    result = subprocess.run([sys.executable, "-m", "runnerlib.cli", "workflow", "render", str(wf)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "abcdefgh" not in result.stderr
