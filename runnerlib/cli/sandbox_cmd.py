"""`runnerlib audit` and `runnerlib sandbox probe|policy|exec`: the sandbox from the command line."""

from __future__ import annotations

import json
import os
import sys

import click

from runnerlib.cli.app import main


@main.command()
@click.option("--pid", "pids", type=int, multiple=True, help="A process to scan (repeatable).")
@click.option("--session", type=int, default=None, help="Scan every process of this session id.")
@click.option("--root", type=int, default=None, help="Scan every descendant of this pid.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def audit(pids: tuple[int, ...], session: int | None, root: int | None, as_json: bool) -> None:
    """Scan /proc for job processes whose cmdline or environ holds a registered secret (shown masked).

    Secrets come from this process's environment (REACTORCIDE_SECRET_ENV_NAMES, secret-looking names,
    REACTORCIDE_SECRET_VALUES_LIST, REACTORCIDE_SECRETS_FILE). Without --pid/--session/--root every visible
    process but this one is scanned (in a job container, that is the job). Exit status 1 when a secret is
    exposed.
    """
    from runnerlib.execution.process import registry_from_environment
    from runnerlib.security import proctree
    from runnerlib.security.audit import audit as run_audit

    registry = registry_from_environment()
    targets: list[int] | None = list(pids) or None
    if targets is None and session is None and root is None:
        me = os.getpid()
        targets = sorted(p for p in proctree.parent_map() if p != me)
    report = run_audit(registry, targets, session=session, root=root)
    if as_json:
        click.echo(json.dumps({
            "scanned": len(report.scanned),
            "findings": [{"pid": f.pid, "comm": f.comm, "where": f.where, "entry": f.entry} for f in report.findings],
            "unreadable": [{"pid": p, "where": w} for p, w in report.unreadable],
        }))
    else:
        click.echo(report.describe())
    sys.exit(0 if report.clean else 1)


@main.group()
def sandbox() -> None:
    """The sandbox for untrusted steps: what this kernel can enforce, the policy, a sandboxed run."""


def _default_policy_help() -> str:
    from runnerlib.security.policy import SandboxPolicy

    # \b keeps click from re-wrapping the lines.
    return "\n\nThe default policy of an untrusted step:\n\n\b\n" + SandboxPolicy().describe()


sandbox.help = (sandbox.help or "") + _default_policy_help()


@sandbox.command()
@click.option("--json", "as_json", is_flag=True, help="Print the matrix as JSON.")
def probe(as_json: bool) -> None:
    """Print the kernel capability matrix (Landlock ABI, seccomp, no_new_privs, user namespaces, root)."""
    from runnerlib.security import cgroups
    from runnerlib.security.network import default_summary, mechanisms
    from runnerlib.security.policy import SandboxPolicy
    from runnerlib.security.probe import probe as run_probe

    caps = run_probe()
    rows = mechanisms(caps)
    mode = SandboxPolicy.from_env().namespaces
    default_net = default_summary(caps, SandboxPolicy.from_env().uid)
    on = mode != "off" and caps.step_namespaces
    cg = cgroups.summary()
    if as_json:
        click.echo(json.dumps({**caps.to_dict(), "network": {name: ok for name, ok, _ in rows},
                               "network_default": default_net,
                               "namespaces_mode": mode, "namespaces_on": on, "cgroups": cg}))
        return
    click.echo(caps.describe())
    click.echo(f"untrusted steps' namespaces (private /proc, /dev/shm, /tmp; processes end with the step): "
               f"{'ON' if on else 'OFF'} (mode {mode}, REACTORCIDE_SANDBOX_NAMESPACES=auto|required|off)")
    width = max(len(r[0]) for r in rows)
    click.echo("network mechanisms:")
    for name, ok, what in rows:
        click.echo(f"  {name:<{width}}  {'yes' if ok else 'NO '}  {what}")
    click.echo(f"untrusted steps' default network here: {default_net}")
    click.echo("cgroups (a step's memory and pids limits; else rlimits):")
    for controller in cgroups.CONTROLLERS:
        at = cg["limits"].get(controller)  # type: ignore[attr-defined]
        click.echo(f"  {controller:<7}  " + (f"cgroup v{at['version']} beneath {at['path']}" if at
                                              else "none writable here: RLIMIT_" + ("AS" if controller == "memory"
                                                                                     else "NPROC")))
    click.echo(f"  cgroup.kill  {'yes' if cg['v2'] else 'NO '}  " + (
        f"a step's own cgroup v2 beneath {cg['v2']} (steps without a PID namespace)" if cg["v2"]
        else f"no writable cgroup v2 ({cg['v2_mount'] or 'none mounted'}): leftovers by namespace or tree sweep"))


def _policy(workspace: str, deny_network: bool, best_effort: bool, network: str | None = None,
            namespaces: str | None = None, limits: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    from runnerlib.security.limits import LimitError, parse_limit_options
    from runnerlib.security.policy import PolicyError, SandboxPolicy

    try:
        pol = SandboxPolicy.for_workspace(workspace, deny_network=deny_network, best_effort=best_effort,
                                          network=network,
                                          namespaces=namespaces or SandboxPolicy.from_env().namespaces)
    except PolicyError as exc:
        raise click.BadParameter(str(exc), param_hint="--network") from None
    if limits:
        try:
            pol = pol.with_(limits=parse_limit_options(limits).merged_over(pol.limits))
        except LimitError as exc:
            raise click.BadParameter(str(exc), param_hint="--limit") from None
    return pol


_NETWORK_HELP = "full, none, loopback or host:port,host:port (default: full, metadata addresses never reachable)."
_NAMESPACES_OPTION = click.option(
    "--namespaces", type=click.Choice(["auto", "required", "off"]), default=None,
    help="The step's own PID/IPC/mount namespaces: auto (default; env REACTORCIDE_SANDBOX_NAMESPACES), "
         "required (refuse where impossible), off.")
_LIMIT_OPTION = click.option("--limit", "limits", multiple=True, metavar="NAME=VALUE",
                             help="A resource limit (pids, memory, cpu_seconds, file_size, open_files, cpus); repeatable.")


def _workspace_options(func):  # type: ignore[no-untyped-def]
    """--workspace-root as on every other command; --workspace, its old name, still works (hidden)."""
    func = click.option("--workspace", "workspace_alias", default=None, hidden=True)(func)
    return click.option("--workspace-root", "workspace", default=None,
                        help="Workspace root (ci, src, artifacts) [default: /job].")(func)


@sandbox.command()
@_workspace_options
@click.option("--deny-network", is_flag=True, help="No TCP and no inet sockets.")
@click.option("--network", default=None, help=_NETWORK_HELP)
@click.option("--best-effort", is_flag=True, envvar="REACTORCIDE_SANDBOX_BEST_EFFORT",
              help="Run even where the kernel cannot enforce everything (gaps are logged).")
@_NAMESPACES_OPTION
@_LIMIT_OPTION
def policy(workspace: str | None, workspace_alias: str | None, deny_network: bool, network: str | None,
           best_effort: bool, namespaces: str | None, limits: tuple[str, ...]) -> None:
    """Print the untrusted-step policy and how this machine would enforce it (or why it would refuse),
    including the mechanism behind each resource limit."""
    workspace = workspace or workspace_alias or "/job"
    from runnerlib.security.network import report_only
    from runnerlib.security.probe import runner_dumpable
    from runnerlib.security.spawn import SandboxRefused, plan_sandbox

    pol = _policy(workspace, deny_network, best_effort, network, namespaces, limits)
    click.echo(pol.describe())
    try:
        # The CLI process itself is dumpable; a runner is not (selfprotect), so judge as the runner would.
        with report_only():  # nothing installed on the host: a report
            plan = plan_sandbox(pol, dumpable=False, make_tmp=False)
    except SandboxRefused as exc:
        click.echo(f"on this machine: REFUSED: {exc}")
        sys.exit(1)
    click.echo(f"on this machine: {plan.describe()}")
    from runnerlib.security import cgroups

    click.echo("  leftover processes: " + cgroups.leftover_mechanism(
        pid_namespace=bool(plan.plan.get("ns")), step_cgroup=bool(plan.plan.get("cgroup_limits"))))
    for name, value, how in plan.limit_mechanisms():
        click.echo(f"  limit {name} {value}: {how}")
    for note in plan.notes:
        click.echo(f"  note: {note}")
    if runner_dumpable():
        click.echo("(assuming the runner has called protect_runner(), which makes it non-dumpable)")


# Options end at the command's name (`sandbox exec ls -la`); an unknown option before it is an error, not
# the command to run.
@sandbox.command(name="exec", context_settings={"allow_interspersed_args": False})
@_workspace_options
@click.option("--cwd", default=None, help="Working directory (default: the step's copy of WORKSPACE/src, "
                                         "WORKSPACE/.untrusted/src; a directory in src moves into the copy).")
@click.option("--timeout", type=float, default=None, help="Seconds before SIGTERM (then 60 s grace).")
@click.option("--deny-network", is_flag=True, help="No TCP and no inet sockets.")
@click.option("--network", default=None, help=_NETWORK_HELP)
@click.option("--best-effort", is_flag=True, envvar="REACTORCIDE_SANDBOX_BEST_EFFORT",
              help="Run even where the kernel cannot enforce everything (gaps are logged).")
@_NAMESPACES_OPTION
@_LIMIT_OPTION
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(workspace: str | None, workspace_alias: str | None, cwd: str | None, timeout: float | None,
          deny_network: bool, network: str | None, best_effort: bool, namespaces: str | None,
          limits: tuple[str, ...], command: tuple[str, ...]) -> None:
    """Run COMMAND as an untrusted step (sandboxed, allow-listed environment, masked output).

    Exit status: the command's own, 124 on timeout, 126 when the sandbox refuses (the reason is printed).
    """
    workspace = workspace or workspace_alias or "/job"
    from runnerlib.execution.process import run_untrusted
    from runnerlib.source.exec_tree import ExecTreeError, clean_after_exec, prepare_exec_tree

    def forward(stream: str, data: bytes) -> None:
        out = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
        out.write(data)
        out.flush()

    pol = _policy(workspace, deny_network, best_effort, network, namespaces, limits)
    try:  # the step's own copy of the source tree, never the pristine one (runnerlib.source.exec_tree)
        cwd, _copy = prepare_exec_tree(workspace, cwd, owner=(pol.uid, pol.gid) if os.geteuid() == 0 else None,
                                       environ=os.environ)
    except (ExecTreeError, OSError) as exc:
        raise click.BadParameter(str(exc), param_hint="--workspace-root") from None
    try:
        result = run_untrusted(list(command), cwd=cwd, timeout=timeout, policy=pol, on_output=forward)
    finally:
        clean_after_exec(workspace)
    if result.refused or (result.reason and (result.exit_code != 0 or result.leftover_killed)):
        click.echo(f"runnerlib: {result.reason}", err=True)
    sys.exit(result.exit_code)
