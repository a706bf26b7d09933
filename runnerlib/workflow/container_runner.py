"""`runnerlib workflow run --engine podman|docker`: each workflow job in its own container.

The local runner's scheduling and workspaces, with each job's `runnerlib run` started inside a container of
the job's `image` (default: the runner image) instead of as a process here: the job's workspace is /job,
its `resources` become --memory/--cpus, `run_as` becomes --user, and its `capabilities` are added to the few
the runner inside needs (every other capability dropped, no-new-privileges). Secrets travel by name only,
as in container mode. The container is removed after the job, whatever happened.

Each job container sees the run's workflow state read-only, as a process job sees state.json: the runner
keeps a copy of it in a directory of its own (<run dir>/shared-state, replaced atomically at each save, so
the directory and not the file is mounted: a file mount would keep showing the first version) at
/run/reactorcide/workflow, and REACTORCIDE_WORKFLOW_STATE names it there, so `is_job_running` and
`get_job_result` answer as in process mode. Only the state is shared: no other job's workspace.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runnerlib.execution.container import ContainerEngine, ContainerStep, new_container_name
from runnerlib.workflow import state
from runnerlib.workflow.kubernetes import DEFAULT_RUNNER_IMAGE, RUNNER_CAPABILITIES
from runnerlib.workflow.local_runner import JobNode, LocalWorkflowRunner
from runnerlib.workflow.models import Workflow, WorkflowError, WorkflowJob, memory_bytes

__all__ = ["STATE_MOUNT", "ContainerWorkflowRunner", "engine_memory", "engine_cpus"]

STATE_MOUNT = "/run/reactorcide/workflow"


def engine_memory(value: str, where: str) -> str:
    """A workflow memory amount ("512Mi", "2G", "1.5Gi") as a Podman/Docker size in bytes ("536870912")."""
    try:
        return str(memory_bytes(value))
    except ValueError as exc:
        raise WorkflowError(str(exc), field=where) from None


def engine_cpus(value: str | float, where: str) -> str:
    """A Kubernetes-style CPU amount (2, 0.5, "500m") as --cpus ("0.5")."""
    text = str(value)
    try:
        cpus = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise WorkflowError('must be a number of CPUs such as 2, 0.5 or "500m"', field=where) from None
    if cpus <= 0:
        raise WorkflowError("must be more than 0", field=where)
    return format(cpus, "g")


class ContainerWorkflowRunner(LocalWorkflowRunner):
    """Runs each job of a workflow in a container of its image through `engine` (podman or docker)."""

    def __init__(self, workflow: Workflow, *, engine: str = "podman", runner_image: str | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("launcher", "runnerlib")
        if kwargs.get("copy_source") is False:
            raise WorkflowError("a shared source cannot be mounted into job containers: drop --share-source",
                                field="--engine")
        super().__init__(workflow, **kwargs)
        from runnerlib.execution.container import ContainerError

        try:
            self.engine = ContainerEngine.find(engine)
        except ContainerError as exc:
            raise WorkflowError(str(exc), field="--engine") from None
        self.runner_image = runner_image or DEFAULT_RUNNER_IMAGE
        self.shared_state = self.run_dir / "shared-state"
        self._share_lock = threading.Lock()
        self._removals: list[threading.Thread] = []

    def run(self) -> Any:
        try:
            return super().run()
        finally:
            for removal in self._removals:  # no container is left behind when the run returns
                removal.join()

    def _remove_later(self, name: str) -> None:
        """`ENGINE rm -f` of a job's container, off the job's critical path: `--rm` already removed a
        container whose command ended, so this only matters after a timeout or a cancellation, yet it costs
        an engine start (~0.1-0.3 s) that the dependent jobs need not wait for. run() waits for it."""
        removal = threading.Thread(target=self.engine.remove, args=(name,), name=f"rm-{name}", daemon=True)
        removal.start()
        self._removals.append(removal)

    def _save_state(self) -> None:
        super()._save_state()
        # The copy job containers read: the latest state.json, whichever thread saved last.
        with self._share_lock:
            self.shared_state.mkdir(mode=0o755, exist_ok=True)
            state.replace_file(self.shared_state / "state.json", self.state_file.read_bytes(), 0o644)

    def _unapplied_settings(self) -> list[str]:
        return []  # image, resources, run_as and capabilities all apply here

    def _definition(self, node: JobNode) -> WorkflowJob | None:
        return self.workflow.jobs.get(node.base_name)

    def _launch(self, node: JobNode, argv: str | list[str], env: dict[str, str], workspace: Path,
                job_dir: Path) -> tuple[str | list[str], dict[str, str], str | None, Callable[[], None]]:
        definition = self._definition(node)
        where = f"jobs.{node.base_name}"
        resources = definition.resources if definition else None
        step = ContainerStep(
            self.engine, image=node.image or self.runner_image, workspace=str(workspace),
            memory=engine_memory(resources.memory, f"{where}.resources.memory")
            if resources and resources.memory else None,
            cpus=engine_cpus(resources.cpu, f"{where}.resources.cpu") if resources and resources.cpu else None)
        command = list(argv) if isinstance(argv, list) else ["sh", "-c", argv]
        if command and command[0] == sys.executable:
            command[0] = "python"  # the image's runnerlib (its venv is first on PATH)
        command = [step.in_container(part) for part in command]
        env = {**env, "REACTORCIDE_WORKFLOW_STATE": f"{STATE_MOUNT}/state.json"}
        names = [n for n in env if n not in ("TMPDIR",)]
        engine_env, forwarded = step.engine_env(env, names)
        name = new_container_name(node.name)
        # The runner inside drops untrusted steps to the sandbox uid: it keeps the few capabilities that
        # needs (unless it runs as another user), plus the job's own.
        extra: list[str] = []
        user = definition.run_as.user if definition and definition.run_as else None
        if user is not None and str(user) not in ("0", "root"):
            if not str(user).isdigit():
                raise WorkflowError("a user name cannot own the job's workspace on this host: give a numeric uid",
                                    field=f"{where}.run_as.user")
            # The runner inside writes its workspace (/job) as that user, as fsGroup does on Kubernetes.
            _chown_tree(workspace, int(user))
            extra += ["--user", f"{user}:{user}"]
        else:
            extra += [f"--cap-add={cap}" for cap in RUNNER_CAPABILITIES]
        extra += [f"--cap-add={cap.removeprefix('CAP_')}" for cap in (definition.capabilities if definition else [])]
        args = step.argv(command, name=name, cwd=str(job_dir), env_names=forwarded,
                         read_only={str(self.shared_state): STATE_MOUNT}, extra_args=extra)
        return args, engine_env, None, lambda: self._remove_later(name)


def _chown_tree(root: Path, uid: int) -> None:
    """Give a job's fresh workspace (made by this run, holding no links out) to `uid`, not following links."""
    os.lchown(root, uid, uid)
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(directory, name), uid, uid)
