"""Files from the untrusted trees configure nothing trusted: job files, settings files, workflow files.

A pull request controls /job/src; untrusted steps write it, its untrusted copy and /job/artifacts. A file in one
of those trees that the runner is told to read (`run-job FILE`, `run --config-file FILE`, `run --job J
--workflow-file FILE`) is held to two rules:

1. it may declare only untrusted steps (its commands would otherwise run with the secrets); `--untrusted` runs
   every step sandboxed;
2. whatever the steps, it may set only the shape of the job (UNTRUSTED_FILE_FIELDS: command, environment,
   variables, timeouts, retries, concurrency, log format), and its steps' limits no higher than the untrusted
   defaults (a pull request's job file would otherwise lift the limits that keep a fork bomb off the machine).
   Everything runnerlib itself obeys is refused: the workspace layout (moving `workspace_root` would also move
   the trees this check looks in), sources and the CI source (whose plugins run inside the runner), plugins,
   secrets, the coordinator, the triggers file, the work directory, container mode.

Where the trees are is decided without the file: the caller passes the trees of the configuration built
without it too (`extra_trees`), so a file cannot move them out from under itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runnerlib.config import DEFAULT_WORKSPACE_ROOT, ConfigError, JobConfig, env_layer
from runnerlib.jobs import Job

# Settings a file from an untrusted tree may set: what the (sandboxed) job runs, nothing runnerlib obeys.
UNTRUSTED_FILE_FIELDS = frozenset({
    "job_name", "job_command", "job_args", "job_env", "vars", "untrusted", "dry_run", "step_timeout",
    "job_timeout", "step_retries", "concurrency", "kill_grace", "log_format", "log_level", "color",
})


LAYOUT_FIELDS = ("workspace_root", "code_dir", "artifacts_dir")


def untrusted_trees(config: JobConfig | Mapping[str, Any]) -> list[str]:
    """The trees untrusted steps may write: the source tree (and its untrusted copy) and the artifacts.

    `config` may also be a mapping of the layout settings (workspace_root, code_dir, artifacts_dir; missing
    ones take their defaults), for a layout judged without some of the configuration's layers."""
    get = config.get if isinstance(config, Mapping) else lambda name: getattr(config, name)
    root = get("workspace_root") or DEFAULT_WORKSPACE_ROOT
    return [t for t in dict.fromkeys([get("code_dir"), os.path.join(root, "src"), os.path.join(root, ".untrusted"),
                                      get("artifacts_dir") or os.path.join(root, "artifacts")]) if t]


def layout_without_files(cli: Mapping[str, tuple[Any, str]], overrides: Mapping[str, Any],
                         environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The layout settings from the environment, the options and `overrides` alone (no file): where the
    untrusted trees are, as no file being judged can move them. Rules are not checked here: a rule that needs
    a file's settings must not hide the trees."""
    merged: dict[str, Any] = {}
    for values in (env_layer(os.environ if environ is None else environ).values,
                   {k: v[0] for k, v in cli.items()}, overrides):
        merged.update({k: v for k, v in values.items() if k in LAYOUT_FIELDS and v is not None})
    return merged


def _tree_of(path: str, trees: Iterable[str]) -> str | None:
    real = os.path.realpath(path)
    for tree in trees:
        base = os.path.realpath(tree)
        if real == base or real.startswith(base.rstrip("/") + "/"):
            return tree
    return None


def check_job_origin(job: Job, config: JobConfig, files: Mapping[str, str | None] | None = None, *,
                     extra_trees: Iterable[str] = (), fields_from: Mapping[str, Iterable[str]] | None = None) -> None:
    """Refuse (ConfigError) what a file in an untrusted tree may not do: trusted steps, runner settings.

    `files` (label -> path): the files the job came from; by default the job file (`job.source_file`).
    `extra_trees`: untrusted trees as the configuration without these files has them. `fields_from`
    (label -> field names): settings a file gave that the configuration records under another origin (a
    workflow file's `code_dir`); a file's own layer is found by its origins.
    """
    if files is None:
        files = {"the job file": None if job.source_file is None else str(job.source_file)}
    trees = list(dict.fromkeys([*untrusted_trees(config), *extra_trees]))
    for label, path in files.items():
        tree = None if path is None else _tree_of(path, trees)
        if tree is None:
            continue
        where = f"{label} lies in {tree}, an untrusted source tree (untrusted steps write it)"
        trusted = [] if config.untrusted else [s.name for s in job.steps if s.trust == "trusted"]
        if trusted:
            raise ConfigError("steps", str(path),
                              f"{where}, so its steps may not be trusted (trusted: {', '.join(trusted)}); pass "
                              "--untrusted to run every step sandboxed, or keep the file in the CI tree")
        for step in job.steps:
            raised = _above_untrusted_defaults(step.limits)
            if raised:
                raise ConfigError("limits", step.origin or str(path),
                                  f"{where}, so step {step.name!r} may not raise its limits above the untrusted "
                                  f"defaults ({raised}); lower ones are taken")
        prefix = f"{Path(str(path))}:"
        given = {f for f in type(config).model_fields if config.origin(f).startswith(prefix)}
        given.update((fields_from or {}).get(label, ()))
        for field in sorted(given - UNTRUSTED_FILE_FIELDS):
            raise ConfigError(field, config.origin(field) if field in config.model_fields else str(path),
                              f"{where}, so it may set only the job's shape ({', '.join(sorted(UNTRUSTED_FILE_FIELDS))}); "
                              "runnerlib does not take its own settings from there")


def _above_untrusted_defaults(limits: Any) -> str:
    """`memory=1 TiB > 8 GiB, ...` for the limits of `limits` (a StepLimits or None) above the untrusted defaults."""
    from runnerlib.security.limits import UNTRUSTED_DEFAULTS, describe_limit

    if limits is None:
        return ""
    return ", ".join(f"{name}={describe_limit(name, value)} > {describe_limit(name, getattr(UNTRUSTED_DEFAULTS, name))}"
                     for name, value in limits.items()
                     if getattr(UNTRUSTED_DEFAULTS, name) is not None and value > getattr(UNTRUSTED_DEFAULTS, name))
