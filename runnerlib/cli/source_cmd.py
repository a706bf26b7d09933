"""`runnerlib checkout`, `copy`, `cleanup`, `git files-changed`, `git info`: parse options, call the library."""

from __future__ import annotations

import json
import os

import click

from runnerlib.cli.app import main, set_error_masker

_ROOT = click.option("--workspace-root", envvar="REACTORCIDE_WORKSPACE_ROOT", default="/job", show_default=True,
                     help="Job workspace; every path below must lie inside it.")
_CODE_DIR = click.option("--code-dir", envvar="REACTORCIDE_CODE_DIR", default=None,
                         help="Code directory (default <workspace-root>/src).")
# Accepted for compatibility with the worker's command lines; they change nothing here.
_COMPAT = [
    click.option("--job-dir", default=None, hidden=True),
    click.option("--runner-image", default=None, hidden=True),
    click.option("--work-dir", default=None, hidden=True),
]


def _compat(func):  # type: ignore[no-untyped-def]
    for opt in reversed(_COMPAT):
        func = opt(func)
    return func


def _registry():  # type: ignore[no-untyped-def]
    from runnerlib.source.commands import job_registry

    registry = job_registry(os.environ)
    set_error_masker(registry.mask_text)
    return registry


def _say(registry):  # type: ignore[no-untyped-def]
    return lambda line: click.echo(registry.mask_text(line), err=True)


@main.command()
@click.argument("url")
@click.option("--ref", "-r", default=None, help="Branch, tag, commit SHA (full or short), refs/pull/N/head, "
                                                 "or revision (hg/svn).")
@click.option("--type", "source_type", type=click.Choice(["git", "hg", "svn", "tarball", "copy"]), default="git",
              show_default=True, help="Source strategy.")
@click.option("--depth", type=click.IntRange(min=1), default=1, show_default=True, help="Commits to fetch (git).")
@click.option("--full-history", is_flag=True, help="Fetch all history, branches and tags (git).")
@click.option("--submodules", is_flag=True, help="Fetch submodules (git) / externals (svn).")
@click.option("--allow-insecure-transport", is_flag=True,
              help="Allow http:// tarball URLs and credentials in http:// / svn:// URLs.")
@click.option("--max-entries", type=click.IntRange(min=1), default=None, help="Tarball: most members accepted.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=None, help="Tarball: most bytes extracted.")
@_ROOT
@_CODE_DIR
@_compat
def checkout(url: str, ref: str | None, source_type: str, depth: int, full_history: bool, submodules: bool,
             allow_insecure_transport: bool, max_entries: int | None, max_bytes: int | None, workspace_root: str,
             code_dir: str | None, **_compat: object) -> None:
    """Check out URL into the code directory (git by default; hg, svn, tarball with --type).

    \b
    Examples:
      runnerlib checkout https://github.com/user/repo.git --ref main
      runnerlib checkout https://example.com/src.tar.gz --type tarball
    """
    from runnerlib.source.commands import CheckoutRequest
    from runnerlib.source.commands import checkout as do_checkout

    registry = _registry()
    req = CheckoutRequest(url=url, ref=ref, type=source_type, workspace_root=workspace_root, code_dir=code_dir,
                          depth=depth, full_history=full_history, submodules=submodules,
                          allow_insecure_transport=allow_insecure_transport, max_entries=max_entries,
                          max_total_bytes=max_bytes)
    result = do_checkout(req, registry=registry, log_line=_say(registry))
    click.echo(registry.mask_text(f"checked out into {result.path}" + (f" at {result.revision}" if result.revision else "")))


@main.command()
@click.argument("source_dir")
@_ROOT
@_CODE_DIR
@_compat
def copy(source_dir: str, workspace_root: str, code_dir: str | None, **_compat: object) -> None:
    """Copy SOURCE_DIR into the code directory (no symlink followed out of it, no special files)."""
    from runnerlib.source.commands import CheckoutRequest
    from runnerlib.source.commands import checkout as do_checkout

    registry = _registry()
    req = CheckoutRequest(url=os.path.abspath(source_dir), type="copy", workspace_root=workspace_root,
                          code_dir=code_dir)
    result = do_checkout(req, registry=registry, log_line=_say(registry))
    click.echo(registry.mask_text(f"copied into {result.path}"))


@main.command()
@click.option("--verbose", "-v", is_flag=True, help="Count what is removed.")
@_ROOT
@click.option("--work-dir", default=None, hidden=True)
def cleanup(verbose: bool, workspace_root: str, work_dir: str | None) -> None:
    """Empty the job workspace (never following a symlink, never leaving the workspace)."""
    from runnerlib.source.commands import cleanup as do_cleanup

    report = do_cleanup(workspace_root, count=verbose)
    if not report.existed:
        click.echo(f"workspace {report.root} does not exist; nothing to clean")
        return
    if verbose:
        click.echo(f"removed {report.files} files and {report.dirs} directories from {report.root}")
    else:
        click.echo(f"cleaned {report.root}")


@main.group()
def git() -> None:
    """Questions about the git checkout in the code directory."""


@git.command("files-changed")
@click.argument("gitref")
@click.option("--head", default="HEAD", show_default=True, help="Compare GITREF with this ref.")
@click.option("--merge-base", is_flag=True, help="Compare from the merge base (GITREF...HEAD).")
@_ROOT
@_CODE_DIR
@_compat
def files_changed(gitref: str, head: str, merge_base: bool, workspace_root: str, code_dir: str | None,
                  **_compat: object) -> None:
    """Print the files changed between GITREF and HEAD, one per line."""
    from runnerlib.source.commands import files_changed as do_files_changed

    registry = _registry()
    for path in do_files_changed(gitref, head=head, merge_base=merge_base, workspace_root=workspace_root,
                                 code_dir=code_dir, registry=registry):
        click.echo(path)


@git.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_ROOT
@_CODE_DIR
@_compat
def info(as_json: bool, workspace_root: str, code_dir: str | None, **_compat: object) -> None:
    """Show the commit, branch, author and remotes of the checkout in the code directory."""
    from runnerlib.source.commands import info as do_info

    registry = _registry()
    data = do_info(workspace_root=workspace_root, code_dir=code_dir, registry=registry)
    if as_json:
        click.echo(registry.mask_text(json.dumps(data, indent=2, sort_keys=True)))
        return
    remote_map: dict[str, str] = data["remotes"]  # type: ignore[assignment]
    remotes = ", ".join(f"{k} {v}" for k, v in remote_map.items()) or "none"
    lines = [f"Path: {data['path']}", f"Commit: {data['sha']}", f"Branch: {data['branch'] or '(detached)'}",
             f"Author: {data['author']}", f"Date: {data['date']}", f"Subject: {data['subject']}",
             f"Shallow: {'yes' if data['shallow'] else 'no'}", f"Remotes: {remotes}"]
    for line in lines:
        click.echo(registry.mask_text(line))
