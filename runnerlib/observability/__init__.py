"""Seeing a job: W3C trace context and OpenTelemetry spans, Prometheus metrics, per-step resource profiles,
and the self-contained HTML run report (see docs/observability.md). Nothing here is imported at start-up
unless it is asked for: the SDKs load only when an exporter, a metrics target or a report is configured."""
