"""A workflow as Kubernetes Jobs: one batch/v1 Job manifest per workflow job (instance).

Each Job runs the runner image's `python -m runnerlib.cli run` in a hardened pod, configured the way the
worker configures a job container (the REACTORCIDE_* contract of worker-contract.md), with an emptyDir at
/job. What a manifest never holds is a secret value: secrets reach the pod through `secretKeyRef`s to
Kubernetes Secrets the workflow names (`secrets: {ENV_NAME: secret-name/key}` on a job), and their names
are listed in REACTORCIDE_SECRET_ENV_NAMES so the runner masks them. `envFrom`/`secretRef` is deliberately
not used: it brings every key of a Secret into the environment, and the runner can only mask variables it
knows by name.

The DAG (depends_on, condition) cannot be expressed by Jobs themselves; it is recorded in annotations and
followed by `runnerlib workflow run --engine kubernetes` (workflow/kubernetes_runner.py), which creates a
Job only once its dependencies finished.

Example::

    from runnerlib.workflow.models import load_workflow
    from runnerlib.workflow.kubernetes import RenderOptions, render_workflow, to_yaml

    manifests = render_workflow(load_workflow("ci.yaml"), RenderOptions(branch="main", event="push"))
    print(to_yaml(manifests))
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runnerlib.security.secret_names import is_secret_name
from runnerlib.workflow.models import Workflow, WorkflowError, WorkflowJob, split_memory

__all__ = ["DEFAULT_RUNNER_IMAGE", "RUNNER_CAPABILITIES", "RenderOptions", "job_manifest", "job_name",
           "render_workflow", "run_labels", "to_yaml"]

DEFAULT_RUNNER_IMAGE = "localhost/reactorcide/runner:latest"
# The capabilities the runner keeps (all others dropped): SETUID/SETGID to drop untrusted steps to the
# sandbox uid, CHOWN/FOWNER to hand the untrusted copy of the source to it, DAC_OVERRIDE to read and clean
# what that uid left (0600 files in the hand-over area), KILL to end its processes.
RUNNER_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID")
LABEL_PREFIX = "reactorcide.dev"
_SECRET_REF_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)/([-._a-zA-Z0-9]{1,253})$")


@dataclass
class RenderOptions:
    """What a render needs besides the workflow: the event, the sources and the cluster's names."""

    event: str | None = None
    branch: str | None = None
    sha: str | None = None
    pr_number: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    runner_image: str = DEFAULT_RUNNER_IMAGE
    namespace: str | None = None
    run_id: str | None = None
    source_type: str | None = None
    source_url: str | None = None
    source_ref: str | None = None
    ci_source_type: str | None = None
    ci_source_url: str | None = None
    ci_source_ref: str | None = None
    ttl_seconds_after_finished: int = 3600
    coordinator_secret: str | None = None  # a Secret with the lease token (key: token), if any
    # The run's state ConfigMap (workflow/kubernetes_state.py), which `workflow run` keeps: mounted read-only
    # in each pod. A plain render has no run to keep one, so its jobs ask about others in simple mode.
    state_configmap: str | None = None


def dns_label(text: str, limit: int = 63) -> str:
    """A DNS-1123 label made from `text`, unique per input (a short hash is added when it had to change).

    >>> dns_label("Build[linux]")
    'build-linux-281a4c'
    """
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "job"
    if cleaned == text and len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    return f"{cleaned[: limit - 7].rstrip('-')}-{digest}"


def _label_value(text: str) -> str:
    """A label value (<= 63 of [A-Za-z0-9._-], alphanumeric at both ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    if cleaned == text and len(cleaned) <= 63:
        return cleaned
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    return f"{cleaned[:56].rstrip('-._')}-{digest}".lstrip("-")


def _memory(value: str, where: str) -> str:
    """A workflow memory amount as a Kubernetes quantity ("2G", "512Mi"; "512MB" -> "512M")."""
    try:
        number, unit = split_memory(value)
    except ValueError as exc:
        raise WorkflowError(str(exc), field=where) from None
    # Kubernetes reads a lower-case "m" as milli, so units are written upper-case, but for kilo ("k").
    return number + ("k" if unit == "K" else unit)


def _secret_refs(job: WorkflowJob, where: str) -> dict[str, tuple[str, str]]:
    refs: dict[str, tuple[str, str]] = {}
    for name, ref in (job.secrets or {}).items():
        match = _SECRET_REF_RE.fullmatch(ref)
        if not match:
            raise WorkflowError(f"{ref!r} is not SECRET-NAME/KEY (a Kubernetes Secret and one of its keys)",
                                field=f"{where}.secrets.{name}")
        refs[name] = (match.group(1), match.group(3))
    return refs


def _check_environment(environment: Mapping[str, str], where: str) -> None:
    """A manifest never holds a secret value: refuse what looks like one in a job's plain environment."""
    for name, value in environment.items():
        if "${secret:" in value:
            raise WorkflowError("a ${secret:...} reference needs the local secret store, which a pod does not "
                                "have: name a Kubernetes Secret under `secrets:` instead",
                                field=f"{where}.environment.{name}")
        if is_secret_name(name):
            raise WorkflowError("looks like a secret (by its name) and would be written into the manifest in "
                                "clear: name a Kubernetes Secret under `secrets:` instead",
                                field=f"{where}.environment.{name}")


