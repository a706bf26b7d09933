"""The workflow state in job pods (`workflow run --engine kubernetes`): a ConfigMap per run, mounted read-only
at /run/reactorcide/workflow as the Podman/Docker engine mounts its copy, run against the stateful fake API
server (kmock's emulator and tests/workflow/k8s_fake.py's kubelet, which projects the ConfigMap into each
pod's directory from the API object). No real cluster was available."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("kmock")
pytest.importorskip("kubernetes")

from k8s_fake import FakeCluster, _atomic_write  # noqa: E402

from runnerlib.security.registry import SecretRegistry  # noqa: E402
from runnerlib.workflow import state  # noqa: E402
from runnerlib.workflow.kubernetes import RenderOptions, render_workflow  # noqa: E402
from runnerlib.workflow.kubernetes_state import (  # noqa: E402
    MAX_STATE_BYTES,
    STATE_ENV_PATH,
    STATE_MOUNT,
    StatePublisher,
    state_text,
)
from runnerlib.workflow.models import WorkflowError, parse_workflow_text  # noqa: E402

SECRET = "k8s-st4te-" + "Wq7" * 6


def _fragments(secret: str) -> list[str]:
    return [secret[i:i + 8] for i in range(0, len(secret) - 8, 3)]


QUERY = ("from runnerlib import get_job_result as r, is_job_running as i; f = r('first'); "
         "print('first:', f['status'], f['exit_code'], f['outputs'].get('note'), f['outputs'].get('leak'), "
         "'first running:', i('first'), 'second running:', i('second'), 'nosuch:', r('nosuch'))")

WORKFLOW = f"""
id: kstate
name: state in pods
jobs:
  first:
    command: >-
      python -c "import os, runnerlib; c = runnerlib.workflow_context(); c.set_output('note', 'visible-marker');
      c.set_output('leak', 'x' + os.environ['DEPLOY_TOKEN'])"
    secrets: {{DEPLOY_TOKEN: deploy/token}}
  second:
    needs: [first]
    command: >-
      python -c "{QUERY}";
      echo forged > "$REACTORCIDE_WORKFLOW_STATE" 2>/dev/null || echo state-is-read-only
  third:
    needs: [second]
    command: >-
      python -c "import runnerlib; print('second was', runnerlib.get_job_result('second')['status'])";
      grep -c forged "$REACTORCIDE_WORKFLOW_STATE" || echo third-sees-no-forgery
  watcher:
    command: >-
      for i in $(seq 400); do python -c "import sys, runnerlib as r;
      sys.exit(r.get_job_result('third')['status'] in ('pending', 'running'))" && break; sleep 0.2; done;
      python -c "import runnerlib as r; print('watcher saw third', r.get_job_result('third')['status'])"
