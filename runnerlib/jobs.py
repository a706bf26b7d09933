"""Jobs and steps: the step DAG a job runs, built in Python or read from a YAML/JSON job file.

A job is one workspace and one or more steps. Steps name the steps they depend on; independent steps may run
in parallel. Everything that can be checked without running anything is checked by `Job.validate()` before
the first step starts: duplicate names, unknown dependencies, cycles, malformed conditions and conditions that
name unknown variables.

Example::

    job = Job("test-and-build")
    job.add_step("checkout", "git clone https://example.com/repo.git /job/src")
    job.add_step("test", "pytest tests/", depends_on=["checkout"], timeout=600, retries=1)
    job.add_step("build", "python -m build", depends_on=["test"], condition="branch == 'main'")
    order = job.validate(variables={"branch": "main"})
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from runnerlib.execution.conditions import (
    Condition,
    ConditionError,
    condition_spellings,
    condition_spellings_schema,
    parse_condition,
)
from runnerlib.execution.retry import AllowFailurePolicy, RetryPolicy, retry_policy
from runnerlib.execution.step_refs import StepReferenceError, check_step_references
from runnerlib.security.limits import StepLimits, coerce_limits

STEP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Trust = Literal["trusted", "untrusted"]
SecretsMode = Literal["all", "declared"]
_Names = TypeVar("_Names", bound=Iterable[str])


def check_env_names(names: _Names) -> _Names:
    """`names` (a list of names, or a mapping by name) unchanged; ValueError for a name no shell could export."""
    for name in names:
        if not ENV_NAME_RE.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
    return names


# An environment to add (step env, job_env), and a list of variable names: every name a valid one.
EnvVars = Annotated[dict[str, str], AfterValidator(check_env_names)]
EnvNames = Annotated[list[str], AfterValidator(check_env_names)]


class JobDefinitionError(ValueError):
    """A job that cannot run as written; the message names the step (and file:line when from a file)."""


@dataclass
class Step:
    """One command of a job. `command` is a shell string or an argv list (run without a shell)."""

    name: str
    command: str | list[str]
    depends_on: list[str] = field(default_factory=list)
    condition: str = "on_success"
    timeout: float | None = None
    retries: int = 0
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    trust: Trust = "trusted"
    allow_failure: bool | AllowFailurePolicy = False
    retry: RetryPolicy | None = None  # retries by cause (execution/retry.py); `retries` holds its max
    # full | none | loopback | [host:port, ...] (runnerlib.security.network); None: the job's default.
    network: str | list[str] | None = None
    # Where the step was defined (file:line), for error messages; None when built in Python.
    origin: str | None = None
    # Trusted steps: whether `::add-mask::` lines of its output register values; the secret variables it
    # needs (what it gets when the job says secrets: declared); whether it may register over the socket then.
    add_mask: bool = True
    secrets: list[str] | None = None
    register_secrets: bool = False
    limits: StepLimits | None = None

    @property
    def parsed_condition(self) -> Condition:
        return parse_condition(self.condition)

    def describe_command(self) -> str:
        """The command as one line (argv lists shell-quoted), for the log. The caller masks it."""
        if isinstance(self.command, str):
            return self.command
        import shlex

        return shlex.join(self.command)


class StepSpec(BaseModel):
    """A step as written in a job file (and the validation of `Job.add_step` arguments)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=condition_spellings_schema)

    name: str = Field(description="Unique step name: letters, digits, '_', '.', '-' (max 63).")
    command: str | list[str] = Field(
        description="Shell command string, or an argv list run without a shell.")
    depends_on: list[str] = Field(default_factory=list, description="Steps that must finish first.")
    condition: str = Field(
        default="on_success",
        description="on_success (default), always, on_failure, or an expression on job variables, "
                    "e.g. branch == 'main' and event_type != 'pull_request_opened'; GitHub's success(), "
                    "failure(), always(), cancelled() too. Also spelt `if:`, or `when:` for a status keyword.")
    timeout: float | None = Field(default=None, gt=0, description="Seconds; exit 124 when exceeded.")
    retries: int = Field(default=0, ge=0, le=10, description="Extra attempts after a failure or timeout.")
    env: EnvVars = Field(default_factory=dict, description="Extra environment for this step.")
    working_dir: str | None = Field(default=None, description="Directory the step runs in.")
    trust: Trust = Field(default="trusted",
                         description="untrusted steps run sandboxed with no secrets and no socket.")
    allow_failure: bool | AllowFailurePolicy = Field(
        default=False, description="true, or {exit_codes: [...]}: such a failure does not fail the job.")
    retry: RetryPolicy | None = Field(
        default=None, description="Retries by cause: {max, exit_codes, signals, backoff} (or a number).")
    add_mask: bool = Field(default=True, description="Trusted steps: `::add-mask::VALUE` lines in the output "
                           "register VALUE; false prints them as ordinary (masked) output.")
    secrets: EnvNames | None = Field(default=None, description="Secret variables this trusted step needs; with "
                                     "the job's `secrets: declared` it gets these and no other.")
    register_secrets: bool = Field(default=False, description="With `secrets: declared`: may register secrets "
                                   "over the socket (otherwise it can only ask it to mask).")
    network: str | list[str] | None = Field(
        default=None, description="full, none, loopback or a list of host:port (untrusted default: full, "
                                  "cloud metadata addresses never reachable).")
    limits: StepLimits | None = Field(default=None, description="Resource limits: pids, memory (512M, 1G), "
                                                                "cpu_seconds, file_size, open_files, cpus.")

    @field_validator("limits", mode="before")
    @classmethod
    def _limits(cls, value: Any) -> Any:
        return coerce_limits(value)

    @field_validator("retry", mode="before")
    @classmethod
    def _retry(cls, value: Any) -> Any:
        return retry_policy(value)

    @model_validator(mode="after")
    def _one_retry_form(self) -> StepSpec:
        if self.retry is not None:
            if self.retries and self.retries != self.retry.max:
                raise ValueError("give either retries or retry, not both")
            self.retries = self.retry.max
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not STEP_NAME_RE.fullmatch(value):
            raise ValueError("must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ (it names the step's log file)")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        if isinstance(value, list) and (not value or not value[0]):
            raise ValueError("an argv list needs at least the program")
        if "\x00" in (value if isinstance(value, str) else "".join(value)):
            raise ValueError("must not contain NUL bytes")
        return value

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | list[str] | None) -> str | list[str] | None:
        from runnerlib.security.network import check_spec

        return check_spec(value)

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str | None) -> str | None:
        # Relative to the job's directory and inside it: `/etc` or `../../etc` would run a step (with the
        # job's secrets) wherever the job file says. The path layer's rule for workspace paths.
        if value is None:
            return None
        from runnerlib.security.paths import PathPolicyError, split_relative

        try:
            parts = split_relative(value, field="working_dir")
        except PathPolicyError:
            raise ValueError(f"must be a relative path inside the job's directory, without '..' (got {value!r})") \
                from None
        return "/".join(parts) or "."

    @field_validator("depends_on", mode="before")
    @classmethod
    def _deps(cls, value: Any) -> Any:
        # `depends_on: build` is a common shorthand for a one-element list.
        return [value] if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _condition_spellings(cls, data: Any) -> Any:
        # `if:` (GitHub) and `when:` (GitLab) are the same setting as `condition:`.
        return condition_spellings(data)

    @field_validator("condition")
    @classmethod
    def _condition(cls, value: str) -> str:
        try:
            parse_condition(value)
        except ConditionError as exc:
            raise ValueError(str(exc)) from None
        return value


