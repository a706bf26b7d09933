"""The job configuration: pydantic models, the override hierarchy, and where each value came from.

Priority, lowest first: defaults < job file (YAML/JSON) < REACTORCIDE_* environment < CLI options <
`get_config(**overrides)` arguments. Every value keeps its origin (``default``, ``job.yaml:12``,
``env REACTORCIDE_CODE_DIR``, ``option --code-dir``, ``argument code_dir``) so `runnerlib config` can say
why a value is what it is, and so an error names the place to fix.

Everything is refused before anything runs: unknown keys (in files and `get_config` arguments), wrong
types, and contradictions (a source_url with source_type none, --container without an image, plain-HTTP
coordinator without --allow-insecure-transport, ...). Messages name the field, the origin and the rule.

Example::

    from runnerlib.config import get_config
    config = get_config(job_command="make test", source_type="git",
                        source_url="https://github.com/user/repo.git", source_ref="main")
    config.origin("source_url")   # 'argument source_url'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from runnerlib.jobs import (
    Document,
    EnvNames,
    EnvVars,
    Job,
    JobDefinitionError,
    StepSpec,
    load_document,
    steps_from_data,
)
from runnerlib.security.limits import StepLimits, coerce_limits

SourceType = Literal["git", "copy", "tarball", "hg", "svn", "none"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

DEFAULT_WORKSPACE_ROOT = "/job"
ENV_PREFIX = "REACTORCIDE_"


class ConfigError(ValueError):
    """A configuration that cannot run: names the field, the origin of its value and the rule."""

    def __init__(self, field: str, origin: str, rule: str) -> None:
        super().__init__(f"config: {field} (from {origin}): {rule}")
        self.field = field
        self.origin = origin
        self.rule = rule


def _default_concurrency() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class JobConfig(BaseModel):
    """The effective configuration of one job. Values are validated on assignment (plugins may change them)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Workspace layout (derived defaults are filled in by get_config from workspace_root).
    workspace_root: str = Field(DEFAULT_WORKSPACE_ROOT, description="The job workspace (/job in a container).")
    code_dir: str | None = Field(None, description="The (untrusted) source tree; default <workspace_root>/src.")
    job_dir: str | None = Field(None, description="Where the job command runs; default code_dir.")
    ci_dir: str | None = Field(None, description="The trusted CI tree; default <workspace_root>/ci.")
    artifacts_dir: str | None = Field(None, description="Step logs and artifacts; default <workspace_root>/artifacts.")
    work_dir: str | None = Field(None, description="runnerlib's own scratch files (socket, temp); default: private temp dir.")
    triggers_file: str | None = Field(None, description="Where trusted steps write triggers; default <workspace_root>/triggers.json.")

    # What runs.
    job_name: str = Field("job", description="Name of the job (and of its single step in simple mode).")
    job_command: str | None = Field(None, description="Shell command of the job (simple mode).")
    job_args: list[str] | None = Field(None, description="argv of the job, run without a shell (`run -- CMD ARGS`).")
    job_env: EnvVars = Field(default_factory=dict, description="Extra environment for the steps.")
    vars: dict[str, str] = Field(default_factory=dict, description="Job variables usable in step conditions.")
    untrusted: bool = Field(False, description="Run the job command as an untrusted (sandboxed) step.")
    network: str | list[str] | None = Field(
        None, description="Network of the job's steps that set none: full, none, loopback or host:port,... "
                          "(untrusted default: full; cloud metadata addresses never reachable).")
    runner_image: str | None = Field(None, description="Container image (container mode).")
    container: bool = Field(False, description="Run the job in a container of runner_image.")
    container_engine: Literal["auto", "podman", "docker"] = Field(
        "auto", description="Engine of container mode: podman, docker, or auto (the first on PATH).")
    dry_run: bool = Field(False, description="Validate and print the plan; run nothing.")

    # Secrets.
    secret_values_list: list[str] = Field(default_factory=list, description="Secret values (comma-separated).")
    secret_env_names: EnvNames = Field(default_factory=list, description="Names of env variables holding secrets.")
    secrets_file: str | None = Field(None, description="A file of secrets (JSON, YAML or KEY=VALUE).")
    secrets_fd: int | None = Field(None, ge=0, description="An inherited file descriptor to read secrets from.")
    mask_known_formats: bool = Field(True, description="Also mask well-known credential formats nobody registered "
                                                       "(GitHub/GitLab/Slack/Stripe tokens, AWS key ids, PEM keys...).")

    # Plugins.
    plugin_dirs: list[str] = Field(default_factory=list, description="Trusted directories of plugin files.")

    # Sources.
    source_type: SourceType | None = None
    source_url: str | None = None
    source_ref: str | None = None
    ci_source_type: SourceType | None = None
    ci_source_url: str | None = None
    ci_source_ref: str | None = None

    # Worker context.
    job_id: str | None = None
    queue: str | None = None
    in_container: bool = False
    branch: str | None = None
    sha: str | None = None
    event_type: str | None = None
    pr_number: str | None = None
    coordinator_url: str | None = None
    api_token: str | None = Field(None, description="The worker's per-lease bearer token (a secret).")
    allow_insecure_transport: bool = Field(False, description="Allow plain-HTTP coordinator URLs.")

    # Execution.
    step_timeout: float | None = Field(None, gt=0, description="Default per-step timeout, seconds.")
    job_timeout: float | None = Field(None, gt=0, description="Timeout of the whole job, seconds (exit 124).")
    step_retries: int = Field(0, ge=0, le=10, description="Default retries of a failed step.")
    concurrency: int = Field(default_factory=_default_concurrency, ge=1, le=256,
                             description="Steps run at the same time, at most.")
    kill_grace: float = Field(10.0, ge=0, le=600, description="Seconds between SIGTERM and SIGKILL of a step.")
    limits: StepLimits = Field(default_factory=StepLimits,
                               description="Resource limits of every step (--limit NAME=VALUE, repeatable); a "
                                           "step's own `limits:` win; untrusted steps get defaults for the rest.")

    # Output.
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"
    color: Literal["auto", "always", "never"] = "auto"
    timestamps: bool = Field(False, description="A UTC timestamp before every console line of step output "
                                                "(step log files: log_timestamps).")
    # Opt-in, as Buildkite's --timestamp-lines and GitLab's timestamps: a stamp makes a 56-byte line's log
    # record 45% larger, which the bulk path of a chatty step pays on every line (docs/internals/executor.md).
    log_timestamps: bool = Field(False, description="A UTC timestamp before every line of the step log files.")

    # Observability (docs/observability.md).
    metrics_file: str | None = Field(None, description="Write the job's metrics here at the end (node-exporter textfile).")
    metrics_push: str | None = Field(None, description="Push the job's metrics to this Prometheus Pushgateway URL.")
    report: str | None = Field(None, description="Write a self-contained HTML run report here.")
    profile: bool = Field(False, description="Print each step's CPU, peak memory and I/O under the summary.")

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("network")
    @classmethod
    def _network(cls, value: Any) -> Any:
        from runnerlib.security.network import check_spec

        return check_spec(value)

    @field_validator("limits", mode="before")
    @classmethod
    def _limits(cls, value: Any) -> Any:
        return coerce_limits(value)

    @field_validator("job_name")
    @classmethod
    def _job_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", value):
            raise ValueError("must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
        return value

    def origin(self, field: str) -> str:
        """Where `field`'s value came from (``default`` when nothing set it)."""
        return self._origins.get(field, "default")

    @property
    def origins(self) -> dict[str, str]:
        return {name: self.origin(name) for name in type(self).model_fields}

    def set(self, field: str, value: Any, origin: str) -> None:
        """Assign a value and record its origin (how plugins should change the config)."""
        setattr(self, field, value)
        self._origins[field] = origin

    def check_rules(self) -> None:
        """Refuse contradictions; raise ConfigError naming the field, origin and rule."""
        for field, rule in _rule_violations(self):
            raise ConfigError(field, self.origin(field), rule)

    def job_variables(self) -> dict[str, str]:
        """Variables step conditions may use: the worker's context, then the job's own vars."""
        base = {"branch": self.branch, "sha": self.sha, "event_type": self.event_type,
                "pr_number": self.pr_number, "job_id": self.job_id, "queue": self.queue,
                "job_name": self.job_name, "source_ref": self.source_ref, "source_type": self.source_type}
        out = {k: ("" if v is None else str(v)) for k, v in base.items()}
        out.update(self.vars)
        return out

    def secret_values(self) -> list[str]:
        """The secret values held in the configuration itself (for registering them before any output)."""
        from runnerlib.security.secret_sources import url_credentials

        values = [v for v in self.secret_values_list if v]
        if self.api_token:
            values.append(self.api_token)
        # Credentials in URLs given by option or file (from the environment they are found by load_secrets).
        for url in (self.source_url, self.ci_source_url, self.coordinator_url):
            values += url_credentials(url) if url and "://" in url else []
        if self.metrics_push and "@" in self.metrics_push:
            from urllib.parse import urlsplit

            password = urlsplit(self.metrics_push).password  # Pushgateway basic auth in the URL
            if password:
                values.append(password)
        return values


# Fields whose values are secrets: shown as *** by `runnerlib config`.
SECRET_FIELDS = frozenset({"secret_values_list", "api_token"})
# Fields holding paths, checked by security.paths.check_config_path.
PATH_FIELDS = ("workspace_root", "code_dir", "job_dir", "ci_dir", "artifacts_dir", "work_dir", "triggers_file",
               "secrets_file")
# The paths that must lie inside the workspace (security.paths.check_config_path). work_dir and secrets_file
# are the runner's own and usually live outside it (/run/secrets, a private temp dir).
WORKSPACE_PATH_FIELDS = ("code_dir", "job_dir", "ci_dir", "artifacts_dir", "triggers_file")
LIST_FIELDS = ("secret_values_list", "secret_env_names", "plugin_dirs")
# Environment variables read besides REACTORCIDE_<FIELD>; the first listed wins.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "log_level": ("REACTORCIDE_LOG_LEVEL", "LOG_LEVEL"),
    "log_format": ("REACTORCIDE_LOG_FORMAT", "LOG_FORMAT"),
    "plugin_dirs": ("REACTORCIDE_PLUGIN_DIR", "REACTORCIDE_PLUGIN_DIRS"),
    "color": ("REACTORCIDE_COLOR",),
    # REACTORCIDE_WORKSPACE is what the workflow helpers read; both names work.
    "workspace_root": ("REACTORCIDE_WORKSPACE_ROOT", "REACTORCIDE_WORKSPACE"),
}
# Accepted in files, env (REACTORCIDE_GIT_URL) and arguments: --git-url means a git source.
ALIASES = {"git_url": "source_url", "git_ref": "source_ref", "plugin_dir": "plugin_dirs", "env": "job_env",
           "command": "job_command", "name": "job_name"}


