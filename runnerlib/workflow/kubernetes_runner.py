"""`runnerlib workflow run --engine kubernetes`: a workflow's DAG as Kubernetes Jobs, through the official client.

The scheduling is the local runner's (LocalWorkflowRunner: conditions, for_each, fan-in, parallelism,
state.json, report.md); only running one job differs. For each job instance this:
- creates the batch/v1 Job that `runnerlib workflow render --target kubernetes` would write;
- follows the Job's status with a watch on its name (reconnecting when a watch ends) until it is Complete
  or Failed (a missing Job, or one that vanished, is a failure);
- streams the pod's log while it runs and passes every line through the run's masker before printing;
- accepts follow-up jobs only from trigger lines signed with the key the job's runner announced on the
  first line of its log (anything else that claims to be a trigger is reported and ignored);
- on cancellation (Ctrl-C, SIGTERM, `cancel()`), deletes the Jobs still running with foreground
  propagation, so their pods go first.
- keeps the run's state (state.json, masked) in a ConfigMap of its own that each pod mounts read-only where
  the other engines put it (workflow/kubernetes_state.py): it is created before the first Job, brought up to
  date before each Job is created (so a job sees its dependencies finished) and as jobs finish, and deleted
  when the run ends, however it ends.

- collects the job's outputs and vars (`set_output`/`set_var`, what process mode reads from the job's
  workflow-output.json) from the one line the job's runner prints after its steps, signed with the same
  key as its trigger lines (workflow/output_lines.py); an unsigned or forged one is reported and ignored.

Tested against a stateful fake API server (kmock's emulator) through the official client; no real cluster
was available (docs/kubernetes.md).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from runnerlib.workflow import state
from runnerlib.workflow.kubernetes import RenderOptions, dns_label, job_manifest, job_name, run_labels
from runnerlib.workflow.kubernetes_state import StatePublisher
from runnerlib.workflow.local_runner import JobNode, LocalWorkflowRunner, WorkflowRunResult
from runnerlib.workflow.models import Workflow, WorkflowError, WorkflowJob

__all__ = ["KubernetesWorkflowRunner", "kubernetes_api"]

log = logging.getLogger("runnerlib.workflow")

WATCH_SECONDS = 30
# A watch idle this long is re-read: a cancelled run notices its deleted Job within this time even where the
# server sends no DELETED event.
IDLE_READ_SECONDS = 5
POD_POLL_SECONDS = 0.5


def kubernetes_api(*, kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient from a kubeconfig (the given file, $KUBECONFIG or ~/.kube/config) or, inside a pod, the
    in-cluster service account. The official client is imported here, so other commands never load it."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise WorkflowError("the Kubernetes engine needs the official client: pip install kubernetes",
                            field="--engine") from None
    try:
        if kubeconfig is None and _in_cluster():
            config.load_incluster_config()
            return client.ApiClient()
        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        return client.ApiClient(configuration)
    except (config.ConfigException, OSError) as exc:
        raise WorkflowError(f"no usable Kubernetes configuration: {exc}", field="--kubeconfig") from None


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and \
        Path("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file()


class KubernetesWorkflowRunner(LocalWorkflowRunner):
    """Runs a workflow's jobs as Kubernetes Jobs in `namespace`. See the module docstring.

    Example::

        runner = KubernetesWorkflowRunner(load_workflow("ci.yaml"), api_client=kubernetes_api(),
                                          namespace="ci", code_dir=".", registry=registry,
                                          options=RenderOptions(branch="main"))
        sys.exit(runner.run().exit_code)
    """

    def __init__(self, workflow: Workflow, *, api_client: Any, namespace: str = "default",
                 options: RenderOptions | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("launcher", "runnerlib")
        super().__init__(workflow, **kwargs)
        from kubernetes import client

        self.namespace = namespace
        self.options = options or RenderOptions()
        self.options.namespace = namespace
        self.options.run_id = self.options.run_id or self.run_id.lower().replace("_", "-")[-15:]
        self._batch = client.BatchV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._keys: dict[str, Any] = {}
        self._triggered: dict[str, list[dict[str, Any]]] = {}
        self._outputs: dict[str, dict[str, Any]] = {}  # node name -> its verified workflow_output document
        workflow_id, run_id = self.workflow.effective_id, self.options.run_id
        self.options.state_configmap = dns_label(f"{workflow_id}-{run_id}-state")
        self._state = StatePublisher(self._core, namespace, self.options.state_configmap,
                                     run_labels(workflow_id, run_id), self.echo)

    def run(self) -> WorkflowRunResult:
        """Run the workflow (LocalWorkflowRunner.run); the state ConfigMap is deleted however the run ends."""
        try:
            return super().run()
        finally:
            self._state.delete()

    def _save_state(self) -> None:
        super()._save_state()
        self._publish_state()

    def _publish_state(self) -> None:
        self._state.publish(self._state_data, self.registry)

    def _unapplied_settings(self) -> list[str]:
        return []  # the Job manifest applies image, resources, run_as and capabilities

    # --- one job ------------------------------------------------------------------------------------------

    def _definition(self, node: JobNode) -> WorkflowJob:
        """The workflow's definition of the node's job with what the node (a for_each item, a trigger) changed."""
        base = self.workflow.jobs.get(node.base_name)
        changes: dict[str, Any] = {"command": node.command, "job_file": node.job_file, "environment": node.environment,
                   "timeout": node.timeout, "image": node.image, "depends_on": [], "for_each": None}
        if base is None:
            return WorkflowJob(name=node.base_name, command=node.command, environment=node.environment,
                               timeout=node.timeout, image=node.image)
        return base.model_copy(update=changes)

    def _manifest(self, node: JobNode) -> dict[str, Any]:
        workflow_id = self.workflow.effective_id
        deps = [job_name(workflow_id, d, self.options.run_id or "") for d in node.depends_on]
        return job_manifest(workflow_id, self.options.run_id or "", node.name, self._definition(node),
                            item=node.item, depends_on=deps, variables=self._job_vars(node),
                            options=self.options, job_id=node.job_id)

    def _run_node(self, node: JobNode) -> None:
        from kubernetes.client.exceptions import ApiException

        name = None
        try:
            workspace = self.run_dir / "jobs" / node.job_id
            workspace.mkdir(parents=True, exist_ok=True)
            node.workspace = workspace
            manifest = self._manifest(node)
            name = manifest["metadata"]["name"]
            # The pod reads the state when it starts: it must already show this job's dependencies finished
            # (the main loop saves the state only after it submitted every job it could start).
            self._publish_state()
            self._batch.create_namespaced_job(self.namespace, manifest)  # type: ignore[arg-type]
            self.echo(f"[{node.name}] created Job {self.namespace}/{name}")
            logs = threading.Thread(target=self._stream_logs, args=(node, name), name=f"logs-{name}",
                                    daemon=True)
            logs.start()
            finished = threading.Event()
            threading.Thread(target=self._delete_on_cancel, args=(name, finished), daemon=True).start()
            try:
                status = self._wait(name)
            finally:
                finished.set()
            logs.join(timeout=30)
            self._finish_node(node, status)
        except ApiException as exc:
            node.status, node.exit_code = "failed", 1
            node.reason = self.registry.mask_text(f"Kubernetes API: {exc.status} {exc.reason}")
            if name and self._cancel.is_set():
                self._delete(name)
        except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the run; reported masked
            node.status, node.exit_code = "failed", 1
            node.reason = self.registry.mask_text(str(exc))

    def _finish_node(self, node: JobNode, status: str) -> None:
        node.status = {"succeeded": "success", "failed": "failed", "cancelled": "cancelled"}.get(status, "failed")
        node.exit_code = 0 if node.status == "success" else (143 if node.status == "cancelled" else 1)
        if node.status == "cancelled":
            node.reason = "cancelled (Job deleted)"
        elif node.status == "failed":
            node.reason = "the Job failed" if status == "failed" else status
        from runnerlib.workflow.output_lines import outputs_of

        if node.name in self._outputs:
            node.outputs, node.vars_out = outputs_of(self._outputs[node.name])
        jobs = self._triggered.get(node.name)
        if jobs and node.workspace is not None:
            # The verified trigger documents, in the contract's triggers-file format: the local runner's
            # _add_triggered reads them from there.
            state.write_json(node.workspace / "triggers.json",
                             {"type": "trigger_job", "operation_id": str(uuid.uuid4()),
                              "trigger_type": "runnerlib", "jobs": jobs})

    def _wait(self, name: str) -> str:
        """"succeeded", "failed", "cancelled" or a reason, once the Job finished or is gone (watching its
        status; a watch that ends or breaks is followed by a read and a new watch)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        while True:
            try:
                job = self._batch.read_namespaced_job(name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return "cancelled" if self._cancel.is_set() else "the Job vanished"
                raise
            done = _job_outcome(job)
            if done:
                return done
            try:
                for event in watch.Watch().stream(self._batch.list_namespaced_job, self.namespace,
                                                  field_selector=f"metadata.name={name}",
                                                  timeout_seconds=WATCH_SECONDS,
                                                  _request_timeout=IDLE_READ_SECONDS):
                    obj = event["object"]
                    if getattr(obj.metadata, "name", None) != name:
                        continue  # a fake API server may not apply the field selector
                    if event["type"] == "DELETED":
                        return "cancelled" if self._cancel.is_set() else "the Job was deleted by someone else"
                    done = _job_outcome(obj)
                    if done:
                        return done
            except Exception as exc:  # noqa: BLE001 - a broken watch (API error, connection): read again
                log.debug("watch of %s ended: %s", name, exc)
                time.sleep(POD_POLL_SECONDS)

    def _delete_on_cancel(self, name: str, finished: threading.Event) -> None:
        """Delete the Job as soon as the run is cancelled, unless it finished first."""
        while not finished.is_set():
            if self._cancel.wait(POD_POLL_SECONDS):
                if not finished.is_set():
                    self._delete(name)
                return

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._batch.delete_namespaced_job(name, self.namespace, propagation_policy="Foreground")
            self.echo(f"deleted Job {self.namespace}/{name} (foreground)")
        except ApiException as exc:
            if exc.status != 404:
                self.echo(f"warning: could not delete Job {self.namespace}/{name}: {exc.status} {exc.reason}")

    def _pod_of(self, name: str) -> Any:
        pods = self._core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}").items
        # A fake API server may not apply the selector; the Job controller labels its pods job-name=<job>.
        mine = [p for p in pods if p.metadata is not None and (p.metadata.labels or {}).get("job-name") == name]
        return mine[0] if mine else None

    def _stream_logs(self, node: JobNode, name: str) -> None:
        """Follow the pod's log line by line through the masker; ends when the log ends or the run is cancelled."""
        from kubernetes.client.exceptions import ApiException

        pod = None
        while pod is None and not self._cancel.is_set():
            try:
                pod = self._pod_of(name)
                if pod is not None and (pod.status is None or pod.status.phase in (None, "Pending")):
                    pod = None
            except ApiException:
                pod = None
            if pod is None:
                if self._job_finished(name):
                    pod = self._pod_of(name)
                    if pod is None:
                        return
                    break
                time.sleep(POD_POLL_SECONDS)
        if pod is None:
            return
        try:
            response: Any = self._core.read_namespaced_pod_log(pod.metadata.name, self.namespace, follow=True,
                                                          _preload_content=False)
        except ApiException as exc:
            self.echo(f"[{node.name}] warning: no log: {exc.status} {exc.reason}")
            return
        pending = b""
        try:
            for chunk in response.stream(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._job_line(node, line.decode("utf-8", "replace"))
                if self._cancel.is_set():
                    break
            if pending:
                self._job_line(node, pending.decode("utf-8", "replace"))
        finally:
            response.release_conn()

    def _job_finished(self, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            return bool(_job_outcome(self._batch.read_namespaced_job(name, self.namespace)))
        except ApiException:
            return True

    def _job_line(self, node: JobNode, text: str) -> None:
        """One line of a job's log. Its runner's first line announces the key its trigger lines are signed
        with; lines claiming to be triggers must verify against it, or they are reported and dropped."""
        from runnerlib.workflow.output_lines import DOCUMENT_TYPE
        from runnerlib.workflow.signing import (
            ANNOUNCE_KEY,
            InvalidTriggerMessage,
            is_trigger_line,
            public_key_from_announcement,
            verify_message,
        )

        if not node.seen_output and text.startswith("{" + f'"{ANNOUNCE_KEY}"'):
            node.seen_output = True
            try:
                self._keys[node.name] = public_key_from_announcement(text)
                self.echo(f"[{node.name}] (trigger signing key announced)")
            except InvalidTriggerMessage as exc:
                self.echo(f"[{node.name}] warning: unusable key announcement ({exc})")
            return
        # A pod's log joins stderr to stdout, so the runner's own notes (stderr, printed before the key is
        # made: an unknown REACTORCIDE_* variable, the per-run workspace) may precede the announcement. They
        # are the runner's, not a step's: nothing untrusted has run before the announcement.
        if not (not node.seen_output and text.startswith(RUNNER_NOTE_PREFIXES)):
            node.seen_output = True
        if is_trigger_line(text):
            try:
                key = self._keys.get(node.name)
                if key is None:
                    raise InvalidTriggerMessage("no signing key was announced on the job's first line")
                document = verify_message(text, key, job_id=node.job_id, kind=None)
                if document.get("type") not in ("trigger_job", DOCUMENT_TYPE):
                    raise InvalidTriggerMessage(f"unknown signed document type {document.get('type')!r}")
            except InvalidTriggerMessage as exc:
                node.rejected_lines += 1
                self.echo(f"[{node.name}] warning: rejected a line claiming to be a trigger ({exc}): {text[:120]}")
                return
            if document["type"] == DOCUMENT_TYPE:
                self._outputs[node.name] = document
                self.echo(f"[{node.name}] (signed workflow outputs verified)")
                return
            self._triggered.setdefault(node.name, []).extend(document["jobs"])
            names = ", ".join(str(j.get("job_name")) for j in document["jobs"])
            self.echo(f"[{node.name}] (signed trigger verified: {names})")
            return
        self.echo(f"[{node.name}] {text}")


# How the runner's own lines on stderr begin (cli/run_cmd.py's config notes, JobRunner._note).
RUNNER_NOTE_PREFIXES = ("note: ", "runnerlib: ")


def _job_outcome(job: Any) -> str | None:
    """"succeeded"/"failed" from a Job's status (conditions first, then counters); None while it runs."""
    status = getattr(job, "status", None)
    if status is None:
        return None
    for condition in status.conditions or []:
        if condition.status == "True" and condition.type in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if condition.status == "True" and condition.type in ("Failed", "FailureTarget"):
            return "failed" if not condition.message else f"failed: {condition.message}"
    if status.succeeded:
        return "succeeded"
    if status.failed:
        return "failed"
    return None
