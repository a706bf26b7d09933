"""`runnerlib workflow validate|list|run|verify` and `runnerlib trigger`: options in, library calls out."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from runnerlib.cli.app import main
from runnerlib.exit_codes import EXIT_CONFIG, EXIT_INTERRUPTED


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=option)
        out[name] = value
    return out


def _changed_paths(paths: tuple[str, ...], from_file: str | None) -> list[str] | None:
    if not paths and from_file is None:
        return None
    found = list(paths)
    if from_file is not None:
        handle = sys.stdin if from_file == "-" else open(from_file, encoding="utf-8")  # noqa: SIM115
        with handle:
            found += [line.strip() for line in handle if line.strip()]
    return found


@main.group()
def workflow() -> None:
    """Workflow files (.reactorcide/workflows/*.yaml): validate, list, run locally, verify triggers."""


@workflow.command("validate")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--dir", "root", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Repository whose .reactorcide/workflows/ is validated when no FILES are given.")
def validate_cmd(files: tuple[str, ...], root: str) -> None:
    """Check workflow files against the schema; errors name file:line and the field."""
    from runnerlib.workflow.models import WorkflowError, load_workflow
    from runnerlib.workflow.select import discover_workflows

    paths = [Path(f) for f in files] or discover_workflows(root)
    if not paths:
        raise click.ClickException(f"no workflow files in {Path(root) / '.reactorcide' / 'workflows'}")
    failed = 0
    for path in paths:
        try:
            wf = load_workflow(path)
        except WorkflowError as exc:
            failed += 1
            click.echo(f"runnerlib: error: {exc}", err=True)
        else:
            click.echo(f"ok: {path} ({wf.effective_id}: {len(wf.jobs)} job(s))")
    if failed:
        sys.exit(EXIT_CONFIG)  # as `runnerlib validate`


@workflow.command("list")
@click.option("--dir", "root", default=".", show_default=True, type=click.Path(file_okay=False))
@click.option("--event", help="Event type: push, pull_request_opened, ..., tag_created.")
@click.option("--branch", help="Branch name the event is for.")
@click.option("--changed-path", "changed", multiple=True, help="A changed path (repeatable).")
@click.option("--changed-paths-from", "changed_from", help="File with one changed path a line ('-': stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(root: str, event: str | None, branch: str | None, changed: tuple[str, ...],
             changed_from: str | None, as_json: bool) -> None:
    """List workflows and whether this event/branch/changed paths would start each."""
    from runnerlib.workflow.select import load_workflows, select_workflows

    decisions = select_workflows(load_workflows(root), event=event, branch=branch,
                                 changed_paths=_changed_paths(changed, changed_from))
    if as_json:
        click.echo(json.dumps([{"id": d.workflow.effective_id, "name": d.workflow.name,
                                "file": d.workflow.source, "selected": d.selected, "reason": d.reason}
                               for d in decisions], indent=2))
        return
    for d in decisions:
        click.echo(f"{'run ' if d.selected else 'skip'}  {d.workflow.effective_id:<24} {d.workflow.name}  "
                   f"({d.reason})")


@workflow.command("run")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--event", help="Event type to run for (the workflow's `on` must allow it).")
@click.option("--branch", help="Branch to run for.")
@click.option("--sha", help="Commit the run is for (REACTORCIDE_SHA).")
@click.option("--pr-number", help="Pull request number (REACTORCIDE_PR_NUMBER).")
@click.option("--changed-path", "changed", multiple=True, help="A changed path, for the paths filter.")
@click.option("--var", "variables", multiple=True, help="NAME=VALUE overriding a workflow var (repeatable).")
@click.option("--code-dir", type=click.Path(file_okay=False, exists=True),
              help="Source to run on [default: the repository holding FILE, else the current directory].")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Where workspaces, state, report.md and workflow-output.json go "
                   "[default: <code-dir>/.reactorcide/runs/<id>-<time>].")
@click.option("--max-parallel", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--launcher", type=click.Choice(["auto", "runnerlib", "shell"]), default="auto",
              show_default=True, help="runnerlib: each job via `runnerlib run` (as the worker does); "
                                      "shell: the command directly.")
@click.option("--share-source", is_flag=True, help="Run every job in --code-dir itself instead of a copy.")
@click.option("--force", is_flag=True, help="Run even if the workflow's on/paths filters do not match the "
                                           "--event/--branch/--changed-path given.")
@click.option("--engine", type=click.Choice(["process", "podman", "docker", "kubernetes"]), default="process",
              show_default=True, help="process: each job as a process here; podman/docker: each job in a "
                                      "container of its image; kubernetes: each job as a Kubernetes Job.")
@click.option("--namespace", default="default", show_default=True, help="Kubernetes namespace (--engine kubernetes).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, exists=True),
              help="Kubeconfig file [default: $KUBECONFIG, ~/.kube/config, or the pod's service account].")
@click.option("--context", "kube_context", help="Kubeconfig context.")
@click.option("--runner-image", help="Image of jobs that name none (container and Kubernetes engines) "
                                     "[default: localhost/reactorcide/runner:latest].")
@click.option("--source-url", help="Repository each Kubernetes job prepares in /job/src.")
@click.option("--source-ref", help="Ref of --source-url.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write a self-contained HTML run report here.")
@click.option("--timestamps", is_flag=True, envvar="REACTORCIDE_TIMESTAMPS",
              help="A UTC timestamp before every line of the jobs' output (env REACTORCIDE_TIMESTAMPS).")
def run_cmd(file: str, event: str | None, branch: str | None, sha: str | None, pr_number: str | None,
            changed: tuple[str, ...], variables: tuple[str, ...], code_dir: str | None, run_dir: str | None,
            max_parallel: int, launcher: str, share_source: bool, force: bool, engine: str, namespace: str,
            kubeconfig: str | None, kube_context: str | None, runner_image: str | None,
            source_url: str | None, source_ref: str | None, report: str | None, timestamps: bool = False) -> None:
    """Run a whole workflow locally: each job in its own workspace, the DAG in parallel."""
    from runnerlib.workflow.api import job_registry
    from runnerlib.workflow.local_runner import LocalWorkflowRunner, render_tree
    from runnerlib.workflow.models import load_workflow
    from runnerlib.workflow.select import workflow_matches

    wf = load_workflow(file)
    # The filters apply to the event described; with none described the user asked for this workflow.
    described = bool(event or branch or changed)
    decision = workflow_matches(wf, event=event, branch=branch, changed_paths=list(changed) or None)
    if described and not decision.selected and not force:
        click.echo(f"workflow {wf.effective_id} does not start for this event: {decision.reason} "
                   "(--force runs it anyway)")
        return
    if code_dir is None:
        resolved = Path(file).resolve()
        code_dir = str(resolved.parents[2]) if resolved.parent.name == "workflows" and \
            resolved.parent.parent.name == ".reactorcide" else os.getcwd()
    registry = job_registry(os.environ)
    common: dict = dict(code_dir=code_dir, run_dir=run_dir, registry=registry, event=event, branch=branch, sha=sha,
                        pr_number=pr_number, variables=_pairs(variables, "--var"), max_parallel=max_parallel)
    if timestamps:
        from runnerlib.execution.timestamps import stamped

        common["echo"] = stamped(click.echo)
    if engine == "kubernetes":
        from runnerlib.workflow.kubernetes import DEFAULT_RUNNER_IMAGE, RenderOptions
        from runnerlib.workflow.kubernetes_runner import KubernetesWorkflowRunner, kubernetes_api

        options = RenderOptions(event=event, branch=branch, sha=sha, pr_number=pr_number,
                                variables=common["variables"], runner_image=runner_image or DEFAULT_RUNNER_IMAGE,
                                source_url=source_url, source_ref=source_ref)
        runner: LocalWorkflowRunner = KubernetesWorkflowRunner(
            wf, api_client=kubernetes_api(kubeconfig=kubeconfig, context=kube_context), namespace=namespace,
            options=options, **common)
    elif engine in ("podman", "docker"):
        from runnerlib.workflow.container_runner import ContainerWorkflowRunner

        runner = ContainerWorkflowRunner(wf, engine=engine, runner_image=runner_image,
                                         copy_source=not share_source, **common)
    else:
        runner = LocalWorkflowRunner(wf, launcher=launcher, copy_source=not share_source, **common)
    result = _run_cancellable(runner)
    click.echo("")
    click.echo(registry.mask_text(render_tree(result.nodes)))
    click.echo("")
    click.echo(registry.mask_text(result.summary()))
    click.echo(f"report: {result.report_file}")
    click.echo(f"outputs: {result.output_file}")
    if report:
        from runnerlib.observability.report import write_workflow_report

        try:
            write_workflow_report(result, report, mask=registry.mask_text)
            click.echo(f"html report: {report}")
        except OSError as exc:
            click.echo(f"runnerlib: error: report {report}: cannot write: {exc.strerror or exc}", err=True)
    sys.exit(EXIT_INTERRUPTED if runner.interrupted else result.exit_code)


@workflow.command("verify")
@click.option("--public-key", required=True,
              help='The job\'s key: "ed25519:<base64>", PEM, or a file (e.g. <workspace>/trigger-signing.pub).')
@click.option("--job-id", help="Also require the messages to be signed for this job id.")
def verify_cmd(public_key: str, job_id: str | None) -> None:
    """Read a job's stdout on stdin; print each verified trigger document (one JSON a line) on stdout.

    Lines that claim to be trigger messages but do not verify are reported on stderr, and the exit status
    is 1 if there was any. Other lines are ignored.
    """
    from runnerlib.workflow.signing import (
        InvalidTriggerMessage,
        is_trigger_line,
        load_public_key,
        verify_message,
    )

    key = load_public_key(public_key)
    rejected = 0
    for number, raw in enumerate(sys.stdin.buffer, 1):
        if not is_trigger_line(raw):
            continue
        try:
            document = verify_message(raw.rstrip(b"\r\n"), key, job_id=job_id)
        except InvalidTriggerMessage as exc:
            rejected += 1
            click.echo(f"rejected line {number}: {exc}", err=True)
            continue
        click.echo(json.dumps(document, sort_keys=True))
    if rejected:
        sys.exit(1)


@main.command("trigger")
@click.argument("job_name")
@click.option("--env", "env", multiple=True, help="NAME=VALUE for the triggered job (repeatable).")
@click.option("--depends-on", multiple=True, help="A job it waits for (repeatable).")
@click.option("--condition", type=click.Choice(["all_success", "any_failed", "always"]))
@click.option("--job-command", help="Command of the triggered job.")
@click.option("--container-image", help="Image of the triggered job.")
@click.option("--source-type")
@click.option("--source-url")
@click.option("--source-ref")
@click.option("--ci-source-type")
@click.option("--ci-source-url")
@click.option("--ci-source-ref")
@click.option("--priority", type=int)
@click.option("--timeout", help='Seconds, or a duration like "30m".')
@click.option("--triggers-file", help="Default: REACTORCIDE_TRIGGERS_FILE, else <workspace>/triggers.json.")
def trigger_cmd(job_name: str, env: tuple[str, ...], depends_on: tuple[str, ...], condition: str | None,
                triggers_file: str | None, **fields: str | int | None) -> None:
    """Trigger a follow-up job (as runnerlib.trigger_job does); prints the operation id."""
    from runnerlib.workflow.api import trigger_job

    options = {k: v for k, v in fields.items() if v is not None}
    operation_id = trigger_job(job_name, env=_pairs(env, "--env"), depends_on=list(depends_on),
                               condition=condition, triggers_file_path=triggers_file, **options)
    click.echo(operation_id)


def _run_cancellable(runner: Any) -> Any:
    """Run a workflow; SIGTERM (the worker's cancellation) cancels it as Ctrl-C does, so running jobs stop
    (Kubernetes Jobs are deleted) before the command exits."""
    import signal

    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: runner.cancel())
    try:
        return runner.run()
    finally:
        signal.signal(signal.SIGTERM, previous)


@workflow.command("render")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--target", type=click.Choice(["kubernetes"]), default="kubernetes", show_default=True,
              help="What to render the workflow's jobs as.")
@click.option("--event", help="Event type the run is for (REACTORCIDE_EVENT_TYPE).")
@click.option("--branch", help="Branch the run is for.")
@click.option("--sha", help="Commit the run is for.")
@click.option("--pr-number", help="Pull request number.")
@click.option("--var", "variables", multiple=True, help="NAME=VALUE overriding a workflow var (repeatable).")
@click.option("--runner-image", help="Image of jobs that name none [default: localhost/reactorcide/runner:latest].")
@click.option("--namespace", help="Namespace written into each manifest.")
@click.option("--run-id", help="Run id for names and labels [default: random].")
@click.option("--source-url", help="Repository each job prepares in /job/src.")
@click.option("--source-ref", help="Ref of --source-url.")
@click.option("--ci-source-url", help="Trusted CI repository each job prepares in /job/ci.")
@click.option("--ci-source-ref", help="Ref of --ci-source-url.")
@click.option("--output", "output_dir", type=click.Path(file_okay=False),
              help="Write one <job>.yaml per job here instead of one stream to stdout.")
def render_cmd(file: str, target: str, event: str | None, branch: str | None, sha: str | None,
               pr_number: str | None, variables: tuple[str, ...], runner_image: str | None,
               namespace: str | None, run_id: str | None, source_url: str | None, source_ref: str | None,
               ci_source_url: str | None, ci_source_ref: str | None, output_dir: str | None) -> None:
    """Render each workflow job as a Kubernetes batch/v1 Job manifest (no secret values, only references)."""
    from runnerlib.workflow.kubernetes import DEFAULT_RUNNER_IMAGE, RenderOptions, render_workflow, to_yaml
    from runnerlib.workflow.models import load_workflow

    options = RenderOptions(
        event=event, branch=branch, sha=sha, pr_number=pr_number, variables=_pairs(variables, "--var"),
        runner_image=runner_image or DEFAULT_RUNNER_IMAGE, namespace=namespace, run_id=run_id,
        source_url=source_url, source_ref=source_ref, ci_source_url=ci_source_url, ci_source_ref=ci_source_ref)
    manifests = render_workflow(load_workflow(file), options)
    if output_dir is None:
        click.echo(to_yaml(manifests), nl=False)
        return
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for manifest in manifests:
        path = out / f"{manifest['metadata']['name']}.yaml"
        path.write_text(to_yaml([manifest]), encoding="utf-8")
        click.echo(str(path))
