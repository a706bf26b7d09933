"""One job's lifecycle: config -> plugins -> secrets -> sources -> steps -> triggers -> cleanup.

    PRE_VALIDATION -> validate -> POST_VALIDATION
    -> protect the runner, load every secret into the job's ONE SecretRegistry, start the registration socket
    -> PRE_SOURCE_PREP -> prepare /job/ci and /job/src -> POST_SOURCE_PREP
    -> PRE_EXECUTION -> the step DAG -> POST_EXECUTION -> publish triggers
    -> ON_ERROR (on any failure: a step, a plugin, an exception, a timeout, SIGTERM) -> CLEANUP (always)

Invariants:
- everything the runner writes (step output, its own messages, errors, the summary) is masked by the job's
  registry; the secrets held in the configuration itself are registered before the first line is written;
- only trusted steps get the secret variables and the registration socket; untrusted steps get neither (and
  no variable whose value holds a registered secret);
- CLEANUP runs for every plugin whatever happened before, including after SIGTERM, which cancels the running
  steps (SIGTERM, grace, SIGKILL in the process wrapper) and makes the job exit 143.

Exit codes: 0 success; a failing step's own code; 124 step or job timeout; 126 refused by the sandbox policy;
130 Ctrl-C (SIGINT), 143 SIGTERM (execution/cancellation.py); 1 a plugin, source or runner failure; 78 a
configuration or job-definition error (runnerlib.exit_codes has the table).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import runnerlib.step_env as step_environment
from runnerlib.config import ConfigError, JobConfig, get_config
from runnerlib.execution.cancellation import Cancellation, JobCancelled
from runnerlib.execution.logs import JobLog, MaskedTextWriter, want_colour
from runnerlib.execution.own_words import Own
from runnerlib.execution.scheduler import (
    EXIT_CANCELLED,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    JobResult,
    Outcome,
    Scheduler,
    StepResult,
)
from runnerlib.exit_codes import EXIT_CONFIG as EXIT_CONFIG_ERROR
from runnerlib.exit_codes import EXIT_FAILURE as EXIT_RUNNER_ERROR
from runnerlib.exit_codes import EXIT_INTERRUPTED, error_text
from runnerlib.job_summary import JobSummary, failure_text
from runnerlib.jobs import Job, JobDefinitionError, Step
from runnerlib.observability.observer import JobObserver
from runnerlib.plugins import PluginContext, PluginError, PluginManager, PluginPhase, default_manager
from runnerlib.trust_origin import check_job_origin, untrusted_trees


class RunnerError(RuntimeError):
    """A failure of the runner itself (sources, container mode, ...); the message is masked when shown."""


class JobRunner:
    """Runs one job. `run()` returns the exit code; it never raises for a job failure.

    Example::

        config = get_config(job_command="make test", workspace_root="/tmp/ws")
        code = JobRunner(config).run()
    """

    def __init__(
        self,
        config: JobConfig,
        job: Job | None = None,
        *,
        plugins: PluginManager | None = None,
        out: BinaryIO | None = None,
        environ: Mapping[str, str] | None = None,
        read_stdin_secrets: bool = False,
        handle_signals: bool = True,
        registry: Any = None,
        argv: list[str] | None = None,
        argv_flags: tuple[str, ...] = (),
    ) -> None:
        from runnerlib.security.registry import SecretRegistry

        # The command line that started us (CLI only): warned about if it carried a secret.
        self.argv, self.argv_flags = argv, argv_flags
        if job is not None and config.origin("job_name") == "default" and job.name != config.job_name:
            config.set("job_name", job.name, "the job's name")  # one name in the log, summary, environment
        self.config = config
        self.job = job
        self.plugins = plugins if plugins is not None else default_manager()
        self.environ = dict(os.environ if environ is None else environ)
        self.read_stdin_secrets = read_stdin_secrets
        self.handle_signals = handle_signals
        self.registry = registry if registry is not None else SecretRegistry()
        from runnerlib.security.secret_socket import SecretSocketServer

        # Started with the steps' secrets (_protect_and_load_secrets); its tokens are registered below when the
        # registry is ours, else when it starts.
        self._socket_server = SecretSocketServer(self.registry)
        # The configuration's own secrets first: an error about the configuration may quote them. With the
        # socket's tokens, in one compilation (a registry of our own has no stream yet to see a batch's delay):
        # registered on their own later, the tokens were compiled as a delta, and then everything again by a
        # merge thread running beside the first step.
        with self.registry.batch() if registry is None else contextlib.nullcontext():
            self.registry.add_many(config.secret_values(), source="configuration")
            if registry is None:
                self._socket_server.register_tokens()
        stream = out if out is not None else _binary_stdout()
        self._out = stream
        # Errors that stop the job go to stderr too when the job writes to the process's stdout (the CLI).
        self._stderr: Any = sys.stderr if out is None else None
        self.log = JobLog(stream, job_name=config.job_name, job_id=config.job_id, fmt=config.log_format,
                          colour=want_colour(stream, config.color), mask=self.mask_text,
                          level=config.log_level, timestamps=config.timestamps,
                          file_timestamps=config.log_timestamps)
        # Trace context (TRACEPARENT), spans, metrics, report: docs/observability.md.
        self.obs = JobObserver(config, self.environ, self.registry, self.log)
        self.result: JobResult | None = None
        self.errors: list[str] = []
        # Inside a step of another runner (advanced mode: a trusted script calling run_job): the outer runner
        # owns the triggers and the signing key, and our logs go beside the outer step's, not over them.
        self.parent_step = self.environ.get("REACTORCIDE_STEP_NAME") or None
        self.context = PluginContext(config=config, env={}, job=job, registry=self.registry)
        # SIGTERM, Ctrl-C and the job's timeout (execution/cancellation.py).
        self.cancellation = Cancellation(handle_signals=handle_signals)
        # The summary table, summary.json and the steps' markdown summaries (job_summary.py).
        self.summary = JobSummary(self.log, mask=self.mask_text, open_workspace=self._open_workspace)
        self._socket: Any = None
        self._container: Any = None  # a ContainerStep in container mode (--runner-image)
        self._trees: Any = None  # which tree each step works on (runnerlib.source.job_trees), made with the workspace
        self._signer: Any = None
        self._scratch: str | None = None
        self.workspace: Any = None
        self._protocol: Any = None  # execution.step_protocol.StepProtocol while the steps run

    # -- public --------------------------------------------------------------------------------------------

    def mask_text(self, text: str) -> str:
        """`text` masked with every registered secret and (unless turned off) the known credential formats."""
        text = str(self.registry.mask_text(text))
        if self.config.mask_known_formats:
            from runnerlib.security.known_formats import mask_known_formats_text

            text = mask_known_formats_text(text, getattr(self.registry, "replacement", "***"))
        return text

    def cancel(self) -> None:
        """What SIGTERM does: cancel running steps (grace, then kill) and start nothing new."""
        self.cancellation.cancel()

    def run(self) -> int:
        """Run the whole lifecycle; return the job's exit code (see the module docstring)."""
        started = time.monotonic()
        exit_code = EXIT_RUNNER_ERROR
        self.plugins.timings.clear()
        with _process_output_masked(self.log, self.mask_text), self.cancellation.handlers():
            try:
                exit_code, failed = self._phases()
                exit_code = self._on_error_and_cleanup(exit_code, failed)
                self.summary.report(job_name=self.config.job_name, job_id=self.config.job_id,
                                    steps=self.result.steps if self.result else None,
                                    plugins=self.plugins.timing_summary(), total=time.monotonic() - started,
                                    exit_code=exit_code)
                if exit_code not in (0, EXIT_TIMEOUT, EXIT_CANCELLED, EXIT_INTERRUPTED, EXIT_CONFIG_ERROR) \
                        and getattr(self, "_local", None) is not None and self._local.hint:
                    self._note(self._local.hint)
            finally:
                self.cancellation.stop_timer()
                self.obs.finish(exit_code, self.result.steps if self.result else [], self.plugins, job=self.job,
                                read_log=self.summary.read_step_log, error=self._error)
                self._stop_services()
        return exit_code

    def _phases(self) -> tuple[int, bool]:
        """The phases up to the triggers; what stopped them (a signal, an error) becomes the exit code, reported
        masked. Returns (exit code, failed)."""
        try:
            exit_code, failed = self._main_phases()
        except JobCancelled:
            self._error(self.cancellation.message())
            return self.cancellation.code() or EXIT_CANCELLED, True
        except (ConfigError, JobDefinitionError) as exc:
            self._error(str(exc), stderr=True)
            return EXIT_CONFIG_ERROR, True
        except PluginError as exc:
            self._error(str(exc), stderr=True)
            return self.cancellation.code() or EXIT_RUNNER_ERROR, True
        except Exception as exc:  # noqa: BLE001 - reported masked; ON_ERROR and CLEANUP still run
            self._error(error_text(exc), stderr=True)
            return self.cancellation.code() or EXIT_RUNNER_ERROR, True
        if exit_code == 0:
            exit_code = self.cancellation.code() or exit_code
        return exit_code, failed

    def _on_error_and_cleanup(self, exit_code: int, failed: bool) -> int:
        """ON_ERROR when the job failed, CLEANUP always (every plugin, whatever fails); the final exit code."""
        if failed or exit_code != 0:
            self.context.exit_code = exit_code
            self.context.error = self.context.error or (self.errors[-1] if self.errors else None)
            with self.obs.phase(PluginPhase.ON_ERROR.value, self.plugins):
                self.plugins.run_phase(PluginPhase.ON_ERROR, self.context, mask=self.mask_text,
                                       continue_on_error=True, on_error=self._error)
        with self.obs.phase(PluginPhase.CLEANUP.value, self.plugins):
            cleanup_errors = self.plugins.run_phase(PluginPhase.CLEANUP, self.context, mask=self.mask_text,
                                                    continue_on_error=True, on_error=self._error)
        return EXIT_RUNNER_ERROR if cleanup_errors and exit_code == 0 else exit_code

    def _main_phases(self) -> tuple[int, bool]:
        """Everything up to the triggers; returns (exit code, failed). SIGTERM may interrupt it anywhere."""
        with self.cancellation.interruptible():
            self._adopt_local_checkout()
            self._load_plugins(self.config.plugin_dirs)
            self._phase(PluginPhase.PRE_VALIDATION)
            job = self._validate()
            self._phase(PluginPhase.POST_VALIDATION)
            if not self.config.dry_run and job.steps:
                # Every step is spawned by the fork server: launch its interpreter now, so that it starts
                # while secrets and sources are prepared instead of in front of the first step.
                from runnerlib.security.spawn import start_fork_server

                start_fork_server(wait=False)
                if self._container is not None:  # container mode: the first step's container starts now
                    from runnerlib.execution.container_steps import prestart

                    prestart(self, job)
            if self.config.job_timeout:
                self.cancellation.start_timer(self.config.job_timeout)
            self._protect_and_load_secrets()
            if self.config.dry_run:
                self._print_plan(job)
                return 0, False
            self._phase(PluginPhase.PRE_SOURCE_PREP)
            self._start_trigger_signing()
            with self.obs.phase("source_preparation", self.plugins):
                self._prepare_sources()
            self._job_trees()  # from here on, what is written into src is checked before the untrusted copy
            self._load_ci_plugins()
            self._phase(PluginPhase.POST_SOURCE_PREP)
            self._phase(PluginPhase.PRE_EXECUTION)
            self.cancellation.check()
            result = self._run_steps(job)
            self.context.exit_code, self.context.step_results = result.exit_code, result.steps
            self._phase(PluginPhase.POST_EXECUTION)
            self._publish_triggers()
            if result.exit_code != 0:
                self.context.error = failure_text(result)
            return result.exit_code, result.exit_code != 0

    def _adopt_local_checkout(self) -> None:
        """Your own checkout (local_checkout.py): a per-run workspace, the cwd as source, said on stderr."""
        from runnerlib.config import fill_derived
        from runnerlib.local_checkout import adopt

        self._local = adopt(self.config, fill_derived)
        if self._local.error:
            raise ConfigError("workspace_root", self.config.origin("workspace_root"), self._local.error)
        for message in self._local.messages:
            # stderr: stdout's first line stays the trigger-key announcement (worker contract).
            self._note(message)

    # -- phases --------------------------------------------------------------------------------------------

    def _phase(self, phase: PluginPhase) -> None:
        self.cancellation.check()
        self.log.event(f"phase {phase.value}", level="debug")
        with self.obs.phase(phase.value, self.plugins):
            self.plugins.run_phase(phase, self.context, mask=self.mask_text)
        # Plugins may replace the config object itself; keep ours in step.
        if self.context.config is not self.config:
            self.config = self.context.config
        self.cancellation.check()

    def _load_plugins(self, directories: list[str]) -> None:
        if not directories:
            return
        from runnerlib.plugin_loader import load_plugins

        config = self.config
        untrusted = untrusted_trees(config)  # src, its untrusted copy and the hand-over area (artifacts)
        names = load_plugins(list(directories), self.plugins, workspace_root=config.workspace_root,
                             untrusted_dirs=untrusted)
        if names:
            self.log.event(f"plugins loaded: {', '.join(names)}")

    def _load_ci_plugins(self) -> None:
        from runnerlib.plugin_loader import ci_plugin_dir

        if self.config.ci_dir and ci_plugin_dir(self.config.ci_dir).is_dir():
            # From the trusted CI checkout: they take part from POST_SOURCE_PREP on.
            self._load_plugins([str(ci_plugin_dir(self.config.ci_dir))])

    def _validate(self) -> Job:
        from runnerlib.config import check_config_paths

        config = self.config
        if not isinstance(config, JobConfig):
            raise ConfigError("config", "plugin", "a plugin replaced the configuration with a non-JobConfig")
        config.check_rules()
        check_config_paths(config)
        if config.container or config.runner_image:
            from runnerlib.execution.container_steps import container_mode

            self._container = container_mode(config)
        job = self.job or simple_job(config)
        if config.untrusted:
            job.force_untrusted()
        check_job_origin(job, config)
        job.validate(config.job_variables())
        self.job = self.context.job = job
        self._check_out_of_reach()
        return job

    def _check_out_of_reach(self) -> None:
        """The triggers file and the work directory must lie where no untrusted step can write: its forged
        trigger would be signed, its files taken for ours (security/out_of_reach.py). Checked for every job:
        a trusted script may start untrusted code itself (run_untrusted), unseen by the step list."""
        from runnerlib.security.out_of_reach import untrusted_reach

        c = self.config
        for field, directory in (("triggers_file", False), ("work_dir", True)):
            value = getattr(c, field)
            why = value and untrusted_reach(value, trees=untrusted_trees(c), sandbox=self._other_sandbox_uid(),
                                            directory=directory)
            if why:
                raise ConfigError(field, c.origin(field), f"must lie where untrusted steps cannot write, but {why}")

    def _other_sandbox_uid(self) -> tuple[int, int] | None:
        """(uid, gid) of untrusted steps when the runner is root and they run as another uid, else None."""
        identity = self._sandbox_identity() if os.geteuid() == 0 else None
        return identity if identity and identity[0] != os.geteuid() else None

    def _protect_and_load_secrets(self) -> None:
        from runnerlib.security import secret_sources
        from runnerlib.security.selfprotect import protect_runner

        config = self.config
        # One compilation with the main engine for all the job's start-up secrets (registry.batch): every
        # step's output scans at full speed from its first byte. Nothing is written meanwhile.
        with self.registry.batch():
            used = secret_sources.load_secrets(
                self.registry, environ=self.environ, job_env=config.job_env,
                secret_env_names=config.secret_env_names or None,
                secret_values_list=config.secret_values_list or None,
                secrets_file=config.secrets_file, secrets_fd=config.secrets_fd,
                read_stdin=self.read_stdin_secrets)
            for step in self.job.steps if self.job is not None else ():
                # A step's own env: block (a trusted step gets it, and its output would show it in clear).
                used += secret_sources.load_step_env_secrets(self.registry, step.name, step.env,
                                                             secret_env_names=config.secret_env_names)
        for line in used:
            self.log.event(f"secrets: {line}", level="debug")
        if self.argv:
            secret_sources.warn_argv_secrets(self.argv, self.registry, flags=self.argv_flags,
                                             warn=lambda message: self.log.event(message, level="warning"))
        # Non-dumpable, subreaper, and the secrets scrubbed from our own /proc cmdline and environ (steps
        # get them from self.environ, a copy taken before).
        protect_runner(self.registry.secrets())
        job_env = dict(config.job_env)
        from runnerlib.security import secret_store

        if secret_store.find_secret_refs(job_env):
            job_env = secret_store.resolve_secret_refs(job_env, lambda: secret_store.SecretStore(), self.registry)
        self._job_env = job_env
        self._scratch = config.work_dir or tempfile.mkdtemp(prefix="runnerlib-")
        os.makedirs(self._scratch, mode=0o700, exist_ok=True)
        self._socket = self._socket_server.start(parent_dir=self._scratch)
        from runnerlib.execution.step_state import StepStateFile

        # For trusted steps asking about the others (get_job_result): private, like the socket.
        self._step_state = StepStateFile(os.path.join(self._scratch, "steps.json"))
        self.context.env = self._trusted_env()
        # What plugins add or change from here on also reaches untrusted steps (filtered like the rest).
        self._env_baseline = dict(self.context.env)

    def _open_workspace(self) -> Any:
        from runnerlib.security.paths import Workspace

        if self.workspace is None:
            self.workspace = Workspace(self.config.workspace_root, create=True)
        return self.workspace

    def _open_log(self, path: Path, append: bool) -> BinaryIO:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        return os.fdopen(self._open_workspace().open(str(path), flags, 0o600), "wb")

    def _prepare_sources(self) -> None:
        config = self.config
        workspace = self._open_workspace()
        self.context.workspace = workspace
        owner = self._untrusted_owner()
        prepared_src = (config.source_type or "none") != "none"
        if prepared_src or (config.ci_source_type or "none") != "none":
            from runnerlib.source import dual

            # The uid untrusted steps run as when the runner is root; unprivileged, they share the runner's
            # uid and Landlock (not file modes) keeps them out of the CI tree, so there is nothing to verify.
            uid, gid = self._sandbox_identity() if os.geteuid() == 0 else (None, None)
            sources = dual.prepare_job_sources(
                config=config, workspace=workspace, registry=self.registry, env=self.environ,
                untrusted_uid=uid, untrusted_gids=(gid,) if gid is not None else (),
                log=lambda message: self.log.event(message))
            self.context.metadata["sources"] = sources
        # The tree may be pre-mounted, or the job needs none: make sure the directory the job runs in exists,
        # as CI systems do for an empty workspace.
        for directory in dict.fromkeys([config.code_dir, config.job_dir]):
            if directory and not os.path.isdir(directory):
                workspace.makedirs(directory)
        from runnerlib.source.pristine import remove_leftover

        remove_leftover(workspace)  # a previous job's untrusted copy of src: this job makes its own
        if owner is not None:
            self._hand_over_to_untrusted(workspace)

    def _untrusted_owner(self) -> tuple[int, int] | None:
        """(uid, gid) the sandboxed steps run as, when the runner is root and this job may run untrusted code
        (an untrusted step, --untrusted, or a CI tree whose scripts test the project with run_untrusted);
        else None. Untrusted steps build in their own copy of src and write /job/artifacts."""
        if os.geteuid() != 0:
            return None
        job = self.job
        may_run_untrusted = (self.config.untrusted or (self.config.ci_source_type or "none") != "none"
                             or (job is not None and any(s.trust == "untrusted" for s in job.steps)))
        return self._sandbox_identity() if may_run_untrusted else None

    def _sandbox_identity(self) -> tuple[int, int]:
        """(uid, gid) of the sandbox policy: what untrusted steps run as when the runner is root."""
        from runnerlib.security.policy import NOBODY, PolicyError

        try:
            policy = self._sandbox_policy()
        except PolicyError:
            return NOBODY, NOBODY  # the step itself will be refused with the policy's message
        return policy.uid, policy.gid

    def _hand_over_to_untrusted(self, workspace: Any) -> None:
        """The artifacts directory (the hand-over area) becomes world-writable and sticky, like /tmp, so
        untrusted steps add files but cannot remove the runner's logs. The src tree is never handed over:
        untrusted steps get their own copy (runnerlib.source.pristine)."""
        artifacts = self.config.artifacts_dir or str(Path(self.config.workspace_root) / "artifacts")
        workspace.makedirs(artifacts)
        workspace.chmod(artifacts, 0o1777)

    def _run_steps(self, job: Job) -> JobResult:
        config = self.config
        logs_dir = Path(config.artifacts_dir or Path(config.workspace_root) / "artifacts") / "logs"
        if self.parent_step:
            logs_dir = logs_dir / f"{self.parent_step}.nested"
        self._open_workspace().makedirs(str(logs_dir))
        self._check_logs_dir(logs_dir)
        self.log.logs_dir = logs_dir
        self.log.open_log = self._open_log
        self._protocol = self._step_protocol()
        self._job_trees()  # made once before steps run in parallel threads: they must share it (and its lock)
        scheduler = Scheduler(
            job, self.obs.wrap_executor(self._execute_tracked), concurrency=config.concurrency, variables=config.job_variables(),
            default_timeout=config.step_timeout, default_retries=config.step_retries,
            on_event=lambda level, step, message: self.log.event(message, step=step, level=level),
            step_variables=lambda step: self._protocol.variables(step, self._steps_by_name()))
        with self.cancellation.steps(scheduler):
            result = scheduler.run()
        result.exit_code = self.cancellation.code() or result.exit_code
        self._protocol.fill(result.steps)
        self.summary.collect(self._protocol, [s.name for s in job.steps])
        self.result = result
        self.obs.steps_finished(result.steps)
        return result

    def _step_protocol(self) -> Any:
        from runnerlib.execution.step_protocol import StepProtocol

        c = self.config
        return StepProtocol(
            mask=self.mask_text, workspace=self._open_workspace(), scratch=str(self._scratch),
            artifacts_dir=str(c.artifacts_dir or Path(c.workspace_root) / "artifacts"),
            owner=self._sandbox_identity() if os.geteuid() == 0 else None, debug=self.log.debug,
            warn=lambda step, message: self.log.event(message, step=step, level="warning"))

    def _steps_by_name(self) -> dict[str, Step]:
        return {s.name: s for s in self.job.steps} if self.job else {}

    def _check_logs_dir(self, logs_dir: Path) -> None:
        """The step logs and summary.json go in <artifacts>/logs: a root runner refuses one that the sandbox
        uid could write (it existed before the job, made by someone else)."""
        sandbox = self._other_sandbox_uid()
        if sandbox is not None:
            from runnerlib.security.out_of_reach import untrusted_reach

            why = untrusted_reach(str(logs_dir), trees=(), sandbox=sandbox, directory=True)
            if why:
                raise RunnerError(f"the logs directory {logs_dir} must lie where untrusted steps cannot write, "
                                  f"but {why}; remove it or give it to root")

    def _execute_tracked(self, step: Step, attempt: int, cancel: threading.Event) -> Any:
        """_execute, recording the step's state for the trusted steps that ask (execution/step_state.py)."""
        state = getattr(self, "_step_state", None)
        if state is None:
            return self._execute(step, attempt, cancel)
        state.mark(step.name, "running", None, attempt)
        outcome: Any = None
        try:
            outcome = self._execute(step, attempt, cancel)
        finally:
            code = int(getattr(outcome, "exit_code", 1))
            status = ("success" if code == 0 else "timed_out" if getattr(outcome, "timed_out", False)
                      else "cancelled" if getattr(outcome, "cancelled", False) else "failed")
            state.mark(step.name, status, code, attempt)
        return outcome

    def _execute(self, step: Step, attempt: int, cancel: threading.Event) -> Any:
        from runnerlib.execution.process import run_process

        trusted = step.trust == "trusted"
        env = self._trusted_env() if trusted else self._untrusted_env()
        declared = trusted and getattr(self.job, "secrets", "all") == "declared"
        if declared:
            env = self._declared_env(env, step)
        step_env = dict(step.env)
        if step_env:
            from runnerlib.security import secret_store

            if secret_store.find_secret_refs(step_env):
                step_env = secret_store.resolve_secret_refs(step_env, lambda: secret_store.SecretStore(),
                                                            self.registry)
            if not trusted:
                # An untrusted step never gets a secret, even one its own definition names.
                dropped = sorted(k for k, v in step_env.items() if not self._safe_for_untrusted(k, v))
                if dropped:
                    self.log.event(f"not given to this untrusted step (secret): {', '.join(dropped)}",
                                   step=step.name, level="warning")
                step_env = {k: v for k, v in step_env.items() if k not in dropped}
        # The step protocol (execution/step_protocol.py): what upstream steps left, ${{ steps.X.outputs.Y }}.
        steps = self._steps_by_name()
        env.update(self._protocol.environment(step, steps, env.get("PATH", "")))
        templates = step_env
        command, step_env = self._protocol.substitute(step, steps, step.command, step_env)
        env.update(step_env)
        # Passed on as written to an untrusted step: what its untrusted upstream steps wrote, and its own env
        # where the job file's text holds no secret in any form (the filter above sees raw secrets only); a
        # substitution adds masked trusted outputs and raw untrusted ones, which it knew.
        known = {} if trusted else {**self._protocol.handed_on(step, steps),
                                    **{k: v for k, v in step_env.items()
                                       if self.registry.mask_text(templates[k]) == templates[k]}}
        env["REACTORCIDE_STEP_NAME"] = step.name
        env.update(self.obs.step_env(step.name))  # TRACEPARENT: the step's jobs and runners join the trace
        if trusted and self._socket is not None:
            env.update(self._socket.env(register=not declared or step.register_secrets))
        shown = command if isinstance(command, str) else shlex.join(command)
        retry = Own(" (attempt {n})", n=attempt) if attempt > 1 else ""
        self.log.event(Own("$ {command}{retry}" if trusted else "$ [untrusted] {command}{retry}", command=shown,
                           retry=retry), step=step.name)
        policy = None
        trees = self._job_trees()
        if trusted and self._container is None:  # a container step gets /job/ci read-only from its engine
            command = trees.trusted_command(self.config, command, step.name)
        if not trusted:
            from runnerlib.security.paths import PathPolicyError
            from runnerlib.security.policy import PolicyError

            try:
                owner = self._sandbox_identity() if os.geteuid() == 0 else None
                env.update(trees.untrusted_env(self.config, step.name, owner))
                policy = self._sandbox_policy()
            except (PolicyError, PathPolicyError, OSError) as exc:
                reason = self.mask_text(str(exc))
                self.log.event(Own("refused: {reason}", reason=reason), step=step.name, level="error")
                return Outcome(exit_code=EXIT_REFUSED, refused=True, reason=reason)
        cwd = self._step_cwd(step)
        missing = _missing_working_dir(step, cwd, self._step_cwd_base(step))
        if missing:
            self.log.event(missing, step=step.name, level="error")
            self._to_stderr(f"runnerlib: error: step {step.name!r}: {missing}")
            return Outcome(exit_code=EXIT_CONFIG_ERROR, reason=missing)
        if not trusted:
            trees.untrusted_started()  # ended by after_untrusted below, or here if its files cannot be made
        try:
            files = self._protocol.prepare(step)
        except BaseException:
            if not trusted:
                trees.after_untrusted(self.config, step.name)
            raise
        env.update(files.env)
        limits = step.limits.merged_over(self.config.limits) if step.limits else self.config.limits
        try:
            with self.log.step_output(step.name, attempt=attempt) as sink:
                if self._container is not None:
                    from runnerlib.execution.container_steps import run_container_step

                    result = run_container_step(self, step, command, env, cwd, trusted, cancel, sink, files, limits,
                                                attempt, known=known)
                else:
                    result = run_process(command, registry=self.registry, trusted=trusted, env=env, cwd=cwd,
                                         timeout=step.timeout, policy=policy, on_output=sink.write,
                                         cancel_event=cancel, grace=self.config.kill_grace, name=step.name,
                                         keep_output=False, commands=files.commands, add_mask=step.add_mask,
                                         network=step.network if step.network is not None
                                         else self.config.network,
                                         known_formats=self.config.mask_known_formats,
                                         on_notice=lambda line: self.log.event(line, step=step.name,
                                                                               level="warning"),
                                         limits=limits, known_to_step=known)
        finally:
            files_error = self._protocol.collect(files)
            if not trusted:
                trees.after_untrusted(self.config, step.name)
        if files_error:  # as on GitHub, a malformed file fails a step that succeeded
            self.log.event(files_error, step=step.name, level="error")
            if result.exit_code == 0:
                import dataclasses

                result = dataclasses.replace(result, exit_code=1, reason=files_error)
        status = Own("ok") if result.exit_code == 0 else Own("exit {code}", code=result.exit_code)
        if getattr(result, "cancelled", False) and self.cancellation.timed_out:
            status = Own("timed out: the job's timeout of {seconds}s", seconds=Own(f"{self.config.job_timeout:g}"))
        elif getattr(result, "reason", None) and (result.exit_code != 0 or getattr(result, "leftover_killed", 0)):
            status = Own("{status}: {reason}", status=status, reason=result.reason)
        self.log.event(Own("finished ({status}) in {seconds:.2f}s", status=status, seconds=result.duration),
                       step=step.name, level="info" if result.exit_code == 0 else "warning")
        if self.log.debug:
            self._audit_after(step.name)
        return result

    def _declared_env(self, env: dict[str, str], step: Step) -> dict[str, str]:
        """The job declares its secrets: the secret variables this trusted step does not list are withheld."""
        from runnerlib.execution.least_privilege import withhold_undeclared

        env, withheld, missing = withhold_undeclared(
            env, step.secrets or (), lambda k, v: k != "REACTORCIDE_COORDINATOR_URL" and not self._safe_for_untrusted(k, v))
        if withheld:
            self.log.event(f"secrets not declared by this step, not given: {', '.join(withheld)}", step=step.name,
                           level="debug")
        if missing:
            self.log.event(f"declared secrets that are not set: {', '.join(missing)}", step=step.name,
                           level="warning")
        return env

    def _audit_after(self, step_name: str) -> None:
        """Debug mode: after a step, look in /proc for the job's processes (steps still running, daemons a
        step left behind, plugins' children) whose cmdline or environ holds a registered secret. A trusted
        step still running legitimately holds its secret variables; the report says so, masked."""
        from runnerlib.security.audit import audit

        report = audit(self.registry, root=os.getpid())
        for finding in report.findings:
            self.log.event(f"audit: {finding}", step=step_name, level="warning")
        self.log.event(f"audit after step: {len(report.scanned)} processes scanned, "
                       f"{len(report.findings)} findings", step=step_name, level="debug")

    def _sandbox_policy(self) -> Any:
        """The sandbox of untrusted steps: their own copy of src and artifacts writable (never /job/src itself:
        trusted steps keep it pristine), ci read-only and protected."""
        from runnerlib.execution.process import default_policy

        c = self.config
        src = self._trees.untrusted_source() if self._trees is not None else None
        env = {**self._context_env(), **{k: v for k, v in self.environ.items() if k.startswith("REACTORCIDE_SANDBOX")}}
        return default_policy(env, read_write_paths=tuple(p for p in (src, c.artifacts_dir) if p))

    def _job_trees(self) -> Any:
        """Which tree each step works on, and what crosses back from untrusted steps (source.job_trees)."""
        if self._trees is None:
            from runnerlib.source.job_trees import JobTrees

            self._trees = JobTrees(self._open_workspace,
                                   lambda message, step, level: self.log.event(message, step=step, level=level),
                                   holds_secret=lambda data: self.registry.mask(data) != data)
        return self._trees

    def _step_cwd_base(self, step: Step) -> str:
        """The directory a step's working_dir is relative to (in the untrusted copy for untrusted steps)."""
        return self._job_trees().base(self.config, step.trust == "trusted")

    def _step_cwd(self, step: Step) -> str:
        return str(self._job_trees().cwd(self.config, step.working_dir, step.trust == "trusted"))

    # The environment of steps: runnerlib/step_env.py (step_environment).
    def _context_env(self) -> dict[str, str]:
        return step_environment.context_env(self.config)

    def _trusted_env(self) -> dict[str, str]:
        state_env: dict[str, str] = {}
        state = getattr(self, "_step_state", None)
        if state is not None:
            from runnerlib.execution.step_state import ENV_NAME

            state_env[ENV_NAME] = state.path
        return step_environment.trusted_env(self.config, environ=self.environ,
                                            job_env=getattr(self, "_job_env", self.config.job_env),
                                            plugin_env=self.context.env or {}, state_env=state_env)

    def _safe_for_untrusted(self, name: str, value: str) -> bool:
        return step_environment.safe_for_untrusted(name, value, secret_env_names=self.config.secret_env_names,
                                                   secrets=self.registry.secrets())

    def _untrusted_env(self) -> dict[str, str]:
        return step_environment.untrusted_env(self.config, environ=self.environ,
                                              job_env=getattr(self, "_job_env", self.config.job_env),
                                              plugin_env=self.context.env or {},
                                              baseline=getattr(self, "_env_baseline", {}),
                                              secrets=self.registry.secrets())

    def _start_trigger_signing(self) -> None:
        """Announce the job's trigger key before source preparation: the worker trusts the first announcement
        only, so it must precede anything fetched or run from untrusted sources (fetchers print too)."""
        if self.parent_step:
            return
        from runnerlib.workflow.signing import start_trigger_signing  # not publish: its imports cost ~40 ms

        self._open_workspace()  # the key file goes in the workspace root, which may not exist yet
        self._signer = start_trigger_signing(self.config.workspace_root, job_id=self.config.job_id,
                                             emit=self._emit_line)

    def _publish_triggers(self) -> None:
        if self.parent_step:
            return  # the outer runner publishes the triggers file after its own steps
        config = self.config
        from runnerlib.workflow.output_lines import publish_workflow_output  # Kubernetes: outputs in the log

        publish_workflow_output(self.environ, signer=self._signer, registry=self.registry, job_id=config.job_id,
                                emit=self._emit_line)
        if config.triggers_file and not os.path.lexists(config.triggers_file):
            return  # no step triggered anything: nothing to sign or send
        from runnerlib.workflow.publish import publish_triggers

        coordinator = None
        if config.coordinator_url and config.api_token and config.job_id:
            from runnerlib.workflow.coordinator import CoordinatorClient

            coordinator = CoordinatorClient(config.coordinator_url, config.api_token, registry=self.registry,
                                            allow_insecure_transport=config.allow_insecure_transport)
        result = publish_triggers(config.triggers_file, signer=self._signer, registry=self.registry,
                                  job_id=config.job_id, emit=self._emit_line, coordinator=coordinator,
                                  workspace=config.workspace_root)
        if result.operations:
            self.log.event(f"triggers: {result.jobs} job(s) in {result.operations} operation(s) published")
        for error in result.errors:
            self._error(f"triggers: {error}")

    def _emit_line(self, line: str) -> None:
        # Protocol lines (trigger announcements) go out unprefixed on the runner's own stream, masked.
        self.log._write((self.mask_text(line) + "\n").encode())

    def _stop_services(self) -> None:
        if self._container is not None:
            from runnerlib.execution.container_steps import stop_prestart

            stop_prestart(self)  # a first step's container no step took
        if getattr(self, "_local", None) is not None:
            self._local.close()
        if self._socket is not None:
            try:
                self._socket.stop()
            finally:
                self._socket = None
        if self.workspace is not None:
            self.workspace.close()
            self.workspace = None
        if self._scratch and not self.config.work_dir:
            import shutil

            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # -- output ----------------------------------------------------------------------------------------

    def _to_stderr(self, line: str) -> bool:
        """Write a masked line to the process's stderr (CLI runs); False when the job has no stderr of its own."""
        if self._stderr is None:
            return False
        try:
            self._stderr.write(self.mask_text(line) + "\n")
            self._stderr.flush()
        except (OSError, ValueError):
            pass
        return True

    def _note(self, message: str) -> None:
        if not self._to_stderr(f"runnerlib: {message}"):
            self.log.event(message)

    def _error(self, message: str, *, stderr: bool = False) -> None:
        masked = self.mask_text(message)
        self.errors.append(masked)
        self.log.event(masked, level="error")
        if stderr:
            # A job that could not run says why on stderr too: `run-job bad.yaml >/dev/null` shows it.
            self._to_stderr(f"runnerlib: error: {masked}")

    def _print_plan(self, job: Job) -> None:
        order = job.validate(self.config.job_variables())
        self.log.event(f"dry run: job {job.name!r}, {len(order)} step(s), nothing will run")
        c = self.config
        self.log.event(f"workspace {c.workspace_root}; steps run in {c.job_dir}")
        for label, prefix, dest in (("ci", "ci_", c.ci_dir), ("src", "", c.code_dir)):
            kind, url, ref = (getattr(c, f"{prefix}source_{x}") for x in ("type", "url", "ref"))
            if (kind or "none") == "none":
                self.log.event(f"would fetch nothing into {dest} ({prefix}source_type none)")
            else:
                shown = re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1***@", url or "", flags=re.I)  # no credentials
                self.log.event(f"would fetch {label}: {kind} {shown}" + (f" at {ref}" if ref else "") + f" into {dest}")
        for name in order:
            step = job.step(name)
            deps = f" after {', '.join(step.depends_on)}" if step.depends_on else ""
            cond = f" if {step.condition}" if step.condition != "on_success" else ""
            self.log.event(f"{name} [{step.trust}]{deps}{cond}: {step.describe_command()}")


