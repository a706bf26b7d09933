"""Source type `copy`: a local directory copied into the workspace.

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
    ctx.say(f"copying {source} into {ctx.workspace.path(staged.dest)}")
    try:
        report = ctx.workspace.copy_in(source, staged.rel, into_existing=True)
    except PathPolicyError as exc:
        raise SourceError(f"{field}: {exc}") from None
    if report.skipped:
        ctx.say(f"skipped {len(report.skipped)} special file(s) (FIFO, socket, device): "
                + ", ".join(report.skipped[:10]))
    ctx.say(f"copied {report.files} files, {report.dirs} directories, {report.symlinks} symlinks "
            f"({report.bytes} bytes)")
    return PreparedSource(type="copy", path=ctx.workspace.path(staged.dest),
                          details={"files": report.files, "dirs": report.dirs, "symlinks": report.symlinks,
                                   "bytes": report.bytes, "skipped": list(report.skipped)})
