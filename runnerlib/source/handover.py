"""The hand-over area: the one way an untrusted step's results reach trusted steps (/job/artifacts).

Invariant: after an untrusted step, the hand-over area holds only directories and regular files with a single
link; nothing a trusted step writes or reads there can be redirected elsewhere (a symlink or hard link to
/job/ci/deploy.sh, a FIFO that blocks, a device). As root, what the sandbox uid wrote becomes the runner's and
read-only to later untrusted steps (they still add new entries: the area itself stays 1777 and sticky); an
unprivileged runner shares its uid with the steps, so only the removal applies there. Each removed entry is named
in the step's log as a warning. The walk is Workspace.sanitise (fds, O_NOFOLLOW, nothing checked by name then
used by name).

Version-control metadata (`.git`, `.hg`, as a directory or a file) never crosses either: git and hg run what a
repository's config and hooks name, and refuse a repository of another owner only by its owner, which the
take-over by root would make the runner's (a trusted `git status` in a directory below a planted `.git` ran its
core.fsmonitor with the secrets). Names of removed entries are shown with control characters escaped, so a file
name cannot print lines of runnerlib's own.

Limit: a trusted step that runs IN PARALLEL with an untrusted step can meet what that step is writing now; /job/ci
stays immutable for it (see docs/sandbox.md), and the area is cleaned again before each trusted step starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from runnerlib.security.paths import HandOverReport, Workspace

# Entries that make their directory a repository whose config and hooks git or hg obey.
VCS_DIRECTORIES: tuple[str, ...] = (".git", ".hg")


def shown_name(name: str) -> str:
    """`name` as runnerlib's own lines show it: control and other non-printable characters escaped (\\n, \\x1b),
    so a name chosen by an untrusted step cannot start a line of its own or drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def sanitise_hand_over(workspace: Workspace, area: str, *, warn: Callable[[str], None],
                       take_over: bool = True) -> HandOverReport | None:
    """Clean the hand-over area `area` (a path inside `workspace`); None when it does not exist.

    `warn` gets one line per removed entry. As root, kept entries are given to the runner's own uid and gid,
    unless `take_over` is false (an untrusted step still runs and writes its own files there).
    """
    rel = workspace.rel(area, field="artifacts_dir")
    if not workspace.is_dir(rel):
        return None
    owner = (os.geteuid(), os.getegid()) if os.geteuid() == 0 and take_over else None
    report = workspace.sanitise(rel, owner=owner, drop_names=VCS_DIRECTORIES)
    for name, kind in report.removed:
        shown = shown_name(f"{area.rstrip('/')}/{name}")
        if kind.startswith("name:"):
            warn(f"hand-over: removed {shown}: a {kind[5:]} may not cross from an untrusted step to trusted ones "
                 "(git and hg run what a repository's config and hooks name)")
        else:
            warn(f"hand-over: removed {shown}: a {kind} may not cross from an untrusted step to trusted ones "
                 "(only regular files and directories do)")
    return report


def clean_after_run_untrusted(area: str, workspace_root: str) -> None:
    """run_untrusted() from a trusted step: the same clean-up as after an untrusted step, warnings to the log."""
    with Workspace(workspace_root) as workspace:
        sanitise_hand_over(workspace, area, warn=logging.getLogger("runnerlib.handover").warning)
