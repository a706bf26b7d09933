"""The workflow API for trusted job code: trigger follow-up jobs, ask about jobs, publish outputs.

Example::

    import runnerlib

    if runnerlib.is_job_running("deploy-production"):
        print("Deploy already in progress, skipping")
    elif runnerlib.get_job_result("test")["exit_code"] == 0:
        runnerlib.trigger_job("deploy-staging", env={"DEPLOY_TARGET": "staging"}, depends_on=["build"])

Triggers go to the triggers file (REACTORCIDE_TRIGGERS_FILE, default <workspace>/triggers.json), which only
trusted steps can write, and, when REACTORCIDE_COORDINATOR_URL and REACTORCIDE_API_TOKEN are set (they are
given to trusted steps only), straight to the coordinator. After the steps, the runner publishes the file as
signed lines on its stdout (publish.py). Every value is masked with the job's secrets before it is written
anywhere: a secret cannot travel to the next job through a trigger (give it to that job as a secret). That
is twice: with the secrets this process can see, and, when the step has the registration socket
(REACTORCIDE_SECRETS_SOCKET + REACTORCIDE_SECRETS_TOKEN), by the runner, which also knows the secrets that
other steps registered at run time. If that socket is configured but cannot mask, nothing is written
(PayloadMaskingError).

Job state comes from the coordinator when one is configured, else from the local workflow run's state file
(REACTORCIDE_WORKFLOW_STATE, maintained by `runnerlib workflow run`); with neither (simple mode) from what
this job knows: its own name is running, its steps (asked from a trusted step) are running or ended as their
last attempt did, a job it triggered is pending, any other job has no state
(is_job_running False, get_job_result None). Outside a job, trigger_job refuses unless a workspace or a
triggers file is named.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from runnerlib.execution.step_state import ENV_NAME as STEPS_STATE_ENV
from runnerlib.execution.step_state import read_steps
from runnerlib.workflow import state, triggers_file
from runnerlib.workflow.coordinator import CoordinatorClient, CoordinatorError, JobState
from runnerlib.workflow.models import Condition, JobTrigger, WorkflowError
from runnerlib.workflow.publish import COORDINATOR, default_triggers_path, default_workspace, mask_document

__all__ = [
    "PayloadMaskingError",
    "TriggerDeliveryError",
    "WorkflowContext",
    "WorkflowStateUnavailable",
    "coordinator_from_env",
    "job_registry",
    "get_job_result",
    "is_job_running",
    "log_next_job",
    "mask_payload",
    "trigger_job",
    "trigger_jobs",
    "workflow_context",
]

STATE_VAR = "REACTORCIDE_WORKFLOW_STATE"
# Any of these names a job's triggers file: the runner sets them for its steps; a user names a workspace.
JOB_MARKERS = ("REACTORCIDE_TRIGGERS_FILE", "REACTORCIDE_WORKSPACE_ROOT", "REACTORCIDE_WORKSPACE")
OUTPUT_VAR = "REACTORCIDE_WORKFLOW_OUTPUT"


class WorkflowStateUnavailable(RuntimeError):
    """Neither a coordinator nor a local workflow state is configured, so job state cannot be known."""


class TriggerDeliveryError(RuntimeError):
    """The coordinator refused or could not take a trigger (the triggers file still holds it)."""


class PayloadMaskingError(WorkflowError):
    """The runner's secrets socket is configured but could not mask a payload; nothing was written."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def job_registry(environ: Mapping[str, str]) -> Any:
    """A SecretRegistry of the secrets this process can see (env names, patterns, token, lists, files)."""
    from runnerlib.security.registry import SecretRegistry
    from runnerlib.security.secret_sources import load_secrets

    registry = SecretRegistry()
    load_secrets(registry, environ=environ)
    return registry


