"""W3C Trace Context (`traceparent`): parse strictly, make, and derive the child handed to steps and jobs.

    traceparent = 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>

Read from TRACEPARENT, else REACTORCIDE_TRACEPARENT (the worker's name). Strict, as the spec asks of
version 00: lower-case hex only, exact lengths, neither id all zeros, version ff invalid. A malformed value
is ignored (a new trace is started) and the caller logs a debug note. No OpenTelemetry import here: ids
are made with os.urandom so that a job without an exporter pays nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

ENV_NAMES = ("TRACEPARENT", "REACTORCIDE_TRACEPARENT")
_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


@dataclass(frozen=True)
class TraceContext:
    """One span's place in a trace: the trace id, the span id and the sampled flag (hex strings)."""

    trace_id: str
    span_id: str
    flags: str = "01"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> TraceContext:
        """A new span id in the same trace."""
        return TraceContext(self.trace_id, new_span_id(), self.flags)

    def env(self) -> dict[str, str]:
        """The variables a step or a triggered job gets: this context as its parent."""
        value = self.traceparent
        return {name: value for name in ENV_NAMES}


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def parse_traceparent(value: str) -> TraceContext:
    """The context of a `traceparent` header value; ValueError naming the rule it breaks."""
    match = _RE.fullmatch(value.strip())
    if not match:
        raise ValueError("not 00-<32 lower-case hex>-<16 lower-case hex>-<2 hex>")
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff":
        raise ValueError("version ff is invalid")
    if version == "00" and rest:
        raise ValueError("version 00 has exactly four fields")
    if trace_id == "0" * 32 or span_id == "0" * 16:
        raise ValueError("an all-zero trace id or parent id is invalid")
    return TraceContext(trace_id, span_id, flags)


def from_environ(environ: Mapping[str, str]) -> tuple[TraceContext | None, str | None]:
    """(the incoming parent context or None, a note when a variable was set but malformed)."""
    for name in ENV_NAMES:
        value = environ.get(name)
        if value:
            try:
                return parse_traceparent(value), None
            except ValueError as exc:
                # The value is not shown: it came from outside and may be anything.
                return None, f"tracing: {name} ignored ({exc}); starting a new trace"
    return None, None
