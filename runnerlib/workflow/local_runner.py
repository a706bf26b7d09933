"""Run a whole workflow on this machine, as the worker and coordinator would across machines.

Each job runs in its own workspace (<run dir>/jobs/<job>/ with src/, artifacts/, tmp/, triggers.json and
workflow-output.json), as a separate process started the way the worker starts one: `python -m
runnerlib.cli run` with the contract's REACTORCIDE_* environment (or `run-job JOB_FILE` for a job_file job).
`launcher="shell"` runs the job's command directly under run_process instead (no per-step sandbox), for a
quick run or an install without the executor.

Scheduling:
- a job starts when every dependency has finished and its condition holds: all_success (every direct
  dependency succeeded), any_failed (some ancestor failed or was cancelled), always; otherwise it is skipped;
- independent jobs run in parallel, at most `max_parallel` at a time;
- `for_each` makes one instance per item (named "job[item]", the item in $item_var); a job that depends on
  it waits for every instance (fan-in);
- `vars`: the workflow's vars (overridable), plus the vars each ancestor set with
  `workflow_context().set_var`, reach a job as environment variables and as REACTORCIDE_WORKFLOW_VARS; two
  jobs setting one var to different values fail the run (the coordinator's rule: no implicit winner);
- triggers a job writes at run time (trigger_job) are read from its triggers.json when it finishes and
  added to the run: a name defined in the workflow uses that definition (trigger fields override), another
  name needs a job_command. At most `max_jobs` jobs run in total (a trigger loop ends there, with an error).

The run's state is kept in <run dir>/state.json (REACTORCIDE_WORKFLOW_STATE, so jobs can call
is_job_running / get_job_result), its summary in report.md (a table and a Mermaid graph) and its outputs
in workflow-output.json ({"vars": ..., "outputs": {job: {...}}}).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runnerlib.execution.process import Cancel
from runnerlib.workflow import state, triggers_file
from runnerlib.workflow.models import Condition, JobTrigger, Workflow, WorkflowError, WorkflowJob

__all__ = ["JobNode", "LocalWorkflowRunner", "WorkflowRunResult", "render_mermaid", "render_tree"]

log = logging.getLogger("runnerlib.workflow")

DEFAULT_MAX_JOBS = 200
# Secrets and the coordinator's lease belong to a real job; a local run must never reach the coordinator.
STRIPPED_ENV = ("REACTORCIDE_COORDINATOR_URL", "REACTORCIDE_API_TOKEN")
# The caller's REACTORCIDE_* settings that say HOW to run (output, secrets to mask, the sandbox) reach every
# job; the others say WHAT and WHERE (REACTORCIDE_WORKSPACE_ROOT, REACTORCIDE_GIT_URL, REACTORCIDE_JOB_COMMAND,
# ...), which the run sets per job: inherited, they would point every job at the caller's workspace or source.
PASSED_SETTINGS = frozenset({
    "REACTORCIDE_DEBUG", "REACTORCIDE_LOG_LEVEL", "REACTORCIDE_LOG_FORMAT", "REACTORCIDE_COLOR",
    "REACTORCIDE_LOG_TIMESTAMPS",
    "REACTORCIDE_SECRET_ENV_NAMES", "REACTORCIDE_SECRET_VALUES_LIST", "REACTORCIDE_SECRETS_FILE",
    "REACTORCIDE_SECRETS_STORE", "REACTORCIDE_SECRETS_PASSWORD", "REACTORCIDE_KILL_GRACE",
    "REACTORCIDE_CONCURRENCY", "REACTORCIDE_SANDBOX_BEST_EFFORT",
})


def passes_to_jobs(name: str) -> bool:
    """Whether the caller's variable `name` reaches the jobs of a local workflow run (PASSED_SETTINGS)."""
    return not name.startswith("REACTORCIDE_") or name in PASSED_SETTINGS or name.startswith("REACTORCIDE_SANDBOX")
STATUS_MARK = {"success": "✓", "failed": "✗", "skipped": "-", "cancelled": "■", "running": "…",
               "pending": "·"}