def _rule_violations(c: JobConfig) -> Iterable[tuple[str, str]]:
    for prefix in ("", "ci_"):
        kind, url, ref = (getattr(c, f"{prefix}source_{x}") for x in ("type", "url", "ref"))
        if kind in (None, "none"):
            if url:
                yield (f"{prefix}source_url", f"is set but {prefix}source_type is "
                       f"{'none' if kind == 'none' else 'not set'}; set {prefix}source_type "
                       "(git, copy, tarball, hg or svn) or remove the URL")
            if ref:
                yield (f"{prefix}source_ref", f"is set but there is no {prefix}source (source_type none)")
        else:
            if not url:
                yield (f"{prefix}source_type", f"is {kind!r} but {prefix}source_url is not set")
            if kind in ("copy", "tarball") and ref:
                yield (f"{prefix}source_ref", f"has no meaning for a {kind} source")
    if c.job_command and c.job_args:
        yield ("job_args", "both a job command and `-- CMD ARGS` are given; use one")
    if c.container and not c.runner_image:
        yield ("container", "container mode needs runner_image (--runner-image)")
    if c.coordinator_url:
        scheme = c.coordinator_url.split(":", 1)[0].lower()
        if scheme not in ("http", "https") or "://" not in c.coordinator_url:
            yield ("coordinator_url", "must be an http(s) URL")
        elif scheme == "http" and not c.allow_insecure_transport:
            yield ("coordinator_url", "plain HTTP would send the API token in clear; use https or pass "
                                      "--allow-insecure-transport")
    for name in ("workspace_root", "code_dir", "job_dir", "ci_dir", "artifacts_dir", "work_dir",
                 "triggers_file", "secrets_file", *[f"plugin_dirs[{i}]" for i in range(len(c.plugin_dirs))]):
        value = c.plugin_dirs[int(name[12:-1])] if name.startswith("plugin_dirs[") else getattr(c, name)
        if value is not None and ("\x00" in value or not value.strip()):
            yield (name.split("[")[0], "must be a non-empty path without NUL bytes")


