"""A job's metrics in Prometheus format, with prometheus-client: a node-exporter textfile and/or a push to a
Pushgateway, both made at the end of the job from what the job observed.

One CollectorRegistry per job (never the process-wide default: two jobs in one process would add up).
In the textfile every series carries job_name and job_id labels, so the files of many jobs in one
collector directory never clash; on the Pushgateway the grouping key (job=<name>, job_id=<id>) holds them.
prometheus-client is imported only when a metrics target is set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Steps last from milliseconds (a lint) to an hour (a build).
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
PLUGIN_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)


@dataclass
class JobFacts:
    """What the metrics are made of (gathered by the observer while the job ran)."""

    job_name: str
    job_id: str
    exit_code: int
    duration: float
    steps: list[Any] = field(default_factory=list)            # StepResult
    attempts: list[Mapping[str, Any]] = field(default_factory=list)  # per attempt: step, refused, limit_hit, ...
    plugin_timings: list[Any] = field(default_factory=list)   # PluginTiming
    secrets_registered: int = 0


def build_registry(facts: JobFacts, *, labels: Mapping[str, str]) -> Any:
    """A CollectorRegistry holding the job's metrics; `labels` are added to every series."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    reg = CollectorRegistry(auto_describe=True)
    base = tuple(labels)
    values = tuple(labels.values())

    def metric(kind: Any, name: str, doc: str, names: Iterable[str] = (), **kw: Any) -> Any:
        return kind(name, doc, base + tuple(names), registry=reg, **kw)

    def at(m: Any, *extra: str) -> Any:
        # A metric without any label name is its own child: prometheus-client refuses .labels() on it.
        return m.labels(*values, *extra) if values or extra else m

    job_duration = metric(Histogram, "runnerlib_job_duration_seconds", "Duration of the job.",
                          buckets=DURATION_BUCKETS)
    job_exit = metric(Gauge, "runnerlib_job_exit_code", "Exit code of the job.")
    job_success = metric(Gauge, "runnerlib_job_success", "1 if the job succeeded, else 0.")
    step_duration = metric(Histogram, "runnerlib_step_duration_seconds", "Duration of each step (all attempts).",
                           ("step",), buckets=DURATION_BUCKETS)
    results = metric(Counter, "runnerlib_step_results", "Steps by final status.", ("status",))
    exit_codes = metric(Gauge, "runnerlib_step_exit_code", "Exit code of each step that ran.", ("step",))
    retries = metric(Counter, "runnerlib_step_retries", "Attempts beyond the first.", ("step",))
    refusals = metric(Counter, "runnerlib_sandbox_refusals", "Step attempts the sandbox refused.", ("step",))
    limits = metric(Counter, "runnerlib_step_limit_hits", "Step attempts stopped by a resource limit.",
                    ("step", "limit"))
    leftovers = metric(Counter, "runnerlib_step_leftover_processes_killed",
                       "Step attempts whose leftover processes were killed.", ("step",))
    cpu = metric(Gauge, "runnerlib_step_cpu_seconds", "CPU time of the step and its descendants.",
                 ("step", "mode"))
    rss = metric(Gauge, "runnerlib_step_max_rss_bytes", "Peak RSS of the step's largest process.", ("step",))
    io = metric(Gauge, "runnerlib_step_io_bytes", "Bytes the step's processes read and wrote (syscalls).",
                ("step", "direction"))
    masked = metric(Counter, "runnerlib_bytes_masked", "Bytes of step output that went through the masker.")
    secrets = metric(Gauge, "runnerlib_secrets_registered", "Secrets registered in the job's registry.")
    plugin = metric(Histogram, "runnerlib_plugin_duration_seconds", "Duration of each plugin call.",
                    ("plugin", "phase"), buckets=PLUGIN_BUCKETS)

    at(job_duration).observe(facts.duration)
    at(job_exit).set(facts.exit_code)
    at(job_success).set(1 if facts.exit_code == 0 else 0)
    at(secrets).set(facts.secrets_registered)
    masked_total = 0
    for r in facts.steps:
        at(results, r.status).inc()
        if r.duration is not None and r.status != "skipped":
            at(step_duration, r.name).observe(r.duration)
        if r.exit_code is not None:
            at(exit_codes, r.name).set(r.exit_code)
        if r.attempts > 1:
            at(retries, r.name).inc(r.attempts - 1)
        res = getattr(r, "resources", None) or {}
        if res:
            at(cpu, r.name, "user").set(res.get("cpu_user_seconds", 0))
            at(cpu, r.name, "system").set(res.get("cpu_system_seconds", 0))
            at(rss, r.name).set(res.get("max_rss_bytes", 0))
            at(io, r.name, "read").set(res.get("read_bytes", 0))
            at(io, r.name, "write").set(res.get("write_bytes", 0))
            masked_total += int(res.get("output_bytes", 0))
    at(masked).inc(masked_total)
    for a in facts.attempts:
        if a.get("refused"):
            at(refusals, a["step"]).inc()
        if a.get("limit_hit"):
            at(limits, a["step"], str(a["limit_hit"])).inc()
        if a.get("leftover_killed"):
            at(leftovers, a["step"]).inc()
    for t in facts.plugin_timings:
        at(plugin, t.plugin, t.phase.value).observe(t.duration)
    return reg


def write_textfile(path: str, facts: JobFacts) -> None:
    """The node-exporter textfile (write_to_textfile writes a temp file and renames it: atomic)."""
    from prometheus_client import write_to_textfile

    write_to_textfile(path, build_registry(facts, labels={"job_name": facts.job_name, "job_id": facts.job_id}))


def push(url: str, facts: JobFacts, *, timeout: float = 10.0) -> None:
    """PUT the job's metrics to a Pushgateway, grouped by job (name) and job_id. Basic-auth credentials may be
    given in the URL (https://user:password@host:9091); they are sent as a header, not in the URL."""
    from urllib.parse import urlsplit, urlunsplit

    from prometheus_client import push_to_gateway
    from prometheus_client.exposition import basic_auth_handler, default_handler

    parts = urlsplit(url)
    handler: Any = default_handler
    if parts.username is not None:
        user, password = parts.username, parts.password or ""
        url = urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))

        def handler(url: str, method: str, timeout: Any, headers: Any, data: bytes) -> Any:  # noqa: F811
            return basic_auth_handler(url, method, timeout, headers, data, user, password)

    push_to_gateway(url, job=facts.job_name, grouping_key={"job_id": facts.job_id or "none"},
                    registry=build_registry(facts, labels={}), timeout=timeout, handler=handler)
