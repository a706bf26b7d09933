"""Retries and soft failure by cause (`retry: {max, exit_codes, signals, backoff}`, `allow_failure:
{exit_codes}`), the old forms (`retries: N`, `allow_failure: true`), in job files, Job.add_step and run-job."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runnerlib.execution.retry import MAX_DELAY, RetryPolicy, retry_policy
from runnerlib.execution.scheduler import Outcome, Scheduler
from runnerlib.jobs import Job, JobDefinitionError, parse_document, steps_from_data

REPO = Path(__file__).resolve().parents[2]


class Script:
    """An executor returning the exit codes of `codes[step]` attempt by attempt (the last one repeats)."""

    def __init__(self, **codes: list[int]) -> None:
        self.codes = codes
        self.calls: list[tuple[str, int]] = []

    def __call__(self, step, attempt, cancel) -> Outcome:  # noqa: ANN001
        self.calls.append((step.name, attempt))
        codes = self.codes[step.name]
        code = codes[min(attempt, len(codes)) - 1]
        return Outcome(code, timed_out=code == 124, refused=code == 126)


def run(job: Job, script: Script) -> tuple[dict, list[tuple[str, str, str]]]:
    events: list[tuple[str, str, str]] = []
    result = Scheduler(job, script, on_event=lambda level, step, message: events.append((level, step, str(message)))).run()
    return result, events


def attempts(script: Script, name: str) -> int:
    return sum(1 for n, _ in script.calls if n == name)


@pytest.mark.parametrize(("retry", "codes", "tries"), [
    ({"max": 3}, [1, 1, 1, 1], 4),                            # no cause given: every failure (old `retries`)
    ({"max": 3}, [124, 0], 2),                                # ... and a timeout
    ({"max": 3, "exit_codes": [75]}, [75, 75, 0], 3),         # a listed code: retried
    ({"max": 3, "exit_codes": [75]}, [1, 0], 1),              # another code: not retried
    ({"max": 3, "exit_codes": [124]}, [124, 124, 0], 3),      # a timeout is exit 124
    ({"max": 3, "signals": ["SIGKILL"]}, [137, 0], 2),        # killed by SIGKILL: 128 + 9
    ({"max": 3, "signals": ["KILL", 15]}, [143, 137, 0], 3),
    ({"max": 3, "signals": ["SIGKILL"]}, [124, 0], 1),        # a timeout is not a signal
    ({"max": 3, "signals": ["SIGKILL"], "exit_codes": [2]}, [2, 137, 0], 3),
    (2, [1, 1, 0], 3),                                        # `retry: 2`, GitLab's short form
    ({"max": 3}, [126], 1),                                   # refused by the sandbox: never retried
])
def test_retry_by_cause(retry: object, codes: list[int], tries: int) -> None:
    job = Job("r")
    job.add_step("s", "x", retry=retry)
    script = Script(s=codes)
    run(job, script)
    assert attempts(script, "s") == tries


def test_not_retried_says_why() -> None:
    job = Job("r")
    job.add_step("s", "x", retry={"max": 2, "exit_codes": [75]})
    result, events = run(job, Script(s=[3]))
    assert result.exit_code == 3
    assert ("info", "s", "exit 3 is not retried (retry: exit_codes/signals)") in events


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(max=5, backoff=2)
    assert [policy.delay(k) for k in range(1, 6)] == [2, 4, 8, 16, 32]
    assert RetryPolicy(max=10, backoff=100).delay(10) == MAX_DELAY
    assert RetryPolicy(max=3).delay(1) == 0


def test_backoff_is_announced_and_waited_on_the_cancel_event() -> None:
    job = Job("r")
    job.add_step("s", "x", retry={"max": 2, "backoff": 0.01})
    waits: list[float] = []
    scheduler = Scheduler(job, Script(s=[1, 1, 0]), on_event=lambda *e: None)
    real_wait = scheduler.cancel_event.wait
    scheduler.cancel_event.wait = lambda timeout=None: (waits.append(timeout), real_wait(timeout))[1]  # type: ignore[method-assign]
    assert scheduler.run().exit_code == 0
    assert waits == [0.01, 0.02]


def test_cancellation_ends_a_backoff_wait() -> None:
    job = Job("r")
    job.add_step("s", "x", retry={"max": 3, "backoff": 3600})
    script = Script(s=[1])
    scheduler = Scheduler(job, script)
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(scheduler.run()))
    thread.start()
    while not script.calls:
        threading.Event().wait(0.01)
    scheduler.cancel()
    thread.join(60)
    assert not thread.is_alive() and attempts(script, "s") == 1
    assert outcome[0].exit_code == 143


@pytest.mark.parametrize(("allow", "code", "job_code", "allowed"), [
    ({"exit_codes": [3, 4]}, 3, 0, True),
    ({"exit_codes": [3, 4]}, 5, 5, False),
    ({"exit_codes": [124]}, 124, 0, True),    # a timeout allowed by its code
    (True, 5, 0, True),                       # the old form: any failure
    (False, 5, 5, False),
])
def test_allow_failure_by_exit_code(allow: object, code: int, job_code: int, allowed: bool) -> None:
    job = Job("a")
    job.add_step("s", "x", allow_failure=allow)
    job.add_step("after", "x", depends_on="s")
    script = Script(s=[code], after=[0])
    result, _ = run(job, script)
    assert result.exit_code == job_code
    step = result.by_name()["s"]
    assert step.allow_failure is allowed and step.failed_required is not allowed
    assert attempts(script, "after") == (1 if allowed else 0)  # an allowed failure counts as success


def _file(text: str) -> Job:
    doc = parse_document(text, "job.yaml")
    job = Job("f")
    steps_from_data(job, doc.data["steps"], doc)
    return job


def test_job_file_forms() -> None:
    job = _file("""