@dataclass
class JobNode:
    """One job instance of a run: its definition (resolved) and, once it ran, its outcome."""

    name: str
    base_name: str
    command: str | None = None
    job_file: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    condition: Condition = Condition.ALL_SUCCESS
    timeout: int | None = None
    item: str | None = None
    item_var: str = "ITEM"
    working_dir: str | None = None
    image: str | None = None
    triggered_by: str | None = None
    error: str | None = None          # a definition problem: the job fails without running
    status: str = "pending"
    exit_code: int | None = None
    reason: str | None = None
    started: float | None = None
    finished: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    vars_out: dict[str, str] = field(default_factory=dict)
    workspace: Path | None = None
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    resources: dict[str, Any] | None = None  # CPU, peak RSS, I/O of the job's whole process tree
    seen_output: bool = False         # the key announcement counts only as a job's first line
    rejected_lines: int = 0           # lines that claimed to be triggers and did not verify

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    def state_entry(self) -> dict[str, Any]:
        return {"status": self.status, "exit_code": self.exit_code, "base_name": self.base_name,
                "item": self.item, "job_id": self.job_id, "started_at": self.started,
                "finished_at": self.finished, "duration": self.duration, "reason": self.reason,
                "depends_on": self.depends_on, "triggered_by": self.triggered_by, "outputs": self.outputs}


