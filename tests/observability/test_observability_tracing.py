"""Trace context and spans end to end: TRACEPARENT in, ids on every JSON line, a child TRACEPARENT to every
step and triggered job, spans exported over OTLP/HTTP to a local receiver, no secret in any span."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from obs_testlib import REPO, base_env
from otlp_receiver import OtlpReceiver

from runnerlib.observability.tracecontext import TraceContext, from_environ, parse_traceparent
from runnerlib.observability.tracing import Tracer
from runnerlib.security.registry import SecretRegistry

SECRET = "Zq8-obs3rv-Secr3t-Value-41"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"

JOB = """
name: traced
steps:
  build:
    command: "echo building; echo token=$MY_TOKEN; echo tp=$TRACEPARENT"
  flaky:
    command: "if [ -e {marker} ]; then echo second; else touch {marker}; echo first; exit 5; fi"
    retries: 1
    depends_on: [build]
  sandboxed:
    command: "echo utp=$TRACEPARENT"
    trust: untrusted
"""

PLUGIN = """
from runnerlib.plugins import Plugin, PluginPhase

class Probe(Plugin):
    def __init__(self):
        super().__init__("probe", priority=10)

    def pre_execution(self, context):
        pass

PLUGINS = [Probe()]
"""


def _fragments(secret: str) -> list[str]:
    return [secret[i:i + 8] for i in range(0, len(secret) - 7, 4)]


def _run_job(ws: Path, receiver: OtlpReceiver, *extra: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    (ws / "plugins").mkdir()
    (ws / "plugins" / "probe.py").write_text(PLUGIN)
    (ws / "job.yaml").write_text(JOB.format(marker=ws / "marker"))
    environ = base_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, MY_TOKEN=SECRET,
                       REACTORCIDE_SECRET_ENV_NAMES="MY_TOKEN", LOG_FORMAT="json",
                       TRACEPARENT=f"00-{TRACE}-{PARENT}-01", **env)
    return subprocess.run([sys.executable, "-m", "runnerlib.cli", "run-job", "--workspace-root", str(ws),
                           "--plugin-dir", str(ws / "plugins"), "--job-name", f"deploy{SECRET}", *extra,
                           str(ws / "job.yaml")], env=environ, cwd=REPO, capture_output=True, timeout=120)


def test_job_spans_tree_ids_on_log_lines_and_child_traceparent(ws: Path, otlp: OtlpReceiver) -> None:
    r = _run_job(ws, otlp)
    assert r.returncode == 0, r.stdout.decode()[-3000:] + r.stderr.decode()[-2000:]
    spans = otlp.spans
    assert spans, "no span reached the receiver"
    # One trace, continued from the incoming TRACEPARENT.
    assert {s.trace_id for s in spans} == {TRACE}
    by_name = {s.name: s for s in spans}
    job = next(s for s in spans if s.name.startswith("job "))
    assert job.parent_id == PARENT and job.service == "runnerlib"
    assert job.attributes["process.exit.code"] == 0
    # Every lifecycle phase under the job; the plugin call under its phase.
    for phase in ("pre_validation", "post_validation", "pre_source_prep", "source_preparation",
                  "post_source_prep", "pre_execution", "post_execution", "cleanup"):
        assert by_name[f"phase {phase}"].parent_id == job.span_id, phase
    plugin = by_name["plugin probe pre_execution"]
    assert plugin.parent_id == by_name["phase pre_execution"].span_id
    # Steps under the job, attempts under their step, with their attributes.
    for step in ("build", "flaky", "sandboxed"):
        assert by_name[f"step {step}"].parent_id == job.span_id
    assert by_name["step flaky"].attributes["runnerlib.step.attempts"] == 2
    first, second = by_name["step flaky attempt 1"], by_name["step flaky attempt 2"]
    assert first.parent_id == second.parent_id == by_name["step flaky"].span_id
    assert first.attributes["process.exit.code"] == 5 and first.status_code == 2  # STATUS_CODE_ERROR
    assert second.attributes["process.exit.code"] == 0
    assert by_name["step sandboxed attempt 1"].attributes["runnerlib.step.trust"] == "untrusted"
    assert by_name["step build attempt 1"].attributes["runnerlib.step.cpu_user_seconds"] >= 0
    # No secret, nor a fragment of one, in any span (the job name held one: masked in the span name).
    assert job.name == "job deploy***"
    for s in spans:
        for fragment in _fragments(SECRET):
            assert fragment.encode() not in s.raw, s.name
    # Every JSON line carries the trace; a step's lines carry its attempt's span id, and the step got a
    # TRACEPARENT naming that span as parent.
    lines = [json.loads(line) for line in r.stdout.decode().splitlines() if line.startswith("{\"time\"")]
    assert lines and all(line["trace_id"] == TRACE for line in lines)
    build = by_name["step build attempt 1"]
    tp_line = next(line for line in lines if line["step"] == "build" and line["message"].startswith("tp="))
    assert tp_line["message"] == f"tp=00-{TRACE}-{build.span_id}-01"
    assert tp_line["span_id"] == build.span_id
    assert any(line["step"] is None and line["span_id"] == job.span_id for line in lines)
    # An untrusted (sandboxed) step gets its TRACEPARENT too: it is not a secret.
    sandboxed = by_name["step sandboxed attempt 1"]
    if sandboxed.attributes["process.exit.code"] == 0:
        assert any(line["message"] == f"utp=00-{TRACE}-{sandboxed.span_id}-01" for line in lines)


def test_trigger_in_a_workflow_continues_the_trace(ws: Path, otlp: OtlpReceiver) -> None:
    """`runnerlib workflow run`: job A's step triggers job B; A's and B's spans share the workflow's trace,
    and B's job span hangs under the step attempt of A that triggered it."""
    repo = ws / "repo"
    (repo / ".reactorcide" / "workflows").mkdir(parents=True)
    (repo / "README").write_text("x\n")
    wf = repo / ".reactorcide" / "workflows" / "ci.yaml"
    wf.write_text("id: ci\nname: CI\njobs:\n  a:\n    command: runnerlib trigger b --job-command 'echo B ran'\n")
    r = subprocess.run([sys.executable, "-m", "runnerlib.cli", "workflow", "run", str(wf), "--launcher",
                        "runnerlib", "--run-dir", str(ws / "run"), "--report", str(ws / "wf.html")],
                       env=base_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint), cwd=REPO, capture_output=True,
                       timeout=180)
    out = r.stdout.decode()
    assert r.returncode == 0, out[-3000:] + r.stderr.decode()[-2000:]
    assert "[b]" in out and "B ran" in out
    spans = otlp.spans
    workflow = next(s for s in spans if s.name == "workflow ci")
    jobs = [s for s in spans if s.name.startswith("job ")]
    assert len(jobs) == 2
    assert {s.trace_id for s in spans} == {workflow.trace_id}
    job_a = next(j for j in jobs if j.parent_id == workflow.span_id)
    job_b = next(j for j in jobs if j is not job_a)
    step_a = next(s for s in spans if s.parent_id == job_a.span_id and s.name.startswith("step "))
    attempt_a = next(s for s in spans if s.parent_id == step_a.span_id)
    assert job_b.parent_id == attempt_a.span_id
    page = (ws / "wf.html").read_text()
    assert "B ran" in page and ">a<" in page and ">b<" in page


