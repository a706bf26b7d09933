"""Runs a job's step DAG: dependencies first, independent steps in parallel (bounded), conditions, retries.

The scheduler knows nothing about processes: it calls an executor for each attempt of each step and gets
back an `Outcome`. The runner's executor wraps `execution.process.run_process`; tests pass plain functions.

Rules (what users of GitHub Actions / Buildkite expect):
- a step starts when all its dependencies have finished and its condition holds; `on_success` (default)
  needs every dependency to have succeeded (a failure with allow_failure counts as success, like
  continue-on-error / soft_fail); `on_failure` runs when some upstream step failed; `always` runs whatever
  happened upstream; an expression also needs `on_success` and is evaluated on the job's variables, unless
  it calls GitHub's status functions (`failure() && branch == 'main'`), which then decide alone;
- `always` / `on_failure` steps without depends_on wait for every step declared before them (like a final
  step in a sequential pipeline);
- a failed or timed-out attempt is retried up to `retries` times, or as `retry:` says (only some exit codes
  or signals, with a backoff: execution/retry.py); cancelled and refused attempts are not;
- `allow_failure: {exit_codes: [...]}` allows only those final exit codes to fail;
- conditions may use the outputs of upstream steps (`steps.X.outputs.Y`, from `step_variables`);
- a skipped step says why; the job succeeds iff every required (not allow_failure) step that ran succeeded;
- `cancel()` (SIGTERM) stops running steps through the executor's cancel event and starts nothing new.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from runnerlib.execution.conditions import ConditionError
from runnerlib.execution.own_words import Own
from runnerlib.execution.process import Cancel
from runnerlib.execution.retry import RetryPolicy, allows_failure
from runnerlib.exit_codes import error_text
from runnerlib.jobs import Job, Step
from runnerlib.observability.profile import merge_usage

# Exit codes shared with execution.process and the CLI.
EXIT_TIMEOUT = 124
EXIT_REFUSED = 126
EXIT_CANCELLED = 143


@dataclass
class Outcome:
    """What one attempt of a step produced (ProcessResult has these attributes too)."""

    exit_code: int
    timed_out: bool = False
    cancelled: bool = False
    refused: bool = False
    reason: str | None = None


@dataclass
class StepResult:
    """The final state of one step. status: success, failed, timed_out, refused, cancelled, skipped."""

    name: str
    status: str = "pending"
    exit_code: int | None = None
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    reason: str | None = None
    allow_failure: bool = False
    trust: str = "trusted"
    # The step protocol (execution/step_protocol.py): masked outputs, annotations, whether it wrote a summary.
    outputs: dict[str, str] = field(default_factory=dict)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    summary: bool = False
    resources: dict[str, Any] | None = None  # CPU, peak RSS, I/O of every attempt (observability.profile)

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    @property
    def ok(self) -> bool:
        """Counts as success for dependants: succeeded, or failed but allowed to."""
        return self.status == "success" or (self.allow_failure and self.status in _FAILED)

    @property
    def failed_required(self) -> bool:
        return self.status in _FAILED and not self.allow_failure

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration"] = None if self.duration is None else round(self.duration, 6)
        return data


_FAILED = {"failed", "timed_out", "refused", "cancelled"}

Executor = Callable[[Step, int, threading.Event], Any]


@dataclass
class JobResult:
    """All step results (in declaration order), the job's exit code, and whether it was cancelled."""

    steps: list[StepResult]
    exit_code: int
    cancelled: bool = False
    timed_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.exit_code == 0

    def by_name(self) -> dict[str, StepResult]:
        return {r.name: r for r in self.steps}