@dataclass
class WorkflowRunResult:
    workflow: Workflow
    run_dir: Path
    nodes: list[JobNode]
    duration: float
    report_file: Path
    output_file: Path
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and all(n.status in ("success", "skipped") for n in self.nodes)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def node(self, name: str) -> JobNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def summary(self) -> str:
        """The table printed at the end: job, status, duration, exit code, reason."""
        width = max([len(n.name) for n in self.nodes] + [3])
        lines = [f"{'job'.ljust(width)}  {'status':<9}  {'duration':>8}  exit  note"]
        for node in self.nodes:
            duration = f"{node.duration:.1f}s" if node.duration is not None else "-"
            code = "" if node.exit_code is None else str(node.exit_code)
            lines.append(f"{node.name.ljust(width)}  {node.status:<9}  {duration:>8}  {code:>4}  "
                         f"{node.reason or ''}".rstrip())
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.status] = counts.get(node.status, 0) + 1
        lines.append(f"{len(self.nodes)} jobs: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                     + f" in {self.duration:.1f}s")
        return "\n".join(lines)


def _dir_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "job"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


class LocalWorkflowRunner:
    """Runs one workflow's DAG locally. See the module docstring for the rules.

    Example::

        runner = LocalWorkflowRunner(load_workflow(".reactorcide/workflows/ci.yaml"), code_dir=".",
                                     event="push", branch="main", registry=registry)
        result = runner.run()
        print(result.summary()); print(render_tree(result.nodes))
    """

    def __init__(
        self,
        workflow: Workflow,
        *,
        code_dir: str | os.PathLike[str],
        run_dir: str | os.PathLike[str] | None = None,
        registry: Any,
        event: str | None = None,
        branch: str | None = None,
        sha: str | None = None,
        pr_number: str | None = None,
        variables: Mapping[str, str] | None = None,
        max_parallel: int = 2,
        max_jobs: int = DEFAULT_MAX_JOBS,
        launcher: str = "auto",
        copy_source: bool = True,
        environ: Mapping[str, str] | None = None,
        echo: Callable[[str], None] | None = None,
        grace: float = 10.0,
    ) -> None:
        if max_parallel < 1:
            raise WorkflowError("must be at least 1", field="max_parallel")
        if launcher not in ("auto", "runnerlib", "shell"):
            raise WorkflowError("must be auto, runnerlib or shell", field="launcher")
        if launcher == "auto":
            # `runnerlib run` keeps a job's code inside its workspace, so a shared source needs the shell.
            launcher = "runnerlib" if copy_source else "shell"
        elif launcher == "runnerlib" and not copy_source:
            raise WorkflowError("a shared source (--share-source) needs --launcher shell: `runnerlib run` "
                                "requires the code inside the job's workspace", field="launcher")
        self.workflow = workflow
        self.code_dir = Path(code_dir).resolve()
        if not self.code_dir.is_dir():
            raise WorkflowError("is not a directory", field="code_dir", file=str(code_dir))
        self.run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        default_run_dir = self.code_dir / ".reactorcide" / "runs" / f"{workflow.effective_id}-{self.run_id}"
        self.run_dir = Path(run_dir).resolve() if run_dir else default_run_dir
        self.registry = registry
        self.event, self.branch, self.sha, self.pr_number = event, branch, sha, pr_number
        self.vars = {**workflow.vars, **dict(variables or {})}
        self.max_parallel = max_parallel
        self.max_jobs = max_jobs
        self.launcher = launcher
        self.copy_source = copy_source
        self.environ = {k: v for k, v in (os.environ if environ is None else environ).items()
                        if k not in STRIPPED_ENV and passes_to_jobs(k)}
        self._echo = echo or (lambda line: print(line, flush=True))
        self.grace = grace
        self.nodes: dict[str, JobNode] = {}
        self.errors: list[str] = []
        self._dirs: set[str] = set()
        self._dirs_lock = threading.Lock()
        self._lock = threading.Lock()
        self._collected: list[JobNode] = []  # finished jobs the loop has collected, in order
        self._in_flight: set[str] = set()  # jobs submitted to the pool and not yet collected by the loop
        self._cancel = Cancel()
        self.interrupted = False  # Ctrl-C stopped the run (the CLI exits 130)
        self.state_file = self.run_dir / "state.json"
        self.workflow_file = str(Path(workflow.source).resolve()) if workflow.source else None
        from runnerlib.observability.tracing import Tracer

        # One trace for the run: every job's TRACEPARENT descends from the workflow's span.
        self.tracer = Tracer(self.environ, mask=registry.mask_text)
        self.trace_span = self.tracer.start(f"workflow {workflow.effective_id}",
                                            attributes={"runnerlib.workflow.id": workflow.effective_id})

    # --- output --------------------------------------------------------------------------------------------

    def echo(self, line: str) -> None:
        with self._lock:
            self._echo(self.registry.mask_text(line))

    # --- building the graph -------------------------------------------------------------------------------

    def _instances_of(self, name: str) -> list[str]:
        if name in self.nodes:
            return [name]
        return [n.name for n in self.nodes.values() if n.base_name == name]

    def _add_node(self, node: JobNode) -> JobNode:
        if len(self.nodes) >= self.max_jobs:
            raise WorkflowError(f"more than {self.max_jobs} jobs in one run (a trigger loop?); "
                                f"{node.name} not added", field="max_jobs")
        self.nodes[node.name] = node
        return node

    def _expand_static(self) -> None:
        for name in self.workflow.topological_order():
            job = self.workflow.jobs[name]
            deps = [inst for dep in job.depends_on for inst in self._instances_of(dep)]
            items: list[str | None] = list(job.for_each) if job.for_each else [None]
            for item in items:
                instance = f"{name}[{item}]" if item is not None else name
                self._add_node(self._node_from_job(job, instance, deps, item))

    def _node_from_job(self, job: WorkflowJob, instance: str, deps: list[str], item: str | None) -> JobNode:
        return JobNode(
            name=instance, base_name=job.name, command=job.command, job_file=job.job_file,
            environment=dict(job.environment), depends_on=list(deps), condition=job.condition,
            timeout=job.timeout, item=item, item_var=job.item_var,
            working_dir=job.working_dir or job.job_dir, image=job.image,
        )

    def _add_triggered(self, parent: JobNode) -> None:
        """Read the triggers file of a finished job and add the jobs it triggered."""
        assert parent.workspace is not None
        path = parent.workspace / "triggers.json"
        try:
            document = triggers_file.read_triggers(path)
        except ValueError as exc:
            self._record_error(f"{parent.name}: triggers file: {exc}")
            return
        for entry in document.jobs:
            try:
                trigger = JobTrigger.model_validate(entry)
                node = self._node_from_trigger(trigger, parent)
                self._add_node(node)
            except WorkflowError as exc:
                self._record_error(f"{parent.name}: trigger {entry.get('job_name')!r}: {exc}")
                if "max_jobs" in str(exc):
                    return
                continue
            self.echo(f"[{parent.name}] triggered {node.name}"
                      + (f" (after {', '.join(node.depends_on)})" if node.depends_on else ""))

    def _node_from_trigger(self, trigger: JobTrigger, parent: JobNode) -> JobNode:
        name = trigger.job_name
        instance, n = name, 1
        while instance in self.nodes:
            n += 1
            instance = f"{name}#{n}"
        deps: list[str] = []
        for dep in trigger.depends_on:
            found = self._instances_of(dep)
            if not found:
                raise WorkflowError(f"depends on {dep!r}, which is not a job of this run")
            deps.extend(found)
        definition = self.workflow.jobs.get(name)
        if definition is not None:
            node = self._node_from_job(definition, instance, deps, None)
        elif trigger.job_command:
            node = JobNode(name=instance, base_name=name, depends_on=deps)
        else:
            raise WorkflowError("is not a job of this workflow and the trigger has no job_command")
        if trigger.job_command:
            node.command, node.job_file = trigger.job_command, None
        node.environment.update(trigger.env)
        if trigger.condition is not None:
            node.condition = trigger.condition
        if trigger.timeout is not None:
            node.timeout = trigger.timeout
        if trigger.container_image:
            node.image = trigger.container_image
        node.triggered_by = parent.name
        return node

    def _record_error(self, message: str) -> None:
        message = self.registry.mask_text(message)
        self.errors.append(message)
        self.echo(f"error: {message}")

    # --- deciding -----------------------------------------------------------------------------------------

    def _ancestors(self, node: JobNode) -> set[str]:
        seen: set[str] = set()
        stack = list(node.depends_on)
        while stack:
            name = stack.pop()
            if name in seen or name not in self.nodes:
                continue
            seen.add(name)
            stack.extend(self.nodes[name].depends_on)
        return seen

    def _decide(self, node: JobNode) -> str | None:
        """"run", "skip:<reason>" once every dependency finished; None while one is unfinished."""
        deps = [self.nodes[d] for d in node.depends_on]
        # A job's worker sets its status before the loop collects it (its outputs, vars and triggers): until then
        # it is unfinished, or a dependant started (and said so) before it ended.
        if any(d.status not in state.FINISHED or d.name in self._in_flight for d in deps):
            return None
        if node.condition == Condition.ALWAYS:
            return "run"
        if node.condition == Condition.ANY_FAILED:
            failed = [a for a in sorted(self._ancestors(node))
                      if self.nodes[a].status in ("failed", "cancelled")]
            return "run" if failed else "skip:no dependency failed"
        bad = [d.name for d in deps if d.status != "success"]
        return "run" if not bad else f"skip:{', '.join(bad)} did not succeed"

    # --- running one job ----------------------------------------------------------------------------------

    def _job_vars(self, node: JobNode) -> dict[str, str]:
        merged = dict(self.vars)
        order = {name: index for index, name in enumerate(self.nodes)}
        for ancestor in sorted(self._ancestors(node), key=lambda a: order[a]):
            merged.update(self.nodes[ancestor].vars_out)
        return merged

    def _prepare_workspace(self, node: JobNode) -> tuple[Path, Path]:
        with self._dirs_lock:
            workspace = self.run_dir / "jobs" / _dir_name(node.name, self._dirs)
        for sub in ("artifacts", "tmp"):
            (workspace / sub).mkdir(parents=True, exist_ok=True)
        src = workspace / "src"
        run_root = self.run_dir

        def ignore(directory: str, names: list[str]) -> list[str]:
            # Never copy the runs of this or earlier local runs into a job's source.
            here = Path(directory)
            return [n for n in names if (here / n) == run_root or
                    (here / n) == self.code_dir / ".reactorcide" / "runs"]

        if self.copy_source:
            shutil.copytree(self.code_dir, src, symlinks=True, ignore=ignore)
        else:
            src = self.code_dir
        if node.job_file:
            # A job file holds trusted steps, so the runner reads it only from the trusted CI tree
            # (<workspace>/ci), never from the source tree: locally the repository is both.
            shutil.copytree(self.code_dir, workspace / "ci", symlinks=True, ignore=ignore)
        job_dir = src / node.working_dir if node.working_dir else src
        if node.working_dir and not job_dir.resolve().is_relative_to(src.resolve()):
            raise WorkflowError("leaves the source directory", field=f"jobs.{node.base_name}.working_dir")
        job_dir.mkdir(parents=True, exist_ok=True)
        return workspace, job_dir

    def _job_env(self, node: JobNode, workspace: Path, src: Path, job_dir: Path) -> dict[str, str]:
        variables = self._job_vars(node)
        env = dict(self.environ)
        env.update(self.trace_span.context.env())  # a triggered job's own (its trigger's step) comes below
        # The job's `python` and `runnerlib` are this install's, as they are in the runner image.
        bin_dir = os.path.dirname(sys.executable)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", os.defpath)
        env.update(variables)
        env.update(node.environment)
        if node.item is not None:
            env[node.item_var] = node.item
        env.update({
            "REACTORCIDE_JOB_ID": node.job_id,
            "REACTORCIDE_QUEUE": "local",
            "REACTORCIDE_WORKSPACE": str(workspace),
            "REACTORCIDE_CODE_DIR": str(src),
            "REACTORCIDE_SOURCE_DIR": str(src),
            "REACTORCIDE_JOB_DIR": str(job_dir),
            "REACTORCIDE_TRIGGERS_FILE": str(workspace / "triggers.json"),
            "REACTORCIDE_WORKFLOW_OUTPUT": str(workspace / "workflow-output.json"),
            "REACTORCIDE_WORKFLOW_STATE": str(self.state_file),
            "REACTORCIDE_WORKFLOW_ID": self.workflow.effective_id,
            "REACTORCIDE_WORKFLOW_RUN_ID": self.run_id,
            "REACTORCIDE_WORKFLOW_JOB": node.name,
            "REACTORCIDE_WORKFLOW_VARS": json.dumps(variables, sort_keys=True),
            "REACTORCIDE_SOURCE_TYPE": "none",
            "REACTORCIDE_JOB_NAME": workspace.name,
        })
        if self.launcher == "shell":
            # runnerlib run makes its own private temp dir (short: it holds a unix socket); a bare command
            # gets the workspace's.
            env["TMPDIR"] = str(workspace / "tmp")
        if node.item is not None:
            env["REACTORCIDE_WORKFLOW_ITEM"] = node.item
        if node.command:
            env["REACTORCIDE_JOB_COMMAND"] = node.command
        if self.workflow_file:
            env["REACTORCIDE_WORKFLOW_FILE"] = self.workflow_file
        for key, value in (("REACTORCIDE_EVENT_TYPE", self.event), ("REACTORCIDE_BRANCH", self.branch),
                           ("REACTORCIDE_SHA", self.sha), ("REACTORCIDE_PR_NUMBER", self.pr_number)):
            if value:
                env[key] = value
        if node.timeout:
            env["REACTORCIDE_JOB_TIMEOUT"] = str(node.timeout)
        return env

    def _argv(self, node: JobNode) -> str | list[str]:
        if node.job_file:
            if self.launcher != "runnerlib":
                raise WorkflowError("a job_file job needs the runnerlib launcher (`runnerlib run-job`)",
                                    field=f"jobs.{node.base_name}.job_file")
            # Relative to the repository root (the job's trusted copy of it, <workspace>/ci).
            assert node.workspace is not None
            ci = node.workspace / "ci"
            job_file = node.job_file if Path(node.job_file).is_absolute() else str(ci / node.job_file)
            return [sys.executable, "-m", "runnerlib.cli", "run-job", str(job_file)]
        assert node.command is not None
        if self.launcher == "runnerlib":
            return [sys.executable, "-m", "runnerlib.cli", "run"]
        return node.command

    def _unapplied_settings(self) -> list[str]:
        """Job settings that only a container engine applies, with the jobs that set them."""
        found: dict[str, list[str]] = {}
        for name, job in self.workflow.jobs.items():
            for setting in ("image", "resources", "run_as", "capabilities"):
                if getattr(job, setting):
                    found.setdefault(setting, []).append(name)
        return [f"{setting} ({', '.join(names)})" for setting, names in found.items()]

    def _launch(self, node: JobNode, argv: str | list[str], env: dict[str, str], workspace: Path,
                job_dir: Path) -> tuple[str | list[str], dict[str, str], str | None, Callable[[], None]]:
        """How a job's process is started: (argv, env, cwd, clean-up). Here, as it is, in the job directory;
        the container engine (workflow/container_runner.py) wraps it in `podman run`."""
        return argv, env, str(job_dir), lambda: None

    def _job_line(self, node: JobNode, text: str) -> None:
        """Echo one line of a job's output; check trigger protocol lines as the worker would.

        The job's runner announces its key first and signs its triggers: those lines are shown in short.
        Any other line that claims to be a trigger (printed by a step) fails verification and is flagged;
        it is never acted on (the run's triggers come from the job's triggers file).
        """
        from runnerlib.workflow.signing import (
            ANNOUNCE_KEY,
            PUBLIC_KEY_FILE,
            InvalidTriggerMessage,
            is_trigger_line,
            verify_message,
        )

        if self.launcher == "runnerlib" and node.workspace is not None:
            if text.startswith("{" + f'"{ANNOUNCE_KEY}"') and not node.seen_output:
                node.seen_output = True
                self.echo(f"[{node.name}] (trigger signing key announced)")
                return
            if is_trigger_line(text):
                try:
                    doc = verify_message(text, node.workspace / PUBLIC_KEY_FILE, job_id=node.job_id)
                except (InvalidTriggerMessage, OSError) as exc:
                    node.rejected_lines += 1
                    self.echo(f"[{node.name}] warning: rejected a line claiming to be a trigger ({exc}): "
                              f"{text[:120]}")
                    return
                names = ", ".join(str(j.get("job_name")) for j in doc["jobs"])
                self.echo(f"[{node.name}] (signed trigger verified: {names})")
                return
        node.seen_output = True
        self.echo(f"[{node.name}] {text}")

    def _run_node(self, node: JobNode) -> None:
        from runnerlib.execution.process import run_process

        log_file = None
        try:
            workspace, job_dir = self._prepare_workspace(node)
            node.workspace = workspace
            src = workspace / "src" if self.copy_source else self.code_dir
            env = self._job_env(node, workspace, src, job_dir)
            argv = self._argv(node)
            log_file = open(workspace / "job.log", "wb")  # noqa: SIM115 - closed in finally
            pending = bytearray()

            def on_output(_stream: str, data: bytes) -> None:
                log_file.write(data)
                pending.extend(data)
                while b"\n" in pending:
                    line, _, rest = bytes(pending).partition(b"\n")
                    pending[:] = rest
                    self._job_line(node, line.decode("utf-8", "replace"))

            argv, env, cwd, cleanup = self._launch(node, argv, env, workspace, job_dir)
            try:
                result = run_process(argv, registry=self.registry, trusted=True, env=env, cwd=cwd,
                                     timeout=node.timeout, on_output=on_output, cancel_event=self._cancel,
                                     grace=self.grace, name=node.name)
            finally:
                cleanup()
            if pending:
                self.echo(f"[{node.name}] {bytes(pending).decode('utf-8', 'replace')}")
            node.exit_code = result.exit_code
            node.resources = getattr(result, "resources", None)
            if result.cancelled:
                node.status, node.reason = "cancelled", "cancelled"
            elif result.exit_code == 0:
                node.status = "success"
            else:
                node.status = "failed"
                node.reason = (f"timed out after {node.timeout}s" if result.timed_out
                               else result.reason or f"exit {result.exit_code}")
            output = state.read_json(workspace / "workflow-output.json", {})
            if isinstance(output, dict):
                outputs, raw_vars = output.get("outputs"), output.get("vars")
                node.outputs = outputs if isinstance(outputs, dict) else {}
                if isinstance(raw_vars, dict):
                    node.vars_out = {str(k): str(v) for k, v in raw_vars.items()}
        except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the run; reported masked
            node.status, node.reason = "failed", self.registry.mask_text(str(exc))
            node.exit_code = node.exit_code if node.exit_code is not None else 1
        finally:
            if log_file is not None:
                log_file.close()

    # --- the run ------------------------------------------------------------------------------------------

    def _state_data(self) -> dict[str, Any]:
        """The run's state as state.json holds it: a snapshot, taken from any thread."""
        return {"workflow": self.workflow.effective_id, "run_id": self.run_id,
                "jobs": {name: node.state_entry() for name, node in list(self.nodes.items())}}

    def _save_state(self) -> None:
        data = self._state_data()
        state.update_json(self.state_file, {}, lambda _old: data)

    def _start(self, node: JobNode) -> None:
        node.status, node.started = "running", time.time()
        self.echo(f"▶ {node.name}" + (f" ({node.item_var}={node.item})" if node.item is not None else ""))

    def _finish(self, node: JobNode) -> None:
        node.finished = node.finished or time.time()
        if node.started is None and node.status != "skipped":
            node.started = node.finished
        mark = STATUS_MARK.get(node.status, "?")
        took = f" in {node.duration:.1f}s" if node.status in ("success", "failed", "cancelled") else ""
        self.echo(f"{mark} {node.name}: {node.status}{took}" + (f" ({node.reason})" if node.reason else ""))

    def run(self) -> WorkflowRunResult:
        """Run the workflow to the end (or until cancelled) and write state, report and outputs."""
        start = time.time()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._expand_static()
        self._save_state()
        self.echo(f"workflow {self.workflow.effective_id} ({self.workflow.name}): {len(self.nodes)} jobs, "
                  f"run dir {self.run_dir}")
        unapplied = self._unapplied_settings()
        if unapplied:
            self.echo(f"note: jobs run as processes here, so these job settings are not applied: "
                      f"{'; '.join(unapplied)} (--engine podman or docker applies them)")
        running: dict[Future[None], JobNode] = {}
        try:
            with ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="wf-job") as pool:
                try:
                    self._loop(pool, running)
                except KeyboardInterrupt:
                    # Inside the `with`: leaving it waits for the running jobs, which the event stops.
                    self._cancel.set()
                    self.interrupted = True
                    self.echo("interrupted: cancelling running jobs (Ctrl-C again kills them at once)")
                    for future, node in running.items():
                        self._wait_interrupted(future)
                        node.finished = time.time()
                        self._finish(node)
        finally:
            for node in self.nodes.values():
                if node.status == "pending":
                    node.status = "cancelled" if self._cancel.is_set() else "skipped"
                    node.reason = node.reason or "not started"
            self._save_state()
            self.trace_span.end(error=None if all(n.status in ("success", "skipped") for n in self.nodes.values())
                                else "a job failed")
            self.tracer.shutdown()
        return self._write_results(time.time() - start)

    def _wait_interrupted(self, future: Future[None]) -> None:
        """Wait for a job being cancelled; a second Ctrl-C skips the rest of its grace (SIGKILL now)."""
        while True:
            try:
                future.result()
                return
            except KeyboardInterrupt:
                if not self._cancel.kill_now.is_set():
                    self.echo("interrupted again: killing running jobs now")
                self._cancel.kill()

    def _check_var_conflicts(self, node: JobNode) -> None:
        """Two jobs setting one var to different values fail the run (as the coordinator does): no job
        silently wins by finishing last. Each pair is compared once: against the jobs the loop already
        collected (a worker thread sets its node's status before the loop collects it)."""
        for other in self._collected:
            for key in sorted(set(node.vars_out) & set(other.vars_out)):
                if node.vars_out[key] != other.vars_out[key]:
                    self._record_error(f"var {key} was set to different values by {other.name} and {node.name}")

    def cancel(self) -> None:
        """Stop the run from another thread: running jobs get SIGTERM (then SIGKILL), no new job starts."""
        self._cancel.set()

    def _loop(self, pool: ThreadPoolExecutor, running: dict[Future[None], JobNode]) -> None:
        while True:
            ready = self._settle()
            while ready and len(running) < self.max_parallel and not self._cancel.is_set():
                node = ready.pop(0)
                self._start(node)
                self._in_flight.add(node.name)
                running[pool.submit(self._run_node, node)] = node
            self._save_state()
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                node = running.pop(future)
                future.result()
                node.finished = time.time()
                self._finish(node)
                self._check_var_conflicts(node)
                self._collected.append(node)
                if node.workspace is not None and not self._cancel.is_set():
                    self._add_triggered(node)
                self._in_flight.discard(node.name)

    def _settle(self) -> list[JobNode]:
        """Skip or fail every pending job that cannot run; return the pending jobs that can, in order."""
        if self._cancel.is_set():
            for node in self.nodes.values():
                if node.status == "pending":
                    node.status, node.reason = "cancelled", "run cancelled"
                    self._finish(node)
            return []
        changed = True
        while changed:
            changed = False
            for node in self.nodes.values():
                if node.status != "pending":
                    continue
                if node.error:
                    node.status, node.reason, node.exit_code = "failed", node.error, 1
                    self._finish(node)
                    changed = True
                    continue
                decision = self._decide(node)
                if decision is None:
                    continue
                if decision.startswith("skip:"):
                    node.status, node.reason = "skipped", decision[len("skip:"):]
                    self._finish(node)
                    changed = True
        return [n for n in self.nodes.values() if n.status == "pending" and self._decide(n) == "run"]

    def _write_results(self, duration: float) -> WorkflowRunResult:
        nodes = list(self.nodes.values())
        output_file = self.run_dir / "workflow-output.json"
        final_vars = dict(self.vars)
        for node in nodes:
            final_vars.update(node.vars_out)
        from runnerlib.workflow.publish import mask_document

        state.write_json(output_file, mask_document(
            {"vars": final_vars, "outputs": {n.name: n.outputs for n in nodes if n.outputs}}, self.registry))
        result = WorkflowRunResult(self.workflow, self.run_dir, nodes, duration, self.run_dir / "report.md",
                                   output_file, list(self.errors))
        report = render_report(result)
        result.report_file.write_text(self.registry.mask_text(report), encoding="utf-8")
        return result


