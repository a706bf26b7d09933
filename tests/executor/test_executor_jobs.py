"""Jobs, steps and job files: the DAG is checked before anything runs; conditions parse safely."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runnerlib.config import load_job_file
from runnerlib.execution.conditions import ConditionError, parse_condition
from runnerlib.jobs import Job, JobDefinitionError, parse_document


def test_design_document_example() -> None:
    job = Job("test-and-build")
    job.add_step("checkout", "git clone https://github.com/user/repo.git /job/src")
    job.add_step("test", "pytest tests/", depends_on=["checkout"])
    job.add_step("build", "python setup.py bdist_wheel", depends_on=["test"])
    assert job.validate() == ["checkout", "test", "build"]


def test_cycle_refused_naming_the_cycle() -> None:
    job = Job("j")
    job.add_step("a", "true", depends_on=["c"])
    job.add_step("b", "true", depends_on=["a"])
    job.add_step("c", "true", depends_on=["b"])
    job.add_step("d", "true")
    with pytest.raises(JobDefinitionError, match=r"dependency cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"):
        job.validate()


def test_self_dependency_unknown_dependency_and_duplicates() -> None:
    job = Job("j")
    job.add_step("a", "true", depends_on=["a"])
    with pytest.raises(JobDefinitionError, match="depends on itself"):
        job.validate()
    job = Job("j")
    job.add_step("a", "true", depends_on=["nope"])
    with pytest.raises(JobDefinitionError, match="unknown step 'nope'"):
        job.validate()
    job = Job("j")
    job.add_step("a", "true")
    with pytest.raises(JobDefinitionError, match="duplicate step name"):
        job.add_step("a", "false")
    with pytest.raises(JobDefinitionError, match="has no steps"):
        Job("empty").validate()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "../evil", "command": "x"}, "name"),
        ({"name": "a", "command": ""}, "must not be empty"),
        ({"name": "a", "command": []}, "argv"),
        ({"name": "a", "command": "x", "retries": -1}, "retries"),
        ({"name": "a", "command": "x", "timeout": 0}, "timeout"),
        ({"name": "a", "command": "x", "trust": "maybe"}, "trust"),
        ({"name": "a", "command": "x", "condition": "branch =="}, "condition"),
        ({"name": "a", "command": "x", "env": {"A-B": "1"}}, "env"),
    ],
)
def test_bad_steps_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(JobDefinitionError, match=message):
        Job("j").add_step(**kwargs)


def test_condition_with_unknown_variable_refused_before_running() -> None:
    job = Job("j")
    job.add_step("a", "true", condition="brnch == 'main'")
    with pytest.raises(JobDefinitionError, match="unknown variable 'brnch'"):
        job.validate({"branch": "main"})


def test_job_file_with_steps_and_lines(ws: Path) -> None:
    path = ws / "job.yaml"
    path.write_text(
        "name: ci\n"
        "job_command: unused\n"
        "steps:\n"
        "  - name: lint\n"
        "    command: ruff check .\n"
        "  - name: test\n"
        "    command: [pytest, -q]\n"
        "    depends_on: lint\n"
        "    retries: 2\n"
        "    condition: branch == 'main'\n"
    )
    layer, job, _doc = load_job_file(path)
    assert job is not None and job.name == "ci"
    assert [s.name for s in job.steps] == ["lint", "test"]
    assert job.step("test").depends_on == ["lint"] and job.step("test").command == ["pytest", "-q"]
    assert job.step("test").origin == f"{path}:6"
    assert layer.values["job_command"] == "unused"


def test_job_file_mapping_form(ws: Path) -> None:
    path = ws / "job.yml"
    path.write_text("steps:\n  build:\n    command: make\n  test:\n    command: make test\n    depends_on: [build]\n")
    _layer, job, _doc = load_job_file(path)
    assert job is not None and job.validate() == ["build", "test"]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("steps:\n  - name: a\n    command: x\n    dependson: [b]\n", r":4: step 'a': dependson: unknown key 'dependson' \(did you mean 'depends_on'\?\)"),
        ("steps:\n  - name: a\n    command: x\n    timeout: soon\n", r":4: step 'a': timeout"),
        ("steps:\n  a:\n    command: x\n  a:\n    command: y\n", r":4: duplicate key 'a'"),
        ("steps:\n  - name: a\n    command: x\n  - name: a\n    command: y\n", r":4\): duplicate step name"),
        ("steps: [\n", r":2: invalid YAML"),
        ("steps: 3\n", "must be a list of steps"),
        ("- a\n- b\n", "mapping of settings and steps"),
    ],
)
def test_job_file_errors_name_file_and_line(ws: Path, text: str, pattern: str) -> None:
    path = ws / "job.yaml"
    path.write_text(text)
    with pytest.raises(JobDefinitionError, match=pattern):
        load_job_file(path)


def test_json_duplicate_keys_refused() -> None:
    with pytest.raises(JobDefinitionError, match="duplicate key 'steps'"):
        parse_document('{"steps": [], "steps": []}', "x.json")


# --- conditions ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("branch == 'main'", {"branch": "main"}, True),
        ("branch == 'main'", {"branch": "dev"}, False),
        ("branch != \"main\"", {"branch": "dev"}, True),
        ("event_type in ['push', 'tag_created']", {"event_type": "push"}, True),
        ("event_type not in ['push']", {"event_type": "push"}, False),
        ("branch matches 'release/*'", {"branch": "release/1.2"}, True),
        ("branch =~ 'release/*'", {"branch": "main"}, False),
        ("pr_number", {"pr_number": ""}, False),
        ("not pr_number", {"pr_number": ""}, True),
        ("pr_number == 12", {"pr_number": "12"}, True),
        ("branch == 'main' && (event_type == 'push' || event_type == 'tag_created')",
         {"branch": "main", "event_type": "tag_created"}, True),
        ("true and not false", {}, True),
        ("'ab' in branch", {"branch": "xaby"}, True),
    ],
)
def test_condition_evaluation(text: str, variables: dict, expected: bool) -> None:
    assert parse_condition(text).evaluate(variables) is expected


@pytest.mark.parametrize("text", ["__import__('os').system('id')", "branch.upper()", "f(x)", "a ==", "(a",
                                  "a b", "", "x[0]", "1 +", "a = 'b'"])
def test_conditions_are_not_python(text: str) -> None:
    with pytest.raises(ConditionError):
        parse_condition(text)


def test_deep_nesting_bounded() -> None:
    with pytest.raises(ConditionError, match="nested"):
        parse_condition("(" * 100 + "a" + ")" * 100)
    with pytest.raises(ConditionError, match="nested"):
        parse_condition("not " * 100 + "a")


@given(st.text(max_size=120))
def test_condition_parser_only_raises_condition_error(text: str) -> None:
    try:
        cond = parse_condition(text)
    except ConditionError:
        return
    try:
        cond.evaluate({name: "x" for name in cond.names()})
    except ConditionError:
        pass


_names = st.sampled_from(["branch", "event_type", "pr_number"])
_lits = st.sampled_from(["main", "dev", "push", "", "7"])


@st.composite
def _expr(draw: st.DrawFn, depth: int = 0) -> tuple[str, object]:
    """(condition text, python function of the variables) built together: a reference evaluator."""
    choice = draw(st.integers(0, 3 if depth < 3 else 1))
    if choice == 0:
        name, lit = draw(_names), draw(_lits)
        op = draw(st.sampled_from(["==", "!="]))
        fn = (lambda v, n=name, x=lit: v[n] == x) if op == "==" else (lambda v, n=name, x=lit: v[n] != x)
        return f"{name} {op} '{lit}'", fn
    if choice == 1:
        name = draw(_names)
        items = draw(st.lists(_lits, max_size=3))
        return f"{name} in [{', '.join(repr(i) for i in items)}]", lambda v, n=name, i=items: v[n] in i
    left_text, left = draw(_expr(depth + 1))
    if choice == 2:
        return f"not ({left_text})", lambda v, f=left: not f(v)
    right_text, right = draw(_expr(depth + 1))
    op = draw(st.sampled_from(["and", "or"]))
    if op == "and":
        return f"({left_text}) and ({right_text})", lambda v, a=left, b=right: a(v) and b(v)
    return f"({left_text}) or ({right_text})", lambda v, a=left, b=right: a(v) or b(v)


@given(_expr(), st.fixed_dictionaries({"branch": _lits, "event_type": _lits, "pr_number": _lits}))
def test_condition_matches_reference_evaluator(expr: tuple[str, object], variables: dict) -> None:
    text, fn = expr
    assert parse_condition(text).evaluate(variables) == bool(fn(variables))  # type: ignore[operator]


# --- job files, property-based ---------------------------------------------------------------------------------

_step_names = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)


@st.composite
def _dags(draw: st.DrawFn) -> list[dict]:
    names = draw(st.lists(_step_names, min_size=1, max_size=8, unique=True))
    steps = []
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3)) if i else []
        step: dict = {"name": name, "command": draw(st.sampled_from(["true", "make test", "echo 'a: b'"]))}
        if deps:
            step["depends_on"] = deps
        if draw(st.booleans()):
            step["retries"] = draw(st.integers(0, 3))
        if draw(st.booleans()):
            step["condition"] = draw(st.sampled_from(["always", "on_failure", "branch == 'main'"]))
        steps.append(step)
    return steps


@given(_dags(), st.sampled_from(["job.yaml", "job.json"]))
def test_job_files_round_trip_yaml_and_json(steps: list[dict], name: str) -> None:
    import json as _json

    import yaml

    text = _json.dumps({"steps": steps}, indent=1) if name.endswith(".json") else yaml.safe_dump({"steps": steps})
    document = parse_document(text, name)
    job = Job("j")
    from runnerlib.jobs import steps_from_data

    steps_from_data(job, document.data["steps"], document)
    order = job.validate({"branch": "x"})
    assert [s.name for s in job.steps] == [s["name"] for s in steps]
    position = {n: i for i, n in enumerate(order)}
    for step in job.steps:
        assert all(position[d] < position[step.name] for d in step.depends_on)
        assert step.origin is not None and step.origin.startswith(name + ":")


_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=20)


@given(st.dictionaries(st.sampled_from(["steps", "name", "job_command", "concurrency", "vars", "x"]), _json_values,
                       max_size=4))
def test_arbitrary_job_documents_fail_only_with_clear_errors(data: dict) -> None:
    import json as _json
    import os
    import tempfile

    from runnerlib.config import ConfigError, load_job_file

    fd, path = tempfile.mkstemp(suffix=".json")
    try:
        os.write(fd, _json.dumps(data).encode())
        os.close(fd)
        try:
            load_job_file(path)
        except (JobDefinitionError, ConfigError) as exc:
            assert str(exc)
    finally:
        os.unlink(path)


@pytest.mark.parametrize("name", ["build\n", "FOO\n"])
def test_a_trailing_newline_is_not_a_valid_name(name: str) -> None:
    """`^...$` with re.match accepts "x\\n"; names end up in log file names and env blocks."""
    with pytest.raises(Exception, match="must match"):
        Job("j").add_step(name, "true")
    with pytest.raises(Exception, match="not a valid environment variable name"):
        Job("j").add_step("ok", "true", env={name: "1"})
