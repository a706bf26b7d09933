"""The data of workflows: a job trigger (the contract's triggers-file entry) and workflow files.

Workflow files live in `.reactorcide/workflows/*.yaml` (schema in docs/workflows.md). `load_workflow` reads
one with PyYAML's node marks kept, so that every validation error names the file and line of the offending
value: `ci.yaml:12: jobs.build.timeout: must be a positive number of seconds or a duration like "30m"`.

YAML 1.1 reads the key `on` as the boolean true; the loader here keeps it a string (only `true`/`false`
are booleans), as GitHub Actions users expect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from runnerlib.jobs import ENV_NAME_RE

__all__ = [
    "EVENTS",
    "Condition",
    "JobTrigger",
    "Workflow",
    "WorkflowError",
    "WorkflowJob",
    "load_workflow",
    "parse_duration",
    "parse_workflow_text",
]

WORKFLOW_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Job names become directory names, Mermaid node labels and parts of env var names: keep them plain.
JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
EVENTS = (
    "push",
    "pull_request_opened",
    "pull_request_updated",
    "pull_request_merged",
    "pull_request_closed",
    "tag_created",
)
# The largest workflow file read; larger is certainly a mistake (and would be a memory attack on `list`).
MAX_WORKFLOW_BYTES = 1024 * 1024
MAX_NODES = 100_000
# A path into the parsed document, as pydantic reports it: ("jobs", "build", "timeout").
Loc = tuple[str | int, ...]


class WorkflowError(ValueError):
    """A workflow file or a trigger that breaks a rule: names the file and line (when known) and the field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        where = file or ""
        if file and line:
            where = f"{file}:{line}"
        prefix = f"{where}: " if where else ""
        if field:
            prefix += f"{field}: "
        super().__init__(prefix + message)
        self.file = file
        self.line = line
        self.field = field


class Condition(StrEnum):
    """When a job with dependencies runs, given how its dependencies ended."""

    ALL_SUCCESS = "all_success"   # every dependency succeeded (the default)
    ANY_FAILED = "any_failed"     # some dependency, direct or indirect, failed: clean-up and notification jobs
    ALWAYS = "always"             # once every dependency has finished, whatever the outcome