# --- pictures ---------------------------------------------------------------------------------------------


def _children(nodes: Sequence[JobNode]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {n.name: [] for n in nodes}
    for node in nodes:
        for dep in node.depends_on:
            children.setdefault(dep, []).append(node.name)
        if node.triggered_by and node.triggered_by not in node.depends_on:
            children.setdefault(node.triggered_by, []).append(node.name)
    return children


def render_tree(nodes: Sequence[JobNode]) -> str:
    """The DAG as a text tree: roots first, each job under what it waits for (shown once; later "↑")."""
    by_name = {n.name: n for n in nodes}
    children = _children(nodes)
    roots = [n.name for n in nodes if not n.depends_on and not n.triggered_by]
    lines: list[str] = []
    shown: set[str] = set()

    def label(name: str) -> str:
        node = by_name[name]
        took = f" {node.duration:.1f}s" if node.duration is not None and node.status != "skipped" else ""
        how = " (triggered)" if node.triggered_by else ""
        return f"{STATUS_MARK.get(node.status, '?')} {name} [{node.status}{took}]{how}"

    def walk(name: str, prefix: str, last: bool, top: bool) -> None:
        connector = "" if top else ("└── " if last else "├── ")
        if name in shown:
            lines.append(f"{prefix}{connector}{name} ↑")
            return
        shown.add(name)
        lines.append(f"{prefix}{connector}{label(name)}")
        kids = children.get(name, [])
        extension = "" if top else ("    " if last else "│   ")
        for index, kid in enumerate(kids):
            walk(kid, prefix + extension, index == len(kids) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    for node in nodes:  # anything unreachable from a root (should not happen) is still shown
        if node.name not in shown:
            walk(node.name, "", True, True)
    return "\n".join(lines)


def render_mermaid(nodes: Sequence[JobNode]) -> str:
    """The DAG as a Mermaid flowchart: solid arrows for depends_on, dotted for run-time triggers."""
    ids = {n.name: f"j{i}" for i, n in enumerate(nodes)}
    lines = ["flowchart TD"]
    for node in nodes:
        took = f" {node.duration:.1f}s" if node.duration is not None and node.status != "skipped" else ""
        text = f"{node.name}<br/>{node.status}{took}".replace('"', "#quot;")
        lines.append(f'    {ids[node.name]}["{text}"]')
    for node in nodes:
        for dep in node.depends_on:
            if dep in ids and dep != node.triggered_by:
                arrow = "-->" if node.condition == Condition.ALL_SUCCESS else f"-->|{node.condition.value}|"
                lines.append(f"    {ids[dep]} {arrow} {ids[node.name]}")
        if node.triggered_by in ids:
            lines.append(f"    {ids[node.triggered_by]} -.->|triggers| {ids[node.name]}")
    lines += [
        "    classDef success fill:#d4edda,stroke:#28a745",
        "    classDef failed fill:#f8d7da,stroke:#dc3545",
        "    classDef skipped fill:#e2e3e5,stroke:#6c757d",
        "    classDef cancelled fill:#fff3cd,stroke:#ffc107",
    ]
    for status in ("success", "failed", "skipped", "cancelled"):
        members = [ids[n.name] for n in nodes if n.status == status]
        if members:
            lines.append(f"    class {','.join(members)} {status}")
    return "\n".join(lines)


def render_report(result: WorkflowRunResult) -> str:
    """report.md: the summary table, the Mermaid graph, errors and where the logs are."""
    wf = result.workflow
    lines = [f"# Workflow {wf.effective_id}: {wf.name}", "",
             f"Result: **{'success' if result.ok else 'failed'}** in {result.duration:.1f}s", "",
             "| job | status | duration | exit | note |", "|---|---|---|---|---|"]
    for node in result.nodes:
        duration = f"{node.duration:.1f}s" if node.duration is not None else ""
        code = "" if node.exit_code is None else str(node.exit_code)
        note = (node.reason or "").replace("|", "\\|")
        if node.triggered_by:
            note = (note + f" (triggered by {node.triggered_by})").strip()
        lines.append(f"| {node.name} | {node.status} | {duration} | {code} | {note} |")
    lines += ["", "```mermaid", render_mermaid(result.nodes), "```", ""]
    if result.errors:
        lines += ["## Errors", ""] + [f"- {e}" for e in result.errors] + [""]
    lines += ["Logs: `jobs/<job>/job.log` in " + str(result.run_dir), ""]
    return "\n".join(lines)