def test_without_an_exporter_nothing_is_sent_and_the_sdk_is_not_imported(ws: Path) -> None:
    code = ("import sys, runpy; sys.argv = ['runnerlib', 'run', '--workspace-root', sys.argv[1], "
            "'--log-format', 'json', '--job-command', 'echo $TRACEPARENT']\n"
            "try:\n    runpy.run_module('runnerlib.cli', run_name='__main__')\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "print(' '.join(sorted(sys.modules)))")
    for extra in ({}, {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}):
        r = subprocess.run([sys.executable, "-c", code, str(ws)], env=base_env(**extra), cwd=REPO,
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.decode().splitlines()
        loaded = set(lines[-1].split())
        assert not [m for m in loaded if m.startswith(("opentelemetry", "prometheus_client", "google.protobuf"))]
        step = next(json.loads(line) for line in lines if line.startswith("{") and '"stdout"' in line)
        # Still a trace: a new one, its ids on the lines and in the step's TRACEPARENT.
        ctx = parse_traceparent(step["message"])
        assert ctx.trace_id == step["trace_id"] and ctx.span_id == step["span_id"]


def test_malformed_traceparent_is_ignored_with_a_debug_note(ws: Path) -> None:
    bad = f"00-{TRACE.upper()}-{PARENT}-01"  # upper-case hex: invalid in version 00
    r = subprocess.run([sys.executable, "-m", "runnerlib.cli", "run", "--workspace-root", str(ws),
                        "--log-level", "DEBUG", "--job-command", "echo $TRACEPARENT"],
                       env=base_env(TRACEPARENT=bad), cwd=REPO, capture_output=True, timeout=60)
    out = r.stdout.decode()
    assert r.returncode == 0 and "TRACEPARENT ignored" in out
    assert TRACE not in out and TRACE.upper() not in out.replace(bad, "")


def test_worker_variable_is_read_and_traceparent_wins() -> None:
    ctx, note = from_environ({"REACTORCIDE_TRACEPARENT": f"00-{TRACE}-{PARENT}-01"})
    assert ctx == TraceContext(TRACE, PARENT, "01") and note is None
    other = "00-" + "1" * 32 + "-" + "2" * 16 + "-00"
    assert from_environ({"TRACEPARENT": other, "REACTORCIDE_TRACEPARENT": ctx.traceparent})[0].trace_id == "1" * 32
    child = ctx.child()
    assert child.trace_id == TRACE and child.span_id != PARENT
    assert child.env() == {"TRACEPARENT": child.traceparent, "REACTORCIDE_TRACEPARENT": child.traceparent}


@pytest.mark.parametrize("value", [
    "", "00", f"00-{TRACE}-{PARENT}", f"00-{TRACE}-{PARENT}-1", f"00-{'0' * 32}-{PARENT}-01",
    f"00-{TRACE}-{'0' * 16}-01", f"ff-{TRACE}-{PARENT}-01", f"00-{TRACE}-{PARENT}-01-extra",
    f"00-{TRACE[:-1]}g-{PARENT}-01", f"0-{TRACE}-{PARENT}-01", f"00_{TRACE}_{PARENT}_01",
])
def test_strict_parser_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_traceparent(value)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8), st.sampled_from(["00", "01"]))
def test_parser_round_trips_every_valid_context(trace: bytes, span: bytes, flags: str) -> None:
    value = f"00-{trace.hex()}-{span.hex()}-{flags}"
    if trace == bytes(16) or span == bytes(8):
        with pytest.raises(ValueError):
            parse_traceparent(value)
    else:
        assert parse_traceparent(value).traceparent == value


