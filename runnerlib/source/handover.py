"""The hand-over area: the one way an untrusted step's results reach trusted steps (/job/artifacts).

Invariant: after an untrusted step, the hand-over area holds only directories and regular files with a single
link; nothing a trusted step writes or reads there can be redirected elsewhere (a symlink or hard link to
/job/ci/deploy.sh, a FIFO that blocks, a device). As root, what the sandbox uid wrote becomes the runner's and
read-only to later untrusted steps (they still add new entries: the area itself stays 1777 and sticky); an
unprivileged runner shares its uid with the steps, so only the removal applies there. Each removed entry is named
in the step's log as a warning. The walk is Workspace.sanitise (fds, O_NOFOLLOW, nothing checked by name then
used by name).

Limit: a trusted step that runs IN PARALLEL with an untrusted step can meet what that step is writing now; /job/ci
stays immutable for it (see docs/sandbox.md), and the area is cleaned again before each trusted step starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from runnerlib.security.paths import HandOverReport, Workspace


def sanitise_hand_over(workspace: Workspace, area: str, *, warn: Callable[[str], None]) -> HandOverReport | None:
    """Clean the hand-over area `area` (a path inside `workspace`); None when it does not exist.

    `warn` gets one line per removed entry. As root, kept entries are given to the runner's own uid and gid.
    """
    rel = workspace.rel(area, field="artifacts_dir")
    if not workspace.is_dir(rel):
        return None
    owner = (os.geteuid(), os.getegid()) if os.geteuid() == 0 else None
    report = workspace.sanitise(rel, owner=owner)
    for name, kind in report.removed:
        warn(f"hand-over: removed {area.rstrip('/')}/{name}: a {kind} may not cross from an untrusted step "
             "to trusted ones (only regular files and directories do)")
    return report


def clean_after_run_untrusted(area: str, workspace_root: str) -> None:
    """run_untrusted() from a trusted step: the same clean-up as after an untrusted step, warnings to the log."""
    with Workspace(workspace_root) as workspace:
        sanitise_hand_over(workspace, area, warn=logging.getLogger("runnerlib.handover").warning)
