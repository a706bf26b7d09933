"""The pristine source tree: trusted steps keep /job/src as trusted preparation left it; untrusted steps get a copy.

Invariant: no untrusted step can change (or plant anything in) the tree trusted steps and runnerlib's own VCS
calls work on. /job/src is never handed to the sandbox uid nor granted to the sandbox: before the first
untrusted step of a job runs, the runner copies it to <workspace>/.untrusted/src (owned by the sandbox uid when
the runner is root) and every untrusted step gets that copy as its working directory, REACTORCIDE_SOURCE_DIR,
REACTORCIDE_CODE_DIR and its one writable source grant. Later untrusted steps keep working on the same copy
(a build step's objects are there for the test step). Results reach trusted steps only through the hand-over
area (/job/artifacts, cleaned after each untrusted step: see runnerlib.source.handover).

Why a copy and not an overlay mount: an overlay needs CAP_SYS_ADMIN or a user namespace per step (the copy
then has to be remounted in each step's namespace and its upper directory kept between steps), and in a
container without CAP_SYS_ADMIN it is not available at all; a copy works the same as root and unprivileged,
and costs about what `cp -a` costs (bench/bench_pristine.py measures both, and the overlay where it can).

The copy is made through Workspace.copy_in: fds only, symlinks recreated as they are (never followed; one leading
out of the tree is the sandbox's business there, as a link the step made itself would be), special files skipped,
ownership set in the same pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from runnerlib.security.paths import Workspace

# Where untrusted steps' own tree lives, relative to the workspace root (not beneath /job/src nor /job/ci).
UNTRUSTED_DIR = ".untrusted"
UNTRUSTED_SRC = f"{UNTRUSTED_DIR}/src"
# Told to trusted steps, so that run_untrusted() in a CI script sandboxes PR code in the same copy.
UNTRUSTED_SOURCE_ENV = "REACTORCIDE_UNTRUSTED_SOURCE_DIR"


@dataclass(frozen=True)
class UntrustedCopy:
    """The untrusted steps' working copy: its absolute path, what the copy took, and whether it was made now."""

    path: str
    files: int = 0
    dirs: int = 0
    seconds: float = 0.0
    created: bool = False


def untrusted_copy(workspace: Workspace, src: str, *, owner: tuple[int, int] | None) -> UntrustedCopy:
    """The untrusted steps' copy of the source tree `src` (a path inside `workspace`), made on first use.

    A copy that exists already (made earlier in this job: by an earlier untrusted step, or by run_untrusted() in
    a CI script) is reused as it is; the runner removes a previous job's leftover (remove_leftover) before any
    step runs. `owner` (uid, gid) gets the copy when the runner is root (the sandbox uid); None keeps the
    runner's uid (unprivileged runner).

    >>> untrusted_copy(Workspace("/job"), "/job/src", owner=(65534, 65534)).path   # doctest: +SKIP
    '/job/.untrusted/src'
    """
    if workspace.is_dir(UNTRUSTED_SRC):
        return UntrustedCopy(path=str(workspace.path(UNTRUSTED_SRC)))
    started = time.monotonic()
    src_rel = workspace.rel(src, field="code_dir")
    remove_leftover(workspace)
    workspace.makedirs(UNTRUSTED_DIR, 0o755)
    workspace.chmod(UNTRUSTED_DIR, 0o755)
    if workspace.is_dir(src_rel):
        fd = workspace.open_dir(src_rel)
        try:
            # Through our own fd: the tree copied is the one resolved beneath the workspace, whatever its path.
            report = workspace.copy_in(f"/proc/self/fd/{fd}", UNTRUSTED_SRC, owner=owner, outward_links=True)
        finally:
            os.close(fd)
        files, dirs = report.files, report.dirs
    else:
        workspace.makedirs(UNTRUSTED_SRC, 0o755)
        if owner is not None:
            workspace.chown_tree(UNTRUSTED_SRC, *owner)
        files = dirs = 0
    return UntrustedCopy(path=str(workspace.path(UNTRUSTED_SRC)), files=files, dirs=dirs,
                         seconds=time.monotonic() - started, created=True)


def remove_leftover(workspace: Workspace) -> None:
    """Remove an untrusted copy left in the workspace (a previous job's untrusted state); never follows links."""
    workspace.rmtree(UNTRUSTED_DIR)


def in_copy(path: str, src: str, copy: str) -> str:
    """`path` moved into the copy when it lies in `src` (a step's working directory), else unchanged.

    >>> in_copy("/job/src/app", "/job/src", "/job/.untrusted/src")
    '/job/.untrusted/src/app'
    """
    norm, base = os.path.normpath(path), os.path.normpath(src)
    if norm == base:
        return copy
    if norm.startswith(base.rstrip("/") + "/"):
        return copy + norm[len(base):]
    return path


def run_untrusted_tree(cwd: str, environ: Mapping[str, str], *,
                       owner: tuple[int, int] | None) -> tuple[str, tuple[str, str]] | None:
    """For run_untrusted() called by a trusted step of a runner job: the untrusted copy (made on first use, reused
    after), and (cwd moved into the copy, the read-write grants: the copy and the hand-over area).

    None outside a runner job (REACTORCIDE_UNTRUSTED_SOURCE_DIR, REACTORCIDE_SOURCE_DIR or REACTORCIDE_WORKSPACE
    missing): run_untrusted then keeps its plain default policy.
    """
    copy, src, root = (environ.get(name) for name in (UNTRUSTED_SOURCE_ENV, "REACTORCIDE_SOURCE_DIR",
                                                      "REACTORCIDE_WORKSPACE"))
    if not (copy and src and root):
        return None
    with Workspace(root) as workspace:
        if workspace.rel(copy, field=UNTRUSTED_SOURCE_ENV) != UNTRUSTED_SRC:
            raise ValueError(f"{UNTRUSTED_SOURCE_ENV}: must be {workspace.path(UNTRUSTED_SRC)} (got {copy!r})")
        if not workspace.is_dir(UNTRUSTED_SRC):
            untrusted_copy(workspace, src, owner=owner)
    artifacts = environ.get("REACTORCIDE_ARTIFACTS_DIR") or os.path.join(root, "artifacts")
    return in_copy(cwd, src, copy), (copy, artifacts)
