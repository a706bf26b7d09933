"""Step-scoped output: whole lines whatever the chunking, per-stream buffers, files, JSON, colour, summary."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from runnerlib.execution.logs import MAX_PENDING_LINE, JobLog, MaskedTextWriter
from runnerlib.execution.scheduler import StepResult

_lines = st.lists(st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=40),
                  max_size=30)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@given(_lines, _lines, st.lists(st.integers(0, 10_000), max_size=20), st.lists(st.integers(0, 10_000), max_size=20),
       st.randoms())
def test_lines_survive_any_chunking_and_interleaving(out_lines, err_lines, out_cuts, err_cuts, rnd) -> None:  # noqa: ANN001
    log = JobLog(io.BytesIO())
    sink = log.step_output("s")
    out_data = "".join(line + "\n" for line in out_lines).encode()
    err_data = "".join(line + "\n" for line in err_lines).encode()
    pieces = [("stdout", c) for c in _chunks(out_data, out_cuts)] + [("stderr", c) for c in _chunks(err_data, err_cuts)]
    # Interleave the two streams arbitrarily while keeping each stream's own order.
    queues = {"stdout": [p for p in pieces if p[0] == "stdout"], "stderr": [p for p in pieces if p[0] == "stderr"]}
    while queues["stdout"] or queues["stderr"]:
        name = rnd.choice([n for n in queues if queues[n]])
        sink.write(*queues[name].pop(0))
    sink.close()
    raw = log.out.getvalue()  # type: ignore[attr-defined]
    written = raw.decode().split("\n")[:-1] if raw else []  # str.splitlines would also split at \x1e etc.
    assert all(line.startswith("[s] ") for line in written)
    bodies = [line[4:] for line in written]
    # Each stream's lines appear whole and in order (the other stream's lines may sit between them).
    for expected in (out_lines, err_lines):
        it = iter(bodies)
        assert all(any(b == e for b in it) for e in expected)
    assert len(bodies) == len(out_lines) + len(err_lines)


def test_partial_line_flushed_at_close_and_long_lines_cut(tmp_path: Path) -> None:
    log = JobLog(io.BytesIO(), logs_dir=tmp_path)
    sink = log.step_output("s")
    sink.write("stdout", b"no newline at end")
    sink.close()
    assert log.out.getvalue() == b"[s] no newline at end\n"  # type: ignore[attr-defined]
    assert (tmp_path / "s.log").read_bytes() == b"no newline at end\n"

    log = JobLog(io.BytesIO())
    sink = log.step_output("s")
    sink.write("stdout", b"x" * (MAX_PENDING_LINE + 10))
    assert log.out.getvalue().count(b"\n") == 1  # type: ignore[attr-defined]  (emitted, not held forever)
    sink.close()


def test_concurrent_steps_never_share_a_line() -> None:
    log = JobLog(io.BytesIO())

    def produce(name: str, char: bytes) -> None:
        sink = log.step_output(name)
        for _ in range(300):
            sink.write("stdout", char * 37)
            sink.write("stdout", char * 13 + b"\n")
        sink.close()

    threads = [threading.Thread(target=produce, args=(n, c)) for n, c in (("a", b"A"), ("b", b"B"), ("c", b"C"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for line in log.out.getvalue().decode().splitlines():  # type: ignore[attr-defined]
        name, body = line[1], line[4:]
        assert body == name.upper() * 50


def test_colour_only_when_asked() -> None:
    plain = JobLog(io.BytesIO())
    plain.step_output("s").write("stdout", b"hi\n")
    assert b"\x1b[" not in plain.out.getvalue()  # type: ignore[attr-defined]
    coloured = JobLog(io.BytesIO(), colour=True)
    coloured.step_output("s").write("stdout", b"hi\n")
    assert coloured.out.getvalue().startswith(b"\x1b[")  # type: ignore[attr-defined]


def test_json_records_and_summary() -> None:
    log = JobLog(io.BytesIO(), fmt="json", job_id="j-1", job_name="build")
    sink = log.step_output("compile")
    sink.write("stderr", b"warning: x\nsecond\n")
    sink.close()
    log.event("runner says hi", step="compile")
    r = StepResult("compile", status="success", exit_code=0, started=1.0, finished=3.5, attempts=1)
    log.summary([r], [("plug", 0.25, 2)], total=3.0, exit_code=0)
    records = [json.loads(line) for line in log.out.getvalue().decode().splitlines()]  # type: ignore[attr-defined]
    assert records[0] == {**records[0], "job_id": "j-1", "job": "build", "step": "compile", "stream": "stderr",
                          "message": "warning: x"}
    assert records[2]["stream"] == "runner" and records[2]["message"] == "runner says hi"
    assert records[3]["steps"][0]["duration"] == 2.5 and records[3]["plugins"][0]["calls"] == 2


def test_runner_messages_and_summary_are_masked() -> None:
    log = JobLog(io.BytesIO(), mask=lambda s: s.replace("hunter22", "***"))
    log.event("password is hunter22")
    r = StepResult("s", status="failed", exit_code=1, reason="bad hunter22")
    log.summary([r], total=1.0, exit_code=1)
    text = log.out.getvalue().decode()  # type: ignore[attr-defined]
    assert "hunter22" not in text and text.count("***") == 2


def test_masked_text_writer_holds_partial_lines() -> None:
    target = io.StringIO()
    writer = MaskedTextWriter(target, lambda s: s.replace("s3cr3t!", "***"))
    writer.write("a s3c")
    assert target.getvalue() == ""
    writer.write("r3t! b\n")
    writer.write("tail s3cr3t!")
    writer.flush()
    assert target.getvalue() == "a *** b\ntail ***"
