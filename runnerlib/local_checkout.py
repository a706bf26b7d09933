"""Running a job on your own checkout: relative source paths, the current directory as the source, and a
per-run workspace when /job is not yours.

The rule (docs/getting-started.md states it for users):

1. A local source path may be relative (`--source-url .`, `REACTORCIDE_SOURCE_URL=../app`): it is made
   absolute against the current directory when the configuration is read. A local directory named without
   a source_type is a `copy` source.
2. With no workspace given (no --workspace-root, no REACTORCIDE_WORKSPACE_ROOT, no directory of it such as
   --code-dir), /job is used in a container (REACTORCIDE_IN_CONTAINER=true, as the worker sets) or when it is
   a writable mount point (the worker's mount). Otherwise the job gets a new per-run workspace under the
   temp dir ($TMPDIR, else /tmp), kept after the run for its logs: a plain /job directory on a shared host
   may be another job's.
3. In such a per-run workspace, a job that names no source (no source_*, no code_dir, no job_dir) runs on the
   current directory: it is a `copy` source into <workspace>/src. Like every copy source of a local directory,
   in a git work tree that is the files git knows of (tracked and untracked, ignored ones left out: no .venv,
   no node_modules, no .git; source/git_files.py); elsewhere the whole directory. The current directory is
   never copied when it is / or your home.
4. With a workspace given and no source, the job runs in <workspace>/src as before (a pre-mounted tree); if
   that directory was empty or missing and the job fails, a last line says so and how to run on the
   current directory.

The first lines of the job's output say which of these happened, and for a copy source of a local directory
whether git's list or everything is copied. Everything here runs before sources are prepared and touches no
file (the `copy` source copies, with its checks on links and special files).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, MutableMapping
from typing import Any

DEFAULT_WORKSPACE = "/job"
INFERRED_COPY = "inferred (source_url is a local directory)"
# A URL (scheme://...) or scp-like git address (user@host:path): not a local path.
_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[^/\s]+@[^/\s]+:")


def is_local_path(url: str) -> bool:
    """Whether a source URL names a local path (relative or absolute) rather than a remote location."""
    return bool(url) and not _REMOTE.match(url)


def absolute_source(value: Any) -> Any:
    """A relative local source path made absolute against the current directory (rule 1)."""
    if isinstance(value, str) and value and is_local_path(value) and not os.path.isabs(value):
        return os.path.abspath(value)
    return value


def infer_source_types(merged: MutableMapping[str, Any], origins: MutableMapping[str, str]) -> None:
    """A local directory given as source_url (or ci_source_url) without a type is a copy source (rule 1)."""
    for prefix in ("", "ci_"):
        url = merged.get(f"{prefix}source_url")
        if merged.get(f"{prefix}source_type") is None and isinstance(url, str) and is_local_path(url) \
                and os.path.isdir(url):
            merged[f"{prefix}source_type"] = "copy"
            origins[f"{prefix}source_type"] = INFERRED_COPY


# The directories derived from the workspace: one named explicitly keeps the workspace where it is.
PATH_FIELDS = ("code_dir", "job_dir", "ci_dir", "artifacts_dir", "triggers_file")


def _usable(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def _worker_mount(path: str) -> bool:
    """Whether `path` is the workspace a worker mounted for this job: a writable mount point. A plain /job
    directory on a shared host may be another job's (its triggers, its sources): not ours to use unasked."""
    return _usable(path) and os.path.ismount(path)