class Job:
    """A named set of steps forming a DAG. Build with `add_step`; `validate()` before running."""

    def __init__(self, name: str, *, vars: Mapping[str, str] | None = None, secrets: SecretsMode = "all") -> None:
        if not STEP_NAME_RE.fullmatch(name or ""):
            raise JobDefinitionError(
                f"job name {name!r} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,62}}$")
        if secrets not in ("all", "declared"):
            raise JobDefinitionError(f"job {name!r}: secrets: must be 'all' or 'declared', not {secrets!r}")
        self.name = name
        # "declared": a trusted step gets only the secret variables its `secrets:` lists (least privilege).
        self.secrets: SecretsMode = secrets
        self.vars: dict[str, str] = dict(vars or {})
        self._steps: dict[str, Step] = {}
        # The job file it was read from (None when built in Python): the runner refuses trusted steps from a
        # file inside the untrusted source tree.
        self.source_file: Path | None = None

    @property
    def steps(self) -> list[Step]:
        """Steps in the order they were added."""
        return list(self._steps.values())

    def step(self, name: str) -> Step:
        return self._steps[name]

    def add_step(
        self,
        name: str,
        command: str | list[str],
        depends_on: Iterable[str] | str | None = None,
        condition: str = "on_success",
        timeout: float | None = None,
        retries: int = 0,
        env: Mapping[str, str] | None = None,
        working_dir: str | None = None,
        trust: Trust = "trusted",
        allow_failure: bool | Mapping[str, Any] | AllowFailurePolicy = False,
        *,
        retry: int | Mapping[str, Any] | RetryPolicy | None = None,
        origin: str | None = None,
        add_mask: bool = True,
        secrets: Iterable[str] | None = None,
        register_secrets: bool = False,
        network: str | list[str] | None = None,
        limits: StepLimits | Mapping[str, Any] | None = None,
    ) -> Step:
        """Add a step; arguments are checked at once (duplicate names included), the DAG by `validate()`."""
        if name in self._steps:
            where = f" ({origin})" if origin else ""
            raise JobDefinitionError(f"step {name!r}{where}: duplicate step name")
        deps = [depends_on] if isinstance(depends_on, str) else list(depends_on or [])
        try:
            spec = StepSpec(name=name, command=command, depends_on=deps, condition=condition,
                            timeout=timeout, retries=retries, env=dict(env or {}),
                            working_dir=working_dir, trust=trust, add_mask=add_mask,
                            secrets=None if secrets is None else list(secrets), register_secrets=register_secrets,
                            network=network, limits=limits,  # type: ignore[arg-type]  # parsed by the validator
                            # mappings as written in a job file: StepSpec's validators make the policies
                            allow_failure=cast(Any, allow_failure), retry=cast(Any, retry))
        except ValidationError as exc:
            raise JobDefinitionError(_format_validation(exc, prefix=f"step {name!r}", origin=origin)) from None
        if trust == "untrusted" and (spec.secrets or register_secrets):
            raise JobDefinitionError(f"step {name!r}{_at_origin(origin)}: an untrusted step gets no secrets and "
                                     "no socket; remove secrets/register_secrets or make the step trusted")
        step = Step(**{**spec.model_dump(exclude={"limits"}), "retry": spec.retry,
                       "allow_failure": spec.allow_failure}, origin=origin, limits=spec.limits)
        self._steps[name] = step
        return step

    def validate(self, variables: Mapping[str, Any] | None = None) -> list[str]:
        """Check the DAG and conditions; return the step names in a topological order.

        `variables` are the job variables conditions may use (branch, sha, ...); when given, a condition
        naming any other variable is refused here rather than when the step is reached.
        """
        if not self._steps:
            raise JobDefinitionError(f"job {self.name!r} has no steps")
        for step in self._steps.values():
            for dep in step.depends_on:
                if dep not in self._steps:
                    from runnerlib.suggest import did_you_mean

                    raise JobDefinitionError(
                        f"step {step.name!r}{_at(step)}: depends on unknown step {dep!r}"
                        f"{did_you_mean(dep, self._steps)}")
                if dep == step.name:
                    raise JobDefinitionError(f"step {step.name!r}{_at(step)}: depends on itself")
            if variables is not None:
                unknown = sorted(n for n in step.parsed_condition.names() - set(variables)
                                 if not n.startswith("steps."))  # step outputs: execution/step_refs.py
                if unknown:
                    from runnerlib.suggest import did_you_mean

                    hint = did_you_mean(unknown[0], variables) or \
                        f" (known: {', '.join(sorted(variables)) or 'none'})"
                    raise JobDefinitionError(
                        f"step {step.name!r}{_at(step)}: condition uses unknown variable {unknown[0]!r}{hint}")
        order = self._topological_order()
        try:
            check_step_references(self._steps, _at)
        except StepReferenceError as exc:
            raise JobDefinitionError(str(exc)) from None
        return order

    def _topological_order(self) -> list[str]:
        # Kahn's algorithm in declaration order, so the order is stable and readable in logs.
        indegree = {name: len(set(step.depends_on)) for name, step in self._steps.items()}
        dependents: dict[str, list[str]] = {name: [] for name in self._steps}
        for name, step in self._steps.items():
            for dep in set(step.depends_on):
                dependents[dep].append(name)
        ready = [name for name, d in indegree.items() if d == 0]
        order: list[str] = []
        while ready:
            name = ready.pop(0)
            order.append(name)
            for child in dependents[name]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(order) != len(self._steps):
            raise JobDefinitionError(f"job {self.name!r}: dependency cycle: {' -> '.join(self._find_cycle())}")
        return order

    def _find_cycle(self) -> list[str]:
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(name: str) -> list[str] | None:
            state[name] = 1
            stack.append(name)
            for dep in self._steps[name].depends_on:
                if state.get(dep) == 1:
                    return stack[stack.index(dep):] + [dep]
                if dep not in state:
                    found = visit(dep)
                    if found:
                        return found
            stack.pop()
            state[name] = 2
            return None

        for name in self._steps:
            if name not in state:
                cycle = visit(name)
                if cycle:
                    return list(reversed(cycle))
        return []

    def force_untrusted(self) -> None:
        """Make every step untrusted (the whole job runs sandboxed, without secrets)."""
        for step in self._steps.values():
            step.trust = "untrusted"

    def __repr__(self) -> str:
        return f"<Job {self.name!r} steps={list(self._steps)}>"