class _JobLogHandler(logging.Handler):
    """runnerlib's own log records (the process wrapper's timeout warnings, ...) go into the job log, masked and
    in its format; without a handler Python's last resort printed them raw to stderr."""

    def __init__(self, job_log: JobLog) -> None:
        super().__init__(logging.DEBUG)
        self.job_log = job_log

    def emit(self, record: logging.LogRecord) -> None:
        level = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}.get(record.levelno, "error")
        try:
            self.job_log.event(record.getMessage(), level=level)
        except Exception:  # noqa: BLE001 - logging must never break the job
            self.handleError(record)


@contextmanager
def _process_output_masked(log: JobLog, mask: Any) -> Iterator[None]:
    """While the job runs, print() and logging from plugins (they run in this process) are masked like step
    output, and runnerlib's own log records go into the job log."""
    saved_streams = sys.stdout, sys.stderr
    sys.stdout = MaskedTextWriter(sys.stdout, mask)  # type: ignore[assignment]
    sys.stderr = MaskedTextWriter(sys.stderr, mask)  # type: ignore[assignment]
    log_handler = _JobLogHandler(log)
    logging.getLogger("runnerlib").addHandler(log_handler)
    try:
        yield
    finally:
        logging.getLogger("runnerlib").removeHandler(log_handler)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved_streams


