"""The step DAG scheduler, with in-process executors (no processes): ordering, parallelism, conditions."""

from __future__ import annotations

import threading
import time

import pytest

from runnerlib.execution.scheduler import Outcome, Scheduler
from runnerlib.jobs import Job


class Recorder:
    """An executor that records start/end instants per step; commands are tiny scripts."""

    def __init__(self) -> None:
        self.intervals: dict[str, tuple[float, float]] = {}
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0
        self.barrier: threading.Barrier | None = None

    def __call__(self, step, attempt, cancel) -> Outcome:  # noqa: ANN001
        start = time.monotonic()
        with self.lock:
            self.calls.append(step.name)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            command = step.command
            if command == "barrier":
                assert self.barrier is not None
                self.barrier.wait(timeout=20)  # raises BrokenBarrierError unless both run at once
            elif command.startswith("sleep"):
                cancel.wait(float(command.split()[1]))
            elif command == "wait-cancel":
                if cancel.wait(20):
                    return Outcome(143, cancelled=True)
            elif command.startswith("flaky"):
                # fails until attempt N
                return Outcome(0 if attempt >= int(command.split()[1]) else 7)
            elif command == "timeout":
                return Outcome(124, timed_out=True)
            elif command == "refuse":
                return Outcome(126, refused=True, reason="no landlock")
            elif command.startswith("exit"):
                return Outcome(int(command.split()[1]))
            return Outcome(0)
        finally:
            with self.lock:
                self.running -= 1
            self.intervals[step.name] = (start, time.monotonic())


def run(job: Job, rec: Recorder, **kw) -> tuple:  # noqa: ANN003
    result = Scheduler(job, rec, **kw).run()
    return result, result.by_name()


def test_independent_steps_really_run_at_the_same_time() -> None:
    rec = Recorder()
    rec.barrier = threading.Barrier(2)
    job = Job("j")
    job.add_step("left", "barrier")
    job.add_step("right", "barrier")
    job.add_step("after", "true", depends_on=["left", "right"])
    result, steps = run(job, rec, concurrency=2)
    assert result.exit_code == 0, [(s.name, s.status, s.reason) for s in result.steps]
    (l0, l1), (r0, r1), (a0, _a1) = rec.intervals["left"], rec.intervals["right"], rec.intervals["after"]
    assert max(l0, r0) < min(l1, r1)  # the intervals overlap
    assert a0 >= max(l1, r1)  # the dependant starts after both


def test_concurrency_is_bounded() -> None:
    rec = Recorder()
    job = Job("j")
    for i in range(6):
        job.add_step(f"s{i}", "sleep 0.05")
    result, _ = run(job, rec, concurrency=2)
    assert result.exit_code == 0 and rec.max_running == 2


def test_sequential_by_dependency() -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("c", "true", depends_on=["b"])
    job.add_step("b", "true", depends_on=["a"])
    job.add_step("a", "true")
    run(job, rec, concurrency=4)
    assert rec.calls == ["a", "b", "c"]
    assert rec.intervals["a"][1] <= rec.intervals["b"][0] <= rec.intervals["b"][1] <= rec.intervals["c"][0]


def test_failure_skips_dependants_and_says_why() -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("build", "exit 3")
    job.add_step("test", "true", depends_on=["build"])
    job.add_step("deploy", "true", depends_on=["test"])
    job.add_step("lint", "true")
    result, s = run(job, rec)
    assert result.exit_code == 3
    assert s["test"].status == "skipped" and s["test"].reason == "dependency 'build' ended failed"
    assert s["deploy"].reason == "dependency 'test' was skipped"
    assert s["lint"].status == "success"


def test_on_failure_and_always_steps() -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("build", "exit 2")
    job.add_step("test", "true", depends_on=["build"])
    job.add_step("notify", "true", depends_on=["test"], condition="on_failure")
    job.add_step("report", "true", condition="always")
    job.add_step("celebrate", "true", condition="on_success", depends_on=["test"])
    result, s = run(job, rec)
    assert result.exit_code == 2
    assert s["notify"].status == "success"  # a failure two levels up counts
    assert s["report"].status == "success"
    assert rec.intervals["report"][0] >= rec.intervals["build"][1]  # waited for the steps declared before
    assert s["celebrate"].status == "skipped"