"""


def _workflow_run(tmp_path: Path, cluster: FakeCluster, text: str) -> subprocess.CompletedProcess[str]:
    wf = tmp_path / "wf.yaml"
    wf.write_text(text)
    cmd = [sys.executable, "-m", "runnerlib.cli", "workflow", "run", str(wf), "--engine", "kubernetes",
           "--kubeconfig", str(cluster.kubeconfig), "--code-dir", str(tmp_path), "--run-dir", str(tmp_path / "run"),
           "--max-parallel", "4"]
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


def _configmap_requests(cluster: FakeCluster) -> list[Any]:
    return [r for r in cluster.requests() if "/configmaps" in str(r.url)]


def test_job_pods_read_the_runs_state_from_its_configmap(tmp_path: Path) -> None:
    """get_job_result / is_job_running in a pod answer from the run's state, as in process and podman mode:
    a job sees the job it needs finished with its (masked) outputs, a running job sees another finish, and
    the ConfigMap is the run's (labelled, no owner), updated as jobs finish and deleted at the end."""
    with FakeCluster(tmp_path, secrets={"deploy": {"token": SECRET}}) as cluster:
        result = _workflow_run(tmp_path, cluster, WORKFLOW)
        everything = cluster.requests()
        runners = cluster.runner_requests()
        requests = _configmap_requests(cluster)
        left = cluster.core.list_namespaced_config_map("default").items
        pod_dirs = dict(cluster.pod_dirs)
        jobs = cluster.jobs()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "[second] first: success 0 visible-marker x*** first running: False second running: True " \
           "nosuch: None" in out
    assert "[third] second was success" in out
    assert "[watcher] watcher saw third success" in out  # a running pod's volume followed the updates
    # The ConfigMap: created once before the Jobs, replaced (PUT: RBAC `update`) as the state changed, deleted.
    methods = [r.method.value for r in requests if r.method.value != "GET"]  # GET: the fake kubelet's reads
    assert methods[0] == "POST" and methods[-1] == "DELETE" and methods.count("POST") == 1
    assert methods.count("PUT") >= 4 and set(methods) == {"POST", "PUT", "DELETE"}
    created = requests[0].data
    assert created["kind"] == "ConfigMap" and "ownerReferences" not in created["metadata"]
    assert created["metadata"]["labels"]["reactorcide.dev/run"] == \
        next(iter(jobs.values())).metadata.labels["reactorcide.dev/run"]
    assert left == []
    # The RBAC section of docs/kubernetes.md allows every request the runner made (and the fake's are told apart).
    assert 0 < len(runners) < len(everything)
    allowed = _documented_rbac()
    for request in runners:
        assert _rbac_of(request) in allowed, (_rbac_of(request), str(request.url))
    # Each Job was created after the ConfigMap showed every job it needs finished: its pod reads the state
    # when it starts (the kubelet projects it then), so it never sees a dependency still running.
    last_state: dict[str, Any] = {}
    for request in everything:
        if "/configmaps" in str(request.url) and request.method.value in ("POST", "PUT"):
            last_state = json.loads(request.data["data"]["state.json"])["jobs"]
        elif "/jobs" in str(request.url) and request.method.value == "POST":
            instance = request.data["metadata"]["annotations"]["reactorcide.dev/job-name"]
            for dep in {"second": ["first"], "third": ["second"]}.get(instance, []):
                assert last_state[dep]["status"] == "success", (instance, dep)
            assert last_state[instance]["status"] == "running"
    # Every pod mounted it read-only where the other engines put the state, named by the same variable.
    for job in jobs.values():
        pod = job.spec.template.spec
        (mount,) = [m for m in pod.containers[0].volume_mounts if m.mount_path == STATE_MOUNT]
        assert mount.read_only is True
        (volume,) = [v for v in pod.volumes if v.name == mount.name]
        assert volume.config_map.name == created["metadata"]["name"] and volume.config_map.default_mode == 0o444
        env = {e.name: e.value for e in pod.containers[0].env}
        assert env["REACTORCIDE_WORKFLOW_STATE"] == STATE_ENV_PATH
    # A pod that wrote into its copy changed nothing for anyone else: not the API object, not the next pod.
    assert "[third] third-sees-no-forgery" in out
    bodies = [json.dumps(r.data) for r in requests if r.data]
    assert not any("forged" in body for body in bodies)
    # What a pod saw is what the API object held (the fake projects it from there, kubelet-style).
    third = next(d for n, d in pod_dirs.items() if "third" in n)
    seen = json.loads((third / "volumes" / "workflow-state" / "..data" / "state.json").read_text())
    assert seen["jobs"]["second"]["status"] == "success" and seen["jobs"]["third"]["status"] == "running"
    # No secret in the state: outputs travel into it (control: the marker), the secret's fragments do not.
    assert any("visible-marker" in body for body in bodies)
    for text in (*bodies, out):
        for fragment in _fragments(SECRET):
            assert fragment not in text