def _instances(workflow: Workflow) -> list[tuple[str, WorkflowJob, str | None, list[str]]]:
    """(instance name, job, for_each item, instance names it depends on), in dependency order."""
    out: list[tuple[str, WorkflowJob, str | None, list[str]]] = []
    by_base: dict[str, list[str]] = {}
    for name in workflow.topological_order():
        job = workflow.jobs[name]
        deps = [inst for dep in job.depends_on for inst in by_base.get(dep, [])]
        items: list[str | None] = list(job.for_each) if job.for_each else [None]
        for item in items:
            instance = f"{name}[{item}]" if item is not None else name
            by_base.setdefault(name, []).append(instance)
            out.append((instance, job, item, deps))
    return out


def render_workflow(workflow: Workflow, options: RenderOptions | None = None) -> list[dict[str, Any]]:
    """One batch/v1 Job manifest (a dict) per job instance of `workflow`, in dependency order.

    Raises WorkflowError (naming the job and field) for a job that cannot be rendered safely.
    """
    opts = options or RenderOptions()
    run_id = opts.run_id or uuid.uuid4().hex[:8]
    workflow_id = workflow.effective_id
    variables = {**workflow.vars, **dict(opts.variables)}
    instances = _instances(workflow)
    names = {inst: job_name(workflow_id, inst, run_id) for inst, _, _, _ in instances}
    return [job_manifest(workflow_id, run_id, instance, job, item=item, depends_on=[names[d] for d in deps],
                         variables=variables, options=opts, job_id=names[instance])
            for instance, job, item, deps in instances]


def job_name(workflow_id: str, instance: str, run_id: str) -> str:
    """The Kubernetes Job name of one job instance of a run."""
    return dns_label(f"{workflow_id}-{instance}-{run_id}")


def run_labels(workflow_id: str, run_id: str) -> dict[str, str]:
    """The labels of everything a workflow run creates (its Jobs, their pods, its state ConfigMap)."""
    return {
        "app.kubernetes.io/name": "runnerlib",
        "app.kubernetes.io/managed-by": "runnerlib",
        f"{LABEL_PREFIX}/workflow": _label_value(workflow_id),
        f"{LABEL_PREFIX}/run": _label_value(run_id),
    }


