"""Source type `copy`: a local directory copied into the workspace.

In a git work tree the copy holds what git would: the files git knows of, tracked and untracked, ignored ones
left out (no .venv, no node_modules, no .git), listed by git run as on a hostile repository
(source/git_files.py); any other directory is copied whole. The log's first line of the copy says which.

Symlinks are never followed out of the source: they are recreated as links, and a link whose target
could leave the source tree is refused. FIFOs, sockets and device nodes are not copied (listed in the
log). Permission bits are kept, setuid/setgid dropped. The copy is staged and moved into place at the
end, so a refused copy leaves the destination untouched.
"""

from __future__ import annotations

import os

from runnerlib.security.paths import PathPolicyError, Staged
from runnerlib.source.base import PrepareContext, PreparedSource, SourceError, SourceSpec


def prepare(spec: SourceSpec, staged: Staged, ctx: PrepareContext) -> PreparedSource:
    """Copy the directory named by spec.url (a path, or a file:// URL) into the staging directory."""
    assert spec.url is not None
    source = spec.url[len("file://"):] if spec.url.startswith("file://") else spec.url
    field = f"{spec.field_prefix}_url"
    if not os.path.isabs(source):
        raise SourceError(f"{field}: a copy source must be an absolute path (got {source!r})")
    if not os.path.isdir(source):
        raise SourceError(f"{field}: copy source is not a directory (got {source!r})")
    # The source must not contain the workspace destination (copying a tree into itself never ends).
    real_src = os.path.realpath(source)
    real_dest = os.path.realpath(staged.path)
    if real_dest == real_src or real_dest.startswith(real_src.rstrip("/") + "/"):
        raise SourceError(f"{field}: the copy source contains the destination {staged.dest!r}")
    from runnerlib.source.git_files import git_files, work_tree_of  # a copy source only: not at start-up

    top = work_tree_of(source)
    listing = None
    if top is not None:
        try:
            listing = git_files(source, top, environ=ctx.env, timeout=ctx.timeout)
        except SourceError as exc:
            raise SourceError(f"{field}: {exc}") from None
        ctx.say(f"copying {source} into {ctx.workspace.path(staged.dest)}: the files git knows of (in the git work "
                f"tree {top}: tracked, and untracked ones not ignored; no .git)")
    else:
        ctx.say(f"copying {source} into {ctx.workspace.path(staged.dest)}: everything (not in a git work tree)")
    try:
        report = ctx.workspace.copy_in(source, staged.rel, into_existing=True,
                                       include=listing.includes if listing is not None else None)
    except PathPolicyError as exc:
        raise SourceError(f"{field}: {exc}") from None
    if report.skipped:
        ctx.say(f"skipped {len(report.skipped)} special file(s) (FIFO, socket, device): "
                + ", ".join(report.skipped[:10]))
    left_out = f"; left out {report.left_out} entries (.git and what git ignores)" if report.left_out else ""
    ctx.say(f"copied {report.files} files, {report.dirs} directories, {report.symlinks} symlinks "
            f"({report.bytes} bytes){left_out}")
    return PreparedSource(type="copy", path=ctx.workspace.path(staged.dest),
                          details={"files": report.files, "dirs": report.dirs, "symlinks": report.symlinks,
                                   "bytes": report.bytes, "skipped": list(report.skipped),
                                   "git_work_tree": top, "left_out": report.left_out})
