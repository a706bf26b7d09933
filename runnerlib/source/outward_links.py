"""Symlinks of the untrusted source tree that lead out of it are removed after preparation.

A pull request can commit a symlink (`VERSION -> /etc/shadow`, `coverage.txt -> /job/ci/deploy.sh`); git, hg and
svn check it out as it is, while the copy and tarball sources refuse one (security.paths.check_link_target). A
trusted step reading the tree (`cat VERSION`, `zip -r site.zip docs`) followed it as root and printed or
published the file it names; one writing there (`> coverage.txt`) wrote through it. So after the untrusted
source is prepared, every link whose target could leave the tree is removed (never followed) and named in the
log. Links inside the tree stay. The CI tree is trusted and left as it is.
"""

from __future__ import annotations

from collections.abc import Callable

from runnerlib.security.paths import Workspace
from runnerlib.source.handover import shown_name


def remove_outward_links(workspace: Workspace, tree: str, *, log: Callable[[str], None] | None = None) -> list[str]:
    """Remove the symlinks under `tree` (relative to the workspace) that could lead out of it; their paths."""
    leaving = workspace.links_leaving(tree)
    for rel in leaving:
        workspace.remove(rel, missing_ok=True)
    if leaving and log is not None:
        more = f" and {len(leaving) - 10} more" if len(leaving) > 10 else ""
        shown = ", ".join(shown_name(p) for p in leaving[:10]) + more
        log(f"source: removed {len(leaving)} symlink(s) leading out of the source tree (a trusted step would follow "
            f"them): {shown}")
    return leaving