# ---------------------------------------------------------------------------------------------------------
# Layers


class Layer:
    """One level of the hierarchy: values by field name and the origin of each."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        self._git_implied: str | None = None

    def put(self, field: str, value: Any, origin: str) -> None:
        """Set `field` (or an alias of it). Within one layer an alias and its field must agree."""
        target = ALIASES.get(field, field)
        if target in self.values and self.values[target] != value:
            # Only reachable when both a field and its alias are given at the same level.
            raise ConfigError(field, origin, f"contradicts {target} from {self.origins[target]}")
        if field == "git_url":
            # --git-url means a git source.
            if self.values.get("source_type") not in (None, "git"):
                raise ConfigError("git_url", origin,
                                  f"implies source_type git but source_type is {self.values['source_type']!r} "
                                  f"(from {self.origins['source_type']})")
            self._git_implied = origin
            self.values.setdefault("source_type", "git")
            self.origins.setdefault("source_type", origin)
        elif field == "source_type" and self._git_implied and value != "git":
            raise ConfigError("source_type", origin, f"contradicts git_url from {self._git_implied}, which implies git")
        self.values[target] = value
        self.origins[target] = origin


# REACTORCIDE_* variables that are not settings but are read by other parts of runnerlib, set by the worker,
# or set by the runner for its steps: `runnerlib config` does not call them unknown.
OTHER_KNOWN_ENV = frozenset({
    "REACTORCIDE_SOURCE_DIR", "REACTORCIDE_CI_SOURCE_DIR", "REACTORCIDE_SECRETS_SOCKET", "REACTORCIDE_SECRETS_TOKEN",
    "REACTORCIDE_SECRETS_PASSWORD", "REACTORCIDE_SECRETS_STORE", "REACTORCIDE_VCS_AUTH_DIR",
    "REACTORCIDE_VCS_AUTH_CLEANUP", "REACTORCIDE_DEBUG", "REACTORCIDE_SANDBOX_BEST_EFFORT", "REACTORCIDE_STEP_NAME",
    "REACTORCIDE_COORDINATOR_CA_FILE", "REACTORCIDE_GIT_BRANCH", "REACTORCIDE_GIT_COMMIT",
    "REACTORCIDE_WORKFLOW_FILE", "REACTORCIDE_WORKFLOW_ID", "REACTORCIDE_WORKFLOW_ITEM", "REACTORCIDE_WORKFLOW_JOB",
    "REACTORCIDE_WORKFLOW_OUTPUT", "REACTORCIDE_WORKFLOW_RUN_ID", "REACTORCIDE_WORKFLOW_STATE",
    "REACTORCIDE_WORKFLOW_VARS", "REACTORCIDE_PLUGIN_DIRS", "REACTORCIDE_STEPS_STATE",
    "REACTORCIDE_WORKFLOW_OUTPUT_TRANSPORT",  # workflow/output_lines.py
    # the step protocol's files (execution/step_files.py)
    "REACTORCIDE_OUTPUT", "REACTORCIDE_ENV", "REACTORCIDE_PATH", "REACTORCIDE_STEP_SUMMARY",
})


def unknown_env_names(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, suggestion or "") for REACTORCIDE_* variables nothing reads: usually a typo worth a note."""
    known = {ENV_PREFIX + f.upper() for f in _field_names() | {"git_url", "git_ref"}}
    for names in ENV_ALIASES.values():
        known.update(names)
    known |= OTHER_KNOWN_ENV
    import difflib

    out = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known \
                and not name.startswith(("REACTORCIDE_SANDBOX", "REACTORCIDE_UNTRUSTED_OUTPUT_")):
            close = difflib.get_close_matches(name, sorted(known), n=1)
            out.append((name, close[0] if close else ""))
    return out


