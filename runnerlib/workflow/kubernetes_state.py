"""The workflow run's state for job pods: a ConfigMap per run, mounted read-only where the other engines put it.

Process mode gives a job the run's state.json (REACTORCIDE_WORKFLOW_STATE), and Podman/Docker mount a copy
of it read-only at /run/reactorcide/workflow, so `is_job_running` / `get_job_result` answer inside a job.
A pod gets the same through Kubernetes' own means: `workflow run --engine kubernetes` keeps one ConfigMap per
run (labelled with the run, no owner) holding the state under the key state.json, updates it as jobs start
and finish, and deletes it when the run ends, as it deletes the Jobs on Ctrl-C or SIGTERM. Each Job's pod
mounts it read-only at /run/reactorcide/workflow.

REACTORCIDE_WORKFLOW_STATE names /run/reactorcide/workflow/..data/state.json, not .../state.json: the kubelet
writes a ConfigMap volume as a timestamped directory, a `..data` symlink to it (swapped atomically on each
update) and, for each key, a symlink `state.json -> ..data/state.json`. runnerlib opens state files with
O_NOFOLLOW (state.read_json), which refuses that last symlink; through `..data` the final component is the
regular file of the version current when it is opened, so a reader never sees half an update.

What the ConfigMap holds is what state.json holds: job names, statuses, exit codes, times, reasons and
outputs, every string masked again with the run's secrets (outputs are already masked by each job's runner
before they leave the pod). A ConfigMap is readable by anyone allowed to read ConfigMaps in the namespace;
secret values never go into it.

Example::

    publisher = StatePublisher(core_v1_api, "ci", state_configmap_name("build", "r1"), labels, echo=print)
    publisher.publish(lambda: {"workflow": "build", "run_id": "r1", "jobs": {...}}, registry)
    ...
    publisher.delete()
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from runnerlib.workflow.models import WorkflowError

__all__ = ["STATE_ENV_PATH", "STATE_KEY", "STATE_MOUNT", "STATE_VOLUME", "StatePublisher", "pod_state_parts",
           "state_configmap", "state_text"]

STATE_MOUNT = "/run/reactorcide/workflow"  # as the Podman/Docker engine (container_runner.STATE_MOUNT)
STATE_KEY = "state.json"
STATE_ENV_PATH = f"{STATE_MOUNT}/..data/{STATE_KEY}"
STATE_VOLUME = "workflow-state"
# Kubernetes refuses a ConfigMap over 1 MiB (data and metadata); the state is kept well under it.
MAX_STATE_BYTES = 900 * 1024


def pod_state_parts(configmap: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The pod volume, the container's read-only volume mount and the REACTORCIDE_WORKFLOW_STATE entry that
    give a job's pod the run's state from the ConfigMap `configmap`."""
    volume = {"name": STATE_VOLUME, "configMap": {"name": configmap, "defaultMode": 0o444}}
    mount = {"name": STATE_VOLUME, "mountPath": STATE_MOUNT, "readOnly": True}
    env = {"name": "REACTORCIDE_WORKFLOW_STATE", "value": STATE_ENV_PATH}
    return volume, mount, env


def state_text(document: Mapping[str, Any], mask: Any) -> tuple[str, bool]:
    """The state as the ConfigMap's JSON text, every string (and number, by its text) masked with `mask` (a
    registry with mask_text), and whether the jobs' outputs had to be left out to stay under the size limit."""
    from runnerlib.workflow.api import mask_payload

    masked = mask_payload(dict(document), {}, mask)
    text = json.dumps(masked, indent=1, sort_keys=True, default=str)
    if len(text.encode()) <= MAX_STATE_BYTES:
        return text, False
    jobs = {name: {**info, "outputs": {}} for name, info in masked.get("jobs", {}).items()}
    slim = {**masked, "jobs": jobs,
            "outputs_omitted": f"larger than {MAX_STATE_BYTES} bytes with them: see the run's state.json"}
    return json.dumps(slim, indent=1, sort_keys=True, default=str), True


def state_configmap(name: str, labels: Mapping[str, str], text: str, namespace: str | None = None) -> dict[str, Any]:
    """The v1 ConfigMap holding the state text. No ownerReferences: the runner deletes it itself."""
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {STATE_KEY: text}}


class StatePublisher:
    """Keeps a run's state ConfigMap in step with the run: create, then replace when the state changed,
    then delete. Safe to call from several threads: the newest document a caller passes is the one kept."""

    def __init__(self, core: Any, namespace: str, name: str, labels: Mapping[str, str],
                 echo: Callable[[str], None]) -> None:
        self.core = core
        self.namespace = namespace
        self.name = name
        self.labels = dict(labels)
        self.echo = echo
        self._lock = threading.Lock()
        self._sent: str | None = None
        self._created = False
        self._warned_size = False

    def publish(self, document: Callable[[], Mapping[str, Any]], mask: Any) -> None:
        """Send the state that `document()` returns now (called under the lock, so the newest wins) if it
        changed. The first call creates the ConfigMap and raises WorkflowError if it cannot (no pod could
        start without it); later failures are warned about and retried at the next call."""
        from kubernetes.client.exceptions import ApiException

        with self._lock:
            text, trimmed = state_text(document(), mask)
            if text == self._sent:
                return
            if trimmed and not self._warned_size:
                self._warned_size = True
                self.echo(f"warning: the state ConfigMap {self.namespace}/{self.name} leaves the jobs' outputs "
                          f"out: with them it is over {MAX_STATE_BYTES} bytes")
            body = state_configmap(self.name, self.labels, text, self.namespace)
            try:
                if self._created:
                    self.core.replace_namespaced_config_map(self.name, self.namespace, body)
                else:
                    self._create(body)
            except ApiException as exc:
                if not self._created:
                    raise WorkflowError(f"cannot create the ConfigMap {self.namespace}/{self.name} that gives "
                                        f"job pods the workflow state: {exc.status} {exc.reason} (the runner "
                                        "needs create, update and delete on configmaps)", field="--engine") from None
                self.echo(f"warning: could not update the state ConfigMap {self.namespace}/{self.name}: "
                          f"{exc.status} {exc.reason}")
                return
            self._sent = text

    def _create(self, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.create_namespaced_config_map(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # Left by an earlier run with this run id that was killed before it could clean up: the name
            # is this run's, so it is taken over.
            self.core.replace_namespaced_config_map(self.name, self.namespace, body)
        self._created = True
        self.echo(f"created ConfigMap {self.namespace}/{self.name} (the workflow state for job pods)")

    def delete(self) -> None:
        """Delete the ConfigMap (if this run created it); a missing one is fine, another failure is warned about."""
        from kubernetes.client.exceptions import ApiException

        with self._lock:
            if not self._created:
                return
            try:
                self.core.delete_namespaced_config_map(self.name, self.namespace)
                self.echo(f"deleted ConfigMap {self.namespace}/{self.name}")
            except ApiException as exc:
                if exc.status != 404:
                    self.echo(f"warning: could not delete the state ConfigMap {self.namespace}/{self.name}: "
                              f"{exc.status} {exc.reason}" + "".join(
                                  f" (kubectl delete configmap -l {key}={value} removes it)"
                                  for key, value in self.labels.items() if key.endswith("/run")))
                    return
            self._created = False
