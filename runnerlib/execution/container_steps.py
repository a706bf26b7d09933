"""Container mode of a job (`run --runner-image IMG`): how the JobRunner runs one step as `ENGINE run ...`.

runner.py keeps only the calls: `container_mode(config)` when the job is validated, `run_container_step(...)`
for each step. What a step's container gets, beyond execution/container.py's hardening:
- the variables the step's environment holds for it (the job's, the step's, its upstream steps' GITHUB_ENV
  lines, TRACEPARENT, ...) by NAME, values in the engine's own environment; secrets only for trusted steps;
- the step-protocol files (REACTORCIDE_/GITHUB_ OUTPUT, ENV, PATH, STEP_SUMMARY): a trusted step's live in
  the runner's private scratch directory, bind-mounted at the same path for that step alone; an untrusted
  step's live under /job/artifacts, which the workspace mount already shows it;
- PATH: the entries upstream steps added (GITHUB_PATH, written as the container sees them) before the
  image's usual directories, never the host's PATH;
- the secrets socket's directory for a trusted step, so `::add-mask::` and `mask_payload` reach the runner.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from runnerlib.config import ConfigError, JobConfig
from runnerlib.execution.container import (
    HOST_ONLY,
    ContainerEngine,
    ContainerError,
    ContainerStep,
    new_container_name,
)
from runnerlib.security.untrusted_env import allowed_for_untrusted, named_secrets

__all__ = ["IMAGE_PATH", "container_mode", "container_path", "forwarded_names", "prestart", "run_container_step",
           "step_container", "step_variables", "stop_prestart"]

# The PATH of Debian-based and busybox images alike: the image's own PATH is not known without an inspect
# per run (an engine call, ~0.1 s), and a step's GITHUB_PATH entries must come before it.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORKS = ("full", "none", "loopback")


def container_mode(config: JobConfig) -> ContainerStep | None:
    """The job's ContainerStep when it runs in container mode (runner_image/container set), else None;
    ConfigError (one line, naming the field) when no engine is there or the image is not a reference."""
    if not (config.container or config.runner_image):
        return None
    field = "runner_image" if config.runner_image else "container"
    try:
        engine = ContainerEngine.find(config.container_engine)
        return ContainerStep(engine, image=config.runner_image or "", workspace=config.workspace_root,
                             ci_dir=config.ci_dir)
    except ContainerError as exc:
        raise ConfigError(field, config.origin(field), str(exc)) from None


def container_path(step_path: str | None, host_path: str | None) -> str | None:
    """The PATH a container step gets: the entries upstream steps added (those not in the runner's own
    `host_path`) before IMAGE_PATH; None when no step added any (the image's PATH then applies)."""
    host = set(filter(None, (host_path or "").split(":")))
    added = [p for p in (step_path or "").split(":") if p and p not in host]
    return ":".join(dict.fromkeys([*added, *IMAGE_PATH.split(":")])) if added else None


def forwarded_names(env: Mapping[str, str], runner_env: Mapping[str, str], explicit: set[str]) -> set[str]:
    """The variables of the step's `env` to give its container: the `explicit` ones (the job's, the step's,
    secrets of a trusted step) and every one whose value is not the runner's own (`runner_env`): what the
    protocol, plugins and tracing set for this step. The runner's own environment stays on the host."""
    return {n for n in env if n in explicit or runner_env.get(n) != env[n]}


def step_container(runner: Any, step: Any, trusted: bool, limits: Any) -> ContainerStep | str:
    """The job's ContainerStep with this step's trust, network and limits; or why it cannot run (a network
    allow-list)."""
    config = runner.config
    network = step.network if step.network is not None else config.network
    if network is not None and network not in NETWORKS:
        return "a network allow-list cannot be enforced in container mode (full, none or loopback)"
    base: ContainerStep = runner._container
    # The step's limits as the engine's: memory, pids and cpus (the container's cgroup); the others are the
    # image's business (its own ulimits).
    return replace(base, trusted=trusted, network=network or "full",
                   memory=str(limits.memory) if limits is not None and limits.memory else None,
                   pids=limits.pids if limits is not None and limits.pids else base.pids,
                   cpus=format(limits.cpus, "g") if limits is not None and limits.cpus else base.cpus)


def step_variables(runner: Any, step: Any, env: dict[str, str], trusted: bool, files: Any,
                   container: ContainerStep, known: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """(the step's variables as its container sees them, the host directories to mount for them: the
    secrets socket's, a trusted step's files). `known`: as run_process's `known_to_step`."""
    config = runner.config
    explicit = set(runner._context_env()) | set(getattr(runner, "_job_env", config.job_env)) | set(step.env) \
        | {"REACTORCIDE_STEP_NAME"} | set(runner.context.env or {}) | set(files.env)
    path = container_path(env.get("PATH"), runner.environ.get("PATH", os.environ.get("PATH")))
    mounts: list[str] = []
    if trusted:
        explicit |= set(config.secret_env_names)
        socket = runner._socket
        if socket is not None:
            socket_env = socket.env()
            explicit |= set(socket_env)
            mounts.append(os.path.dirname(socket_env["REACTORCIDE_SECRETS_SOCKET"]))
    if not container.in_container(files.directory).startswith("/job/"):
        mounts.append(files.directory)  # a trusted step's files, in the runner's scratch directory
    names = forwarded_names(env, runner.environ, explicit) - HOST_ONLY
    if not trusted:
        # What reaches an untrusted step's container holds no secret, in no encoded form either, whoever put it
        # in the environment (a trusted step's GITHUB_ENV line copying a token, or its base64, included): the
        # one rule of security/untrusted_env.py, as for a step in process mode.
        named = set(config.secret_env_names) | named_secrets(runner.environ)
        names = {n for n in names
                 if allowed_for_untrusted(n, env[n], registry=runner.registry, named=named, known=known)}
    values = {n: container.in_container(env[n]) for n in sorted(names)}
    if path is not None:
        values["PATH"] = path
    return values, mounts


def run_container_step(runner: Any, step: Any, command: Any, env: dict[str, str], cwd: str, trusted: bool,
                       cancel: threading.Event, sink: Any, files: Any, limits: Any = None,
                       attempt: int = 1, known: Mapping[str, str] | None = None) -> Any:
    """One step of `runner` (a JobRunner in container mode) as `ENGINE run ...`, its output masked through
    `sink` like any step's; `files` is the step's StepAttempt. The container is removed afterwards. The
    job's first step may have had its container started already (execution/container_prestart.py)."""
    from runnerlib.execution.container_prestart import take_over
    from runnerlib.execution.process import run_process
    from runnerlib.execution.scheduler import EXIT_REFUSED, Outcome

    config = runner.config
    container = step_container(runner, step, trusted, limits)
    if isinstance(container, str):
        runner.log.event(f"refused: {container}", step=step.name, level="error")
        return Outcome(exit_code=EXIT_REFUSED, refused=True, reason=container)
    values, mounts = step_variables(runner, step, env, trusted, files, container, known)
    result = take_over(runner, step, attempt, container, command, values, cwd, files, cancel, sink)
    if result is not None:
        return result
    # The values travel in the engine's environment, the names alone on its command line. `-e PATH` takes
    # the engine's own PATH: the engine finds its helpers (conmon, runc, iptables) in the system
    # directories IMAGE_PATH lists, and is started by its absolute path.
    engine_env, _ = container.engine_env({}, ())
    engine_env.update(values)
    name = new_container_name(f"{config.job_name}-{step.name}")
    argv = container.argv(command, name=name, cwd=cwd, env_names=list(values), mounts=mounts)
    try:
        result = run_process(argv, registry=runner.registry, trusted=True, env=engine_env, cwd=None,
                             timeout=step.timeout, on_output=sink.write, cancel_event=cancel,
                             grace=config.kill_grace, name=step.name, keep_output=False,
                             commands=files.commands, add_mask=trusted and step.add_mask,
                             known_formats=config.mask_known_formats,
                             on_notice=lambda line: runner.log.event(line, step=step.name, level="warning"))
        return result
    finally:
        # --rm removed a container whose command ended; one the engine did not see end (a timeout, a
        # cancellation, an engine error) is removed here, stopped at once if it still runs.
        if result is None or result.timed_out or result.cancelled or result.exit_code >= 125:
            container.engine.remove(name)


def prestart(runner: Any, job: Any) -> None:
    """Start the container of `job`'s first step now (kept as runner._prestarted; execution/container_prestart.py),
    if it has one to start. Only a head start is at stake: any failure here leaves the step to start its own."""
    from runnerlib.execution.container_prestart import Prestarted, first_step

    step = first_step(job)
    if step is None:
        return
    config = runner.config
    limits = step.limits.merged_over(config.limits) if step.limits else config.limits
    container = step_container(runner, step, step.trust == "trusted", limits)
    if isinstance(container, str):
        return  # refused when the step runs, with the reason
    try:
        runner._open_workspace()  # the workspace is mounted: it must exist
        runner._prestarted = Prestarted(runner, step, container)
    except Exception as exc:  # noqa: BLE001 - only a head start is lost: the step starts its own container
        runner.log.event(f"container mode: the first step's container was not started early: {exc}",
                         level="debug")


def stop_prestart(runner: Any) -> None:
    """Remove a prestarted container that no step took (the job ended before, or skipped the step)."""
    prestarted = getattr(runner, "_prestarted", None)
    runner._prestarted = None
    if prestarted is not None:
        prestarted.close()
