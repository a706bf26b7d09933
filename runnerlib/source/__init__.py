"""Source preparation: one module per strategy (none, git, copy, tarball, hg, svn) behind one interface.

`prepare_source(spec, dest, workspace=..., registry=...)` prepares one directory; `dual.prepare_job_sources`
prepares /job/ci (trusted, then locked read-only) and /job/src (untrusted) in one run. See docs/sources.md.
"""

from runnerlib.source.base import (
    PreparedSource,
    SourceError,
    SourceLimits,
    SourceSpec,
)
from runnerlib.source.prepare import prepare_source, strategies

__all__ = ["PreparedSource", "SourceError", "SourceLimits", "SourceSpec", "prepare_source", "strategies"]