def test_on_failure_skipped_when_all_is_well() -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("build", "true")
    job.add_step("notify", "true", condition="on_failure")
    result, s = run(job, rec)
    assert result.exit_code == 0 and s["notify"].status == "skipped"
    assert "nothing upstream failed" in (s["notify"].reason or "")


def test_expression_condition_on_job_variables() -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("deploy", "true", condition="branch == 'main'")
    job.add_step("preview", "true", condition="branch != 'main'")
    result, s = run(job, rec, variables={"branch": "feature/x"})
    assert result.exit_code == 0
    assert s["deploy"].status == "skipped"
    assert s["deploy"].reason == "condition `branch == 'main'` is false (branch='feature/x')"
    assert s["preview"].status == "success"


def test_retries_until_success_and_until_exhausted() -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("flaky", "flaky 3", retries=2)
    job.add_step("hopeless", "flaky 9", retries=1)
    result, s = run(job, rec)
    assert s["flaky"].status == "success" and s["flaky"].attempts == 3
    assert s["hopeless"].status == "failed" and s["hopeless"].attempts == 2
    assert result.exit_code == 7


def test_refused_is_not_retried_and_exits_126() -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("sandboxed", "refuse", retries=3)
    result, s = run(job, rec)
    assert s["sandboxed"].status == "refused" and s["sandboxed"].attempts == 1 and result.exit_code == 126


def test_timeout_exit_124_and_default_timeout_applied() -> None:
    seen = {}

    def executor(step, attempt, cancel):  # noqa: ANN001, ANN202
        seen[step.name] = step.timeout
        return Outcome(124, timed_out=True)

    job = Job("j")
    job.add_step("slow", "x")
    job.add_step("own", "x", timeout=3)
    result = Scheduler(job, executor, default_timeout=9).run()
    assert seen == {"slow": 9, "own": 3}
    assert result.exit_code == 124 and result.steps[0].status == "timed_out"


def test_allow_failure_does_not_fail_the_job() -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("optional", "exit 5", allow_failure=True)
    job.add_step("next", "true", depends_on=["optional"])
    result, s = run(job, rec)
    assert result.exit_code == 0
    assert s["optional"].status == "failed" and "allowed to fail" in (s["optional"].reason or "")
    assert s["next"].status == "success"


def test_cancel_stops_running_steps_and_starts_nothing_new() -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("long", "wait-cancel")
    job.add_step("later", "true", depends_on=["long"])
    scheduler = Scheduler(job, rec)
    threading.Timer(0.2, scheduler.cancel).start()
    result = scheduler.run()
    s = result.by_name()
    assert result.exit_code == 143 and result.cancelled
    assert s["long"].status == "cancelled" and s["later"].status == "cancelled"
    assert "later" not in rec.calls


def test_executor_exception_fails_only_that_step() -> None:
    def executor(step, attempt, cancel):  # noqa: ANN001, ANN202
        if step.name == "bad":
            raise RuntimeError("boom")
        return Outcome(0)

    job = Job("j")
    job.add_step("bad", "x")
    job.add_step("good", "x")
    result = Scheduler(job, executor).run()
    s = result.by_name()
    assert s["bad"].status == "failed" and "boom" in (s["bad"].reason or "")
    assert s["good"].status == "success" and result.exit_code == 1


@pytest.mark.parametrize("concurrency", [1, 3])
def test_exit_code_is_the_first_failure(concurrency: int) -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("a", "exit 4")
    job.add_step("b", "sleep 0.1")
    job.add_step("c", "exit 9", depends_on=["b"])
    result, _ = run(job, rec, concurrency=concurrency)
    assert result.exit_code == 4
