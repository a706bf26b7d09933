"""Workflow files: schema, errors with file:line, globs, selection; property tests for globs and parsing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from runnerlib.workflow.globs import glob_match, match_any
from runnerlib.workflow.models import (
    EVENTS,
    Condition,
    JobTrigger,
    WorkflowError,
    load_workflow,
    parse_duration,
    parse_workflow_text,
)
from runnerlib.workflow.select import load_workflows, select_workflows

FULL = """\
id: ci-main
name: CI
description: the main pipeline
on:
  events: [push, pull_request_opened]
  branches: ["main", "release/**"]
paths:
  include: ["src/**", "*.toml"]
  exclude: ["docs/**"]
vars:
  GREETING: hello
  N: 3
  FLAG: true
jobs:
  - name: test
    command: pytest
    for_each: [py311, py312]
    item_var: PYVER
    timeout: 30m
    resources: {cpu: 2, memory: 2Gi}
  - name: build
    needs: test
    image: python:3.12
    command: make build
    run_as: {user: builder}
    capabilities: [NET_BIND_SERVICE]
    working_dir: app
  - name: notify
    depends_on: [build]
    condition: any_failed
    job_file: jobs/notify.yaml
    priority: 5
"""


def test_full_schema_parses() -> None:
    wf = parse_workflow_text(FULL, "ci.yaml")
    assert wf.effective_id == "ci-main" and wf.on.events == ["push", "pull_request_opened"]
    assert wf.vars == {"GREETING": "hello", "N": "3", "FLAG": "true"}
    assert list(wf.jobs) == ["test", "build", "notify"]
    assert wf.jobs["test"].timeout == 1800 and wf.jobs["test"].for_each == ["py311", "py312"]
    assert wf.jobs["build"].depends_on == ["test"]
    assert wf.jobs["notify"].condition is Condition.ANY_FAILED
    assert wf.topological_order() == ["test", "build", "notify"]


def test_jobs_as_a_map_and_on_is_not_a_boolean() -> None:
    wf = parse_workflow_text("name: x\non:\n  branches: [no, off, yes]\njobs:\n  a: {command: 'true'}\n", "m.yaml")
    assert wf.on.branches == ["no", "off", "yes"]  # YAML 1.1 would make these booleans
    assert wf.jobs["a"].name == "a" and wf.effective_id == "m"


@pytest.mark.parametrize("change, where", [
    (("timeout: 30m", "timeout: 30 minutes"), ("ci.yaml:19", "jobs.test.timeout", "duration")),
    (("id: ci-main", "id: CI_Main"), ("ci.yaml:1", "id", "^[a-z0-9]")),
    (("name: CI\n", ""), ("ci.yaml:1", "name", "required")),
    (("events: [push, pull_request_opened]", "events: [push, pr_opened]"), ("ci.yaml:5", "on.events.1", "")),
    (("needs: test", "needs: tset"), ("ci.yaml:22", "jobs.build.depends_on", "'tset' is not a job")),
    (("condition: any_failed", "condition: sometimes"), ("ci.yaml:30", "jobs.notify.condition", "")),
    (("    item_var: PYVER", "    item_var: 1BAD"), ("ci.yaml:18", "jobs.test.item_var", "")),
    (("    working_dir: app", "    working_dir: ../../etc"), ("ci.yaml:27", "jobs.build.working_dir", "'..'")),
    (("    priority: 5", "    priority: 5\n    surprise: 1"), ("ci.yaml:33", "jobs.notify.surprise", "")),
    (("    job_file: jobs/notify.yaml", "    job_file: x\n    command: y"), ("ci.yaml:28", "jobs.notify", "not both")),
    (("    needs: test", "    needs: test\n    depends_on: [test]"), ("ci.yaml:21", "jobs.build", "not both")),
])
def test_errors_name_file_line_and_field(change: tuple[str, str], where: tuple[str, str, str]) -> None:
    assert change[0] in FULL
    with pytest.raises(WorkflowError) as info:
        parse_workflow_text(FULL.replace(change[0], change[1], 1), "ci.yaml")
    message = str(info.value)
    location, field, rule = where
    assert message.startswith(location + ":"), message
    assert field in message and rule in message


def test_cycle_and_duplicate_names() -> None:
    text = "name: x\njobs:\n  a: {command: x, needs: c}\n  b: {command: x, needs: a}\n  c: {command: x, needs: b}\n"
    with pytest.raises(WorkflowError, match="cycle: a -> c -> b -> a"):
        parse_workflow_text(text, "c.yaml")
    dup = "name: x\njobs:\n  - {name: a, command: x}\n  - {name: a, command: y}\n"
    with pytest.raises(WorkflowError, match="two jobs are named 'a'"):
        parse_workflow_text(dup, "d.yaml")


def test_yaml_errors_and_alias_bombs(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match=r"^b\.yaml:\d+: not valid YAML"):
        parse_workflow_text("name: x\njobs:\n  a: [\n", "b.yaml")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    with pytest.raises(WorkflowError, match="aliases"):
        parse_workflow_text(bomb, "bomb.yaml")
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(WorkflowError, match="empty"):
        load_workflow(tmp_path / "e.yaml")
    with pytest.raises(WorkflowError, match="cannot read"):
        load_workflow(tmp_path / "missing.yaml")


def test_duration_parsing() -> None:
    assert parse_duration(90) == 90 and parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    for bad in ("", "0", "-1", "1d", True, "9999h"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_job_trigger_leaves_out_fields_without_value() -> None:
    assert JobTrigger(job_name="a").to_dict() == {"job_name": "a"}
    full = JobTrigger(job_name="a", env={"X": 1}, condition="any_failed", source_type="git",
                      source_url="https://x/y.git", source_ref="main", job_command="make", priority=0)
    assert full.to_dict() == {"job_name": "a", "env": {"X": "1"}, "condition": "any_failed", "source_type": "git",
                              "source_url": "https://x/y.git", "source_ref": "main", "job_command": "make",
                              "priority": 0}
    with pytest.raises(ValueError):
        JobTrigger(job_name="a", env={"BAD-NAME": "1"})


# --- globs -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, text, expected", [
    ("main", "main", True), ("main", "main2", False),
    ("release/*", "release/1.2", True), ("release/*", "release/1/2", False), ("release/*", "release/", True),
    ("release/**", "release/1/2", True), ("release/**", "release", True), ("release/**", "releases/1", False),
    ("**/*.py", "a.py", True), ("**/*.py", "a/b/c.py", True), ("**/*.py", "a/b/c.pyc", False),
    ("src/**/test_*.py", "src/test_a.py", True), ("src/**/test_*.py", "src/x/y/test_a.py", True),
    ("feat?", "feat1", True), ("feat?", "feat/", False), ("a.b", "axb", False), ("[x]", "[x]", True),
    ("**", "", True), ("*", "a/b", False),
])
def test_glob_examples(pattern: str, text: str, expected: bool) -> None:
    assert glob_match(pattern, text) is expected


def test_negation_last_match_wins() -> None:
    patterns = ["release/**", "!release/old/**"]
    assert match_any(patterns, "release/new/1") and not match_any(patterns, "release/old/1")
    assert not match_any(["!main"], "main") and not match_any([], "main")


def _reference(pattern: list[str], text: list[str]) -> bool:
    """Segment-by-segment reference matcher: `**` segments match any number of segments."""
    if not pattern:
        return not text
    head = pattern[0]
    if head == "**":
        return any(_reference(pattern[1:], text[i:]) for i in range(len(text) + 1))
    if not text:
        return False
    regex = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in head)
    return re.fullmatch(regex, text[0]) is not None and _reference(pattern[1:], text[1:])


segment = st.text(alphabet="ab.-_", min_size=1, max_size=3)
pattern_segment = st.one_of(segment, st.just("*"), st.just("**"), st.just("a*"), st.just("?b"), st.just("*.b"))


@given(st.lists(pattern_segment, min_size=1, max_size=4), st.lists(segment, min_size=1, max_size=5))
def test_glob_agrees_with_the_segment_reference(pattern: list[str], text: list[str]) -> None:
    # Only whole-segment `**` (the documented form); "a**b" inside a segment is covered by the examples.
    # `dir/**` also matches `dir` itself (GitHub's and .gitignore's reading): so does the reference.
    expected = _reference(pattern, text)
    assert glob_match("/".join(pattern), "/".join(text)) is expected


@given(st.text(max_size=30), st.text(max_size=30))
def test_glob_never_raises(pattern: str, text: str) -> None:
    assert glob_match(pattern, text) in (True, False)


@given(st.lists(segment, min_size=1, max_size=5))
def test_star_never_crosses_a_slash(text: list[str]) -> None:
    joined = "/".join(text)
    assert glob_match("*", joined) is (len(text) == 1)
    assert glob_match("**", joined)


# --- parsing, property-based -------------------------------------------------------------------------------

job_names = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)


@st.composite
def workflows(draw: st.DrawFn) -> dict:
    names = draw(st.lists(job_names, min_size=1, max_size=6, unique=True))
    jobs = {}
    for index, name in enumerate(names):
        job: dict = {"command": draw(st.text(alphabet="abc ;|$", min_size=1, max_size=10))}
        earlier = names[:index]
        if earlier and draw(st.booleans()):
            job[draw(st.sampled_from(["needs", "depends_on"]))] = draw(
                st.lists(st.sampled_from(earlier), min_size=1, max_size=3, unique=True))
        if draw(st.booleans()):
            job["condition"] = draw(st.sampled_from([c.value for c in Condition]))
        if draw(st.booleans()):
            job["for_each"] = draw(st.lists(st.from_regex(r"[a-z0-9]{1,4}", fullmatch=True), min_size=1,
                                            max_size=3, unique=True))
        if draw(st.booleans()):
            job["timeout"] = draw(st.integers(1, 10_000))
        jobs[name] = job
    doc = {"name": draw(st.text(min_size=1, max_size=10).filter(str.strip)), "jobs": jobs}
    if draw(st.booleans()):
        doc["on"] = {"events": draw(st.lists(st.sampled_from(EVENTS), unique=True, max_size=3)),
                     "branches": draw(st.lists(st.sampled_from(["main", "release/**", "feat/*"]), max_size=2))}
    if draw(st.booleans()):
        doc["jobs"] = [{"name": n, **j} for n, j in jobs.items()]
    return doc


@given(workflows())
def test_generated_workflows_parse_and_keep_their_graph(doc: dict) -> None:
    wf = parse_workflow_text(yaml.safe_dump(doc, sort_keys=False), "gen.yaml")
    jobs = doc["jobs"] if isinstance(doc["jobs"], dict) else {j["name"]: j for j in doc["jobs"]}
    assert list(wf.jobs) == list(jobs)
    order = wf.topological_order()
    for name, job in wf.jobs.items():
        assert all(order.index(dep) < order.index(name) for dep in job.depends_on)


@given(st.text(max_size=300))
def test_arbitrary_text_gives_a_workflow_or_one_workflow_error(text: str) -> None:
    try:
        parse_workflow_text(text, "fuzz.yaml")
    except WorkflowError as exc:
        assert str(exc).startswith("fuzz.yaml")


@given(workflows(), st.data())
def test_mutated_workflows_never_raise_anything_else(doc: dict, data: st.DataObject) -> None:
    text = yaml.safe_dump(doc, sort_keys=False)
    cut = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.sampled_from(["", ":", "- ", "  x: [", "\n  needs: nope", "\tq", "*a", "&a b"]))
    try:
        parse_workflow_text(text[:cut] + junk + text[cut:], "m.yaml")
    except WorkflowError as exc:
        assert re.match(r"^m\.yaml(:\d+)?: ", str(exc)), str(exc)


# --- selection ---------------------------------------------------------------------------------------------

def _repo(tmp_path: Path) -> Path:
    d = tmp_path / ".reactorcide" / "workflows"
    d.mkdir(parents=True)
    (d / "ci.yaml").write_text(FULL)
    (d / "docs.yml").write_text("name: Docs\non: {events: [push]}\npaths: {include: ['docs/**']}\n"
                               "jobs: {build: {command: make docs}}\n")
    (d / "tags.yaml").write_text("id: tags\nname: Tags\non: {events: [tag_created]}\njobs: {r: {command: x}}\n")
    (d / "notes.txt").write_text("not a workflow")
    return tmp_path


def test_select_by_event_branch_and_paths(tmp_path: Path) -> None:
    workflows_ = load_workflows(_repo(tmp_path))
    assert [w.effective_id for w in workflows_] == ["ci-main", "docs", "tags"]

    def chosen(**kw) -> list[str]:
        return [d.workflow.effective_id for d in select_workflows(workflows_, **kw) if d.selected]

    assert chosen(event="push", branch="main", changed_paths=["src/app/x.py"]) == ["ci-main"]
    assert chosen(event="push", branch="release/1/2", changed_paths=["docs/a.md", "pyproject.toml"]) == \
        ["ci-main", "docs"]
    assert chosen(event="push", branch="main", changed_paths=["docs/a.md"]) == ["docs"]
    assert chosen(event="push", branch="feature/x", changed_paths=None) == ["docs"]
    assert chosen(event="tag_created", branch=None) == ["tags"]
    assert chosen(event="push", branch="main", changed_paths=[]) == []
    with pytest.raises(WorkflowError, match="unknown event"):
        chosen(event="pushed")
