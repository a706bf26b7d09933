"""The first step's container, started while the runner still prepares the job (container mode's start-up).

`ENGINE run` spends about 0.3 s before the step's command starts (storage, network, runtime); the runner
spends about as long, after the job is validated, on secrets, the signing key, sources and the step's files.
Both used to happen one after the other. Now, as soon as the job is validated, `prestart` starts the
container of the job's first step (the first without dependencies or a condition of its own) with everything known
then: image, workspace, /job/ci read-only, trust and user, network, memory and pids, hardening. What is
known only when the step starts (its variables with the secrets' values, its working directory, its
command) reaches the container through a FIFO: the container's shell sources `/run/reactorcide/start`,
which blocks until `take_over` writes one script of `export NAME='value'` lines, `cd`, and `exec` of the
command into it. The FIFO lives in a directory of the runner's own (mode 0700), so no other local user can
open it; the values are never on a command line, nor in a file on disk.

A trusted step's files (REACTORCIDE_OUTPUT ...) and the secrets socket are hard links in that directory,
mounted at /run/reactorcide; an untrusted step gets the FIFO alone (its files are under /job/artifacts).

When anything differs at take-over (a plugin changed the image or the step's settings, the CI tree appeared
after the container started, a retry, hard links across file systems), the prestarted container is
removed and the step runs the ordinary way; container_steps.stop_prestart removes one no step took (the job failed earlier, or
the step was skipped).
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import tempfile
import threading
import time
from typing import Any

from runnerlib.execution.container import SANDBOX_USER, ContainerStep, new_container_name
from runnerlib.execution.step_files import FILES

__all__ = ["MOUNT", "Prestarted", "first_step", "take_over"]

MOUNT = "/run/reactorcide"
FIFO = "start"
SOCKET = "secrets.sock"
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WAIT_STEP = 0.005


def first_step(job: Any) -> Any:
    """The step whose container can start early: the first without dependencies or a condition of its own,
    whose command is a shell string (the early container needs the image's `sh`, which an argv command does
    not: a distroless image runs it the ordinary way)."""
    for step in job.steps:
        if not step.depends_on and step.condition in (None, "on_success", "always"):
            return step if isinstance(step.command, str) else None
    return None


class Prestarted:
    """The running `ENGINE run` of one step's container, waiting for its script on the FIFO."""

    def __init__(self, runner: Any, step: Any, container: ContainerStep) -> None:
        from runnerlib.execution.process import Cancel
        from runnerlib.execution.workflow_commands import WorkflowCommands

        self.step_name = step.name
        self.container = container
        self.trusted = container.trusted
        ci = container.ci_dir
        self.ci_present = bool(ci and os.path.isdir(ci))
        self.directory = tempfile.mkdtemp(prefix="runnerlib-ctr-")
        os.chmod(self.directory, 0o700)
        self.fifo = os.path.join(self.directory, FIFO)
        try:
            os.mkfifo(self.fifo, 0o600)
            if not self.trusted:
                os.chown(self.fifo, *map(int, SANDBOX_USER.split(":")))  # the container's user reads it
        except OSError:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        self.name = new_container_name(f"{runner.config.job_name}-{step.name}")
        # Trusted: the whole directory (FIFO, the step's files, the socket); untrusted: the FIFO alone.
        mount = [f"{self.directory}:{MOUNT}"] if self.trusted else [f"{self.fifo}:{MOUNT}/{FIFO}"]
        argv = container.argv(["sh", "-c", f". {MOUNT}/{FIFO}"], name=self.name, cwd=None, env_names=(),
                              extra_args=["-v", mount[0]])
        engine_env, _ = container.engine_env({}, ())
        self.commands = WorkflowCommands(runner.mask_text, debug=runner.log.debug)
        self.cancel = Cancel()
        self._lock = threading.Lock()
        self._pending: list[tuple[str, bytes]] = []
        self._sink: Any = None
        self.result: Any = None
        self.error: BaseException | None = None
        config = runner.config
        self._thread = threading.Thread(target=self._run, name=f"prestart-{step.name}", daemon=True, kwargs=dict(
            argv=argv, registry=runner.registry, env=engine_env, timeout=step.timeout, grace=config.kill_grace,
            name=step.name, add_mask=self.trusted and step.add_mask, known_formats=config.mask_known_formats,
            on_notice=lambda line: runner.log.event(line, step=step.name, level="warning")))
        self._thread.start()

    def _run(self, *, argv: list[str], **kwargs: Any) -> None:
        from runnerlib.execution.process import run_process

        try:
            self.result = run_process(argv, trusted=True, cwd=None, on_output=self._output, cancel_event=self.cancel,
                                      keep_output=False, commands=self.commands, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the step's thread, which reports it
            self.error = exc

    def _output(self, stream: str, data: bytes) -> None:
        # Before take-over only the engine itself can print (its own errors): kept for the step's log.
        with self._lock:
            if self._sink is None:
                self._pending.append((stream, data))
                return
        self._sink.write(stream, data)

    def _attach(self, sink: Any) -> None:
        with self._lock:
            for stream, data in self._pending:
                sink.write(stream, data)
            self._pending.clear()
            self._sink = sink

    def deliver(self, script: bytes, *, timeout: float | None = None) -> bool:
        """Write the script into the FIFO once the container's shell opened it; False if the engine ended
        (or was cancelled) first, or `timeout` seconds passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
            if not self._thread.is_alive() or self.cancel.is_set() \
                    or (deadline is not None and time.monotonic() > deadline):
                return False
            time.sleep(_WAIT_STEP)
        try:
            os.set_blocking(fd, True)
            view = memoryview(script)
            while view:
                view = view[os.write(fd, view):]
        except BrokenPipeError:
            return False
        finally:
            os.close(fd)
        return True

    def wait(self, cancel: Any) -> Any:
        """The engine's result; the step's `cancel` (the scheduler's) is passed on while it runs."""
        while self._thread.is_alive():
            if cancel.is_set() and not self.cancel.is_set():
                self.cancel.reason = getattr(cancel, "reason", self.cancel.reason)
                if getattr(cancel, "kill_now", None) is not None and cancel.kill_now.is_set():
                    self.cancel.kill()
                else:
                    self.cancel.set()
            self._thread.join(0.05)
        if self.error is not None:
            raise self.error
        return self.result

    def close(self) -> None:
        """End the container if it still waits (it exits at once, quietly: no step ran in it), remove it
        if the engine did not, and remove the directory; idempotent."""
        if self._thread.is_alive():
            # The engine may not have created the container yet: telling its shell to exit works whenever
            # it gets there, where removing it now would not.
            try:
                self.deliver(b"exit 0\n", timeout=30)
            except OSError:
                pass
            self._thread.join(30)
            if self._thread.is_alive():
                self.cancel.kill()
                self._thread.join(60)
        if self.result is None or self.result.exit_code != 0:
            self.container.engine.remove(self.name)
        shutil.rmtree(self.directory, ignore_errors=True)


def take_over(runner: Any, step: Any, attempt: int, container: ContainerStep, command: Any,
              values: dict[str, str], cwd: str, files: Any, cancel: Any, sink: Any) -> Any:
    """Run `step` in its prestarted container, if there is one that fits: the step's result, else None (the
    caller runs it the ordinary way; a prestarted container that does not fit is removed first)."""
    prestarted: Prestarted | None = getattr(runner, "_prestarted", None)
    if prestarted is None or prestarted.step_name != step.name:
        return None
    runner._prestarted = None
    ci = container.ci_dir
    try:
        if attempt != 1 or container != prestarted.container or not all(map(_NAME_RE.fullmatch, values)) \
                or prestarted.ci_present != bool(ci and os.path.isdir(ci)):
            return None
        linked = _link_files(prestarted, values, files)
        if linked is None:
            return None
        files.commands = prestarted.commands  # the filter already in front of the container's output
        prestarted._attach(sink)
        # False: the engine ended first (its error is in the step's log); either way its result is the step's.
        prestarted.deliver(_script(linked, container.in_container(cwd), command))
        return prestarted.wait(cancel)
    finally:
        result = prestarted.result
        if result is None or result.timed_out or result.cancelled or result.exit_code >= 125:
            prestarted.close()
        else:
            shutil.rmtree(prestarted.directory, ignore_errors=True)


def _link_files(prestarted: Prestarted, values: dict[str, str], files: Any) -> dict[str, str] | None:
    """A trusted step's files and the secrets socket as hard links in the mounted directory, and `values`
    pointing at them; None if they cannot be linked (another file system)."""
    if not prestarted.trusted:
        return values
    values = dict(values)
    try:
        for name, variables in FILES.items():
            os.link(os.path.join(files.directory, name), os.path.join(prestarted.directory, name))
            for variable in variables:
                if variable in values:
                    values[variable] = f"{MOUNT}/{name}"
        socket_path = values.get("REACTORCIDE_SECRETS_SOCKET")
        if socket_path:
            os.link(socket_path, os.path.join(prestarted.directory, SOCKET))
            values["REACTORCIDE_SECRETS_SOCKET"] = f"{MOUNT}/{SOCKET}"
    except OSError:
        return None
    return values


def _script(values: dict[str, str], cwd: str, command: Any) -> bytes:
    """What the container's shell sources: the variables, the working directory, then exec of the command."""
    lines = [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
    lines.append(f"cd {shlex.quote(cwd)} || exit 1")
    argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
    lines.append("exec " + shlex.join(argv))
    return ("\n".join(lines) + "\n").encode()