steps:
  - name: new
    command: make
    retry: {max: 3, exit_codes: [1, 2], signals: [SIGKILL, 15], backoff: 2}
    allow_failure: {exit_codes: [1]}
  - name: old
    command: make
    retries: 2
    allow_failure: true
  - name: short
    command: make
    retry: 1
""")
    new, old, short = job.steps
    assert new.retries == 3 and new.retry == RetryPolicy(max=3, exit_codes=[1, 2], signals=[9, 15], backoff=2)
    assert new.allow_failure.exit_codes == [1]
    assert old.retries == 2 and old.retry is None and old.allow_failure is True
    assert short.retries == 1 and short.retry == RetryPolicy(max=1)


@pytest.mark.parametrize(("step", "rule"), [
    ("retry: {max: 3, exit_code: [1]}", "job.yaml:4: step 's': retry.exit_code: unknown key 'exit_code' (did you mean 'exit_codes'?)"),
    ("retry: {max: 11}", "retry.max: Input should be less than or equal to 10"),
    ("retry: {max: 1, signals: [SIGNOPE]}", "unknown signal 'SIGNOPE'"),
    ("retry: {max: 1, exit_codes: [256]}", "exit code 256 is outside 0-255"),
    ("retry: {max: 1, backoff: -1}", "retry.backoff: Input should be greater than or equal to 0"),
    ("retries: 2\n    retry: {max: 3}", "give either retries or retry, not both"),
    ("allow_failure: {exit_codes: []}", "allow_failure"),
    ("allow_failure: {exit_code: [1]}", "allow_failure"),
])
def test_job_file_errors_name_file_line_and_rule(step: str, rule: str) -> None:
    with pytest.raises(JobDefinitionError) as err:
        _file(f"steps:\n  - name: s\n    command: make\n    {step}\n")
    assert rule in str(err.value), str(err.value)


def test_old_retries_and_default_retries_keep_working() -> None:
    job = Job("o")
    job.add_step("s", "x", retries=2)
    job.add_step("d", "x")
    script = Script(s=[1], d=[1])
    Scheduler(job, script, default_retries=1).run()
    assert attempts(script, "s") == 3 and attempts(script, "d") == 2


@given(st.integers(0, 255), st.lists(st.integers(0, 255), max_size=4), st.lists(st.integers(1, 64), max_size=4))
def test_retries_on_is_the_union_of_codes_and_signals(code: int, codes: list[int], signals: list[int]) -> None:
    policy = retry_policy({"max": 1, "exit_codes": codes, "signals": signals})
    assert policy.retries_on(code) == (code in codes or (code > 128 and code - 128 in signals))


def test_run_job_retries_a_signal_and_soft_fails_a_code(ws: Path) -> None:
    job_file = ws.parent / f"{ws.name}-retry.yaml"
    job_file.write_text(f"""
name: retry
steps:
  - name: killed-once
    command: 'if [ ! -e {ws}/once ]; then touch {ws}/once; kill -9 $$; fi; echo second attempt'
    retry: {{max: 2, signals: [SIGKILL]}}
  - name: soft
    command: exit 3
    allow_failure: {{exit_codes: [3]}}
  - name: hard
    command: exit 4
    allow_failure: {{exit_codes: [3]}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    r = subprocess.run([sys.executable, "-m", "runnerlib.cli", "run-job", str(job_file), "--workspace-root", str(ws)],
                       capture_output=True, cwd=REPO, env=env, timeout=120)
    out = r.stdout.decode()
    assert r.returncode == 4, out + r.stderr.decode()
    assert "attempt 1/3 failed (exit 137); retrying" in out and "[killed-once] second attempt" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("killed-once ", "soft ", "hard "))}
    assert "success" in rows["killed-once"] and "allowed to fail" in rows["soft"]
    assert "failed" in rows["hard"] and "allowed" not in rows["hard"]