def job_manifest(workflow_id: str, run_id: str, instance: str, job: WorkflowJob, *, item: str | None,
                 depends_on: Sequence[str], variables: Mapping[str, str], options: RenderOptions,
                 job_id: str) -> dict[str, Any]:
    """The batch/v1 Job of one job instance. `depends_on` holds the Job names it waits for (an annotation);
    `job_id` becomes REACTORCIDE_JOB_ID, which the runner signs its trigger messages for."""
    opts = options
    name = job_name(workflow_id, instance, run_id)
    where = f"jobs.{job.name}"
    _check_environment(job.environment, where)
    secrets = _secret_refs(job, where)
    labels = {**run_labels(workflow_id, run_id), f"{LABEL_PREFIX}/job": _label_value(instance)}
    annotations = {
        f"{LABEL_PREFIX}/job-name": instance,
        f"{LABEL_PREFIX}/depends-on": ",".join(depends_on),
        f"{LABEL_PREFIX}/condition": job.condition.value,
    }
    env: list[dict[str, Any]] = list(_container_env(workflow_id, run_id, instance, job, item, variables, opts))
    env.append({"name": "REACTORCIDE_JOB_ID", "value": job_id})
    env += [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for name, (secret, key) in sorted(secrets.items())]
    if opts.coordinator_secret:
        env.append({"name": "REACTORCIDE_API_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": opts.coordinator_secret, "key": "token"}}})
    secret_names = sorted(secrets) + (["REACTORCIDE_API_TOKEN"] if opts.coordinator_secret else [])
    if secret_names:
        env.append({"name": "REACTORCIDE_SECRET_ENV_NAMES", "value": ",".join(secret_names)})

    container: dict[str, Any] = {
        "name": "runner",
        "image": job.image or opts.runner_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "runnerlib.cli", "run"],
        "env": env,
        "workingDir": "/job",
        "volumeMounts": [{"name": "job", "mountPath": "/job"}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": _container_security(job, where),
    }
    resources = _resources(job, where)
    if resources:
        container["resources"] = resources
    volumes: list[dict[str, Any]] = [{"name": "job", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    if opts.state_configmap:
        from runnerlib.workflow.kubernetes_state import pod_state_parts

        volume, mount, state_env = pod_state_parts(opts.state_configmap)
        volumes.append(volume)
        container["volumeMounts"].append(mount)
        env = [e for e in env if e["name"] != state_env["name"]] + [state_env]  # the run's, not a job's own
        container["env"] = env
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    spec: dict[str, Any] = {
        # The runner retries steps itself; a pod that failed is a job that failed.
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": opts.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if job.timeout:
        spec["activeDeadlineSeconds"] = int(job.timeout)
    metadata: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
    if opts.namespace:
        metadata["namespace"] = opts.namespace
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def _container_env(workflow_id: str, run_id: str, instance: str, job: WorkflowJob, item: str | None,
                   variables: Mapping[str, str], opts: RenderOptions) -> list[dict[str, str]]:
    values: dict[str, str] = dict(variables)
    values.update(job.environment)
    if item is not None:
        values[job.item_var] = item
        values["REACTORCIDE_WORKFLOW_ITEM"] = item
    command = job.command
    if job.job_file:
        # The job file is part of the trusted CI tree, prepared at /job/ci before the command runs.
        command = f"runnerlib run-job /job/ci/{job.job_file.removeprefix('/job/ci/').lstrip('/')}"
    values.update({
        "REACTORCIDE_IN_CONTAINER": "true",
        "REACTORCIDE_WORKSPACE": "/job",
        "REACTORCIDE_QUEUE": "kubernetes",
        "REACTORCIDE_JOB_NAME": instance,
        "REACTORCIDE_JOB_COMMAND": command or "",
        "REACTORCIDE_CODE_DIR": "/job/src",
        "REACTORCIDE_SOURCE_DIR": "/job/src",
        "REACTORCIDE_CI_SOURCE_DIR": "/job/ci",
        "REACTORCIDE_TRIGGERS_FILE": "/job/triggers.json",
        # set_output/set_var write here; the runner prints it as a signed log line (workflow/output_lines.py).
        "REACTORCIDE_WORKFLOW_OUTPUT": "/job/workflow-output.json",
        "REACTORCIDE_WORKFLOW_OUTPUT_TRANSPORT": "log",
        "REACTORCIDE_WORKFLOW_ID": workflow_id,
        "REACTORCIDE_WORKFLOW_RUN_ID": run_id,
        "REACTORCIDE_WORKFLOW_JOB": instance,
        "REACTORCIDE_WORKFLOW_VARS": json.dumps(dict(variables), sort_keys=True),
        "GIT_TERMINAL_PROMPT": "0",
    })
    if job.job_dir or job.working_dir:
        values["REACTORCIDE_JOB_DIR"] = "/job/src/" + (job.working_dir or job.job_dir or "").lstrip("/")
    if job.timeout:
        values["REACTORCIDE_JOB_TIMEOUT"] = str(job.timeout)
    for key, value in (("REACTORCIDE_EVENT_TYPE", opts.event), ("REACTORCIDE_BRANCH", opts.branch),
                       ("REACTORCIDE_SHA", opts.sha), ("REACTORCIDE_PR_NUMBER", opts.pr_number),
                       ("REACTORCIDE_SOURCE_TYPE", opts.source_type), ("REACTORCIDE_SOURCE_URL", opts.source_url),
                       ("REACTORCIDE_SOURCE_REF", opts.source_ref),
                       ("REACTORCIDE_CI_SOURCE_TYPE", opts.ci_source_type),
                       ("REACTORCIDE_CI_SOURCE_URL", opts.ci_source_url),
                       ("REACTORCIDE_CI_SOURCE_REF", opts.ci_source_ref)):
        if value:
            values[key] = value
    if opts.source_url and not opts.source_type:
        values["REACTORCIDE_SOURCE_TYPE"] = "git"
    if opts.ci_source_url and not opts.ci_source_type:
        values["REACTORCIDE_CI_SOURCE_TYPE"] = "git"
    return [{"name": k, "value": v} for k, v in sorted(values.items())]


def _container_security(job: WorkflowJob, where: str) -> dict[str, Any]:
    added = sorted(set(RUNNER_CAPABILITIES) | {c.removeprefix("CAP_") for c in job.capabilities})
    context: dict[str, Any] = {
        # no_new_privs on the runner: setuid binaries never raise a step's privileges. Dropping from root
        # to the sandbox uid is not an escalation and keeps working.
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"], "add": added},
    }
    if job.run_as is not None:
        user = job.run_as.user
        if isinstance(user, str) and not user.isdigit():
            raise WorkflowError("Kubernetes needs a numeric uid (runAsUser); a user name cannot be rendered",
                                field=f"{where}.run_as.user")
        uid = int(user)
        context["runAsUser"] = uid
        if uid != 0:
            # An unprivileged runner sandboxes with user namespaces and needs no capabilities at all.
            context["runAsNonRoot"] = True
            context["capabilities"] = {"drop": ["ALL"]}
    return context


def _resources(job: WorkflowJob, where: str) -> dict[str, Any]:
    if job.resources is None:
        return {}
    amounts: dict[str, Any] = {}
    if job.resources.cpu is not None:
        cpu = job.resources.cpu
        amounts["cpu"] = format(cpu, "g") if isinstance(cpu, float) else str(cpu)
    if job.resources.memory is not None:
        amounts["memory"] = _memory(job.resources.memory, f"{where}.resources.memory")
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def to_yaml(manifests: Sequence[Mapping[str, Any]]) -> str:
    """The manifests as one multi-document YAML stream (`kubectl apply -f -` reads it)."""
    import yaml

    return "".join("---\n" + yaml.safe_dump(dict(m), sort_keys=False) for m in manifests)
