"""A job's metrics in Prometheus format, with prometheus-client: a node-exporter textfile and/or a push to a
Pushgateway, both made at the end of the job from what the job observed.

One CollectorRegistry per job (never the process-wide default: two jobs in one process would add up).
In the textfile every series carries job_name and job_id labels, so the files of many jobs in one
collector directory never clash; on the Pushgateway the grouping key (job=<name>, job_id=<id>) holds them.
prometheus-client is imported only when a metrics target is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
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
    # The job's registry's byte mask: the exposition is masked as a whole before it is written or sent (a step
    # or plugin name that happens to hold a secret never leaves in a label).
    mask: Callable[[bytes], bytes] = lambda data: data


def build_registry(facts: JobFacts, *, labels: Mapping[str, str]) -> Any:
    """A CollectorRegistry holding the job's metrics; `labels` are added to every series."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_JobCollector(facts, dict(labels)))
    return reg


class _JobCollector:
    """The job's metric families, made once from the facts. A collector of metric families (the
    prometheus-client API for values known up front) instead of Counter/Gauge objects: those lock and
    validate per child, ~50 us a series, which 100 steps of a job made 50 ms."""

    def __init__(self, facts: JobFacts, labels: dict[str, str]) -> None:
        self.facts, self.labels = facts, labels

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        facts, base = self.facts, self.labels
        names, values = list(base), list(base.values())

        def family(kind: Any, name: str, doc: str, *extra: str) -> Any:
            return kind(name, doc, labels=names + list(extra))

        def histogram(name: str, doc: str, observed: list[float], buckets: tuple[float, ...]) -> Any:
            h = family(HistogramMetricFamily, name, doc)
            counts = [(str(float(b)), sum(1 for v in observed if v <= b)) for b in buckets]
            h.add_metric(values, counts + [("+Inf", len(observed))], sum(observed))
            return h

        yield histogram("runnerlib_job_duration_seconds", "Duration of the job.", [facts.duration], DURATION_BUCKETS)
        for name, doc, value in (
                ("runnerlib_job_exit_code", "Exit code of the job.", facts.exit_code),
                ("runnerlib_job_success", "1 if the job succeeded, else 0.", 1 if facts.exit_code == 0 else 0),
                ("runnerlib_secrets_registered", "Secrets registered in the job's registry.",
                 facts.secrets_registered)):
            g = family(GaugeMetricFamily, name, doc)
            g.add_metric(values, value)
            yield g
        ran = [r for r in facts.steps if r.duration is not None and r.status != "skipped"]
        yield histogram("runnerlib_step_duration_seconds", "Durations of the job's steps (all attempts each).",
                        [r.duration for r in ran], DURATION_BUCKETS)
        last = family(GaugeMetricFamily, "runnerlib_step_last_duration_seconds", "Duration of each step.", "step")
        status: dict[str, int] = {}
        codes = family(GaugeMetricFamily, "runnerlib_step_exit_code", "Exit code of each step that ran.", "step")
        retries = family(CounterMetricFamily, "runnerlib_step_retries", "Attempts beyond the first.", "step")
        cpu = family(GaugeMetricFamily, "runnerlib_step_cpu_seconds", "CPU time of the step and its descendants.",
                     "step", "mode")
        rss = family(GaugeMetricFamily, "runnerlib_step_max_rss_bytes", "Peak RSS of the step's largest process.",
                     "step")
        io = family(GaugeMetricFamily, "runnerlib_step_io_bytes",
                    "Bytes the step's processes read and wrote (syscalls).", "step", "direction")
        disk = family(GaugeMetricFamily, "runnerlib_step_disk_io_bytes",
                      "Bytes the step's processes made the block layer read and write.", "step", "direction")
        masked_total = 0
        for r in facts.steps:
            status[r.status] = status.get(r.status, 0) + 1
            if r in ran:
                last.add_metric(values + [r.name], r.duration)
            if r.exit_code is not None:
                codes.add_metric(values + [r.name], r.exit_code)
            if r.attempts > 1:
                retries.add_metric(values + [r.name], r.attempts - 1)
            res = getattr(r, "resources", None) or {}
            if res:
                cpu.add_metric(values + [r.name, "user"], res.get("cpu_user_seconds", 0))
                cpu.add_metric(values + [r.name, "system"], res.get("cpu_system_seconds", 0))
                rss.add_metric(values + [r.name], res.get("max_rss_bytes", 0))
                for direction in ("read", "write"):
                    if f"{direction}_bytes" in res:  # not measured under an unprivileged runner (profile.py)
                        io.add_metric(values + [r.name, direction], res[f"{direction}_bytes"])
                    disk.add_metric(values + [r.name, direction], res.get(f"disk_{direction}_bytes", 0))
                masked_total += int(res.get("output_bytes", 0))
        results = family(CounterMetricFamily, "runnerlib_step_results", "Steps by final status.", "status")
        for name, count in sorted(status.items()):
            results.add_metric(values + [name], count)
        masked = family(CounterMetricFamily, "runnerlib_bytes_masked", "Bytes of step output that went through "
                        "the masker.")
        masked.add_metric(values, masked_total)
        yield from (last, codes, retries, cpu, rss, io, disk, results, masked)
        refusals: dict[str, int] = {}
        limits: dict[tuple[str, str], int] = {}
        leftovers: dict[str, int] = {}
        for a in facts.attempts:
            if a.get("refused"):
                refusals[a["step"]] = refusals.get(a["step"], 0) + 1
            if a.get("limit_hit"):
                key = (a["step"], str(a["limit_hit"]))
                limits[key] = limits.get(key, 0) + 1
            if a.get("leftover_killed"):
                leftovers[a["step"]] = leftovers.get(a["step"], 0) + 1
        for name, doc, counts in (
                ("runnerlib_sandbox_refusals", "Step attempts the sandbox refused.", refusals),
                ("runnerlib_step_leftover_processes_killed", "Step attempts whose leftover processes were killed.",
                 leftovers)):
            c = family(CounterMetricFamily, name, doc, "step")
            for step, count in counts.items():
                c.add_metric(values + [step], count)
            yield c
        c = family(CounterMetricFamily, "runnerlib_step_limit_hits", "Step attempts stopped by a resource limit.",
                   "step", "limit")
        for (step, limit), count in limits.items():
            c.add_metric(values + [step, limit], count)
        yield c
        calls: dict[tuple[str, str], list[float]] = {}
        for t in facts.plugin_timings:
            calls.setdefault((t.plugin, t.phase.value), []).append(t.duration)
        plugin = family(HistogramMetricFamily, "runnerlib_plugin_duration_seconds", "Duration of each plugin call.",
                        "plugin", "phase")
        for (name, phase), observed in calls.items():
            cumulative = [(str(float(b)), sum(1 for v in observed if v <= b)) for b in PLUGIN_BUCKETS]
            plugin.add_metric(values + [name, phase], cumulative + [("+Inf", len(observed))], sum(observed))
        yield plugin


