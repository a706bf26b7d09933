"""Which workflows an event starts: by event type, branch glob and changed paths.

Rules (GitHub Actions' `on.push.branches` / `paths` as users know them):

- `on.events`: empty means every event; else the event must be listed.
- `on.branches`: empty means every branch; else the branch must match (last matching pattern wins, `!`
  excludes; see globs.match_any). A workflow with branch filters does not run for an event without a branch.
- `paths.include` / `paths.exclude`: when changed paths are known, the workflow runs if at least one changed
  path is included (every path, if include is empty) and not excluded. Unknown changed paths (None) do not
  filter; an empty list of changed paths with filters runs nothing.

Example::

    for decision in select_workflows(load_workflows(repo), event="push", branch="main",
                                     changed_paths=["src/app.py"]):
        print(decision.workflow.effective_id, decision.selected, decision.reason)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runnerlib.workflow.globs import match_any
from runnerlib.workflow.models import EVENTS, Workflow, WorkflowError, load_workflow

__all__ = ["Decision", "discover_workflows", "load_workflows", "select_workflows", "workflow_matches"]

WORKFLOWS_DIR = Path(".reactorcide") / "workflows"


@dataclass
class Decision:
    workflow: Workflow
    selected: bool
    reason: str


def discover_workflows(root: str | Path) -> list[Path]:
    """The workflow files of a repository: .reactorcide/workflows/*.yaml and *.yml, sorted by name."""
    directory = Path(root) / WORKFLOWS_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_workflows(root: str | Path) -> list[Workflow]:
    """Load and validate every workflow of a repository; the first invalid one raises its WorkflowError."""
    workflows = [load_workflow(path) for path in discover_workflows(root)]
    seen: dict[str, str] = {}
    for workflow in workflows:
        other = seen.setdefault(workflow.effective_id, workflow.source or "")
        if other != (workflow.source or ""):
            raise WorkflowError(f"id {workflow.effective_id!r} is also used by {other}", file=workflow.source,
                                field="id")
    return workflows


def workflow_matches(workflow: Workflow, *, event: str | None, branch: str | None,
                     changed_paths: Sequence[str] | None) -> Decision:
    """Whether `workflow` runs for this event, and why (or why not)."""
    if event is not None and event not in EVENTS:
        raise WorkflowError(f"unknown event {event!r}; one of: {', '.join(EVENTS)}", field="event")
    on = workflow.on
    if on.events and event is not None and event not in on.events:
        return Decision(workflow, False, f"event {event} not in {', '.join(on.events)}")
    if on.branches:
        if branch is None:
            return Decision(workflow, False, "has branch filters and the event has no branch")
        if not match_any(on.branches, branch):
            return Decision(workflow, False, f"branch {branch} matches none of {', '.join(on.branches)}")
    if changed_paths is not None and (workflow.paths.include or workflow.paths.exclude):
        include, exclude = workflow.paths.include, workflow.paths.exclude
        hits = [p for p in changed_paths
                if (not include or match_any(include, p)) and not (exclude and match_any(exclude, p))]
        if not hits:
            return Decision(workflow, False, "no changed path passes the paths filter")
        return Decision(workflow, True, f"{len(hits)} changed path(s) match, e.g. {hits[0]}")
    return Decision(workflow, True, "event and branch match" if (on.events or on.branches) else "no filters")


def select_workflows(workflows: Iterable[Workflow], *, event: str | None = None, branch: str | None = None,
                     changed_paths: Sequence[str] | None = None) -> list[Decision]:
    """A Decision for every workflow (selected or not, with the reason), in the given order."""
    return [workflow_matches(w, event=event, branch=branch, changed_paths=changed_paths) for w in workflows]