def _documented_rbac() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the Role in docs/kubernetes.md grants."""
    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md").read_text()
    block = text.split("### RBAC the runner needs", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    role = yaml.safe_load(block)
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def _rbac_of(request: Any) -> tuple[str, str, str]:
    """The (apiGroup, resource[/subresource], verb) an API request needs, as the API server's authorizer sees it."""
    parts = request.url.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[:1] == ["namespaces"]:
        rest = rest[2:]
    resource = "/".join([rest[0], *rest[2:3]])
    method = request.method.value
    if method == "GET":
        verb = "watch" if request.params.get("watch") == "true" else ("get" if len(rest) > 1 else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return group, resource, verb


def test_the_runner_masks_the_state_again_before_it_leaves_for_the_cluster() -> None:
    """Attack: a job's output holding a secret the runner knows (a pod's runner masks what it knows; this is
    the second line). Control: without the registry the same value would be in the ConfigMap's text."""
    document = {"workflow": "w", "run_id": "r", "jobs": {"a": {"status": "success", "exit_code": 0,
                "reason": None, "outputs": {"token": f"pre-{SECRET}-post", "pin": 48151623162342}}}}
    registry = SecretRegistry()
    registry.add(SECRET, source="test")
    registry.add("48151623162342", source="test")
    masked, trimmed = state_text(document, registry)
    assert not trimmed
    for fragment in [*_fragments(SECRET), "4815162316"]:
        assert fragment not in masked
    assert json.loads(masked)["jobs"]["a"]["exit_code"] == 0
    plain, _ = state_text(document, SecretRegistry())
    assert SECRET in plain and "48151623162342" in plain


@settings(max_examples=60, deadline=None)
@given(before=st.text(max_size=20), after=st.text(max_size=20), key=st.text(max_size=10),
       where=st.sampled_from(["outputs", "reason", "item", "key"]))
def test_no_secret_reaches_the_configmap_text_wherever_it_sits(before: str, after: str, key: str,
                                                              where: str) -> None:
    registry = SecretRegistry()
    registry.add(SECRET, source="test")
    value = before + SECRET + after
    job: dict[str, Any] = {"status": "failed", "outputs": {}, "reason": None, "item": None}
    if where == "outputs":
        job["outputs"] = {key: value}
    elif where == "key":
        job["outputs"] = {value: key}
    else:
        job[where] = value
    text, _ = state_text({"jobs": {"j": job}}, registry)
    assert SECRET not in text and SECRET not in json.dumps(json.loads(text), ensure_ascii=False)


def test_an_oversized_state_leaves_outputs_out_and_says_so() -> None:
    big = {"jobs": {f"j{i}": {"status": "success", "outputs": {"blob": "y" * 200_000}} for i in range(6)}}
    text, trimmed = state_text(big, SecretRegistry())
    assert trimmed and len(text.encode()) < MAX_STATE_BYTES
    data = json.loads(text)
    assert data["jobs"]["j0"] == {"status": "success", "outputs": {}} and "outputs_omitted" in data


class _Refusing:
    """A CoreV1Api stand-in whose API server refuses ConfigMaps (no RBAC for them)."""

    def create_namespaced_config_map(self, namespace: str, body: Any) -> None:
        from kubernetes.client.exceptions import ApiException

        raise ApiException(status=403, reason="Forbidden")


def test_no_right_to_create_the_configmap_is_one_clear_error() -> None:
    lines: list[str] = []
    publisher = StatePublisher(_Refusing(), "ci", "w-r-state", {}, lines.append)
    with pytest.raises(WorkflowError, match="create, update and delete on configmaps") as caught:
        publisher.publish(lambda: {"jobs": {}}, SecretRegistry())
    assert "403 Forbidden" in str(caught.value) and "\n" not in str(caught.value)
    publisher.delete()  # nothing was created: nothing to delete, no request
    assert lines == []


def test_the_state_path_reads_through_the_kubelets_layout(tmp_path: Path) -> None:
    """A ConfigMap volume's key is a symlink into `..data`; runnerlib reads state files with O_NOFOLLOW, so
    REACTORCIDE_WORKFLOW_STATE names ..data/state.json (control: the key's own path is refused), which
    shows each update whole."""
    volume = tmp_path / "volume"
    _atomic_write(volume, {"state.json": '{"jobs": {"a": {"status": "running"}}}'}, 0o444)
    rel = STATE_ENV_PATH.removeprefix(STATE_MOUNT + "/")
    assert state.read_json(volume / rel, {})["jobs"]["a"]["status"] == "running"
    with pytest.raises(OSError):
        state.read_json(volume / "state.json", {})
    _atomic_write(volume, {"state.json": '{"jobs": {"a": {"status": "success"}}}'}, 0o444)
    assert state.read_json(volume / rel, {})["jobs"]["a"]["status"] == "success"
    assert len([p for p in volume.iterdir() if p.name.startswith("..2")]) == 1  # the old version is gone


def test_same_mount_as_the_container_engine() -> None:
    from runnerlib.workflow.container_runner import STATE_MOUNT as CONTAINER_STATE_MOUNT

    assert STATE_MOUNT == CONTAINER_STATE_MOUNT


@pytest.mark.parametrize("version", ("1.29.0", "1.37.0"))
def test_manifests_with_the_state_volume_pass_strict_validation(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    wf = parse_workflow_text("id: v\nname: v\njobs:\n  a: {command: 'true', environment: "
                             "{REACTORCIDE_WORKFLOW_STATE: /elsewhere}}\n  b: {command: 'true', needs: [a], "
                             "run_as: {user: 1000}}\n", "wf.yaml")
    for manifest in render_workflow(wf, RenderOptions(run_id="r1", state_configmap="v-r1-state")):
        kubernetes_validate.validate(manifest, version, strict=True)
        pod = manifest["spec"]["template"]["spec"]
        # One REACTORCIDE_WORKFLOW_STATE, the run's: a job's own environment does not point it elsewhere.
        assert [e["value"] for e in pod["containers"][0]["env"] if e["name"] == "REACTORCIDE_WORKFLOW_STATE"] == \
            [STATE_ENV_PATH]
        assert {"name": "workflow-state", "configMap": {"name": "v-r1-state", "defaultMode": 0o444}} in pod["volumes"]
        assert {"name": "workflow-state", "mountPath": STATE_MOUNT, "readOnly": True} in \
            pod["containers"][0]["volumeMounts"]
    # A plain render has no run to keep a ConfigMap: no such volume, and jobs ask in simple mode.
    for manifest in render_workflow(wf, RenderOptions(run_id="r1")):
        pod = manifest["spec"]["template"]["spec"]
        assert all("configMap" not in v for v in pod["volumes"])
        assert all(e.get("value") != STATE_ENV_PATH for e in pod["containers"][0]["env"])