def _at(step: Step) -> str:
    return _at_origin(step.origin)


def _at_origin(origin: str | None) -> str:
    return f" ({origin})" if origin else ""


# ---------------------------------------------------------------------------------------------------------
# Job files: YAML or JSON documents whose values keep the line they came from, for error messages.


@dataclass
class Document:
    """A parsed YAML/JSON document and the line of each key or item, by path (e.g. ("steps", 2, "name"))."""

    path: Path
    data: Any
    lines: dict[tuple[Any, ...], int]

    def where(self, loc: tuple[Any, ...] = ()) -> str:
        """`file:line` for the deepest known prefix of `loc` (the file alone when nothing is known)."""
        for n in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:n]))
            if line is not None:
                return f"{self.path}:{line}"
        return str(self.path)


MAX_JOB_FILE_BYTES = 4 * 1024 * 1024


def _yaml_loader() -> Any:
    """libyaml's loader when PyYAML was built with it (10x faster on big job files); same safe subset.
    PyYAML is imported on first use: a job run from options alone never reads YAML."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_document(path: str | Path) -> Document:
    """Read a YAML (.yaml/.yml) or JSON (.json, or any other name) job file, refusing duplicate keys.

    Errors are JobDefinitionError naming the file and line.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_JOB_FILE_BYTES + 1)
    except OSError as exc:
        raise JobDefinitionError(f"{path}: cannot read job file: {exc.strerror or exc}") from None
    if len(raw) > MAX_JOB_FILE_BYTES:
        raise JobDefinitionError(f"{path}: job file larger than {MAX_JOB_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobDefinitionError(f"{path}: not UTF-8 (byte {exc.start})") from None
    return parse_document(text, path)


def parse_document(text: str, path: str | Path = "<job file>") -> Document:
    """Parse job-file text (see `load_document`); JSON when the name ends in .json, YAML otherwise."""
    import yaml

    path = Path(path)
    lines: dict[tuple[Any, ...], int] = {}
    loader = _yaml_loader()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_pairs)
        except json.JSONDecodeError as exc:
            raise JobDefinitionError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        except _DuplicateKey as exc:
            raise JobDefinitionError(f"{path}: duplicate key {exc.args[0]!r}") from None
        try:  # JSON is (nearly) YAML: the composer gives us the lines; best effort only.
            composed = yaml.compose(text, Loader=loader)
            if composed is not None:
                _node_lines(composed, (), lines, path)
        except (yaml.YAMLError, JobDefinitionError, RecursionError):
            lines = {}
    else:
        try:
            node = yaml.compose(text, Loader=loader)
            if node is not None:
                _node_lines(node, (), lines, path)
            data = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader (C or Python)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f":{mark.line + 1}" if mark else ""
            raise JobDefinitionError(f"{path}{line}: invalid YAML: {exc.problem or exc}") from None
        except yaml.YAMLError as exc:
            raise JobDefinitionError(f"{path}: invalid YAML: {exc}") from None
        except RecursionError:
            raise JobDefinitionError(f"{path}: document nested too deeply") from None
    return Document(path, data, lines)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _node_lines(node: Any, loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int], path: Path) -> None:
    import yaml

    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen and key != "<<":
                raise JobDefinitionError(f"{path}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
            lines[loc + (key,)] = key_node.start_mark.line + 1
            _node_lines(value_node, loc + (key,), lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _node_lines(item, loc + (index,), lines, path)


def _format_validation(exc: ValidationError, *, prefix: str, origin: str | None = None,
                       document: Document | None = None, base: tuple[Any, ...] = ()) -> str:
    """The first pydantic error as `origin: field: message` (one line)."""
    err = next((e for e in exc.errors() if e["type"] == "extra_forbidden"), exc.errors()[0])  # typo first
    loc = tuple(err["loc"])
    where = document.where(base + loc) if document else origin
    field_name = ".".join(str(p) for p in loc) or "value"
    from runnerlib.suggest import unknown_key_message

    msg = unknown_key_message(err, StepSpec.model_json_schema()) or err["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    head = f"{where}: " if where else ""
    return f"{head}{prefix}: {field_name}: {msg}{tail}"


def steps_from_data(job: Job, steps: Any, document: Document | None = None,
                    base: tuple[Any, ...] = ("steps",)) -> None:
    """Add the steps of a job file's `steps:` (a list of mappings with `name`, or a mapping by name)."""
    where = document.where(base) if document else "steps"
    if isinstance(steps, Mapping):
        items = [(key, {"name": key, **(value or {})} if isinstance(value, Mapping) else value, (key,))
                 for key, value in steps.items()]
    elif isinstance(steps, list):
        items = [(None, value, (index,)) for index, value in enumerate(steps)]
    else:
        raise JobDefinitionError(f"{where}: steps: must be a list of steps or a mapping by step name")
    for _key, value, sub in items:
        origin = document.where(base + sub) if document else None
        if not isinstance(value, Mapping):
            raise JobDefinitionError(f"{origin or where}: step must be a mapping with name and command")
        try:
            spec = StepSpec.model_validate(dict(value))
        except ValidationError as exc:
            label = value.get("name") if isinstance(value.get("name"), str) else str(sub[0])
            raise JobDefinitionError(_format_validation(
                exc, prefix=f"step {label!r}", document=document, base=base + sub)) from None
        job.add_step(**spec.model_dump(exclude={"limits"}), origin=origin, limits=spec.limits)