def write_textfile(path: str, facts: JobFacts) -> None:
    """The node-exporter textfile, written atomically: prometheus-client's exposition into a temp file made
    with O_EXCL (mkstemp) beside the target, then renamed over it. Not write_to_textfile: its temp name is
    predictable (path.PID.TID) and opened without O_EXCL, so a step able to write the directory could plant
    a symlink there."""
    from prometheus_client import generate_latest

    from runnerlib.observability.report import write_atomically

    data = generate_latest(build_registry(facts, labels={"job_name": facts.job_name, "job_id": facts.job_id}))
    write_atomically(path, facts.mask(data), mode=0o644)  # node-exporter runs as its own user


def push(url: str, facts: JobFacts, *, timeout: float = 10.0) -> None:
    """PUT the job's metrics to a Pushgateway, grouped by job (name) and job_id. Basic-auth credentials may be
    given in the URL (https://user:password@host:9091); they are sent as a header, not in the URL."""
    from urllib.parse import urlsplit, urlunsplit

    from prometheus_client import push_to_gateway
    from prometheus_client.exposition import basic_auth_handler, default_handler

    parts = urlsplit(url)
    base: Any = default_handler
    if parts.username is not None:
        user, password = parts.username, parts.password or ""
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

        def base(url: str, method: str, timeout: Any, headers: Any, data: bytes) -> Any:  # noqa: F811
            return basic_auth_handler(url, method, timeout, headers, data, user, password)

    def handler(url: str, method: str, timeout: Any, headers: Any, data: bytes) -> Any:
        return base(url, method, timeout, headers, facts.mask(data))

    push_to_gateway(url, job=facts.job_name, grouping_key={"job_id": facts.job_id or "none"},
                    registry=build_registry(facts, labels={}), timeout=timeout, handler=handler)