def _field_names() -> set[str]:
    return set(JobConfig.model_fields)


def _split_list(value: Any, sep: str = ",") -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(sep) if item.strip()]
    return value


def parse_job_env(value: Any, *, field: str = "job_env", origin: str = "value") -> dict[str, str]:
    """KEY=VALUE text (one per line; '#' comments), a mapping, or a path to a file of such lines.

    >>> parse_job_env("A=1\\nB=two")
    {'A': '1', 'B': 'two'}
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        out: dict[str, str] = {}
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(field, origin, "a list must hold KEY=VALUE strings")
            out.update(parse_job_env(item, field=field, origin=origin))
        return out
    if not isinstance(value, str):
        raise ConfigError(field, origin, "must be KEY=VALUE lines, a mapping or a path to an env file")
    text = value
    if "=" not in value and value.strip():
        text = _read_env_file(value.strip(), field, origin)
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, val = line.partition("=")
        if not sep or not key.strip():
            # The line is not echoed: it may be a secret pasted in the wrong place.
            raise ConfigError(field, origin, f"line {number} is not KEY=VALUE")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
            val = val[1:-1]
        out[key.strip()] = val
    return out


MAX_ENV_FILE_BYTES = 1024 * 1024


def _read_env_file(name: str, field: str, origin: str) -> str:
    """An env file named by job_env: a regular file of at most 1 MiB (not /dev/zero, not a FIFO)."""
    import stat

    if "\0" in name:
        raise ConfigError(field, origin, "an env file path must not contain NUL bytes")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(field, origin, f"env file {name}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(field, origin, f"env file {name}: not a regular file")
        with os.fdopen(os.dup(fd), "rb") as fh:
            raw = fh.read(MAX_ENV_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_ENV_FILE_BYTES:
        raise ConfigError(field, origin, f"env file {name}: larger than {MAX_ENV_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(field, origin, f"env file {name} is not UTF-8") from None


def _coerce(field: str, value: Any, origin: str) -> Any:
    """Turn text from env/CLI into the shape the model expects (lists, env maps)."""
    if field in LIST_FIELDS:
        sep = os.pathsep if field == "plugin_dirs" and isinstance(value, str) and origin.startswith("env") else ","
        return _split_list(value, sep)
    if field == "vars":
        # A variable is KEY=VALUE; unlike job_env, a word without "=" is not the name of a file to read.
        for item in [value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else ():
            if isinstance(item, str) and item.strip() and "=" not in item:
                raise ConfigError(field, origin, f"{item.strip()!r} is not KEY=VALUE")
    if field == "job_env" or field == "vars":
        return parse_job_env(value, field=field, origin=origin)
    if field == "workspace_root" and isinstance(value, str) and value and not value.startswith("/") \
            and not origin.startswith("argument"):
        return os.path.abspath(value)  # `--workspace-root ../ws`: relative to the current directory
    if field in ("source_url", "ci_source_url"):
        from runnerlib.local_checkout import absolute_source

        return absolute_source(value)  # `--source-url .`: relative to the current directory
    return value


def env_layer(environ: Mapping[str, str]) -> Layer:
    """The REACTORCIDE_* (and LOG_LEVEL / LOG_FORMAT) variables as a layer."""
    layer = Layer("env")
    names = _field_names()
    for field in sorted(names | {"git_url", "git_ref"}):
        candidates = ENV_ALIASES.get(field, (ENV_PREFIX + field.upper(),))
        for var in candidates:
            if var in environ:
                raw = environ[var]
                if raw == "":
                    break  # an empty variable means unset, as the worker leaves them
                target = ALIASES.get(field, field)
                layer.put(field, _coerce(target, raw, f"env {var}"), f"env {var}")
                break
    return layer


def mapping_layer(name: str, values: Mapping[str, Any], origin_of: Any) -> Layer:
    """A layer from a mapping of field -> value; `origin_of(field)` names each value's origin."""
    layer = Layer(name)
    known = _field_names() | set(ALIASES)
    for field, value in values.items():
        origin = origin_of(field)
        if field not in known:
            raise ConfigError(str(field), origin, f"unknown setting{_suggest(str(field), known)}")
        if value is None:
            continue
        target = ALIASES.get(field, field)
        layer.put(field, _coerce(target, value, origin), origin)
    return layer


