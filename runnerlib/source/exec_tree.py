"""The trees of an untrusted `runnerlib sandbox exec`: the untrusted copy of the source tree, and the hand-over
area cleaned after it, as for a runner job's untrusted steps (runnerlib.source.pristine, runnerlib.source.handover).

The pristine <root>/src is never handed to the sandbox. Inside a runner job (REACTORCIDE_UNTRUSTED_SOURCE_DIR,
which the runner gives its trusted steps, names this workspace's copy) the exec shares the job's copy, made on
first use, as run_untrusted() does: a build exec's objects are there for the test exec. Outside a job each exec
is a job of its own: a fresh copy of <root>/src replaces whatever an earlier one left (a stale copy would run
yesterday's code, and the runner also starts every job from a fresh one).

Example::

    cwd, copy = prepare_exec_tree("/job", "/job/src/app", owner=(65534, 65534), environ=os.environ)
    # cwd == "/job/.untrusted/src/app"
    ...
    clean_after_exec("/job")
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from runnerlib.security.paths import Workspace
from runnerlib.source import handover, pristine


class ExecTreeError(ValueError):
    """The workspace root cannot hold the untrusted copy; the message says why."""


def prepare_exec_tree(root: str, cwd: str | None, *, owner: tuple[int, int] | None,
                      environ: Mapping[str, str]) -> tuple[str, str]:
    """Make (or, inside a runner job, reuse) the untrusted copy of root/src; return (the working directory
    moved into the copy when it lay in root/src, default the copy itself; the copy). `owner`: who gets the
    copy (the sandbox uid and gid when the runner is root; None keeps the caller's uid)."""
    root = os.path.normpath(os.path.abspath(root))
    if not os.path.isdir(root):
        raise ExecTreeError(f"{root} is not a directory (the workspace root holds src, ci and artifacts)")
    src, copy = os.path.join(root, "src"), os.path.join(root, pristine.UNTRUSTED_SRC)
    with Workspace(root) as workspace:
        if os.path.normpath(environ.get(pristine.UNTRUSTED_SOURCE_ENV) or "/") != copy:
            pristine.remove_leftover(workspace)
        pristine.untrusted_copy(workspace, src, owner=owner)
    return pristine.in_copy(cwd or src, src, copy), copy


def clean_after_exec(root: str) -> None:
    """The hand-over area root/artifacts after the exec: only regular files and directories stay."""
    root = os.path.normpath(os.path.abspath(root))
    handover.clean_after_run_untrusted(os.path.join(root, "artifacts"), root)