class _TextSink:
    """Bytes to a text-only stdout (a notebook, a capturing harness): decoded, written, flushed."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def write(self, data: bytes | memoryview) -> int:
        self.target.write(bytes(data).decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.target, "isatty", lambda: False)())


def _binary_stdout() -> Any:
    buffer = getattr(sys.stdout, "buffer", None)
    return buffer if buffer is not None else _TextSink(sys.stdout)


def _missing_working_dir(step: Step, cwd: str, base: str) -> str | None:
    """Why a step's working_dir cannot be used (missing, or a link out of the job's directory), or None.
    A configuration error of the job (exit 78), not the sandbox refusing the step."""
    if not step.working_dir:
        return None
    if not os.path.isdir(cwd):
        return f"working_dir {step.working_dir!r}: no such directory in {base} (configuration error)"
    real, top = os.path.realpath(cwd), os.path.realpath(base)
    if real != top and not real.startswith(top.rstrip("/") + "/"):
        return f"working_dir {step.working_dir!r}: leads out of {base} through a symbolic link (configuration error)"
    return None



def simple_job(config: JobConfig) -> Job:
    """The one-step job of simple mode: job_command (shell) or job_args (argv) in job_dir."""
    if config.job_args:
        command: str | list[str] = list(config.job_args)
    elif config.job_command:
        command = config.job_command
    else:
        raise ConfigError("job_command", config.origin("job_command"),
                          "nothing to run: give --job-command, `-- CMD ARGS`, or a job file with steps")
    job = Job(config.job_name, vars=config.vars)
    job.add_step(config.job_name, command, timeout=config.step_timeout,
                 trust="untrusted" if config.untrusted else "trusted")
    return job


def run_job(
    command: str | list[str] | None = None,
    source_dir: str | None = None,
    artifacts_dir: str | None = None,
    *,
    job: Job | None = None,
    config: JobConfig | None = None,
    plugins: PluginManager | None = None,
    out: BinaryIO | None = None,
    **config_overrides: Any,
) -> int:
    """Run a job from Python (advanced mode) and return its exit code; plugins from register_plugin apply.

    `command` is the job's shell command (or argv list); `source_dir` is where it runs (code_dir and job_dir);
    other keyword arguments are JobConfig fields. `config` is a ready configuration (a `get_config()` result),
    used as it is (then give no other settings). `job` is a Job built in Python; its name names the job (in
    the log, summary.json and REACTORCIDE_JOB_NAME) unless job_name is set. Configuration errors return 78
    after a masked one-line message on stderr. End a job script with `sys.exit(...)` of the result (or call
    runnerlib.main()), so that a failing job fails the script.

    Example::

        import runnerlib
        runnerlib.register_plugin(MyPlugin())
        exit_code = runnerlib.run_job(command="make test && make build", source_dir="/job/src",
                                      artifacts_dir="/job/artifacts")
        sys.exit(exit_code)
    """
    if config is not None:
        if command is not None or source_dir is not None or artifacts_dir is not None or config_overrides:
            _report_early("run_job: give either config= or settings, not both", {}, out)
            return EXIT_CONFIG_ERROR
        return JobRunner(config, job, plugins=plugins, out=out).run()
    overrides = dict(config_overrides)
    if job is not None and "job_name" not in overrides and "name" not in overrides:
        overrides["job_name"] = job.name
    if isinstance(command, list):
        overrides["job_args"] = command
    elif command is not None:
        overrides["job_command"] = command
    if source_dir is not None:
        overrides.setdefault("code_dir", source_dir)
        overrides.setdefault("job_dir", source_dir)
    if artifacts_dir is not None:
        overrides["artifacts_dir"] = artifacts_dir
    try:
        config = get_config(**overrides)
    except (ConfigError, JobDefinitionError) as exc:
        _report_early(str(exc), overrides, out)
        return EXIT_CONFIG_ERROR
    return JobRunner(config, job, plugins=plugins, out=out).run()


def _report_early(message: str, overrides: Mapping[str, Any], out: BinaryIO | None) -> None:
    # No registry exists yet: mask the values that are secrets by definition before printing.
    for key in ("api_token", "secret_values_list"):
        value = overrides.get(key)
        values = value if isinstance(value, list) else str(value or "").split(",")
        for secret in values:
            if secret and len(secret) >= 4:
                message = message.replace(secret, "***")
    stream = out if out is not None else sys.stderr.buffer
    stream.write(f"runnerlib: error: {message}\n".encode())
    stream.flush()


__all__ = ["JobCancelled", "JobRunner", "RunnerError", "StepResult", "run_job", "simple_job"]