def mask_payload(value: Any, environ: Mapping[str, str], registry: Any = None) -> Any:
    """A JSON-like payload with every string (keys too) masked: by `registry` (default: job_registry), then,
    when the secrets socket is configured, by the runner, which knows secrets this process never saw.

    Fails closed: if the socket is configured but the runner cannot mask, PayloadMaskingError is raised and
    the caller writes nothing.
    """
    import runnerlib.secrets_client as secrets_client

    # Numbers are masked by their JSON text (`set_output("pin", 48151623)`): as text through the maskers, then
    # back to numbers where nothing was masked. A list of byte values is masked as the bytes it holds.
    original = value
    value = _numbers_as_text(value)
    local = job_registry(environ) if registry is None else registry
    masked = mask_document(value, local)
    byte_lists = _byte_lists(original)
    covered = {id(lst) for lst in byte_lists if _changed(_as_text(lst, "surrogateescape"), local)}
    if not secrets_client.socket_configured(environ):
        return _numbers_back(original, masked, covered)
    windows = [(id(lst), w) for lst in byte_lists if id(lst) not in covered for w in _windows(lst)]
    texts = list(dict.fromkeys([*_strings(masked), *(w for _, w in windows)]))
    try:
        remote = dict(zip(texts, secrets_client.mask_texts(texts, socket_path=environ[secrets_client.SOCKET_VAR],
                                                           token=environ[secrets_client.TOKEN_VAR]), strict=True))
    except secrets_client.MaskingError as exc:
        raise PayloadMaskingError(f"{exc}; the runner's secrets socket is configured, so nothing was written "
                                  "rather than a payload only partly masked", field="masking") from None
    covered.update(key for key, w in windows if remote[w] != w)
    return _numbers_back(original, mask_document(masked, _Lookup(remote)), covered)


# A secret held as a list of byte values (Node's Buffer.toJSON, Python's list(b), a Go []byte printed as numbers)
# has no string to mask. A list of at least this many integers 0-255 is read as the bytes it holds; if a masker
# changes them, every item of the list becomes "***": which items a secret covered cannot be told from a masked
# text, and a list that holds a secret is seldom worth reading anyway.
BYTE_LIST_MIN = 4
# The runner's socket masks texts of at most 128 KiB of UTF-8 (a byte that is not UTF-8 goes as U+FFFD, 3 bytes):
# a long list goes in windows of this many items, each overlapping the next by half, so that a secret of up to
# half a window lies whole in one of them.
_BYTE_WINDOW = 32 * 1024


def _is_byte_list(value: Any) -> bool:
    return (isinstance(value, list) and len(value) >= BYTE_LIST_MIN
            and all(type(x) is int and 0 <= x <= 255 for x in value))


def _byte_lists(value: Any) -> list[list[int]]:
    """The lists of byte values anywhere in a JSON-like value."""
    if _is_byte_list(value):
        return [value]
    if isinstance(value, dict):
        return [lst for item in value.values() for lst in _byte_lists(item)]
    if isinstance(value, list):
        return [lst for item in value for lst in _byte_lists(item)]
    return []


def _as_text(items: list[int], errors: str) -> str:
    return bytes(items).decode("utf-8", errors)


def _changed(text: str, masker: Any) -> bool:
    return masker is not None and masker.mask_text(text) != text