def _suggest(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------------------------------------
# Job files


class JobFileModel(BaseModel):
    """The schema of a job file: the job's settings (any JobConfig field) plus its steps."""

    model_config = ConfigDict(extra="allow", title="runnerlib job file")

    name: str | None = Field(None, description="Job name.")
    vars: dict[str, str] = Field(default_factory=dict, description="Variables for step conditions.")
    steps: list[StepSpec] | dict[str, dict[str, Any]] | None = Field(
        None, description="A list of steps, or a mapping by step name.")
    secrets: Literal["all", "declared"] = Field(
        "all", description="declared: a trusted step gets only the secret variables its `secrets:` lists.")


def job_file_schema() -> dict[str, Any]:
    """JSON Schema of job files (settings + steps), as printed by `runnerlib config schema`."""
    schema = JobFileModel.model_json_schema()
    config_schema = JobConfig.model_json_schema()
    props = dict(config_schema.get("properties", {}))
    for alias, target in ALIASES.items():
        if target in props and alias not in ("name",):
            props[alias] = {**props[target], "description": f"Alias of {target}."}
    props.pop("job_name", None)
    props.pop("dry_run", None)
    schema["properties"] = {**props, **schema["properties"]}
    schema["additionalProperties"] = False
    defs = {**config_schema.get("$defs", {}), **schema.get("$defs", {})}
    if defs:
        schema["$defs"] = defs
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def load_job_file(path: str | Path) -> tuple[Layer, Job | None, Document]:
    """Read a job file: its settings as a layer (origins file:line) and its steps as a Job (or None)."""
    document = load_document(path)
    data = document.data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise JobDefinitionError(f"{document.where()}: a job file is a mapping of settings and steps")
    data = dict(data)
    steps = data.pop("steps", None)
    secrets = data.pop("secrets", "all")
    if steps is None and secrets != "all":
        raise JobDefinitionError(f"{document.where(('secrets',))}: secrets: applies to the steps of a job file, "
                                 "and this one has no `steps:`")
    layer = mapping_layer("file", data, lambda field: document.where((field,)))
    job: Job | None = None
    if steps is not None:
        name = data.get("name") or data.get("job_name") or Path(document.path).stem
        try:
            job = Job(str(name), vars=layer.values.get("vars") or {}, secrets=secrets)
        except JobDefinitionError as exc:
            raise JobDefinitionError(f"{document.where(('name',))}: {exc}") from None
        steps_from_data(job, steps, document)
        job.source_file = Path(os.path.abspath(document.path))
    return layer, job, document


# ---------------------------------------------------------------------------------------------------------
# The hierarchy


def build_config(layers: list[Layer], *, check_paths: bool = True) -> JobConfig:
    """Merge layers (lowest first), validate, fill derived defaults, check rules and paths."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for layer in layers:
        for field, value in layer.values.items():
            merged[field] = value
            origins[field] = layer.origins[field]
    from runnerlib.local_checkout import infer_source_types

    infer_source_types(merged, origins)
    try:
        config = JobConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "config"
        raise ConfigError(field, origins.get(field, "default"), _pydantic_rule(err)) from None
    config._origins.update(origins)
    fill_derived(config)
    config.check_rules()
    if check_paths:
        check_config_paths(config)
    return config


def _pydantic_rule(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    rest = ".".join(str(p) for p in err.get("loc", ())[1:])
    return f"{rest}: {msg}" if rest else msg


def fill_derived(config: JobConfig) -> None:
    """Fill the directories left unset from workspace_root (src, ci, artifacts, triggers.json; job_dir from
    code_dir)."""
    root = config.workspace_root.rstrip("/") or "/"
    derived = {"code_dir": f"{root}/src", "ci_dir": f"{root}/ci", "artifacts_dir": f"{root}/artifacts",
               "triggers_file": f"{root}/triggers.json"}
    for field, value in derived.items():
        if getattr(config, field) is None:
            config.set(field, value, f"default (workspace_root/{Path(value).name})")
    if config.job_dir is None:
        config.set("job_dir", config.code_dir, "default (code_dir)")


def check_config_paths(config: JobConfig) -> None:
    """Workspace paths through security.paths.check_config_path: inside the workspace root, no `..`, no
    symlinked components. Values are replaced by their normalised absolute form."""
    from runnerlib.security import paths

    root = config.workspace_root
    if not os.path.isabs(root):
        raise ConfigError("workspace_root", config.origin("workspace_root"), "must be an absolute path")
    if ".." in root.split("/"):
        raise ConfigError("workspace_root", config.origin("workspace_root"), "must not contain '..'")
    for field in WORKSPACE_PATH_FIELDS:
        value = getattr(config, field)
        if value is None:
            continue
        try:
            checked = paths.check_config_path(field, value, root)
        except paths.PathPolicyError as exc:
            raise ConfigError(field, config.origin(field), getattr(exc, "rule", str(exc))) from None
        if str(checked) != value:
            setattr(config, field, str(checked))
    checked_dirs = []
    for value in config.plugin_dirs:
        try:
            checked_dirs.append(str(paths.check_config_path("plugin_dirs", value, root)))
        except paths.PathPolicyError as exc:
            raise ConfigError("plugin_dirs", config.origin("plugin_dirs"), getattr(exc, "rule", str(exc))) from None
    if checked_dirs != config.plugin_dirs:
        config.plugin_dirs = checked_dirs


def get_config(
    *,
    job_file: str | Path | Layer | None = None,
    environ: Mapping[str, str] | None = None,
    cli: Mapping[str, tuple[Any, str]] | None = None,
    check_paths: bool = True,
    **overrides: Any,
) -> JobConfig:
    """The effective configuration: defaults < job file < environment < CLI options < `overrides`.

    `environ` defaults to os.environ; `cli` maps field -> (value, option name) as the CLI passes them;
    `overrides` are keyword arguments (JobConfig fields or the aliases git_url, git_ref, plugin_dir).
    None values are ignored at every level. Raises ConfigError (field, origin, rule) on anything wrong.

    >>> get_config(job_command="echo hi", workspace_root="/tmp/ws", environ={}).code_dir
    '/tmp/ws/src'
    """
    layers: list[Layer] = []
    if isinstance(job_file, Layer):
        layers.append(job_file)  # already read (run-job reads the file once for settings and steps)
    elif job_file is not None:
        layers.append(load_job_file(job_file)[0])
    layers.append(env_layer(os.environ if environ is None else environ))
    if cli:
        layers.append(mapping_layer("cli", {k: v[0] for k, v in cli.items()},
                                    lambda field: f"option {cli[field][1]}"))
    if overrides:
        layers.append(mapping_layer("arguments", overrides, lambda field: f"argument {field}"))
    return build_config(layers, check_paths=check_paths)


def render_config(config: JobConfig, *, mask: Any = None) -> list[tuple[str, str, str]]:
    """(field, shown value, origin) for every field; secret fields as ***, then `mask` over the text, and URL
    credentials redacted."""
    from runnerlib.security.secret_sources import redact_url_credentials

    rows = []
    for field in type(config).model_fields:
        value = getattr(config, field)
        if field in SECRET_FIELDS and value:
            shown = "***" if not isinstance(value, list) else ",".join("***" for _ in value)
        elif value is None:
            shown = "-"
        elif isinstance(value, (list, dict)):
            import json

            shown = json.dumps(value, sort_keys=True)
        else:
            shown = str(value)
        if mask is not None:
            shown = mask(shown)
        # URL credentials from any origin (option, file, environment): not only those a registry knows.
        shown = redact_url_credentials(shown)
        rows.append((field, shown, config.origin(field)))
    return rows
