#!/usr/bin/env python3
"""Observability overhead: tracing (OTLP/HTTP export to a local receiver) and metrics (textfile) on against
off, for a job of 100 trivial steps, in the same run (interleaved; medians, the machine is noisy).

1. Whole jobs through the library (JobRunner): 100 `true` steps in a chain, off / on. Figure: extra per step.
2. The hooks alone (the observer's per-attempt spans, TRACEPARENT and facts around a no-op executor), off
   (no exporter: ids only) and on (SDK spans), against the bare executor, and the end-of-job work (metrics
   textfile, span flush) for as many steps: the part of (1) that is ours, without the step processes' noise
   (on a loaded machine that noise is larger than the difference). Target: under 0.5 ms per step.

Usage: bench/bench_observability.py [--steps N] [--repeat N]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# An OTLP/HTTP endpoint that accepts everything, in a process of its own (a collector is elsewhere: its
# work must not be counted as the runner's, nor hold the runner's GIL).
SINK = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def job_of(steps: int) -> Any:
    from runnerlib.jobs import Job

    job = Job("bench")
    for i in range(steps):
        job.add_step(f"s{i}", "true", depends_on=[f"s{i - 1}"] if i else None)
    return job


def run_job(ws: Path, steps: int, on: bool, endpoint: str) -> float:
    from runnerlib.config import get_config
    from runnerlib.plugins import PluginManager
    from runnerlib.runner import JobRunner

    overrides: dict[str, Any] = {"workspace_root": str(ws), "concurrency": 1}
    environ: dict[str, str] = {"PATH": "/usr/bin:/bin"}
    if on:
        overrides["metrics_file"] = str(ws / "metrics.prom")
        environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    config = get_config(environ={}, **overrides)
    runner = JobRunner(config, job_of(steps), plugins=PluginManager(), out=io.BytesIO(), environ=environ,
                       handle_signals=False)
    start = time.perf_counter()
    code = runner.run()
    took = time.perf_counter() - start
    assert code == 0, code
    return took


def hooks(steps: int, mode: str, endpoint: str) -> float:
    """Seconds for `steps` attempts through the observer's executor wrapper around a no-op executor."""
    from runnerlib.config import get_config
    from runnerlib.execution.logs import JobLog
    from runnerlib.execution.scheduler import Outcome
    from runnerlib.observability.observer import JobObserver
    from runnerlib.security.registry import SecretRegistry

    job = job_of(steps)
    outcome = Outcome(exit_code=0)

    def execute(step: Any, attempt: int, cancel: Any) -> Any:
        return outcome

    registry = SecretRegistry()
    if mode == "bare":
        wrapped, env_of, observer = execute, (lambda name: {}), None
    else:
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint} if mode == "on" else {}
        config = get_config(environ={}, workspace_root="/tmp")
        observer = JobObserver(config, environ, registry, JobLog(io.BytesIO()))
        wrapped, env_of = observer.wrap_executor(execute), observer.step_env
    start = time.perf_counter()
    for step in job.steps:
        wrapped(step, 1, None)
        env_of(step.name)
    took = time.perf_counter() - start
    if observer is not None:
        observer.tracer.shutdown()
    return took


def end_of_job(steps: int, endpoint: str, tmp: Path) -> float:
    """Seconds the observer's end-of-job work takes for `steps` steps that ran: the metrics textfile and the
    flush of the spans (the SDK exports them from its batch thread, mostly at this point)."""
    from runnerlib.config import get_config
    from runnerlib.execution.logs import JobLog
    from runnerlib.execution.scheduler import Outcome, StepResult
    from runnerlib.observability.observer import JobObserver
    from runnerlib.plugins import PluginManager
    from runnerlib.security.registry import SecretRegistry

    config = get_config(environ={}, workspace_root=str(tmp), metrics_file=str(tmp / "m.prom"))
    observer = JobObserver(config, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, SecretRegistry(), JobLog(io.BytesIO()))
    usage = {"cpu_user_seconds": 0.001, "cpu_system_seconds": 0.001, "max_rss_bytes": 4 << 20,
             "read_bytes": 4096, "write_bytes": 10, "disk_read_bytes": 0, "disk_write_bytes": 0, "output_bytes": 0}
    run = observer.wrap_executor(lambda step, attempt, cancel: Outcome(exit_code=0))
    results = []
    for step in job_of(steps).steps:
        run(step, 1, None)
        now = time.time()
        results.append(StepResult(step.name, "success", 0, now - 0.01, now, 1, resources=dict(usage)))
    observer.steps_finished(results)
    start = time.perf_counter()
    observer.finish(0, results, PluginManager(), error=print)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE)
    assert sink.stdout is not None
    endpoint = f"http://127.0.0.1:{int(sink.stdout.readline())}"
    try:
        measure(args, endpoint)
    finally:
        sink.terminate()  # our own child, by its pid
        sink.wait()


def measure(args: Any, endpoint: str) -> None:
    n = args.steps

    times: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="bench-obs-") as tmp:
        run_job(Path(tmp), n, False, endpoint)  # warm-up: fork server, imports (the SDK's too)
        run_job(Path(tmp), n, True, endpoint)
        for _ in range(args.repeat):
            for mode in ("off", "on"):
                times[mode].append(run_job(Path(tmp), n, mode == "on", endpoint))
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"job of {n} trivial steps, median of {args.repeat} interleaved runs:")
    print(f"  observability off: {off * 1000:8.1f} ms  ({off / n * 1000:.2f} ms/step)")
    print(f"  tracing + metrics: {on * 1000:8.1f} ms  ({on / n * 1000:.2f} ms/step)")
    print(f"  extra per step:    {(on - off) / n * 1000:+8.3f} ms  (ratio {on / off:.3f}; target < 0.5 ms)")

    hook_times: dict[str, list[float]] = {"bare": [], "off": [], "on": []}
    for _ in range(max(args.repeat, 7)):
        for mode in hook_times:
            hook_times[mode].append(hooks(n, mode, endpoint))
    bare = statistics.median(hook_times["bare"])
    print(f"observer hooks alone, {n} attempts, median of {max(args.repeat, 7)}:")
    for mode in ("off", "on"):
        extra = (statistics.median(hook_times[mode]) - bare) / n * 1000
        print(f"  {'ids only (no exporter)' if mode == 'off' else 'SDK spans (exporting)':24}: "
              f"{extra * 1000:8.1f} us/step  (target < 500 us)")
    with tempfile.TemporaryDirectory(prefix="bench-obs-end-") as tmp:
        ends = [end_of_job(n, endpoint, Path(tmp)) for _ in range(max(args.repeat, 7))]
    end = statistics.median(ends)
    print(f"end of job (metrics textfile + span flush), {n} steps: {end * 1000:.1f} ms = "
          f"{end / n * 1e6:.0f} us/step")
    total = (statistics.median(hook_times["on"]) - bare) / n + end / n
    print(f"ours per step, tracing + metrics on: {total * 1e6:.0f} us (hooks + end of job; target < 500 us)")


if __name__ == "__main__":
    main()