def _windows(items: list[int]) -> list[str]:
    """A byte list as the texts the socket takes (see _BYTE_WINDOW): what is not UTF-8 becomes U+FFFD, and the
    decoder starts again at the next byte, so a registered secret (always text) comes through whole."""
    step = _BYTE_WINDOW // 2
    return [_as_text(items[i:i + _BYTE_WINDOW], "replace") for i in range(0, max(1, len(items) - step), step)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers_as_text(value: Any) -> Any:
    """Every number of a JSON-like value as the text json.dumps writes for it (booleans and null stay: four
    or five fixed letters are no secret, and masking them would break every flag)."""
    if _is_number(value):
        return json.dumps(value)
    if isinstance(value, dict):
        return {k: _numbers_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_text(item) for item in value]
    return value


def _numbers_back(original: Any, masked: Any, covered: set[int] | frozenset[int] = frozenset()) -> Any:
    """`masked` with each number of `original` restored where its text came through the maskers unchanged, and
    every item of a byte list in `covered` (ids of `original`'s lists) as "***"."""
    if _is_number(original):
        return original if masked == json.dumps(original) else masked
    if isinstance(original, dict) and isinstance(masked, dict) and len(original) == len(masked):
        return {mk: _numbers_back(ov, mv, covered) for (_ok, ov), (mk, mv) in zip(original.items(), masked.items(),
                                                                                strict=True)}
    if isinstance(original, list) and id(original) in covered:
        return ["***"] * len(original)
    if isinstance(original, list) and isinstance(masked, list):
        return [_numbers_back(o, m, covered) for o, m in zip(original, masked, strict=True)]
    return masked


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@dataclass
class _Lookup:
    """mask_document's masker from texts the runner already masked."""

    masked: dict[str, str]

    def mask_text(self, text: str) -> str:
        return self.masked[text]


def coordinator_from_env(environ: Mapping[str, str] | None = None, registry: Any = None) -> CoordinatorClient | None:
    """The coordinator client configured by the environment, or None if there is none.

    REACTORCIDE_COORDINATOR_URL + REACTORCIDE_API_TOKEN (both needed), REACTORCIDE_ALLOW_INSECURE_TRANSPORT
    (true to allow http://), REACTORCIDE_COORDINATOR_CA_FILE (a CA bundle to trust).
    """
    env = os.environ if environ is None else environ
    url, token = env.get("REACTORCIDE_COORDINATOR_URL"), env.get("REACTORCIDE_API_TOKEN")
    if not url or not token:
        return None
    return CoordinatorClient(
        url, token, registry=registry,
        allow_insecure_transport=_truthy(env.get("REACTORCIDE_ALLOW_INSECURE_TRANSPORT")),
        cafile=env.get("REACTORCIDE_COORDINATOR_CA_FILE") or None,
    )


def _as_trigger(job: JobTrigger | Mapping[str, Any]) -> JobTrigger:
    return job if isinstance(job, JobTrigger) else JobTrigger.model_validate(dict(job))


def trigger_jobs(
    jobs: Iterable[JobTrigger | Mapping[str, Any]],
    *,
    triggers_file_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    registry: Any = None,
) -> str:
    """Trigger several jobs in one operation; returns its operation id.

    Each job is a JobTrigger or a dict of its fields (job_name, env, depends_on, condition, source_*,
    ci_source_*, container_image, job_command, priority, timeout). The whole list is validated first: on a
    bad entry nothing is written.

    When a coordinator is configured the operation is also POSTed to it. If the coordinator refuses it (4xx,
    or a configuration error such as a plain http URL) TriggerDeliveryError is raised; if it cannot be
    reached after the client's retries a warning is printed on stderr and the call returns. Either way the
    operation is in the triggers file, and the runner delivers it after the steps.

    Every string is masked first (mask_payload): if the runner's secrets socket is configured but cannot
    mask, PayloadMaskingError is raised and nothing is written or sent.
    """
    env = os.environ if environ is None else environ
    try:
        validated = [_as_trigger(job) for job in jobs]
    except ValueError as exc:
        raise WorkflowError(_one_line_validation(exc), field="trigger") from None
    if not validated:
        raise WorkflowError("trigger_jobs needs at least one job", field="jobs")
    if registry is None:
        registry = job_registry(env)
    from runnerlib.observability.tracecontext import from_environ

    parent, _malformed = from_environ(env)
    if parent is not None:
        # The triggered jobs continue this step's trace (a TRACEPARENT the caller set explicitly wins).
        validated = [job.model_copy(update={"env": {**parent.env(), **job.env}}) for job in validated]
    documents = mask_payload([job.to_dict() for job in validated], env, registry)
    masked = [JobTrigger.model_validate(document) for document in documents]
    if not triggers_file_path and not any(env.get(name) for name in JOB_MARKERS):
        # Outside a job, /job/triggers.json or ./triggers.json may be another job's file (a shared host).
        raise WorkflowError("trigger_job: not inside a job (REACTORCIDE_TRIGGERS_FILE is not set); call it from "
                            "a job's trusted step, or name a workspace (REACTORCIDE_WORKSPACE_ROOT) or a "
                            "triggers file (triggers_file_path=, runnerlib trigger --triggers-file)",
                            field="triggers_file")
    path = Path(triggers_file_path) if triggers_file_path else default_triggers_path(environ=dict(env))
    try:
        operation = triggers_file.append_operation(path, masked)
    except PermissionError:
        raise WorkflowError("cannot write the triggers file: only trusted steps can trigger jobs",
                            file=str(path)) from None
    except OSError as exc:
        raise WorkflowError(f"cannot write the triggers file: {exc.strerror}", file=str(path)) from None
    try:
        client = coordinator_from_env(env, registry)
        if client is not None:
            client.post_triggers(env.get("REACTORCIDE_JOB_ID", ""), operation.document())
    except CoordinatorError as exc:
        where = f"operation {operation.operation_id} is in {path}; the runner delivers it after the steps"
        if exc.retriable:
            # The coordinator is unreachable for now: the runner retries after the steps and the stdout
            # transport carries it too, so the job goes on (with a warning) instead of failing on an outage.
            print(f"runnerlib: warning: {exc} ({where})", file=sys.stderr, flush=True)
            return operation.operation_id
        raise TriggerDeliveryError(f"{exc} ({where})") from None
    if client is not None:
        triggers_file.mark_delivered(path, [operation.operation_id], COORDINATOR)
    return operation.operation_id


def trigger_job(
    job_name: str,
    env: Mapping[str, Any] | None = None,
    depends_on: Iterable[str] | str | None = None,
    condition: Condition | str | None = None,
    **fields: Any,
) -> str:
    """Trigger one job; returns the operation id. Other JobTrigger fields go as keywords.

    Example::

        trigger_job("deploy-staging", env={"DEPLOY_TARGET": "staging"}, depends_on=["test", "build"],
                    condition="all_success", job_command="make deploy", timeout="30m")
    """
    options = {k: fields.pop(k) for k in ("triggers_file_path", "environ", "registry") if k in fields}
    job: dict[str, Any] = {"job_name": job_name, **fields}
    if env:
        job["env"] = dict(env)
    if depends_on:
        job["depends_on"] = [depends_on] if isinstance(depends_on, str) else list(depends_on)
    if condition is not None:
        job["condition"] = condition
    return trigger_jobs([job], **options)


def _one_line_validation(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else first["msg"]
    return str(exc)


# --- job state ---------------------------------------------------------------------------------------------


def _local_states(name: str, environ: Mapping[str, str]) -> list[JobState] | None:
    path = environ.get(STATE_VAR)
    if not path:
        return None
    data = state.read_json(path, {"jobs": {}})
    jobs = data.get("jobs", {}) if isinstance(data, dict) else {}
    found: list[JobState] = []
    for instance, info in jobs.items():
        if not isinstance(info, dict):
            continue
        if instance == name or info.get("base_name") == name:
            found.append(JobState(
                name=instance, status=str(info.get("status", "pending")), job_id=info.get("job_id"),
                exit_code=info.get("exit_code"), outputs=info.get("outputs") or {},
                created_at=info.get("started_at"), finished_at=info.get("finished_at"),
            ))
    return found


def _states(name: str, environ: Mapping[str, str] | None) -> list[JobState]:
    env = os.environ if environ is None else environ
    client = coordinator_from_env(env)
    if client is not None:
        return client.list_jobs(name, workflow_run=env.get("REACTORCIDE_WORKFLOW_RUN_ID") or None)
    local = _local_states(name, env)
    if local is None:
        return _simple_mode_states(name, env)
    return local


def _simple_mode_states(name: str, env: Mapping[str, str]) -> list[JobState]:
    """Job state with neither a coordinator nor a workflow run: what this job itself knows. The job running
    this code is running; a job it triggered is pending (the worker starts it after this job); any other job
    is unknown (no state: is_job_running False, get_job_result None)."""
    if env.get("REACTORCIDE_STEP_NAME") and env.get("REACTORCIDE_JOB_NAME") == name:
        return [JobState(name=name, status="running", job_id=env.get("REACTORCIDE_JOB_ID") or None)]
    steps_file = env.get(STEPS_STATE_ENV)
    if steps_file:
        info = read_steps(steps_file).get(name)
        if info is not None:  # a step of this job: running, or how its last attempt ended
            code = info.get("exit_code")
            return [JobState(name=name, status=str(info.get("status", "running")),
                             exit_code=code if isinstance(code, int) else None)]
    path = env.get("REACTORCIDE_TRIGGERS_FILE")
    if path:
        try:
            triggered = triggers_file.read_triggers(path).jobs
        except (OSError, ValueError):
            return []
        if any(job.get("job_name") == name for job in triggered):
            return [JobState(name=name, status="pending", job_id=None)]
    return []


def is_job_running(job_name: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """True if a job of this name is queued or running (for_each instances count for their job)."""
    return any(s.running for s in _states(job_name, environ))


def get_job_result(job_name: str, *, environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The latest result of a job: {"job_name", "status", "exit_code", "job_id", "outputs", ...}; None if none.

    For a for_each job asked by its name, the result covers every instance: status "failed" if one failed,
    exit_code the first non-zero one, and "instances" maps each instance to its own result.
    """
    found = _states(job_name, environ)
    if not found:
        return None
    exact = [s for s in found if s.name == job_name]
    if exact:
        return exact[0].as_result()
    results = {s.name: s.as_result() for s in found}
    statuses = {s.status for s in found}
    status = next((st for st in ("running", "pending", "failed", "cancelled") if st in statuses),
                  "success" if statuses <= {"success"} else sorted(statuses)[0])
    codes = [s.exit_code for s in found if s.exit_code]
    return {"job_name": job_name, "status": status, "exit_code": codes[0] if codes else
            (0 if status == "success" else None), "job_id": None, "outputs": {}, "instances": results}


# --- local mode: say what to run next ------------------------------------------------------------------------


def log_next_job(
    job_name: str,
    reason: str | None = None,
    depends_on: Iterable[str] | None = None,
    *,
    workflow_file: str | None = None,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Print what should run next, in the design document's format, and return the text.

    Output::

        📋 Next jobs to run:
          → deploy-staging (waiting on: test, build - all complete)
            reason: tests passed

        Run the next job:
          $ python -m runnerlib.cli run --job deploy-staging --workflow-file pipeline.yaml
    """
    env = os.environ if environ is None else environ
    deps = list(depends_on or [])
    line = f"  → {job_name}"
    if deps:
        line += f" (waiting on: {', '.join(deps)}{_deps_progress(deps, env)})"
    lines = ["📋 Next jobs to run:", line]
    if reason:
        lines.append(f"    reason: {reason}")
    workflow_file = workflow_file or env.get("REACTORCIDE_WORKFLOW_FILE") or "<workflow.yaml>"
    lines += ["", "Run the next job:",
              f"  $ python -m runnerlib.cli run --job {job_name} --workflow-file {workflow_file}"]
    text = "\n".join(lines) + "\n"
    text = mask_payload(text, env)
    out = stream or sys.stdout
    try:
        out.write(text)
    except UnicodeEncodeError:  # a terminal that cannot show the arrows still gets the information
        out.write(text.encode("ascii", "replace").decode("ascii"))
    out.flush()
    return text


def _deps_progress(deps: list[str], environ: Mapping[str, str]) -> str:
    """" - all complete", or the states of the unfinished ones, when a local state or coordinator knows them."""
    try:
        results = {dep: get_job_result(dep, environ=environ) for dep in deps}
    except (WorkflowStateUnavailable, CoordinatorError, ValueError):
        return ""
    if all(r is not None and r["status"] in state.FINISHED for r in results.values()):
        return " - all complete"
    pending = [f"{d}: {r['status'] if r else 'not started'}" for d, r in results.items()
               if r is None or r["status"] not in state.FINISHED]
    return " - " + ", ".join(pending)


# --- the context of a job inside a workflow -------------------------------------------------------------


@dataclass
class WorkflowContext:
    """Where this job stands in its workflow, and how it publishes outputs and variables.

    Example::

        ctx = runnerlib.workflow_context()
        print(ctx.workflow, ctx.job_name, ctx.item, ctx.branch)
        ctx.set_output("image", "registry/app:1.2")   # workflow-output.json {"outputs": {"image": ...}}
        ctx.set_var("VERSION", "1.2")                  # dependants started by the local runner see VERSION
    """

    job_id: str | None
    job_name: str | None
    workflow: str | None
    run_id: str | None
    event: str | None
    branch: str | None
    sha: str | None
    pr_number: str | None
    item: str | None
    vars: dict[str, str] = field(default_factory=dict)
    output_file: Path = field(default_factory=lambda: Path("workflow-output.json"))
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    def _update(self, section: str, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name:
            raise WorkflowError("must be a non-empty string", field=f"{section} name")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise WorkflowError("must be JSON-serialisable", field=f"{section}.{name}") from None
        # The name is masked too: it is written to the same file.
        ((masked_name, masked),) = mask_payload({name: value}, self.environ).items()

        def change(current: Any) -> Any:
            doc = current if isinstance(current, dict) else {}
            doc.setdefault("vars", {})
            doc.setdefault("outputs", {})
            doc[section][masked_name] = masked
            return doc

        state.update_json(self.output_file, {"vars": {}, "outputs": {}}, change)

    def set_output(self, name: str, value: Any) -> None:
        """Record an output of this job in workflow-output.json (masked)."""
        self._update("outputs", name, value)

    def set_var(self, name: str, value: str) -> None:
        """Record a variable for the jobs that depend on this one (masked)."""
        self._update("vars", name, str(value))

    def outputs(self) -> dict[str, Any]:
        """This job's outputs so far."""
        return dict(state.read_json(self.output_file, {}).get("outputs", {}))

    def trigger_job(self, job_name: str, env: Mapping[str, Any] | None = None,
                    depends_on: Iterable[str] | str | None = None, condition: Condition | str | None = None,
                    **fields: Any) -> str:
        """`trigger_job` with this context's environment (and triggers file)."""
        return trigger_job(job_name, env, depends_on, condition, environ=self.environ, **fields)

    def trigger_jobs(self, jobs: Iterable[JobTrigger | Mapping[str, Any]]) -> str:
        return trigger_jobs(jobs, environ=self.environ)

    # Names of the earlier runnerlib's context, kept so existing job scripts run unchanged.
    submit_job = trigger_job

    def set_workflow_var(self, key: str, value: Any) -> None:
        self.set_var(key, value)

    def set_workflow_output(self, key: str, value: Any) -> None:
        self.set_output(key, value)

    def workflow_vars(self) -> dict[str, str]:
        return dict(self.vars)

    def flush_triggers(self) -> None:
        """Nothing to do: every trigger call has already been written (kept for existing scripts)."""

    @property
    def workflow_id(self) -> str | None:
        return self.workflow

    @property
    def commit(self) -> str | None:
        return self.sha

    def __enter__(self) -> WorkflowContext:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def is_job_running(self, job_name: str) -> bool:
        return is_job_running(job_name, environ=self.environ)

    def get_job_result(self, job_name: str) -> dict[str, Any] | None:
        return get_job_result(job_name, environ=self.environ)


def workflow_context(triggers_file: str | os.PathLike[str] | None = None, *,
                     environ: Mapping[str, str] | None = None) -> WorkflowContext:
    """The WorkflowContext of the running job, from the REACTORCIDE_* environment.

    Also a context manager, as in the earlier runnerlib (`with workflow_context() as ctx:
    ctx.trigger_job(...)`); triggers are written at each call, so leaving the block has nothing left to do.
    `triggers_file` overrides REACTORCIDE_TRIGGERS_FILE for this context's triggers.

    The variables the worker sets for workflow jobs are read too: RC_WF_ID, RC_WF_VARS_JSON /
    RC_WF_VARS_FILE (the workflow's vars) and RC_WF_OUTPUT_FILE (where outputs go).
    """
    env = dict(os.environ if environ is None else environ)
    if triggers_file is not None:
        env["REACTORCIDE_TRIGGERS_FILE"] = os.fspath(triggers_file)
    variables = _workflow_vars(env)
    output = env.get(OUTPUT_VAR) or env.get("RC_WF_OUTPUT_FILE")
    return WorkflowContext(
        job_id=env.get("REACTORCIDE_JOB_ID"),
        job_name=env.get("REACTORCIDE_WORKFLOW_JOB") or env.get("REACTORCIDE_JOB_NAME"),
        workflow=env.get("REACTORCIDE_WORKFLOW_ID") or env.get("RC_WF_ID"),
        run_id=env.get("REACTORCIDE_WORKFLOW_RUN_ID"),
        event=env.get("REACTORCIDE_EVENT_TYPE"),
        branch=env.get("REACTORCIDE_BRANCH") or env.get("REACTORCIDE_GIT_BRANCH"),
        sha=env.get("REACTORCIDE_SHA") or env.get("REACTORCIDE_GIT_COMMIT"),
        pr_number=env.get("REACTORCIDE_PR_NUMBER"),
        item=env.get("REACTORCIDE_WORKFLOW_ITEM"),
        vars=variables,
        output_file=Path(output) if output else default_workspace(env) / "workflow-output.json",
        environ=env,
    )


def _workflow_vars(env: Mapping[str, str]) -> dict[str, str]:
    """The workflow's vars: REACTORCIDE_WORKFLOW_VARS or RC_WF_VARS_JSON (JSON), else RC_WF_VARS_FILE."""
    for name in ("REACTORCIDE_WORKFLOW_VARS", "RC_WF_VARS_JSON"):
        text = env.get(name)
        if text:
            try:
                data = json.loads(text)
            except ValueError:
                raise WorkflowError("not valid JSON", field=name) from None
            break
    else:
        path = env.get("RC_WF_VARS_FILE")
        try:
            data = state.read_json(path, {}) if path else {}
        except ValueError as exc:
            raise WorkflowError(str(exc), field="RC_WF_VARS_FILE") from None
    if not isinstance(data, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
