"""prepare_source: the one entry point that picks a strategy by source type and prepares a directory.

It sits above the strategy modules (each imports only base.py), so nothing imports itself back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from runnerlib.security.paths import PathPolicyError, Workspace
from runnerlib.source.base import (
    PrepareContext,
    PreparedSource,
    SecretSink,
    SourceError,
    SourceSpec,
    Strategy,
    register_url_credentials,
)
from runnerlib.source.copy import prepare as prepare_copy
from runnerlib.source.git import prepare as prepare_git
from runnerlib.source.hg import prepare as prepare_hg
from runnerlib.source.none import prepare as prepare_none
from runnerlib.source.svn import prepare as prepare_svn
from runnerlib.source.tarball import prepare as prepare_tarball

log = logging.getLogger("runnerlib.source")

STRATEGIES: dict[str, Strategy] = {
    "none": prepare_none,  # type: ignore[dict-item]  # none stages nothing
    "git": prepare_git,
    "copy": prepare_copy,
    "tarball": prepare_tarball,
    "hg": prepare_hg,
    "svn": prepare_svn,
}


def strategies() -> dict[str, Strategy]:
    """The strategies by source type name."""
    return dict(STRATEGIES)


def prepare_source(spec: SourceSpec, dest: str | os.PathLike[str], *, workspace: Workspace, registry: SecretSink,
                   allow_insecure_transport: bool = False, env: Mapping[str, str] | None = None,
                   log_line: Callable[[str], None] | None = None, timeout: float | None = None) -> PreparedSource:
    """Prepare `spec` into the directory `dest` (inside `workspace`); nothing half-done on failure.

    >>> prepare_source(SourceSpec(type="git", url="file:///srv/repo.git", ref="main"),  # doctest: +SKIP
    ...                "/job/src", workspace=Workspace("/job"), registry=SecretRegistry())

    Raises SourceError (masked message naming the field/source) or PathPolicyError.
    """
    ctx = PrepareContext(workspace=workspace, registry=registry, allow_insecure_transport=allow_insecure_transport,
                         env=dict(os.environ if env is None else env), log=log_line or log.info, timeout=timeout)
    if spec.url:
        register_url_credentials(spec.url, registry, source=f"{spec.field_prefix}_url")
    dest_rel = workspace.rel(dest, field=f"{spec.field_prefix} destination")
    strategy = STRATEGIES.get(spec.type)
    if strategy is None:
        raise SourceError(f"{spec.field_prefix}_type: unknown type {spec.type!r}")
    if spec.type == "none":
        result = strategy(spec, None, ctx)  # type: ignore[arg-type]  # none stages nothing
        return result or PreparedSource(type="none", path=workspace.path(dest_rel))
    try:
        with workspace.staging(dest_rel) as staged:
            result = strategy(spec, staged, ctx)
    except (SourceError, PathPolicyError):
        raise
    except OSError as exc:
        raise ctx.fail(f"{spec.field_prefix}: {spec.type} preparation failed: {exc}") from None
    prepared = result or PreparedSource(type=spec.type, path=workspace.path(dest_rel))
    prepared.path = workspace.path(dest_rel)
    return prepared


