"""Source type `none`: nothing is prepared; the directory may be pre-mounted or not needed at all."""

from __future__ import annotations

from runnerlib.security.paths import Staged
from runnerlib.source.base import PrepareContext, PreparedSource, SourceSpec


def prepare(spec: SourceSpec, staged: Staged | None, ctx: PrepareContext) -> PreparedSource | None:
    """Do nothing (a URL given with type none is ignored, and said so)."""
    if spec.url:
        ctx.say(f"{spec.field_prefix}_type is none: {spec.field_prefix}_url is ignored")
    return None
