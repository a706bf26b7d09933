"""`runnerlib run`, `run-job`, `config` (and `config schema`), `validate`: parse options, call the executor."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runnerlib.cli.app import main, set_error_masker

EXIT_CODES_HELP = """\b
Exit status: 0 success; the failing step's own exit code; 78 a configuration,
command-line or job-file error (nothing ran); 1 a plugin, source or runner
failure; 124 a step or the job timed out; 126 a step was refused by the
sandbox policy; 130 Ctrl-C (a second one kills the steps at once); 143
cancelled by SIGTERM (steps get SIGTERM, then SIGKILL after the grace)."""

# (option declarations, config field, click kwargs). Every option defaults to None so that a value absent
# from the command line leaves the lower levels (env, job file, defaults) in charge.
_OPTIONS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--workspace-root",), "workspace_root", {"help": "Job workspace (default /job)."}),
    (("--code-dir",), "code_dir", {"help": "Source tree (default <workspace>/src)."}),
    (("--job-dir",), "job_dir", {"help": "Directory the job command runs in (default code dir)."}),
    (("--work-dir",), "work_dir", {"help": "Directory for runnerlib's own scratch files (socket, temp)."}),
    (("--job-command",), "job_command", {"help": "Shell command of the job."}),
    (("--job-name",), "job_name", {"help": "Name of the job (default 'job')."}),
    (("--job-env",), "job_env", {"multiple": True, "help": "KEY=VALUE, or a file of such lines (repeatable)."}),
    (("--var",), "vars", {"multiple": True, "help": "KEY=VALUE job variable for step conditions (repeatable)."}),
    (("--runner-image",), "runner_image", {"help": "Run each step in a container of this image (container mode)."}),
    (("--container-engine",), "container_engine", {"type": click.Choice(["auto", "podman", "docker"]),
                                                   "help": "Engine of container mode [default: auto]."}),
    (("--container",), "container", {"is_flag": True, "help": "Run the job in a container of --runner-image."}),
    (("--secret-values-list",), "secret_values_list",
     {"help": "Comma-separated secret values (prefer the env variable: argv is world-readable)."}),
    (("--secret-env-names",), "secret_env_names", {"help": "Comma-separated names of secret env variables."}),
    (("--secrets-file",), "secrets_file", {"help": "File of secrets (JSON, YAML or KEY=VALUE)."}),
    (("--secrets-fd",), "secrets_fd", {"type": int, "help": "Inherited file descriptor to read secrets from."}),
    (("--no-known-formats",), "mask_known_formats",
     {"is_flag": True, "flag_value": False, "help": "Do not mask well-known credential formats nobody registered "
                                                    "(mask_known_formats: false)."}),
    (("--plugin-dir",), "plugin_dirs", {"multiple": True, "help": "Trusted plugin directory (repeatable)."}),
    (("--source-type",), "source_type", {"type": click.Choice(["git", "copy", "tarball", "hg", "svn", "none"])}),
    (("--source-url",), "source_url", {"help": "Untrusted source to prepare in <workspace>/src."}),
    (("--source-ref",), "source_ref", {}),
    (("--ci-source-type",), "ci_source_type",
     {"type": click.Choice(["git", "copy", "tarball", "hg", "svn", "none"])}),
    (("--ci-source-url",), "ci_source_url", {"help": "Trusted CI code to prepare in <workspace>/ci."}),
    (("--ci-source-ref",), "ci_source_ref", {}),
    (("--git-url",), "git_url", {"help": "Same as --source-type git --source-url URL."}),
    (("--git-ref",), "git_ref", {"help": "Same as --source-ref REF."}),
    (("--untrusted",), "untrusted", {"is_flag": True, "help": "Run the job command sandboxed, without secrets "
                                                             "(env REACTORCIDE_UNTRUSTED)."}),
    (("--network",), "network", {"help": "Network of the steps that set none: full, none, loopback, or "
                                          "host:port,host:port (env REACTORCIDE_NETWORK)."}),
    (("--allow-insecure-transport",), "allow_insecure_transport",
     {"is_flag": True, "help": "Allow a plain-HTTP coordinator URL."}),
    (("--dry-run",), "dry_run", {"is_flag": True, "help": "Validate and print the plan; run nothing."}),
    (("--job-id",), "job_id", {}),
    (("--step-timeout",), "step_timeout", {"type": float, "help": "Default step timeout in seconds."}),
    (("--job-timeout",), "job_timeout", {"type": float, "help": "Timeout of the whole job in seconds."}),
    (("--retries",), "step_retries", {"type": int, "help": "Default retries of a failed step."}),
    (("--concurrency",), "concurrency", {"type": int, "help": "Steps run at the same time, at most."}),
    (("--kill-grace",), "kill_grace", {"type": float, "help": "Seconds between SIGTERM and SIGKILL of a "
                                                            "cancelled step (default 10)."}),
    (("--limit",), "limits", {"multiple": True, "help": "A resource limit of every step, NAME=VALUE: pids, memory "
                                                      "(512M, 1G), cpu_seconds, file_size, open_files, cpus (untrusted steps) "
                                                      "(repeatable; a step's own limits win)."}),
    (("--log-format",), "log_format", {"type": click.Choice(["text", "json"]), "help": "Env LOG_FORMAT."}),
    (("--log-level",), "log_level", {"type": click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                                          case_sensitive=False)}),
    (("--color",), "color", {"type": click.Choice(["auto", "always", "never"])}),
    (("--timestamps",), "timestamps", {"is_flag": True, "help": "A UTC timestamp before every console line "
                                                                "(env REACTORCIDE_TIMESTAMPS)."}),
    (("--log-timestamps/--no-log-timestamps",), "log_timestamps",
     {"help": "A UTC timestamp before every line of the step log files [default: off] "
                               "(env REACTORCIDE_LOG_TIMESTAMPS)."}),
    (("--metrics-file",), "metrics_file", {"help": "Write the job's Prometheus metrics here at the end "
                                                  "(node-exporter textfile; env REACTORCIDE_METRICS_FILE)."}),
    (("--metrics-push",), "metrics_push", {"help": "Push the job's metrics to this Pushgateway URL "
                                                  "(env REACTORCIDE_METRICS_PUSH)."}),
    (("--report",), "report", {"help": "Write a self-contained HTML run report to this file."}),
    (("--profile",), "profile", {"is_flag": True, "help": "Print each step's CPU, peak memory and I/O."}),
]


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every configuration option on a command."""
    for decls, field, kwargs in reversed(_OPTIONS):
        func = click.option(*decls, f"opt_{field}", default=None, **kwargs)(func)
    return func


