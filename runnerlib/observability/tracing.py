"""Spans of one job: the job, each lifecycle phase, each plugin call, each step and each attempt.

Without an exporter configured (the default) spans are plain objects holding ids made with os.urandom:
the ids still go on JSON log lines and into the steps' TRACEPARENT, nothing is sent, and OpenTelemetry is
never imported. With OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT set (and
OTEL_SDK_DISABLED not true, OTEL_TRACES_EXPORTER unset or `otlp`), the SDK exports them as OTLP over
HTTP/protobuf from a per-job TracerProvider (never the global one: two jobs in one process stay apart).

Every span name and every string attribute goes through the job's mask: a secret never leaves in a span.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from runnerlib.observability.tracecontext import TraceContext, from_environ, new_span_id, new_trace_id

_TRUE = ("1", "true", "yes", "on")


def exporter_settings(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(traces endpoint URL or None, a note explaining why not when the variables ask for something
    runnerlib does not do)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return None, None
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter in ("none",):
        return None, None
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        endpoint = base.rstrip("/") + "/v1/traces" if base else ""
    if not endpoint:
        return None, None
    if exporter and exporter != "otlp":
        return None, f"tracing: OTEL_TRACES_EXPORTER={exporter} is not supported (only otlp); no spans are sent"
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip()
    if protocol != "http/protobuf":
        return None, (f"tracing: OTLP protocol {protocol} is not supported (runnerlib sends http/protobuf); "
                      "no spans are sent")
    return endpoint, None


class Span:
    """One span: its context (ids), and, when exporting, the SDK span behind it."""

    __slots__ = ("context", "_sdk", "_tracer", "_name", "_attributes")

    def __init__(self, tracer: Tracer, context: TraceContext, sdk: Any = None, name: str = "",
                 attributes: Mapping[str, Any] | None = None) -> None:
        self._tracer, self.context, self._sdk = tracer, context, sdk
        # Kept raw to be masked again at the end: the job's span starts before its secrets are loaded.
        self._name, self._attributes = name, dict(attributes or {})

    def set(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes (strings masked; None values dropped)."""
        if self._sdk is not None:
            self._attributes.update(attributes)
            self._sdk.set_attributes(self._tracer.clean(attributes))

    def end(self, *, error: str | None = None, end_time: float | None = None) -> None:
        """End the span; `error` (masked) marks it failed; `end_time` is a time.time() value."""
        if self._sdk is None:
            return
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            self._sdk.set_status(Status(StatusCode.ERROR, self._tracer.mask(error)))
        self._sdk.update_name(self._tracer.mask(self._name))
        self._sdk.set_attributes(self._tracer.clean(self._attributes))
        self._sdk.end(end_time=None if end_time is None else int(end_time * 1e9))


class Tracer:
    """The job's tracer. `parent` is the incoming context (TRACEPARENT), `note` a message for the log."""

    def __init__(self, environ: Mapping[str, str], *, mask: Callable[[str], str] = lambda s: s,
                 service: str = "runnerlib") -> None:
        self.mask = mask
        self.parent, note = from_environ(environ)
        self.notes = [note] if note else []
        endpoint, why = exporter_settings(environ)
        if why:
            self.notes.append(why)
        self.endpoint = endpoint
        self._provider: Any = None
        self._sdk_tracer: Any = None
        if endpoint:
            self._start_sdk(endpoint, environ, service)

    @property
    def exporting(self) -> bool:
        return self._sdk_tracer is not None

    def _start_sdk(self, endpoint: str, environ: Mapping[str, str], service: str) -> None:
        # Imported here only: the SDK and its exporter cost ~100 ms of start-up a job without them must not pay.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        timeout = float(environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") or 10_000) / 1000
        resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or service})
        self._provider = TracerProvider(resource=resource)
        # Export every 200 ms (the SDK's default is 5 s) unless OTEL_BSP_SCHEDULE_DELAY says otherwise: the
        # batches are then encoded and sent while the runner waits for its steps, not all at the job's end.
        delay = float(environ.get("OTEL_BSP_SCHEDULE_DELAY") or 200)
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=timeout),
                                                             schedule_delay_millis=delay))
        self._sdk_tracer = self._provider.get_tracer("runnerlib")

    def clean(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """Attributes fit for a span: strings masked, None dropped, other values as they are."""
        return {k: (self.mask(v) if isinstance(v, str) else v) for k, v in attributes.items() if v is not None}

    def start(self, name: str, parent: Span | TraceContext | None = None, *,
              attributes: Mapping[str, Any] | None = None, start_time: float | None = None) -> Span:
        """A new span, child of `parent` (a span or context; default: the incoming TRACEPARENT, else a new
        trace). `start_time` is a time.time() value (default now)."""
        parent_ctx = parent.context if isinstance(parent, Span) else parent
        if parent_ctx is None:
            parent_ctx = self.parent
        if self._sdk_tracer is None:
            trace_id = parent_ctx.trace_id if parent_ctx else new_trace_id()
            return Span(self, TraceContext(trace_id, new_span_id(), parent_ctx.flags if parent_ctx else "01"))
        from opentelemetry import trace

        if isinstance(parent, Span) and parent._sdk is not None:
            context = trace.set_span_in_context(parent._sdk)
        elif parent_ctx is not None:
            remote = trace.SpanContext(int(parent_ctx.trace_id, 16), int(parent_ctx.span_id, 16), is_remote=True,
                                       trace_flags=trace.TraceFlags(int(parent_ctx.flags, 16)))
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        else:
            context = None
        sdk = self._sdk_tracer.start_span(
            self.mask(name), context=context, attributes=self.clean(attributes or {}),
            start_time=None if start_time is None else int(start_time * 1e9))
        ctx = sdk.get_span_context()
        return Span(self, TraceContext(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", f"{int(ctx.trace_flags):02x}"),
                    sdk, name, attributes)

    def record(self, name: str, parent: Span | None, start: float, end: float, *,
               attributes: Mapping[str, Any] | None = None, error: str | None = None) -> None:
        """A span for something that already happened (a plugin call timed by the PluginManager)."""
        if self._sdk_tracer is None:
            return
        self.start(name, parent, attributes=attributes, start_time=start).end(error=error, end_time=end)

    def shutdown(self) -> None:
        """Send what is buffered and stop the exporter (bounded by OTEL_EXPORTER_OTLP_TIMEOUT)."""
        if self._provider is not None:
            provider, self._provider, self._sdk_tracer = self._provider, None, None
            provider.shutdown()