def parse_duration(value: Any) -> int:
    """Seconds from an int/float or a string like "90", "90s", "30m", "1h30m"; a clear ValueError otherwise.

    >>> parse_duration("1h30m")
    5400
    """
    if isinstance(value, bool):
        raise ValueError("must be a positive number of seconds or a duration like \"30m\"")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        seconds = float(value)
    elif isinstance(value, str) and (m := re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", value.strip())) \
            and value.strip():
        hours, minutes, secs = (int(g) if g else 0 for g in m.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError("must be a positive number of seconds or a duration like \"30m\"")
    if not 0 < seconds <= 7 * 24 * 3600:
        raise ValueError("must be between 1 second and 7 days")
    return max(1, int(seconds))


def _string_list(value: Any, what: str) -> list[str]:
    """A scalar or a list of scalars, as a list of strings (`depends_on: build` is `depends_on: [build]`)."""
    if value is None:
        return []
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise ValueError(f"every {what} must be a string")
            out.append(str(item))
        return out
    raise ValueError(f"must be a {what} or a list of them")


def _string_map(value: Any, what: str) -> dict[str, str]:
    """A mapping of names to scalars, as strings: `FOO: 1` is "1", `FOO: true` is "true"."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of {what}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
            raise ValueError(f"{key!r} is not a valid name (letters, digits, _; not starting with a digit)")
        if item is None:
            item = ""
        if isinstance(item, bool):
            item = "true" if item else "false"
        if not isinstance(item, (str, int, float)):
            raise ValueError(f"the value of {key} must be a string, number or boolean")
        out[key] = str(item)
    return out


def _job_name(value: str) -> str:
    """A job name as JOB_NAME_RE allows it (it becomes a directory, a label and part of env names)."""
    if not JOB_NAME_RE.fullmatch(value):
        raise ValueError("must be 1-128 letters, digits, '_', '.', '-', starting with a letter or digit")
    return value


def _optional_duration(value: Any) -> int | None:
    """Seconds from a number or a duration such as "30m" (see parse_duration); None stays None."""
    return None if value is None else parse_duration(value)


def _environment(value: Any) -> dict[str, str]:
    """Environment variables to set: valid names, scalar values as strings (see _string_map)."""
    return _string_map(value, "environment variables")


def _priority(value: int | None) -> int | None:
    """A priority in -1000..1000, or None."""
    if value is not None and not -1000 <= value <= 1000:
        raise ValueError("must be between -1000 and 1000")
    return value


# The fields a trigger and a workflow job share, checked the same way in both.
JobName = Annotated[str, AfterValidator(_job_name)]
Environment = Annotated[dict[str, str], BeforeValidator(_environment)]
Priority = Annotated[int | None, AfterValidator(_priority)]
Timeout = Annotated[int | None, BeforeValidator(_optional_duration)]


class JobTrigger(BaseModel):
    """One job to start, as written in the triggers file and sent to the coordinator.

    Fields with no value are left out when serialised (`to_dict`), as the worker expects.

    Example::

        JobTrigger(job_name="deploy", depends_on=["test"], env={"TARGET": "staging"}).to_dict()
        # {'job_name': 'deploy', 'depends_on': ['test'], 'env': {'TARGET': 'staging'}}
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    job_name: JobName
    depends_on: list[str] = Field(default_factory=list)
    condition: Condition | None = None
    env: Environment = Field(default_factory=dict)
    source_type: str | None = None
    source_url: str | None = None
    source_ref: str | None = None
    ci_source_type: str | None = None
    ci_source_url: str | None = None
    ci_source_ref: str | None = None
    container_image: str | None = None
    job_command: str | None = None
    priority: Priority = None
    timeout: Timeout = None

    @field_validator("depends_on", mode="before")
    @classmethod
    def _depends_on(cls, value: Any) -> list[str]:
        names = _string_list(value, "job name")
        for name in names:
            if not JOB_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid job name")
        return names

    @field_validator("source_type", "ci_source_type")
    @classmethod
    def _source_type(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", value):
            raise ValueError("must be a source type such as git, copy, none")
        return value

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object: unset, empty and None fields left out; enums as their values."""
        data = self.model_dump(mode="json", exclude_none=True)
        return {key: value for key, value in data.items() if value not in ({}, [], "")}


class RunAs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | int

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | int) -> str | int:
        if isinstance(value, int):
            if not 0 <= value < 2**32 - 1:
                raise ValueError("must be a uid between 0 and 4294967294")
        elif not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}\$?|\d+", value):
            raise ValueError("must be a user name or a numeric uid")
        return value


# A memory amount in a workflow: a number and a unit, decimal (k/K, M, G, T; a lower-case or a trailing-B
# spelling means the same) or binary (Ki, Mi, Gi, Ti).
_MEMORY_RE = re.compile(r"(\d+(?:\.\d+)?)([KMGT]i?|[kmgt]|[KMGT]B)?")
_MEMORY_SCALE = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
                 "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def split_memory(value: str) -> tuple[str, str]:
    """(number, unit) of a workflow memory amount, the unit one of _MEMORY_SCALE's; ValueError if malformed.

    >>> split_memory("512MB"), split_memory("2g"), split_memory("1.5Gi")
    (('512', 'M'), ('2', 'G'), ('1.5', 'Gi'))
    """
    match = _MEMORY_RE.fullmatch(str(value))
    if not match:
        raise ValueError('must be an amount such as "512Mi" or "2G"')
    unit = (match.group(2) or "").removesuffix("B")
    return match.group(1), unit[:1].upper() + unit[1:]


def memory_bytes(value: str) -> int:
    """A workflow memory amount in bytes ("512Mi" -> 536870912)."""
    number, unit = split_memory(value)
    return int(float(number) * _MEMORY_SCALE[unit])


class Resources(BaseModel):
    """Limits a worker applies to the job's container; the local runner applies `timeout` only."""

    model_config = ConfigDict(extra="forbid")
    cpu: str | float | None = None
    memory: str | None = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            split_memory(value)
        return value


def _relative_path(value: str | None, field: str) -> str | None:
    """code_dir/job_dir/working_dir: relative to the job's workspace and inside it (no `..`, not absolute)."""
    if value is None:
        return None
    path = Path(value)
    if "\x00" in value or ".." in path.parts:
        raise ValueError("must stay inside the workspace (no '..')")
    if path.is_absolute() and not (path.parts[:2] == ("/", "job")):
        raise ValueError("must be relative to the workspace or under /job")
    return value


class WorkflowJob(BaseModel):
    """One job of a workflow file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: JobName
    description: str | None = None
    job_file: str | None = None
    environment: Environment = Field(default_factory=dict)
    image: str | None = None
    command: str | None = None
    timeout: Timeout = None
    priority: Priority = None
    depends_on: list[str] = Field(default_factory=list, validation_alias=AliasChoices("depends_on", "needs"))
    condition: Condition = Condition.ALL_SUCCESS
    for_each: list[str] | None = None
    item_var: str = "ITEM"
    code_dir: str | None = None
    job_dir: str | None = None
    working_dir: str | None = None
    run_as: RunAs | None = None
    resources: Resources | None = None
    capabilities: list[str] = Field(default_factory=list)
    # ENV_NAME: secret-name/key, a Kubernetes Secret's key the job receives as ENV_NAME (a secret, masked).
    secrets: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _one_of_needs(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "depends_on" in data and "needs" in data:
            raise ValueError("give depends_on or its alias needs, not both")
        return data

    @field_validator("depends_on", mode="before")
    @classmethod
    def _depends_on(cls, value: Any) -> list[str]:
        return _string_list(value, "job name")

    @field_validator("for_each", mode="before")
    @classmethod
    def _for_each(cls, value: Any) -> list[str] | None:
        if value is None:
            return None
        items = _string_list(value, "item")
        if not items:
            raise ValueError("must list at least one item")
        for item in items:
            # An item names a job instance (logs, reports, state) and becomes an environment value.
            if not item or len(item) > 100 or not item.isprintable():
                raise ValueError(f"item {item[:20]!r} must be 1-100 printable characters")
        if len(set(items)) != len(items):
            raise ValueError("items must be unique (each names one instance of the job)")
        return items

    @field_validator("item_var")
    @classmethod
    def _item_var(cls, value: str) -> str:
        if not ENV_NAME_RE.fullmatch(value):
            raise ValueError("must be an environment variable name")
        return value

    @field_validator("code_dir", "job_dir", "working_dir", "job_file")
    @classmethod
    def _paths(cls, value: str | None, info: Any) -> str | None:
        return _relative_path(value, info.field_name)

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not ENV_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value

    @field_validator("capabilities", mode="before")
    @classmethod
    def _capabilities(cls, value: Any) -> list[str]:
        caps = _string_list(value, "capability")
        for cap in caps:
            if not re.fullmatch(r"(CAP_)?[A-Z_]{2,32}", cap):
                raise ValueError(f"{cap!r} is not a capability name such as NET_BIND_SERVICE")
        return caps

    @model_validator(mode="after")
    def _runnable(self) -> WorkflowJob:
        if not self.command and not self.job_file:
            raise ValueError("a job needs a command or a job_file")
        if self.command and self.job_file:
            raise ValueError("give command or job_file, not both")
        if self.name in self.depends_on:
            raise ValueError(f"job {self.name} depends on itself")
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError("depends_on lists a job twice")
        return self


class On(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[Literal[EVENTS]] = Field(default_factory=list)  # type: ignore[valid-type]
    branches: list[str] = Field(default_factory=list)

    @field_validator("events", "branches", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> list[str]:
        return _string_list(value, "name")


class Paths(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> list[str]:
        return _string_list(value, "glob")


class Workflow(BaseModel):
    """A workflow file: when it runs (`on`, `paths`) and its jobs (a DAG by depends_on)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str | None = None
    name: str
    description: str | None = None
    on: On = Field(default_factory=On)
    paths: Paths = Field(default_factory=Paths)
    vars: dict[str, str] = Field(default_factory=dict)
    jobs: dict[str, WorkflowJob]
    # Where it was read from (not part of the schema).
    source: str | None = Field(default=None, exclude=True)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not WORKFLOW_ID_RE.fullmatch(value):
            raise ValueError("must match ^[a-z0-9][a-z0-9-]{0,62}$ (lower case letters, digits, '-')")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("vars", mode="before")
    @classmethod
    def _vars(cls, value: Any) -> dict[str, str]:
        return _string_map(value, "variables")

    @field_validator("jobs", mode="before")
    @classmethod
    def _jobs(cls, value: Any) -> dict[str, Any]:
        return normalise_jobs(value)

    @model_validator(mode="after")
    def _graph(self, info: ValidationInfo) -> Workflow:
        # parse_workflow_text checks the graph itself, to report the line of the offending depends_on.
        if not (info.context or {}).get("defer_graph_check"):
            problem = graph_problem(self)
            if problem:
                raise ValueError(problem[1])
        return self

    @property
    def effective_id(self) -> str:
        """`id`, or the file name's stem made into an id."""
        if self.id:
            return self.id
        stem = Path(self.source).stem if self.source else self.name
        slug = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")[:63] or "workflow"
        return slug

    def topological_order(self) -> list[str]:
        """Job names, every job after its dependencies; ties in file order."""
        return topological_order({name: job.depends_on for name, job in self.jobs.items()})


def graph_problem(workflow: Workflow) -> tuple[Loc, str] | None:
    """The first thing wrong with the job graph, as (where, what): no jobs, an unknown dependency, a cycle."""
    if not workflow.jobs:
        return ("jobs",), "a workflow needs at least one job"
    for job in workflow.jobs.values():
        for index, dep in enumerate(job.depends_on):
            if dep not in workflow.jobs:
                return (("jobs", job.name, "depends_on", index),
                        f"{dep!r} is not a job of this workflow")
    cycle = find_cycle({name: job.depends_on for name, job in workflow.jobs.items()})
    if cycle:
        return ("jobs", cycle[0], "depends_on"), "jobs depend on each other in a cycle: " + " -> ".join(cycle)
    return None


def normalise_jobs(value: Any) -> dict[str, Any]:
    """`jobs` as a map by name (the name filled in) from either a map or a list of jobs with `name`."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for name, job in value.items():
            if not isinstance(job, Mapping):
                raise ValueError(f"job {name!r} must be a mapping")
            if "name" in job and job["name"] != name:
                raise ValueError(f"job {name!r} has a different name: {job['name']!r}")
            out[str(name)] = {**job, "name": name}
        return out
    if isinstance(value, list):
        out = {}
        for index, job in enumerate(value):
            if not isinstance(job, Mapping) or not isinstance(job.get("name"), str):
                raise ValueError(f"job #{index + 1} must be a mapping with a name")
            if job["name"] in out:
                raise ValueError(f"two jobs are named {job['name']!r}")
            out[job["name"]] = dict(job)
        return out
    raise ValueError("must be a map of jobs by name, or a list of jobs with a name")


def find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a list of names (first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep in graph and dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def topological_order(graph: Mapping[str, list[str]]) -> list[str]:
    """Kahn's algorithm with ties in the mapping's order (stable output for summaries and tests)."""
    remaining = {name: [d for d in deps if d in graph] for name, deps in graph.items()}
    order: list[str] = []
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps]
        if not ready:
            raise ValueError("dependency cycle among: " + ", ".join(remaining))
        for name in ready:
            order.append(name)
            del remaining[name]
        for deps in remaining.values():
            deps[:] = [d for d in deps if d not in ready]
    return order


# --- reading YAML with line numbers -------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader whose booleans are only true/false (so `on:` stays a key, `branches: [no]` a name)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

def _to_python(node: yaml.Node, loader: _Loader, marks: dict[Loc, int], loc: Loc) -> Any:
    """Build plain Python data from a composed node, recording the line of every value by its path."""
    # Aliases can make a small file expand exponentially ("billion laughs"); the marks grow with the
    # expansion, so bounding them bounds the work.
    if len(marks) >= MAX_NODES:
        raise WorkflowError(f"more than {MAX_NODES} values (aliases expanding?)", line=node.start_mark.line + 1)
    marks[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise WorkflowError("mapping keys must be strings", line=key_node.start_mark.line + 1)
            if key in out:
                raise WorkflowError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1)
            out[key] = _to_python(value_node, loader, marks, loc + (key,))
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, loader, marks, loc + (i,)) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_workflow_text(text: str, source: str = "<workflow>") -> Workflow:
    """Parse and validate one workflow document; a WorkflowError naming `source`:line and the field."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_WORKFLOW_BYTES:
        raise WorkflowError(f"larger than {MAX_WORKFLOW_BYTES} bytes", file=source)
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters before any parsing
        raise WorkflowError(f"not valid YAML: {str(exc).splitlines()[0]}", file=source) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise WorkflowError("the file is empty", file=source)
        marks: dict[Loc, int] = {}
        data = _to_python(node, loader, marks, ())
    except WorkflowError as exc:
        raise WorkflowError(str(exc).split(": ", 1)[-1] if exc.line else str(exc),
                            file=source, line=exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise WorkflowError(f"not valid YAML: {problem}", file=source, line=line) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise WorkflowError("a workflow file must be a mapping (id, name, on, jobs, ...)", file=source, line=1)
    data, marks = _jobs_by_name(data, marks)
    try:
        workflow = Workflow.model_validate(data, context={"defer_graph_check": True})
    except ValidationError as exc:
        # A misspelt key first: "jobs: Field required" is what "jbos" causes, not what to fix.
        error = next((e for e in exc.errors() if e["type"] == "extra_forbidden"), exc.errors()[0])
        loc = tuple(error["loc"])
        line = _line_for(marks, loc)
        field = ".".join(str(part) for part in loc) or None
        from runnerlib.suggest import unknown_key_message

        message = unknown_key_message(error, Workflow.model_json_schema()) or \
            error["msg"].removeprefix("Value error, ")
        raise WorkflowError(message, file=source, line=line, field=field) from None
    problem = graph_problem(workflow)
    if problem:
        loc, message = problem
        line = _line_for(marks, loc)
        raise WorkflowError(message, file=source, line=line, field=".".join(str(p) for p in loc[:3]))
    workflow.source = source
    return workflow


def _needs_alias(loc: Loc) -> Loc:
    """The same location spelt with `needs`, the alias of depends_on."""
    return tuple("needs" if part == "depends_on" else part for part in loc)


def _jobs_by_name(data: dict[Any, Any], marks: dict[Loc, int]) -> tuple[dict[Any, Any], dict[Loc, int]]:
    """Re-key the marks of a `jobs` list by job name, so errors found after normalising keep their line."""
    jobs = data.get("jobs")
    if not isinstance(jobs, list):
        return data, marks
    new_marks = dict(marks)
    for index, job in enumerate(jobs):
        if isinstance(job, Mapping) and isinstance(job.get("name"), str):
            for loc, line in marks.items():
                if loc[:2] == ("jobs", index):
                    new_marks[("jobs", job["name"]) + loc[2:]] = line
    return data, new_marks


def _line_for(marks: Mapping[Loc, int], loc: Loc) -> int | None:
    """The line of the longest prefix of `loc` that has a mark (pydantic's loc may add e.g. a union tag).

    A location under depends_on is also looked up as written with its alias `needs`.
    """
    candidates = [loc, _needs_alias(loc)]
    for end in range(len(loc), -1, -1):
        for candidate in candidates:
            line = marks.get(tuple(candidate[:end]))
            if line is not None:
                return line
    return None


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow file (see `parse_workflow_text`)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_WORKFLOW_BYTES + 1)
    except OSError as exc:
        raise WorkflowError(f"cannot read: {exc.strerror}", file=str(path)) from None
    if len(raw) > MAX_WORKFLOW_BYTES:
        raise WorkflowError(f"larger than {MAX_WORKFLOW_BYTES} bytes", file=str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkflowError(f"not UTF-8 (byte {exc.start})", file=str(path)) from None
    return parse_workflow_text(text, str(path))
