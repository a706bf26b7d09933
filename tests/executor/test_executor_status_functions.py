"""GitHub's status functions in step conditions (success(), failure(), always(), cancelled()), `if:` and GitLab's
`when:` as spellings of `condition:`; the old keywords and expressions unchanged. Unknown functions: exit 78 with
"did you mean". Scheduler cases run in-process (test_executor_scheduler.py's Recorder); one CLI run end to end."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from cli_testlib import rl
from hypothesis import given
from hypothesis import strategies as st

from runnerlib.execution.conditions import ConditionError, parse_condition
from runnerlib.execution.scheduler import Scheduler
from runnerlib.jobs import Job, JobDefinitionError, steps_from_data

sys.path.insert(0, str(Path(__file__).parent))
from test_executor_scheduler import Recorder, run  # noqa: E402

# --- parsing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, keyword", [
    ("success()", "on_success"), ("failure()", "on_failure"), ("always()", "always"),
    ("${{ failure() }}", "on_failure"), ("always ( )", "always"),
    # the old spellings are unchanged
    ("on_success", "on_success"), ("success", "on_success"), ("on_failure", "on_failure"), ("always", "always"),
])
def test_a_status_function_alone_is_the_keyword(text: str, keyword: str) -> None:
    cond = parse_condition(text)
    assert cond.status == keyword and cond.expression is None


@pytest.mark.parametrize("text, fragment", [
    ("failed()", "unknown function failed() at position 1 (did you mean 'failure()'?)"),
    ("branch == 'main' && sucess()", "unknown function sucess() at position 21 (did you mean 'success()'?)"),
    ("contains(branch, 'x')", "unknown function contains()"),
    ("failure(1)", "failure() at position 1 takes no arguments"),
    ("cancelled()", "cancelled() alone never holds"),
    ("${{ cancelled() }}", "CLEANUP plugin"),
])
def test_unknown_or_misused_functions_refused(text: str, fragment: str) -> None:
    with pytest.raises(ConditionError, match=".*") as info:
        parse_condition(text)
    assert fragment in str(info.value)


def test_expressions_without_functions_keep_their_meaning() -> None:
    for text in ("not (branch == 'main')", "not(pr_number)", "branch == 'main' and true"):
        cond = parse_condition(text)
        assert cond.status == "on_success" and not cond.functions and not cond.waits_for_earlier_steps


def test_a_function_makes_the_expression_decide_alone() -> None:
    cond = parse_condition("failure() && branch == 'main'")
    assert cond.status == "expression" and cond.functions == {"failure"} and cond.names() == {"branch"}
    assert cond.waits_for_earlier_steps
    status = {"failure": True}
    assert cond.evaluate({"branch": "main"}, status) and not cond.evaluate({"branch": "dev"}, status)
    assert not cond.evaluate({"branch": "main"}, {"failure": False})
    assert not parse_condition("success() && x").waits_for_earlier_steps
    with pytest.raises(ConditionError, match="needs the results"):
        cond.evaluate({"branch": "main"})


_FUNCTIONS = ["success", "failure", "always", "cancelled"]


@st.composite
def _status_expr(draw: st.DrawFn, depth: int = 0) -> tuple[str, object]:
    """(condition text, reference function of (status, variables)), with status functions and a variable."""
    choice = draw(st.integers(0, 3 if depth < 3 else 1))
    if choice == 0:
        name = draw(st.sampled_from(_FUNCTIONS))
        return f"{name}()", lambda s, v, n=name: s[n]
    if choice == 1:
        lit = draw(st.sampled_from(["main", "dev"]))
        return f"branch == '{lit}'", lambda s, v, x=lit: v["branch"] == x
    left_text, left = draw(_status_expr(depth + 1))
    if choice == 2:
        return f"!({left_text})", lambda s, v, f=left: not f(s, v)
    right_text, right = draw(_status_expr(depth + 1))
    op = draw(st.sampled_from(["&&", "||"]))
    if op == "&&":
        return f"({left_text}) && ({right_text})", lambda s, v, a=left, b=right: a(s, v) and b(s, v)
    return f"({left_text}) || ({right_text})", lambda s, v, a=left, b=right: a(s, v) or b(s, v)


@given(_status_expr(), st.fixed_dictionaries({f: st.booleans() for f in _FUNCTIONS}),
       st.sampled_from(["main", "dev"]))
def test_status_expressions_match_a_reference_evaluator(expr: tuple[str, object], status: dict[str, bool],
                                                        branch: str) -> None:
    text, fn = expr
    try:
        cond = parse_condition(text)
    except ConditionError as exc:  # only `cancelled()` alone is refused
        assert "cancelled() alone" in str(exc)
        return
    expected = bool(fn(status, {"branch": branch}))  # type: ignore[operator]
    if cond.expression is None:  # a keyword: the scheduler decides from the upstream results
        return
    assert cond.evaluate({"branch": branch}, status) is expected


# --- the scheduler -------------------------------------------------------------------------------------------


def test_failure_and_always_with_an_expression() -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("build", "exit 2")
    job.add_step("notify-main", "true", condition="failure() && branch == 'main'")
    job.add_step("notify-dev", "true", condition="failure() && branch == 'dev'")
    job.add_step("report", "true", condition="always() && branch == 'main'")
    job.add_step("tidy", "true", condition="${{ !cancelled() }}")
    job.add_step("deploy", "true", depends_on=["build"], condition="success() || branch == 'dev'")
    result, s = run(job, rec, variables={"branch": "main"})
    assert result.exit_code == 2
    assert s["notify-main"].status == "success" and s["report"].status == "success"
    assert s["tidy"].status == "success"
    assert s["notify-dev"].status == "skipped"
    assert s["notify-dev"].reason == "condition `failure() && branch == 'dev'` is false (failure()=true, branch='main')"
    assert s["deploy"].status == "skipped" and "success()=false" in (s["deploy"].reason or "")
    for name in ("notify-main", "report", "tidy"):  # waited for every step declared before (a final step)
        assert rec.intervals[name][0] >= rec.intervals["build"][1]


def test_failure_function_skipped_when_all_is_well_and_success_runs() -> None:
    rec = Recorder()
    job = Job("j")
    job.add_step("build", "true")
    job.add_step("notify", "true", condition="failure() || branch == 'nope'")
    job.add_step("deploy", "true", depends_on=["build"], condition="success() && branch == 'main'")
    result, s = run(job, rec, variables={"branch": "main"})
    assert result.exit_code == 0
    assert s["notify"].status == "skipped" and s["deploy"].status == "success"


def test_always_function_does_not_start_after_a_cancellation() -> None:
    """A cancelled job starts nothing (documented): always() is no exception, as `always` never was."""
    rec = Recorder()
    job = Job("j")
    job.add_step("long", "wait-cancel")
    job.add_step("after", "true", condition="always() || !cancelled()")
    scheduler = Scheduler(job, rec)
    threading.Timer(0.2, scheduler.cancel).start()
    s = scheduler.run().by_name()
    assert s["long"].status == "cancelled" and s["after"].status == "cancelled"
    assert "after" not in rec.calls


# --- job files: if:, when: ----------------------------------------------------------------------------------


def _steps(*steps: dict) -> Job:
    job = Job("j")
    steps_from_data(job, list(steps))
    return job


def test_if_and_when_are_spellings_of_condition() -> None:
    job = _steps({"name": "a", "command": "true"},
                 {"name": "b", "command": "true", "if": "${{ failure() && branch == 'main' }}"},
                 {"name": "c", "command": "true", "when": "on_failure"},
                 {"name": "d", "command": "true", "when": "always"},
                 {"name": "e", "command": "true", "condition": "always()"})
    conds = {s.name: s.parsed_condition for s in job.steps}
    assert conds["b"].functions == {"failure"} and conds["c"].status == "on_failure"
    assert conds["d"].status == "always" and conds["e"].status == "always"


@pytest.mark.parametrize("step, fragment", [
    ({"if": "always()", "condition": "always"}, "give one of condition, if"),
    ({"when": "never"}, "when: must be on_success, on_failure or always, not 'never'"),
    ({"when": "branch == 'main'"}, "an expression goes in `if:`"),
    ({"if": "failed()"}, "did you mean 'failure()'?"),
])
def test_bad_spellings_refused(step: dict, fragment: str) -> None:
    with pytest.raises(JobDefinitionError) as info:
        _steps({"name": "a", "command": "true", **step})
    assert fragment in str(info.value)


def test_cli_unknown_function_exit_78_with_did_you_mean(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("steps:\n  - name: a\n    command: 'true'\n  - name: b\n    command: 'true'\n"
                   "    if: ${{ falure() }}\n")
    done = rl("run-job", str(job), "--workspace-root", str(tmp_path / "ws"))
    assert done.returncode == 78
    assert "unknown function falure()" in done.stderr and "did you mean 'failure()'?" in done.stderr
    assert "Error" not in done.stderr.split("runnerlib: error:")[-1]  # no Python class names


def test_cli_failure_function_runs_the_notify_step(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("steps:\n  - name: build\n    command: 'exit 3'\n"
                   "  - name: notify\n    if: failure() && branch == 'main'\n    command: echo notified-$((40+2))\n"
                   "  - name: gitlab\n    when: on_failure\n    command: echo gitlab-$((40+2))\n")
    root = tmp_path / "private"
    root.mkdir(mode=0o700)
    done = rl("run-job", str(job), "--workspace-root", str(root / "ws"), "--var", "branch=main")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "notified-42" in done.stdout and "gitlab-42" in done.stdout


def test_schema_and_did_you_mean_know_if_and_when() -> None:
    from runnerlib.jobs import StepSpec

    props = StepSpec.model_json_schema()["properties"]
    assert props["when"]["enum"] == ["on_success", "on_failure", "always"] and "if" in props
    with pytest.raises(JobDefinitionError, match=r"unknown key 'whn' \(did you mean 'when'\?\)"):
        _steps({"name": "a", "command": "true", "whn": "always"})
