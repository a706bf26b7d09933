"""Dual source: trusted CI code in <root>/ci and untrusted code in <root>/src, prepared in one run.

Order matters: /job/ci first, then /job/src, then /job/ci is made read-only (recursively, owned by the
runner's uid, no write bits, no setuid/setgid) and that is VERIFIED against the uid untrusted steps
will use before prepare_job_sources returns, i.e. before any step can run. If the verification fails,
the job must not start: ReadOnlyViolation propagates. The worker's VCS credential directory is removed
afterwards when it asks for that (REACTORCIDE_VCS_AUTH_CLEANUP=true), so steps never see it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runnerlib.security.paths import PathPolicyError, Workspace
from runnerlib.source.base import PreparedSource, SecretSink, SourceError, SourceSpec
from runnerlib.source.git import register_vcs_auth
from runnerlib.source.outward_links import remove_outward_links
from runnerlib.source.prepare import prepare_source

CI_DIR = "ci"
SRC_DIR = "src"
# The uid untrusted steps use unless told otherwise (nobody), as the sandbox does.
DEFAULT_UNTRUSTED_UID = 65534


@dataclass
class JobSources:
    """What prepare_job_sources did: each prepared source (None when its type was none)."""

    ci: PreparedSource | None
    src: PreparedSource | None
    ci_path: str
    src_path: str
    ci_locked_entries: int = 0
    ci_verified: bool = False


def specs_from_env(environ: Mapping[str, str]) -> tuple[SourceSpec, SourceSpec]:
    """(ci_spec, src_spec) from REACTORCIDE_CI_SOURCE_* and REACTORCIDE_SOURCE_*."""
    return SourceSpec.from_env(environ, ci=True), SourceSpec.from_env(environ, ci=False)


def prepare_job_sources(*, registry: SecretSink, workspace: Workspace | None = None,
                        ci_spec: SourceSpec | None = None, src_spec: SourceSpec | None = None,
                        config: Any = None, workspace_root: str | None = None,
                        untrusted_uid: int | None = DEFAULT_UNTRUSTED_UID, untrusted_gids: tuple[int, ...] = (),
                        ci_dir: str | None = None, src_dir: str | None = None,
                        allow_insecure_transport: bool | None = None, env: Mapping[str, str] | None = None,
                        log_line: Callable[[str], None] | None = None, log: Callable[[str], None] | None = None,
                        timeout: float | None = None, src_owner: tuple[int, int] | None = None) -> JobSources:
    """Prepare ci_spec into `ci_dir` and src_spec into `src_dir`, then lock and verify `ci_dir`.

    Either pass the specs, or `config` (a runnerlib JobConfig: source_*, ci_source_*, code_dir, ci_dir,
    workspace_root, allow_insecure_transport). `untrusted_uid` is the uid untrusted steps run as
    (default 65534); None skips the verification (only for a run with no untrusted steps).
    `src_owner` (uid, gid), when given, hands the prepared src tree to that owner (so untrusted steps
    running as it can build in /job/src); ci is never handed over.
    Raises SourceError / PathPolicyError / ReadOnlyViolation.

    >>> prepare_job_sources(workspace=Workspace("/job"), registry=reg,            # doctest: +SKIP
    ...     ci_spec=SourceSpec(type="git", url=CI_URL, ref="main"),
    ...     src_spec=SourceSpec(type="git", url=PR_URL, ref="refs/pull/7/head"), untrusted_uid=65534)
    """
    if config is not None:
        ci_spec = ci_spec or SourceSpec.from_fields(config.ci_source_type, config.ci_source_url,
                                                    config.ci_source_ref, prefix="ci_source")
        src_spec = src_spec or SourceSpec.from_fields(config.source_type, config.source_url,
                                                      config.source_ref, prefix="source")
        ci_dir = ci_dir or getattr(config, "ci_dir", None)
        src_dir = src_dir or getattr(config, "code_dir", None)
        workspace_root = workspace_root or getattr(config, "workspace_root", None)
        if allow_insecure_transport is None:
            allow_insecure_transport = bool(getattr(config, "allow_insecure_transport", False))
    if workspace is None:
        workspace = Workspace(workspace_root or "/job", create=True)
    ci_dir = ci_dir or CI_DIR
    src_dir = src_dir or SRC_DIR
    log_line = log_line or log
    environ = dict(os.environ if env is None else env)
    ci_rel = workspace.rel(ci_dir, field="ci_source_dir")
    src_rel = workspace.rel(src_dir, field="source_dir")
    if not ci_rel or not src_rel:
        raise PathPolicyError("source_dir", "the ci and src directories must be below the workspace root")
    if ci_rel == src_rel or ci_rel.startswith(src_rel + "/") or src_rel.startswith(ci_rel + "/"):
        raise PathPolicyError("ci_source_dir", "must not be the source directory nor nested with it",
                              value=f"{ci_rel!r} and {src_rel!r}")
    common = dict(workspace=workspace, registry=registry, allow_insecure_transport=bool(allow_insecure_transport),
                  env=environ, log_line=log_line, timeout=timeout)
    from runnerlib.source.base import PrepareContext

    register_vcs_auth(PrepareContext(workspace=workspace, registry=registry, env=environ))
    ci = src = None
    try:
        if ci_spec is not None and ci_spec.type != "none":
            ci = prepare_source(ci_spec, ci_rel, **common)  # type: ignore[arg-type]
        if src_spec is not None and src_spec.type != "none":
            src = prepare_source(src_spec, src_rel, **common)  # type: ignore[arg-type]
            remove_outward_links(workspace, src_rel, log=log_line)  # untrusted content: no link leads out
    finally:
        _cleanup_vcs_auth(workspace, environ)
    result = JobSources(ci=ci, src=src, ci_path=str(workspace.path(ci_rel)), src_path=str(workspace.path(src_rel)))
    if src_owner is not None and workspace.is_dir(src_rel):
        workspace.chown_tree(src_rel, *src_owner)
    if workspace.is_dir(ci_rel):
        result.ci_locked_entries = lock_ci(workspace, ci_rel)
        if untrusted_uid is not None:
            # nobody:nogroup style: the untrusted uid's own group counts unless told otherwise.
            workspace.verify_readonly(ci_rel, untrusted_uid, untrusted_gids or (untrusted_uid,))
            result.ci_verified = True
    elif ci_spec is not None and ci_spec.type != "none":
        raise SourceError(f"ci_source: {workspace.path(ci_rel)} is missing after preparation")
    return result


def lock_ci(workspace: Workspace, ci_rel: str) -> int:
    """make_readonly(ci_rel); a read-only mount (EROFS) is already locked and is left to verification."""
    try:
        return workspace.make_readonly(ci_rel)
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return 0
        raise


def _cleanup_vcs_auth(workspace: Workspace, environ: Mapping[str, str]) -> None:
    auth_dir = environ.get("REACTORCIDE_VCS_AUTH_DIR")
    if not auth_dir or environ.get("REACTORCIDE_VCS_AUTH_CLEANUP", "").lower() != "true":
        return
    try:
        rel = workspace.rel(auth_dir, field="REACTORCIDE_VCS_AUTH_DIR")
    except PathPolicyError:
        return  # outside the workspace: not ours to remove
    if rel:
        workspace.rmtree(rel)