def _cli_layer(params: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    out: dict[str, tuple[Any, str]] = {}
    for decls, field, _ in _OPTIONS:
        value = params.pop(f"opt_{field}", None)
        if value is None or value == ():
            continue
        if field in ("job_env", "plugin_dirs", "vars", "limits"):
            value = list(value)
        out[field] = (value, decls[0])
    return out


def _load(params: dict[str, Any], job_file: str | None = None, origins: dict[str, str | None] | None = None,
          from_workflow: tuple[str, ...] = (), **extra: Any) -> tuple[Any, Any]:
    """(config, job or None) from the hierarchy; a job file contributes settings and steps. `origins`: the
    files the job came from, checked by trust_origin.check_job_origin."""
    from runnerlib.config import get_config, load_job_file

    cli = _cli_layer(params)
    ctx = click.get_current_context(silent=True)
    if ctx is not None and (ctx.find_root().obj or {}).get("debug") and "log_level" not in cli:
        # `runnerlib --debug run`: debug logs too, and the /proc audit after each step.
        cli["log_level"] = ("DEBUG", "--debug")
    job = layer = None
    if job_file:
        layer, job, _doc = load_job_file(job_file)
    config = get_config(job_file=layer, cli=cli, **extra)
    if origins:
        from runnerlib.trust_origin import check_job_origin, layout_without_files, untrusted_trees

        # The trees as the configuration has them without the files: a file may not move them away from itself.
        base = layout_without_files(cli, {k: v for k, v in extra.items() if k not in from_workflow})
        check_job_origin(job or _job_of(config), config, origins, extra_trees=untrusted_trees(base),
                         fields_from={"--workflow-file": from_workflow})
    return config, job


def _job_of(config: Any) -> Any:
    """The one-step job of a configuration, or a job without steps when it has nothing to run (the missing
    command is reported later, where it always was)."""
    from runnerlib.config import ConfigError
    from runnerlib.jobs import Job
    from runnerlib.runner import simple_job

    try:
        return simple_job(config)
    except ConfigError:
        return Job("job")


def _run(config: Any, job: Any, *, read_stdin: bool = False) -> None:
    from runnerlib.runner import JobRunner

    _note_unknown_env()
    flags = tuple(decls[0] for decls, _f, kwargs in _OPTIONS if kwargs.get("is_flag")) + (
        "--secrets-stdin", "--debug")
    runner = JobRunner(config, job, read_stdin_secrets=read_stdin, argv=sys.argv[1:], argv_flags=flags)
    set_error_masker(runner.mask_text)
    try:
        code = runner.run()
    finally:
        sys.stdout.flush()
    sys.exit(code)


@main.command(context_settings={"ignore_unknown_options": False}, epilog=EXIT_CODES_HELP)
@config_options
@click.option("--config-file", "config_file", type=click.Path(dir_okay=False),
              help="A job file (YAML/JSON) of settings, below env and options in priority.")
@click.option("--job", "workflow_job", help="Run this job of --workflow-file.")
@click.option("--workflow-file", type=click.Path(dir_okay=False), help="Workflow file holding --job.")
@click.option("--secrets-stdin", is_flag=True, help="Read a secrets document from stdin.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(config_file: str | None, workflow_job: str | None, workflow_file: str | None, secrets_stdin: bool,
        command: tuple[str, ...], **params: Any) -> None:
    """Run one job: prepare sources, run the command (or `-- CMD ARGS...`), mask every secret.

    \b
    Examples:
      runnerlib run --job-command "make test"
      runnerlib run --git-url https://github.com/user/repo.git --git-ref main --job-command "npm test"
      runnerlib run --workspace-root /tmp/ws -- python -m pytest -q
      runnerlib run --job deploy --workflow-file .reactorcide/workflows/ci.yaml
    """
    extra: dict[str, Any] = {}
    if command:
        extra["job_args"] = list(command)
    job = None
    origins = {"--config-file": config_file}
    from_workflow: tuple[str, ...] = ()
    if workflow_job or workflow_file:
        if not (workflow_job and workflow_file):
            raise click.UsageError("--job and --workflow-file go together")
        settings = _workflow_job(workflow_file, workflow_job)
        from_workflow = tuple(k for k in settings if not k.startswith("_"))
        extra.update(settings)
        job_file = extra.pop("_job_file", None)
        if job_file:
            config_file = job_file
            origins = {"the workflow's job_file": job_file}
        origins["--workflow-file"] = workflow_file
    working_dir = extra.pop("_working_dir", None)
    # The command and settings came from these files: held to the rules of trust_origin.py.
    config, file_job = _load(params, config_file, origins, from_workflow, **extra)
    job = job or file_job
    if working_dir and job is None:
        from runnerlib.runner import simple_job

        job = simple_job(config)
        job.steps[0].working_dir = working_dir  # relative to job_dir, like any step's
    _run(config, job, read_stdin=secrets_stdin)


def _workflow_job(workflow_file: str, name: str) -> dict[str, Any]:
    """Settings for one job of a workflow file (its command, environment, timeout, dirs)."""
    from runnerlib.workflow.models import load_workflow

    workflow = load_workflow(workflow_file)
    job = workflow.jobs.get(name)
    if job is None:
        known = ", ".join(sorted(workflow.jobs)) or "none"
        raise click.UsageError(f"--job {name}: no such job in {workflow_file} (jobs: {known})")
    settings: dict[str, Any] = {"job_name": name if _simple_name(name) else "job"}
    if job.job_file:
        settings["_job_file"] = job.job_file if Path(job.job_file).is_absolute() else \
            str(_repository_root(Path(workflow_file)) / job.job_file)
    elif job.command:
        settings["job_command"] = job.command
    else:
        raise click.UsageError(f"--job {name}: the job has neither command nor job_file")
    if job.environment:
        settings["job_env"] = dict(job.environment)
    if workflow.vars:
        settings["vars"] = dict(workflow.vars)
    if job.timeout:
        settings["step_timeout"] = float(job.timeout)
    for field in ("code_dir", "job_dir"):
        if getattr(job, field):
            settings[field] = getattr(job, field)
    if job.working_dir:
        settings["_working_dir"] = job.working_dir
    return settings


def _repository_root(workflow_file: Path) -> Path:
    """job_file paths are relative to the repository: <repo>/.reactorcide/workflows/x.yaml -> <repo>."""
    here = workflow_file.resolve().parent
    if here.name == "workflows" and here.parent.name == ".reactorcide":
        return here.parent.parent
    return here


def _simple_name(name: str) -> bool:
    import re

    return bool(re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", name))


@main.command("run-job", epilog=EXIT_CODES_HELP)
@config_options
@click.option("--secrets-stdin", is_flag=True, help="Read a secrets document from stdin.")
@click.argument("job_file", type=click.Path(dir_okay=False))
def run_job_cmd(job_file: str, secrets_stdin: bool, **params: Any) -> None:
    """Run the steps of a YAML/JSON job file (a DAG; see `runnerlib config schema`)."""
    config, job = _load(params, job_file, {"the job file": job_file})
    if job is None:
        raise click.UsageError(f"{job_file}: no steps: a job file for run-job needs `steps:`")
    _run(config, job, read_stdin=secrets_stdin)


@main.group("config", invoke_without_command=True)
@config_options
@click.option("--config-file", "config_file", type=click.Path(dir_okay=False), help="A job file to include.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def config_cmd(ctx: click.Context, config_file: str | None, as_json: bool, **params: Any) -> None:
    """Print the effective configuration with the origin of each value (secrets masked)."""
    if ctx.invoked_subcommand is not None:
        return
    from runnerlib.config import render_config

    config, _job = _load(params, config_file, check_paths=False)
    mask = _masker(config)
    _note_unknown_env()
    from runnerlib.local_checkout import per_run_workspace

    if per_run_workspace(config):
        click.echo("note: no workspace given and /job is not a job's mount here: `run` and `run-job` would use a "
                   "per-run workspace under the temp dir (docs/getting-started.md)", err=True)
    rows = render_config(config, mask=mask)
    if as_json:
        click.echo(json.dumps({f: {"value": v, "origin": o} for f, v, o in rows}, indent=2))
        return
    width = max(len(f) for f, _, _ in rows)
    vwidth = min(60, max(len(v) for _, v, _ in rows))
    for field, value, origin in rows:
        click.echo(f"{field.ljust(width)}  {value.ljust(vwidth)}  {origin}")


def _masker(config: Any) -> Callable[[str], str]:
    from runnerlib.security.registry import SecretRegistry
    from runnerlib.security.secret_sources import load_secrets

    registry = SecretRegistry()
    registry.add_many(config.secret_values(), source="configuration")
    try:
        load_secrets(registry, job_env=config.job_env, secret_env_names=config.secret_env_names or None)
    except Exception:  # noqa: BLE001 - showing the config must not depend on every secret source working
        pass
    set_error_masker(registry.mask_text)
    return registry.mask_text


def _note_unknown_env() -> None:
    import os

    from runnerlib.config import unknown_env_names

    for name, suggestion in unknown_env_names(os.environ):
        hint = f" (did you mean {suggestion}?)" if suggestion else ""
        click.echo(f"note: {name} is not a runnerlib setting and is ignored{hint}", err=True)


@config_cmd.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of job files."""
    from runnerlib.config import job_file_schema

    click.echo(json.dumps(job_file_schema(), indent=2, sort_keys=True))


@main.command("validate")
@config_options
@click.argument("job_file", required=False, type=click.Path(dir_okay=False))
def validate_cmd(job_file: str | None, **params: Any) -> None:
    """Check the configuration (and a job file's steps: names, dependencies, cycles, conditions) without
    running anything. Exit 0 when valid; 78 with one line naming the field, origin and rule otherwise."""
    from runnerlib.runner import check_job_origin, simple_job

    config, job = _load(params, job_file, {"the job file": job_file} if job_file else None)
    _masker(config)
    _note_unknown_env()
    if job is None:
        job = simple_job(config)
    if config.untrusted:
        job.force_untrusted()
    check_job_origin(job, config)
    order = job.validate(config.job_variables())
    levels = dag_levels(job, order)
    click.echo(f"valid: job {job.name!r}, {len(order)} step(s) in {len(levels)} level(s) "
               "(the steps of a level may run in parallel):")
    for number, names in enumerate(levels, 1):
        shown = []
        for name in names:
            step = job.step(name)
            after = f" after {', '.join(step.depends_on)}" if step.depends_on else ""
            cond = f" if {step.condition}" if step.condition != "on_success" else ""
            shown.append(f"{name}{after}{cond}" if (after or cond) else name)
        click.echo(f"  {number}. " + "; ".join(shown))


def dag_levels(job: Any, order: list[str]) -> list[list[str]]:
    """Steps by level: a step is one level below the deepest step it depends on (level 1: no dependencies)."""
    depth: dict[str, int] = {}
    for name in order:  # topological: dependencies come first
        depth[name] = 1 + max((depth[d] for d in job.step(name).depends_on), default=0)
    levels: list[list[str]] = [[] for _ in range(max(depth.values(), default=0))]
    for name in order:
        levels[depth[name] - 1].append(name)
    return levels
