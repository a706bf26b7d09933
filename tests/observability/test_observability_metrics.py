"""Prometheus metrics of a job: the node-exporter textfile scraped with prometheus-client's parser, and a
push to a real Pushgateway (Debian's prometheus-pushgateway, started here on 127.0.0.1) read back."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from obs_testlib import REPO, base_env
from prometheus_client.parser import text_string_to_metric_families

SECRET = "Pr0m-s3cret-Value-9921x"
JOB = """
name: measured
steps:
  build:
    command: "echo token=$MY_TOKEN; python3 -c 'x = bytearray(40_000_000); print(len(x))'"
  flaky:
    command: "if [ -e {marker} ]; then exit 0; else touch {marker}; exit 4; fi"
    retries: 2
  broken:
    command: "exit 3"
    allow_failure: true
    depends_on: [build]
  after:
    command: "true"
    depends_on: [build]
"""


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    matches = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert matches, (name, labels)
    return sum(matches)


def _run(ws: Path, *options: str) -> subprocess.CompletedProcess[bytes]:
    (ws / "job.yaml").write_text(JOB.format(marker=ws / "marker"))
    return subprocess.run([sys.executable, "-m", "runnerlib.cli", "run-job", "--workspace-root", str(ws),
                           "--job-id", "job-42", *options, str(ws / "job.yaml")],
                          env=base_env(MY_TOKEN=SECRET, REACTORCIDE_SECRET_ENV_NAMES="MY_TOKEN"), cwd=REPO,
                          capture_output=True, timeout=120)


def _check(samples: dict, **base: str) -> None:
    assert _value(samples, "runnerlib_job_exit_code", **base) == 0
    assert _value(samples, "runnerlib_job_duration_seconds_count", **base) == 1
    assert _value(samples, "runnerlib_step_duration_seconds_count", **base) == 4
    assert _value(samples, "runnerlib_step_last_duration_seconds", step="build", **base) > 0
    assert _value(samples, "runnerlib_step_results_total", status="success", **base) == 3
    assert _value(samples, "runnerlib_step_results_total", status="failed", **base) == 1
    assert _value(samples, "runnerlib_step_exit_code", step="broken", **base) == 3
    assert _value(samples, "runnerlib_step_retries_total", step="flaky", **base) == 1
    assert _value(samples, "runnerlib_secrets_registered", **base) >= 1
    assert _value(samples, "runnerlib_bytes_masked_total", **base) > 0
    assert _value(samples, "runnerlib_step_max_rss_bytes", step="build", **base) > 40_000_000
    assert _value(samples, "runnerlib_step_cpu_seconds", step="build", mode="user", **base) >= 0
    if os.geteuid() == 0:  # an unprivileged supervisor cannot read its /proc/self/io (docs/observability.md)
        assert _value(samples, "runnerlib_step_io_bytes", step="build", direction="read", **base) > 0
    assert _value(samples, "runnerlib_step_disk_io_bytes", step="build", direction="write", **base) >= 0


def test_metrics_file_is_a_node_exporter_textfile(ws: Path) -> None:
    target = ws / "textfile" / "runnerlib.prom"
    target.parent.mkdir()
    r = _run(ws, "--metrics-file", str(target), "--profile")
    assert r.returncode == 0, r.stdout.decode()[-2000:] + r.stderr.decode()
    text = target.read_text()
    _check(_samples(text), job_name="measured", job_id="job-42")
    # write_to_textfile renamed its temp file into place: nothing half-written is left beside it.
    assert os.listdir(target.parent) == ["runnerlib.prom"]
    assert SECRET not in text and SECRET[:8] not in text
    # --profile: the table under the summary.
    out = r.stdout.decode()
    assert "PEAK-RSS" in out and "\nbuild " in out.split("PEAK-RSS")[1]


def test_metrics_file_that_cannot_be_written_is_one_error_line(ws: Path) -> None:
    r = _run(ws, "--metrics-file", str(ws / "missing-dir" / "m.prom"))
    out = r.stdout.decode()
    assert r.returncode == 0  # monitoring does not fail the build
    assert "metrics_file" in out and "cannot write" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pushgateway(tmp_path: Path):
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway)")
    port = _free_port()
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/-/ready", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, "the pushgateway exited"
                assert time.monotonic() < deadline, "the pushgateway did not become ready"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()  # our own child, by its pid
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_metrics_push_to_a_real_pushgateway(ws: Path, pushgateway: str) -> None:
    r = _run(ws, "--metrics-push", pushgateway)
    assert r.returncode == 0, r.stdout.decode()[-2000:] + r.stderr.decode()
    text = urllib.request.urlopen(pushgateway + "/metrics", timeout=10).read().decode()
    samples = _samples(text)
    # Grouped by job name and id: the pushgateway puts the grouping key on every series.
    _check(samples, job="measured", job_id="job-42")
    assert SECRET not in text


def test_metrics_push_to_nowhere_is_one_error_line(ws: Path) -> None:
    r = _run(ws, "--metrics-push", f"http://127.0.0.1:{_free_port()}")
    out = r.stdout.decode()
    assert r.returncode == 0 and "metrics_push: the Pushgateway did not take the metrics" in out


def test_push_credentials_in_the_url_go_as_basic_auth_and_plugins_are_timed() -> None:
    """The URL's user:password become an Authorization header (never part of the URL sent), and a plugin's
    calls make a histogram per plugin and phase."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from runnerlib.observability.metrics import JobFacts, push
    from runnerlib.plugins import PluginPhase, PluginTiming

    seen: list[tuple[str, str | None, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.path, self.headers.get("Authorization"), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        facts = JobFacts(job_name="j", job_id="7", exit_code=0, duration=1.0,
                         plugin_timings=[PluginTiming("notify", PluginPhase.CLEANUP, 0.003),
                                         PluginTiming("notify", PluginPhase.CLEANUP, 0.2)])
        push(f"http://ops:S3cr3t-pw@127.0.0.1:{server.server_address[1]}", facts)
    finally:
        server.shutdown()
        server.server_close()
    path, auth, body = seen[0]
    assert path == "/metrics/job/j/job_id/7"
    assert auth == "Basic " + base64.b64encode(b"ops:S3cr3t-pw").decode()
    samples = _samples(body.decode())
    assert _value(samples, "runnerlib_plugin_duration_seconds_count", plugin="notify", phase="cleanup") == 2
    assert _value(samples, "runnerlib_plugin_duration_seconds_bucket", plugin="notify", le="0.005") == 1


def test_settings_from_the_environment(ws: Path) -> None:
    """REACTORCIDE_METRICS_FILE, REACTORCIDE_REPORT and REACTORCIDE_PROFILE work like the options, for
    `runnerlib run` too."""
    env = base_env(REACTORCIDE_METRICS_FILE=str(ws / "m.prom"), REACTORCIDE_REPORT=str(ws / "r.html"),
                   REACTORCIDE_PROFILE="true")
    r = subprocess.run([sys.executable, "-m", "runnerlib.cli", "run", "--workspace-root", str(ws),
                        "--job-command", "echo simple"], env=env, cwd=REPO, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout.decode()[-2000:] + r.stderr.decode()
    assert _value(_samples((ws / "m.prom").read_text()), "runnerlib_step_results_total", status="success") == 1
    assert "simple" in (ws / "r.html").read_text() and "PEAK-RSS" in r.stdout.decode()


def test_refusals_limits_and_leftovers_are_counted() -> None:
    """The sandbox's refusals and the resource limits hit (ProcessResult.limit_hit / leftover_killed, read
    with getattr: they come from the sandbox's own work) become counters per step."""
    from prometheus_client.exposition import generate_latest

    from runnerlib.execution.scheduler import StepResult
    from runnerlib.observability.metrics import JobFacts, build_registry

    facts = JobFacts(job_name="j", job_id="1", exit_code=126, duration=2.0,
                     steps=[StepResult("a", "refused", 126, 1.0, 1.1, 1), StepResult("b", "failed", 137, 1.0, 2.0, 2)],
                     attempts=[{"step": "a", "refused": True}, {"step": "b", "limit_hit": "memory"},
                               {"step": "b", "limit_hit": "memory", "leftover_killed": True}])
    samples = _samples(generate_latest(build_registry(facts, labels={"job_name": "j", "job_id": "1"})).decode())
    assert _value(samples, "runnerlib_sandbox_refusals_total", step="a") == 1
    assert _value(samples, "runnerlib_step_limit_hits_total", step="b", limit="memory") == 2
    assert _value(samples, "runnerlib_step_leftover_processes_killed_total", step="b") == 1
    assert _value(samples, "runnerlib_step_results_total", status="refused") == 1
    assert _value(samples, "runnerlib_job_success") == 0


def test_planted_symlinks_are_not_written_through(tmp_path: Path) -> None:
    """ATTACK: whoever can write the metrics directory plants symlinks to a file of the runner's. Our writer
    replaces the link at the target path and never opens a predictable temp name; the control shows
    prometheus-client's write_to_textfile writing through a planted temp-name link."""
    import threading

    from prometheus_client import write_to_textfile

    from runnerlib.observability.metrics import JobFacts, build_registry, write_textfile

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "m.prom"
    facts = JobFacts(job_name="j", job_id="1", exit_code=0, duration=1.0)
    target.symlink_to(victim)
    predictable = Path(f"{target}.{os.getpid()}.{threading.current_thread().ident}")
    predictable.symlink_to(victim)
    write_textfile(str(target), facts)
    assert victim.read_text() == "precious\n" and not target.is_symlink()
    assert "runnerlib_job_exit_code" in target.read_text()
    # Control: the library's own writer follows the planted temp-name link into the victim.
    write_to_textfile(str(tmp_path / "m.prom"), build_registry(facts, labels={}))
    assert "runnerlib_job_exit_code" in victim.read_text()


def test_a_step_name_holding_a_secret_is_masked_in_the_metrics(tmp_path: Path) -> None:
    """ATTACK: a step named after a secret value. The exposition is masked as a whole; the control (no
    mask) shows the label would carry it."""
    from runnerlib.execution.scheduler import StepResult
    from runnerlib.observability.metrics import JobFacts, write_textfile
    from runnerlib.security.registry import SecretRegistry

    registry = SecretRegistry()
    registry.add(SECRET, source="test")
    step = StepResult(SECRET, "success", 0, 1.0, 2.0, 1)
    for mask, leaks in ((registry.mask, False), (lambda data: data, True)):
        target = tmp_path / f"m{leaks}.prom"
        write_textfile(str(target), JobFacts(job_name="j", job_id="1", exit_code=0, duration=1.0, steps=[step],
                                             mask=mask))
        text = target.read_text()
        assert (SECRET in text) is leaks
        assert "runnerlib_step_exit_code" in text