class LocalRun:
    """What adopt() decided for one run: messages for the first lines, a hint, or an error."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        # Said after a failed job only: an empty src explains "no tests ran", and is noise when all went well.
        self.hint: str | None = None
        # Why the workspace cannot be used (the runner reports it as a workspace_root configuration error).
        self.error: str | None = None

    def close(self) -> None:
        """The end of the run. Nothing is held any more: the copy source copies the current directory itself
        (it made a private snapshot first until the copy source learnt git's list); the runner still calls it."""


def per_run_workspace(config: Any) -> bool:
    """Whether a run of `config` gets a per-run workspace (rule 2), decided without side effects."""
    paths_default = all(config.origin(f).startswith("default") for f in PATH_FIELDS)
    return (config.origin("workspace_root") == "default" and not config.in_container and paths_default
            and config.workspace_root == DEFAULT_WORKSPACE and not _worker_mount(DEFAULT_WORKSPACE))


def adopt(config: Any, fill_derived: Callable[[Any], None], *, cwd: str | None = None) -> LocalRun:
    """Apply rules 2-4 to `config` (a JobConfig) before the job runs; return what the first lines say.
    `fill_derived` is config.fill_derived (passed in: config imports this module)."""
    run = LocalRun()
    cwd = cwd or os.getcwd()
    no_source = (config.source_type or "none") == "none" and not config.source_url
    own_dirs = all(config.origin(f).startswith("default") for f in ("code_dir", "job_dir"))
    if per_run_workspace(config):
        workspace = tempfile.mkdtemp(prefix=f"runnerlib-{config.job_name}-")
        os.chmod(workspace, 0o755)  # the sandbox uid of untrusted steps (root runs) must reach src
        why = ("does not exist" if not os.path.exists(DEFAULT_WORKSPACE) else
               "is not writable" if not _usable(DEFAULT_WORKSPACE) else "is not a job's mount here")
        config.set("workspace_root", workspace, "per-run workspace")
        for field in ("code_dir", "ci_dir", "artifacts_dir", "triggers_file", "job_dir"):
            if config.origin(field).startswith("default"):
                config.set(field, None, "default")
        fill_derived(config)
        run.messages.append(f"workspace: {workspace} (per-run: {DEFAULT_WORKSPACE} {why}; kept for its logs; "
                            "--workspace-root chooses one)")
        if no_source and own_dirs:
            _use_current_directory(config, run, cwd)
    elif no_source and own_dirs and config.code_dir and config.origin("workspace_root").startswith("option") \
            and _empty(config.code_dir) \
            and os.path.realpath(cwd) != os.path.realpath(config.code_dir):
        run.hint = (f"note: no source was configured: the job ran in {config.code_dir}, which was empty; "
                    "`--source-url .` runs it on a copy of the current directory")
    root = config.workspace_root
    if os.path.isdir(root) and not os.access(root, os.W_OK | os.X_OK):
        run.error = (f"is not writable by this user (uid {os.geteuid()}); give a workspace of yours "
                     "(--workspace-root DIR), or none outside a container for a per-run one")
        return run
    url = config.source_url
    if config.source_type == "copy" and config.origin("source_url") != "current directory" and url \
            and is_local_path(url) and os.path.isdir(url.removeprefix("file://")):
        run.messages.append(f"source: {url}, copied into {config.code_dir}: {_what_is_copied(url)}")
    return run


def _what_is_copied(directory: str) -> str:
    """What a copy source of `directory` holds (source/copy.py decides the same way), for the first lines."""
    from runnerlib.source.git_files import work_tree_of

    top = work_tree_of(directory.removeprefix("file://"))
    if top is None:
        return "everything (not in a git work tree)"
    return f"the files git knows of (in the git work tree {top}: tracked, and untracked ones not ignored; no .git)"


def _empty(path: str) -> bool:
    try:
        return not os.listdir(path)
    except OSError:
        return True


def _use_current_directory(config: Any, run: LocalRun, cwd: str) -> None:
    real = os.path.realpath(cwd)
    workspace = os.path.realpath(config.workspace_root)
    why = ("/" if real == "/" else "your home" if real == os.path.realpath(os.path.expanduser("~")) else
           "where the workspace is made" if workspace.startswith(real.rstrip("/") + "/") else None)
    if why:
        run.messages.append(f"source: none (the current directory {cwd} is {why}: not copied); the job runs in an "
                            f"empty {config.code_dir}")
        return
    config.set("source_type", "copy", "current directory")
    config.set("source_url", cwd, "current directory")
    run.messages.append(f"source: the current directory {cwd}, copied into {config.code_dir}: {_what_is_copied(cwd)}")
