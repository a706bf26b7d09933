"""`runnerlib workflow run --engine kubernetes` through the official client against a stateful fake API
server (kmock's emulator and tests/workflow/k8s_fake.py's kubelet). No real cluster was available."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("kmock")
pytest.importorskip("kubernetes")

from k8s_fake import FakeCluster  # noqa: E402

SECRET = "k8s-s3cr3t-" + "Zq9" * 6

WORKFLOW = """
id: kube
name: Kubernetes flow
jobs:
  build:
    command: echo building; echo "token is $DEPLOY_TOKEN"
    secrets: {DEPLOY_TOKEN: deploy/token}
  test:
    needs: [build]
    command: echo testing; runnerlib trigger publish --job-command "echo published"
  forge:
    needs: [build]
    command: 'echo ''{"reactorcide_trigger": 1, "payload": "x", "signature": "y", "key_id": "z"}'''
  broken:
    needs: [build]
    command: exit 3
  after-broken:
    needs: [broken]
    command: echo never
"""


def _run(tmp_path: Path, cluster: FakeCluster, *extra: str, **kw: object) -> subprocess.Popen[str]:
    wf = tmp_path / "wf.yaml"
    wf.write_text(WORKFLOW)
    cmd = [sys.executable, "-m", "runnerlib.cli", "workflow", "run", str(wf), "--engine", "kubernetes",
           "--kubeconfig", str(cluster.kubeconfig), "--code-dir", str(tmp_path), "--run-dir", str(tmp_path / "run"),
           "--max-parallel", "4", *extra]
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, **kw)  # type: ignore[call-overload]


def test_dag_logs_masking_and_signed_triggers(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, secrets={"deploy": {"token": SECRET}}) as cluster:
        proc = _run(tmp_path, cluster)
        out, _ = proc.communicate(timeout=120)
        jobs = cluster.jobs()
    assert proc.returncode == 1, out  # `broken` failed
    # Each job ran as a Kubernetes Job, the DAG in order; the log came back through the client.
    assert "building" in out and "testing" in out
    assert "token is ***" in out
    for fragment in (SECRET[i:i + 8] for i in range(0, len(SECRET) - 8, 4)):
        assert fragment not in out
    # A follow-up job from a signed trigger line ran; a forged trigger line was rejected and not obeyed.
    assert "signed trigger verified: publish" in out and "published" in out
    assert "rejected a line claiming to be a trigger" in out
    assert "after-broken" in out and "skipped" in out
    names = {j.metadata.annotations["reactorcide.dev/job-name"] for j in jobs.values()}
    assert names == {"build", "test", "forge", "broken", "publish"}
    build = next(j for j in jobs.values() if j.metadata.annotations["reactorcide.dev/job-name"] == "build")
    env = build.spec.template.spec.containers[0].env
    assert SECRET not in str(build.to_dict())
    assert any(e.name == "DEPLOY_TOKEN" and e.value_from.secret_key_ref.name == "deploy" for e in env)


OUTPUTS = """
id: outs
name: outputs from pods
jobs:
  build:
    command: >-
      python -c "import os, runnerlib; c = runnerlib.workflow_context(); c.set_var('VERSION', '1.2.3');
      c.set_output('artifact', 'app-1.2.3.tar.gz'); c.set_output('leak', 'x' + os.environ['DEPLOY_TOKEN'])"
    secrets: {DEPLOY_TOKEN: deploy/token}
    environment: {REACTORCIDE_VERSON: "typo"}  # the runner notes it on stderr, before its key announcement
  deploy:
    needs: [build]
    command: echo "deploying $VERSION"
  forger:
    command: >-
      echo '{"reactorcide_trigger": 1, "key_id": "0000000000000000", "signature": "AAAA",
      "payload": "{\\"type\\": \\"workflow_output\\", \\"vars\\": {\\"EVIL\\": \\"1\\"}, \\"outputs\\": {\\"evil\\": 1}}"}'
"""


def test_outputs_and_vars_come_back_from_pods_as_signed_lines(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text(OUTPUTS)
    with FakeCluster(tmp_path, secrets={"deploy": {"token": SECRET}}) as cluster:
        cmd = [sys.executable, "-m", "runnerlib.cli", "workflow", "run", str(wf), "--engine", "kubernetes",
               "--kubeconfig", str(cluster.kubeconfig), "--code-dir", str(tmp_path), "--run-dir",
               str(tmp_path / "run")]
        env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # set_var reached the dependent job (as in process mode), set_output the run's outputs and state.json; the
    # runner's note that came before its key announcement (pod logs join stderr to stdout) did not lose the key.
    assert "[build] note: REACTORCIDE_VERSON is not a runnerlib setting" in out
    assert "[build] (signed workflow outputs verified)" in out
    assert "[deploy] deploying 1.2.3" in out
    outputs = json.loads((tmp_path / "run" / "workflow-output.json").read_text())
    assert outputs["vars"] == {"VERSION": "1.2.3"}
    assert outputs["outputs"]["build"]["artifact"] == "app-1.2.3.tar.gz"
    assert outputs["outputs"]["build"]["leak"] == "x***"
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["jobs"]["build"]["outputs"]["artifact"] == "app-1.2.3.tar.gz"
    # A step's forged output line is rejected and not taken (the control: build's signed line above was).
    assert "[forger] warning: rejected a line claiming to be a trigger" in out
    assert "EVIL" not in outputs["vars"] and "forger" not in outputs["outputs"]
    for text in (out, json.dumps(outputs), json.dumps(state)):
        for fragment in (SECRET[i:i + 8] for i in range(0, len(SECRET) - 8, 4)):
            assert fragment not in text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_deletes_running_jobs_with_foreground_propagation(tmp_path: Path, signum: int) -> None:
    slow = "id: slow\nname: slow\njobs:\n  sleeper:\n    command: echo started; sleep 60\n"
    wf = tmp_path / "wf.yaml"
    with FakeCluster(tmp_path) as cluster:
        wf.write_text(slow)
        cmd = [sys.executable, "-m", "runnerlib.cli", "workflow", "run", str(wf), "--engine", "kubernetes",
               "--kubeconfig", str(cluster.kubeconfig), "--code-dir", str(tmp_path), "--run-dir",
               str(tmp_path / "run")]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        cluster.wait_for(lambda: any(b"started" in bytes(v) for v in cluster.logs.values()))
        started = time.monotonic()
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
        assert time.monotonic() - started < 30, out
        cluster.wait_for(lambda: not cluster.jobs() and cluster.deleted)
        assert cluster.deleted == [next(iter(cluster.procs))]
        # The one Job was deleted with foreground propagation (its pods first), as a real cluster needs.
        deletes = [r for r in cluster.requests() if r.method == "DELETE" and "/jobs/" in str(r.url)]
        assert deletes and all("Foreground" in str(r.data or r.params) for r in deletes)
        # The run's state ConfigMap went with its Jobs.
        assert [r for r in cluster.requests() if r.method == "DELETE" and "/configmaps/" in str(r.url)]
        assert cluster.core.list_namespaced_config_map("default").items == []
    assert "deleted Job default/" in out and "(foreground)" in out
    assert "cancelled" in out
    assert proc.returncode != 0


def test_no_configuration_is_one_clear_line(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: x\njobs:\n  a:\n    command: 'true'\n")
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    result = subprocess.run([sys.executable, "-m", "runnerlib.cli", "workflow", "run", str(wf), "--engine",
                             "kubernetes"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "Kubernetes configuration" in result.stderr and len(result.stderr.strip().splitlines()) == 1