class Scheduler:
    """Runs one job's steps with `executor(step, attempt, cancel_event)`; `run()` returns a JobResult."""

    def __init__(
        self,
        job: Job,
        executor: Executor,
        *,
        concurrency: int = 4,
        variables: Mapping[str, Any] | None = None,
        default_timeout: float | None = None,
        default_retries: int = 0,
        on_event: Callable[[str, str, str | Own], None] | None = None,
        retry_delay: float = 0.0,
        step_variables: Callable[[Step], Mapping[str, Any]] | None = None,
    ) -> None:
        self.job = job
        self.executor = executor
        self.concurrency = max(1, concurrency)
        self.variables = dict(variables or {})
        self.default_timeout = default_timeout
        self.default_retries = default_retries
        self.on_event = on_event or (lambda level, step, message: None)
        self.retry_delay = retry_delay
        # The outputs of finished steps a condition may use, by `steps.X.outputs.Y` (the runner's protocol).
        self.step_variables = step_variables or (lambda step: {})
        self.cancel_event = Cancel()
        self._timed_out = False
        self._lock = threading.Lock()

    def cancel(self, *, timed_out: bool = False, kill: bool = False) -> None:
        """Stop: running steps are told through the cancel event; nothing new starts. Signal-safe. With
        `kill` (a second Ctrl-C) running steps get SIGKILL at once instead of the rest of their grace."""
        if timed_out:
            self._timed_out = True
            self.cancel_event.reason = "job timed out"
        if kill:
            self.cancel_event.kill()
        self.cancel_event.set()

    def effective(self, step: Step) -> Step:
        """The step with job-level defaults applied (timeout, retries)."""
        if step.timeout is None and self.default_timeout is not None:
            step = _replace(step, timeout=self.default_timeout)
        if step.retries == 0 and step.retry is None and self.default_retries:
            step = _replace(step, retries=self.default_retries)
        return step

    def run(self) -> JobResult:
        order = self.job.validate(self.variables)
        steps = {s.name: s for s in self.job.steps}
        declared = [s.name for s in self.job.steps]
        waits: dict[str, list[str]] = {}
        for name in order:
            step = steps[name]
            cond = step.parsed_condition
            if not step.depends_on and cond.waits_for_earlier_steps:
                waits[name] = declared[:declared.index(name)]
            else:
                waits[name] = list(dict.fromkeys(step.depends_on))
        results = {name: StepResult(name, allow_failure=steps[name].allow_failure is True, trust=steps[name].trust)
                   for name in declared}
        pending = list(order)
        running: dict[Future[StepResult], str] = {}
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="step") as pool:
            while pending or running:
                progressed = False
                for name in list(pending):
                    if len(running) >= self.concurrency:
                        break
                    if any(results[d].status in ("pending", "running") for d in waits[name]):
                        continue
                    pending.remove(name)
                    progressed = True
                    skip = self._skip_reason(steps[name], waits[name], results)
                    if skip is not None:
                        r = results[name]
                        r.status, r.reason = ("cancelled" if self.cancel_event.is_set() else "skipped"), skip
                        self.on_event("info", name, Own("skipped: {why}", why=skip))
                        continue
                    results[name].status = "running"
                    running[pool.submit(self._run_step, self.effective(steps[name]), results[name])] = name
                if progressed:
                    continue
                if not running:
                    break  # nothing runnable: cannot happen on a validated DAG, but never spin
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    future.result()  # _run_step never raises; re-raise a bug rather than hide it
        return self._result(results, declared)

    def _skip_reason(self, step: Step, waits: list[str], results: dict[str, StepResult]) -> str | None:
        if self.cancel_event.is_set():
            return "job cancelled before the step started" if not self._timed_out else \
                "job timed out before the step started"
        cond = step.parsed_condition
        upstream = [results[d] for d in waits]
        if cond.status == "always":
            return None
        if cond.status == "on_failure":
            failed = self._upstream_failed(step, waits, results)
            return None if failed else "condition on_failure: nothing upstream failed"
        if cond.functions:
            return self._status_function_skip(step, waits, results)
        for dep in upstream:
            if not dep.ok:
                why = "was skipped" if dep.status == "skipped" else f"ended {dep.status}"
                return f"dependency {dep.name!r} {why}"
        return self._expression_skip(step) if cond.expression is not None else None

    def _status_function_skip(self, step: Step, waits: list[str], results: dict[str, StepResult]) -> str | None:
        """GitHub's semantics: an expression calling status functions decides alone whether the step runs.
        cancelled() is false here: a cancelled job starts nothing (checked before)."""
        status = {"success": all(results[d].ok for d in waits),
                  "failure": self._upstream_failed(step, waits, results), "always": True, "cancelled": False}
        return self._expression_skip(step, {f: status[f] for f in sorted(step.parsed_condition.functions)})

    def _expression_skip(self, step: Step, status: Mapping[str, bool] | None = None) -> str | None:
        cond = step.parsed_condition
        variables = self.variables
        if any(n.startswith("steps.") for n in cond.names()):
            # An output the step did not set is empty, as on GitHub.
            variables = {**variables, **{n: "" for n in cond.names() if n.startswith("steps.")},
                         **self.step_variables(step)}
        try:
            if not cond.evaluate(variables, status):
                shown = [f"{f}()={'true' if v else 'false'}" for f, v in (status or {}).items()]
                shown += [f"{n}={variables.get(n)!r}" for n in sorted(cond.names())]
                values = ", ".join(shown)
                return f"condition `{step.condition}` is false" + (f" ({values})" if values else "")
        except ConditionError as exc:
            return f"condition `{step.condition}` cannot be evaluated: {exc}"
        return None

    def _upstream_failed(self, step: Step, waits: list[str], results: dict[str, StepResult]) -> bool:
        # Transitive: a failure two levels up that made the direct dependency skip still counts.
        seen: set[str] = set()
        stack = list(waits)
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            r = results[name]
            if r.failed_required:
                return True
            stack.extend(self.job.step(name).depends_on)
        return False

    def _run_step(self, step: Step, result: StepResult) -> StepResult:
        result.started = time.time()
        attempts = step.retries + 1
        policy = step.retry or RetryPolicy(max=step.retries)
        try:
            for attempt in range(1, attempts + 1):
                result.attempts = attempt
                if self.cancel_event.is_set():
                    result.status, result.exit_code = "cancelled", EXIT_CANCELLED
                    result.reason = "job cancelled"
                    break
                try:
                    outcome = self.executor(step, attempt, self.cancel_event)
                except Exception as exc:  # noqa: BLE001 - an executor bug fails the step, not the scheduler
                    outcome = Outcome(exit_code=1, reason=f"runner error: {error_text(exc)}")
                result.exit_code = int(getattr(outcome, "exit_code", 1))
                result.reason = getattr(outcome, "reason", None)
                result.resources = merge_usage(result.resources, getattr(outcome, "resources", None))
                if getattr(outcome, "cancelled", False):
                    if self._timed_out:  # stopped by the job's timeout: the step says so, with its code
                        result.status, result.exit_code, result.reason = "timed_out", EXIT_TIMEOUT, "job timed out"
                    else:
                        result.status = "cancelled"
                        result.reason = result.reason or "job cancelled"
                    break
                if getattr(outcome, "refused", False):
                    result.status = "refused"
                    break
                if getattr(outcome, "timed_out", False):
                    result.status = "timed_out"
                    if not result.reason and step.timeout:
                        result.reason = f"step timeout of {step.timeout:g}s exceeded"
                elif result.exit_code == 0:
                    result.status = "success"
                    result.reason = None if attempt == 1 else f"succeeded on attempt {attempt}"
                    break
                else:
                    result.status = "failed"
                if attempt < attempts and not self.cancel_event.is_set():
                    if not policy.retries_on(result.exit_code):
                        self.on_event("info", step.name, Own("exit {code} is not retried (retry: exit_codes/signals)",
                                                             code=result.exit_code))
                        break
                    delay = policy.delay(attempt) or self.retry_delay
                    self.on_event("warning", step.name,
                                  Own("attempt {n}/{total} {status} (exit {code}); retrying{wait}", n=attempt,
                                      total=attempts, status=Own(result.status), code=result.exit_code,
                                      wait=Own(f" in {delay:g}s" if delay else "")))
                    if delay:
                        self.cancel_event.wait(delay)
            if result.status in _FAILED:
                result.allow_failure = allows_failure(step.allow_failure, result.status, result.exit_code)
            if result.status in _FAILED and result.allow_failure:
                note = "allowed to fail"
                result.reason = f"{result.reason}; {note}" if result.reason else note
        finally:
            result.finished = time.time()
        return result

    def _result(self, results: dict[str, StepResult], declared: list[str]) -> JobResult:
        ordered = [results[n] for n in declared]
        exit_code = 0
        failures = sorted((r for r in ordered if r.failed_required), key=lambda r: r.finished or 0)
        if failures:
            exit_code = failures[0].exit_code or 1
        cancelled = self.cancel_event.is_set()
        if cancelled:
            exit_code = EXIT_TIMEOUT if self._timed_out else EXIT_CANCELLED
        return JobResult(ordered, exit_code, cancelled=cancelled and not self._timed_out,
                         timed_out=self._timed_out)


def _replace(step: Step, **changes: Any) -> Step:
    from dataclasses import replace

    return replace(step, **changes)
