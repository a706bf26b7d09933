"""The library side of the stand-alone source commands (`checkout`, `copy`, `cleanup`, `git ...`).

Each function checks its configured paths (security.paths.check_config_path), builds the job's secret
registry from what the worker provides (URL credentials, REACTORCIDE_VCS_AUTH_DIR, the variables named in
REACTORCIDE_SECRET_ENV_NAMES) and calls the strategies. The CLI only parses options and prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from runnerlib.security.paths import PathPolicyError, Workspace, check_config_path
from runnerlib.security.registry import SecretRegistry
from runnerlib.source import gitinfo
from runnerlib.source.base import PreparedSource, SourceLimits, SourceSpec
from runnerlib.source.prepare import prepare_source

DEFAULT_WORKSPACE_ROOT = "/job"


def job_registry(environ: Mapping[str, str]) -> SecretRegistry:
    """A registry holding the secrets the worker names in the environment (never printed)."""
    registry = SecretRegistry()
    for name in (environ.get("REACTORCIDE_SECRET_ENV_NAMES") or "").split(","):
        name = name.strip()
        if name and environ.get(name):
            registry.add(environ[name], source=f"env {name}")
    if environ.get("REACTORCIDE_API_TOKEN"):
        registry.add(environ["REACTORCIDE_API_TOKEN"], source="env REACTORCIDE_API_TOKEN")
    return registry


def resolve_dir(field: str, value: str | None, root: str, default: str) -> tuple[Workspace, str]:
    """(workspace, relative dir) for a configured directory, checked to lie inside `root`."""
    checked = check_config_path(field, value or os.path.join(root, default), root)
    workspace = Workspace(root, create=True)
    return workspace, workspace.rel(checked, field=field)


@dataclass
class CheckoutRequest:
    """Options of `runnerlib checkout` (and of `copy`, with type copy)."""

    url: str
    ref: str | None = None
    type: str = "git"
    workspace_root: str = DEFAULT_WORKSPACE_ROOT
    code_dir: str | None = None
    depth: int = 1
    full_history: bool = False
    submodules: bool = False
    allow_insecure_transport: bool = False
    max_entries: int | None = None
    max_total_bytes: int | None = None


def checkout(req: CheckoutRequest, *, registry: SecretRegistry, environ: Mapping[str, str] | None = None,
             log_line: Callable[[str], None] | None = None) -> PreparedSource:
    """Prepare req.url into the code directory (default <workspace_root>/src)."""
    env = dict(os.environ if environ is None else environ)
    limits = SourceLimits(**{k: v for k, v in (("max_entries", req.max_entries),
                                               ("max_total_bytes", req.max_total_bytes)) if v is not None})
    spec = SourceSpec.from_fields(req.type, req.url, req.ref, depth=req.depth, full_history=req.full_history,
                                  submodules=req.submodules, limits=limits)
    workspace, rel = resolve_dir("code_dir", req.code_dir, req.workspace_root, "src")
    with workspace:
        return prepare_source(spec, rel, workspace=workspace, registry=registry, env=env, log_line=log_line,
                              allow_insecure_transport=req.allow_insecure_transport)


@dataclass
class CleanupReport:
    root: str
    existed: bool
    files: int = 0
    dirs: int = 0


def cleanup(workspace_root: str = DEFAULT_WORKSPACE_ROOT, *, count: bool = False) -> CleanupReport:
    """Empty the workspace root (the root itself stays: it is often a mount point).

    Never follows a symlink and never removes anything outside the root (Workspace.clear).
    """
    root = os.path.normpath(workspace_root)
    if not os.path.isabs(root) or root == "/":
        raise PathPolicyError("workspace_root", "must be an absolute directory other than /", value=repr(root))
    if not os.path.isdir(root):
        return CleanupReport(root=root, existed=False)
    report = CleanupReport(root=root, existed=True)
    with Workspace(root) as workspace:
        if count:
            for _dirpath, dirnames, filenames in os.walk(root):
                report.dirs += len(dirnames)
                report.files += len(filenames)
        workspace.clear("")
    return report


def pristine_code_dir(workspace_root: str, code_dir: str | None) -> Path:
    """code_dir checked to lie in the workspace root and NOT in the untrusted steps' copy of the source tree
    (<root>/.untrusted): runnerlib's own git commands read only the pristine tree."""
    from runnerlib.source.pristine import UNTRUSTED_DIR

    checked = check_config_path("code_dir", code_dir or os.path.join(workspace_root, "src"), workspace_root)
    untrusted = Path(os.path.normpath(workspace_root)) / UNTRUSTED_DIR
    if checked == untrusted or untrusted in checked.parents:
        raise PathPolicyError("code_dir", f"is the untrusted steps' copy of the source tree ({untrusted}), which "
                              "they may have changed; runnerlib's git commands work on the pristine tree "
                              "(the job's code_dir)", value=repr(str(checked)))
    return checked


def files_changed(ref: str, *, head: str = "HEAD", merge_base: bool = False,
                  workspace_root: str = DEFAULT_WORKSPACE_ROOT, code_dir: str | None = None,
                  registry: SecretRegistry | None = None) -> list[str]:
    """Files changed between `ref` and `head` in the checkout at code_dir."""
    checked = pristine_code_dir(workspace_root, code_dir)
    return gitinfo.files_changed(checked, ref, head, merge_base=merge_base, registry=registry)


def info(*, workspace_root: str = DEFAULT_WORKSPACE_ROOT, code_dir: str | None = None,
         registry: SecretRegistry | None = None) -> dict[str, object]:
    """gitinfo.repo_info for the checkout at code_dir, plus its path."""
    checked = pristine_code_dir(workspace_root, code_dir)
    data = gitinfo.repo_info(checked, registry=registry)
    data["path"] = str(Path(checked))
    return data
