"""The runner's one handle on observability: trace spans at the lifecycle points, the trace ids of log lines,
the child TRACEPARENT of each step, and, at the end, metrics, the profile table and the HTML report.

The runner calls it at a few points (see runner.py); nothing here changes what a job does or its exit code:
a metrics target or a report that cannot be written is reported as an error line, and the job's result
stands (monitoring must not fail a build).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from runnerlib.observability.tracing import Span, Tracer


class JobObserver:
    """Spans and facts of one job. `log` is the job's JobLog (its `trace` hook gets our ids)."""

    def __init__(self, config: Any, environ: Mapping[str, str], registry: Any, log: Any) -> None:
        self.config = config
        self.registry = registry
        self.log = log
        self.started = time.time()
        self.tracer = Tracer(environ, mask=registry.mask_text)
        for note in self.tracer.notes:
            log.event(note, level="debug" if "ignored" in note else "warning")
        self.job_span = self.tracer.start(
            f"job {config.job_name}", attributes={"runnerlib.job.name": config.job_name,
                                                  "runnerlib.job.id": config.job_id or None})
        self._lock = threading.Lock()
        self._steps: dict[str, Span] = {}
        self._attempts: dict[str, Span] = {}
        self.attempts: list[dict[str, Any]] = []
        log.trace = self.log_ids
        self._sdk_log: _SdkLogHandler | None = None
        if self.tracer.exporting:
            # The exporter's own complaints (collector down, retries) go into the job's log, masked and in its
            # format, instead of raw to stderr through logging's last resort.
            self._sdk_log = _SdkLogHandler(log)
            logging.getLogger("opentelemetry").addHandler(self._sdk_log)
            logging.getLogger("opentelemetry").propagate = False

    # -- ids ---------------------------------------------------------------------------------------------

    def log_ids(self, step: str | None) -> tuple[str, str]:
        """(trace id, span id) for a log line: the step's current attempt, else the job."""
        span = self._attempts.get(step) if step else None
        ctx = (span or self.job_span).context
        return ctx.trace_id, ctx.span_id

    def step_env(self, step: str) -> dict[str, str]:
        """TRACEPARENT and REACTORCIDE_TRACEPARENT for the step's current attempt (its triggered jobs and
        nested runners continue the trace from there)."""
        span = self._attempts.get(step)
        return (span or self.job_span).context.env()

    # -- spans ---------------------------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str, plugins: Any) -> Iterator[None]:
        """A span around one lifecycle phase, with one child span per plugin call in it."""
        span = self.tracer.start(f"phase {name}", self.job_span, attributes={"runnerlib.phase": name})
        first = len(plugins.timings)
        error = None
        try:
            yield
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if self.tracer.exporting:
                for t in plugins.timings[first:]:
                    start = t.started if t.started is not None else time.time() - t.duration
                    self.tracer.record(f"plugin {t.plugin} {t.phase.value}", span, start, start + t.duration,
                                       attributes={"runnerlib.plugin": t.plugin, "runnerlib.phase": t.phase.value},
                                       error=t.error)
            span.end(error=error)

    def wrap_executor(self, execute: Callable[[Any, int, Any], Any]) -> Callable[[Any, int, Any], Any]:
        """The scheduler's executor with a span per attempt (under one span per step)."""

        def run(step: Any, attempt: int, cancel: Any) -> Any:
            self._attempt_started(step, attempt)
            outcome = None
            try:
                outcome = execute(step, attempt, cancel)
                return outcome
            finally:
                self._attempt_finished(step, attempt, outcome)

        return run

    def _attempt_started(self, step: Any, attempt: int) -> None:
        with self._lock:
            parent = self._steps.get(step.name)
            if parent is None:
                parent = self._steps[step.name] = self.tracer.start(
                    f"step {step.name}", self.job_span,
                    attributes={"runnerlib.step.name": step.name, "runnerlib.step.trust": step.trust})
            self._attempts[step.name] = self.tracer.start(
                f"step {step.name} attempt {attempt}", parent,
                attributes={"runnerlib.step.name": step.name, "runnerlib.step.trust": step.trust,
                            "runnerlib.step.attempt": attempt})

    def _attempt_finished(self, step: Any, attempt: int, outcome: Any) -> None:
        code = getattr(outcome, "exit_code", None)
        facts = {"step": step.name, "attempt": attempt, "exit_code": code,
                 "refused": bool(getattr(outcome, "refused", False)),
                 "timed_out": bool(getattr(outcome, "timed_out", False)),
                 # Set by the sandbox's resource limits when present (another part of runnerlib adds them).
                 "limit_hit": getattr(outcome, "limit_hit", None),
                 "leftover_killed": bool(getattr(outcome, "leftover_killed", False))}
        with self._lock:
            self.attempts.append(facts)
            span = self._attempts.pop(step.name, None)
        if span is None:
            return
        attributes = {"process.exit.code": code, "runnerlib.step.refused": facts["refused"],
                      "runnerlib.step.timed_out": facts["timed_out"],
                      "runnerlib.step.limit_hit": None if facts["limit_hit"] is None else str(facts["limit_hit"]),
                      "runnerlib.step.leftover_killed": facts["leftover_killed"]}
        for key, value in (getattr(outcome, "resources", None) or {}).items():
            attributes[f"runnerlib.step.{key}"] = value
        span.set(attributes)
        failed = outcome is None or code != 0
        span.end(error=(getattr(outcome, "reason", None) or f"exit {code}") if failed else None)

    def steps_finished(self, results: list[Any]) -> None:
        """End each step's span with its final state (skipped steps get a span of their own, zero long)."""
        for r in results:
            with self._lock:
                span = self._steps.pop(r.name, None)
            if span is None:
                if not self.tracer.exporting:
                    continue
                at = r.finished or time.time()
                span = self.tracer.start(f"step {r.name}", self.job_span, start_time=at,
                                         attributes={"runnerlib.step.name": r.name, "runnerlib.step.trust": r.trust})
            span.set({"runnerlib.step.status": r.status, "process.exit.code": r.exit_code,
                      "runnerlib.step.attempts": r.attempts, "runnerlib.step.reason": r.reason})
            span.end(error=(r.reason or r.status) if r.failed_required else None, end_time=r.finished)

    # -- the end -----------------------------------------------------------------------------------------

    def finish(self, exit_code: int, results: list[Any], plugins: Any, *, job: Any = None,
               read_log: Callable[[str], str] | None = None, error: Callable[[str], None]) -> None:
        """Profile table, metrics, report; then end the job span and flush the exporter. Never raises."""
        config = self.config
        duration = time.time() - self.started
        try:
            if getattr(config, "profile", False) and self.log.fmt != "json":  # JSON: in the summary line
                from runnerlib.observability.profile import profile_table

                table = profile_table(results)
                if table:
                    self.log._write(("\n" + self.registry.mask_text(table)).encode("utf-8", "replace"))
            if config.metrics_file or config.metrics_push:
                self._metrics(exit_code, duration, results, plugins, error)
            if config.report:
                self._report(exit_code, duration, results, job, read_log, error)
        finally:
            self.job_span.set({"runnerlib.job.exit_code": exit_code, "process.exit.code": exit_code})
            self.job_span.end(error=f"exit {exit_code}" if exit_code else None)
            try:
                self.tracer.shutdown()
            except Exception as exc:  # noqa: BLE001 - a collector that is down must not fail the job
                error(f"tracing: could not send the spans: {type(exc).__name__}: {exc}")
            finally:
                if self._sdk_log is not None:
                    logging.getLogger("opentelemetry").removeHandler(self._sdk_log)
                    logging.getLogger("opentelemetry").propagate = True
                    self._sdk_log = None

    def _metrics(self, exit_code: int, duration: float, results: list[Any], plugins: Any,
                 error: Callable[[str], None]) -> None:
        from runnerlib.observability import metrics

        mask = self.registry.mask_text
        facts = metrics.JobFacts(job_name=mask(self.config.job_name), job_id=mask(self.config.job_id or ""),
                                 exit_code=exit_code, duration=duration, steps=list(results),
                                 attempts=list(self.attempts), plugin_timings=list(plugins.timings),
                                 secrets_registered=len(self.registry), mask=self.registry.mask)
        if self.config.metrics_file:
            try:
                metrics.write_textfile(self.config.metrics_file, facts)
            except OSError as exc:
                error(f"metrics_file {self.config.metrics_file}: cannot write: {exc.strerror or exc}")
        if self.config.metrics_push:
            try:
                metrics.push(self.config.metrics_push, facts)
            except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, ...: one line, masked by `error`
                error(f"metrics_push: the Pushgateway did not take the metrics: {type(exc).__name__}: {exc}")

    def _report(self, exit_code: int, duration: float, results: list[Any], job: Any,
                read_log: Callable[[str], str] | None, error: Callable[[str], None]) -> None:
        from runnerlib.observability import report

        depends = {s.name: list(s.depends_on) for s in getattr(job, "steps", [])}
        items = report.items_from_steps(results, depends, read_log or (lambda name: ""))
        status = "success" if exit_code == 0 else f"failed (exit {exit_code})"
        subtitle = (f"job id {self.config.job_id or '-'} · {status} in {duration:.2f}s · trace "
                    f"{self.job_span.context.trace_id}")
        page = report.render(f"runnerlib job {self.config.job_name}", subtitle, items,
                             mask=self.registry.mask_text)
        try:
            report.write_report(self.config.report, page)
        except OSError as exc:
            error(f"report {self.config.report}: cannot write: {exc.strerror or exc}")


class _SdkLogHandler(logging.Handler):
    """OpenTelemetry's log records as warning lines of the job's log (masked by JobLog.event)."""

    def __init__(self, job_log: Any) -> None:
        super().__init__(logging.WARNING)
        self.job_log = job_log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.job_log.event(f"tracing: {' '.join(record.getMessage().split())}", level="warning")
        except Exception:  # noqa: BLE001 - logging must never break the job
            self.handleError(record)