@given(st.text(max_size=80))
def test_parser_never_raises_anything_but_value_error(value: str) -> None:
    try:
        ctx = parse_traceparent(value)
    except ValueError:
        return
    assert len(ctx.trace_id) == 32 and len(ctx.span_id) == 16


def test_span_attributes_are_masked_and_would_leak_without_the_mask() -> None:
    """ATTACK: a secret in a span name and attribute. With the job's mask it never reaches the collector;
    the control (identity mask) shows the same spans would carry it."""
    registry = SecretRegistry()
    registry.add(SECRET, source="test")
    for mask, leaks in ((registry.mask_text, False), (lambda s: s, True)):
        with OtlpReceiver() as receiver:
            tracer = Tracer({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint + "/v1/traces"}, mask=mask)
            span = tracer.start(f"step x{SECRET}", attributes={"why": f"url https://u:{SECRET}@h"})
            span.set({"more": f"later {SECRET}"})
            span.end(error=f"failed with {SECRET}")
            tracer.shutdown()
            raw = b"".join(s.raw for s in receiver.spans)
        assert raw
        found = [f for f in _fragments(SECRET) if f.encode() in raw]
        assert bool(found) is leaks, found


def test_a_collector_that_is_down_is_a_warning_not_a_failure(ws: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    r = subprocess.run([sys.executable, "-m", "runnerlib.cli", "run", "--workspace-root", str(ws),
                        "--job-command", "echo hi"],
                       env=base_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
                                    OTEL_EXPORTER_OTLP_TIMEOUT="1000"),
                       cwd=REPO, capture_output=True, timeout=120)
    assert r.returncode == 0
    assert re.search(r"==> (\S+ )?tracing: ", r.stdout.decode()) and b"Transient error" not in r.stderr
