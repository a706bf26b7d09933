"""Step-scoped output: whole lines whatever the chunking, per-stream buffers, files, JSON, colour, summary."""

from __future__ import annotations

import io
import itertools
import json
import re
import threading
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from runnerlib.execution.logs import MAX_PENDING_LINE, JobLog, MaskedTextWriter
from runnerlib.execution.scheduler import StepResult
from runnerlib.execution.timestamps import STAMP, STAMP_LEN

# (no CR or ESC: the console makes those inert, tests/executor/test_executor_console_controls.py)
_lines = st.lists(st.text(st.characters(blacklist_characters="\n\r\x1b", blacklist_categories=("Cs",)), max_size=40),
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
    log = JobLog(io.BytesIO(), logs_dir=tmp_path, file_timestamps=True)
    sink = log.step_output("s")
    sink.write("stdout", b"no newline at end")
    sink.close()
    assert log.out.getvalue() == b"[s] no newline at end\n"  # type: ignore[attr-defined]
    assert STAMP.fullmatch((tmp_path / "s.log").read_bytes()[:STAMP_LEN])
    assert (tmp_path / "s.log").read_bytes()[STAMP_LEN:] == b"no newline at end\n"

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


def _bulk_writes(seed: int) -> list[tuple[str, bytes]]:
    """Two streams of numbered lines (some longer than MAX_PENDING_LINE), cut at random points, interleaved."""
    import random

    rnd = random.Random(seed)
    writes: dict[str, list[bytes]] = {}
    for stream in ("stdout", "stderr"):
        lines = []
        for i in range(rnd.randrange(200, 3000)):
            width = rnd.choice([0, 5, 99, 400, 5000, MAX_PENDING_LINE + 7]) if i % 97 == 0 else rnd.randrange(0, 200)
            # Now and then a carriage return or a colour (the console makes them inert, the log keeps them).
            control = rnd.choice([b"\r", b"\x1b[31m"]) if i % 61 == 0 else b""
            lines.append(f"{stream[3]}{i:06d} ".encode() + control + b"y" * width + b"\n")
        data = b"".join(lines) + (b"unterminated tail" if rnd.random() < 0.5 else b"")
        cuts = sorted({0, len(data), *(rnd.randrange(len(data)) for _ in range(rnd.randrange(1, 40)))})
        writes[stream] = [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    merged = []
    while writes["stdout"] or writes["stderr"]:
        stream = rnd.choice([s for s in writes if writes[s]])
        merged.append((stream, writes[stream].pop(0)))
    return merged


def _run_writes(monkeypatch, tmp_path: Path, writes: list[tuple[str, bytes]], offload_min: int, fmt: str):  # noqa: ANN001, ANN202
    from runnerlib.execution import logs

    monkeypatch.setattr(logs, "OFFLOAD_MIN", offload_min)
    monkeypatch.setattr(logs, "WRITE_SLICE", 300)  # the writer threads write a piece in many slices
    monkeypatch.setattr(logs, "core_free", lambda: True)  # the thread whatever the machine's load
    monkeypatch.setattr(logs, "clock", lambda: "12:00:00")
    # A new stamp at every piece (the same sequence in both runs): a line stamped with the wrong piece's shows.
    def stamp_clock():  # noqa: ANN202
        pieces = itertools.count()
        return lambda: b"2026-12-05T07:01:%06.3fZ " % (next(pieces) / 1000)

    monkeypatch.setattr(logs, "StampClock", stamp_clock)
    monkeypatch.setattr(logs, "stamp", lambda: b"2026-12-05T07:01:02.345Z ")  # the runner's own lines
    logs_dir = tmp_path / f"logs-{offload_min}-{fmt}"
    logs_dir.mkdir(parents=True)
    stamped = fmt == "text-stamped"  # console and step log stamped: the stamps are taken by the reading thread
    log = JobLog(io.BytesIO(), logs_dir=logs_dir, fmt="text" if stamped else fmt, timestamps=stamped,
                 file_timestamps=stamped)
    with log.step_output("s") as sink:
        for stream, data in writes:
            sink.write(stream, data)
    log.event("after the step")
    out = log.out.getvalue()  # type: ignore[attr-defined]
    if fmt == "json":  # times differ between runs; everything else must not
        out = b"\n".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "time"}).encode()
                         for line in out.splitlines())
    return out, (logs_dir / "s.log").read_bytes()


def test_bulk_output_through_the_writer_thread_is_byte_identical(monkeypatch, tmp_path: Path) -> None:  # noqa: ANN001
    """Differential: lines written by the step's writer thread (bulk output) come out exactly as when written
    by the caller: same console bytes, same step log, same order, nothing after the runner's next message."""
    for seed in range(12):
        writes = _bulk_writes(seed)
        outputs = {}
        for fmt in ("json", "text", "text-stamped"):  # the console's thread prefixes (and stamps) the lines
            outputs[fmt] = _run_writes(monkeypatch, tmp_path / f"{seed}", writes, 1 << 62, fmt)
            threaded = _run_writes(monkeypatch, tmp_path / f"{seed}", writes, 1, fmt)
            assert threaded == outputs[fmt]
        console, step_log = outputs["text-stamped"]
        unterminated = sum(not b"".join(d for s, d in writes if s == stream).endswith(b"\n")
                           for stream in ("stdout", "stderr"))
        step_log = re.sub(rb"(?m)^2026-12-05T07:01:\d\d\.\d{3}Z ", b"", step_log)  # every line's stamp
        assert len(step_log) == sum(len(d) for _, d in writes) + unterminated  # close() ends a partial line
        assert console.endswith(b"==> 12:00:00 after the step\n")


def test_small_output_starts_no_thread_and_bulk_output_one(monkeypatch) -> None:  # noqa: ANN001
    from runnerlib.execution import logs
    from runnerlib.execution.logs import OFFLOAD_MIN

    monkeypatch.setattr(logs, "core_free", lambda: True)

    def writers() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("runnerlib-log-")]

    log = JobLog(io.BytesIO())
    sink = log.step_output("few")
    sink.write("stdout", b"a line\n" * 100)
    assert writers() == [] and log.out.getvalue().count(b"[few] a line\n") == 100  # type: ignore[attr-defined]
    bulk = log.step_output("bulk")
    bulk.write("stdout", b"x" * 99 + b"\n" + b"y" * OFFLOAD_MIN + b"\n")
    assert writers() == ["runnerlib-log-bulk"]
    bulk.close()
    sink.close()
    assert writers() == []
    monkeypatch.setattr(logs, "core_free", lambda: False)  # a busy machine: the reading thread writes
    busy = log.step_output("busy")
    busy.write("stdout", b"y" * OFFLOAD_MIN + b"\n")
    assert writers() == [] and log.out.getvalue().endswith(b"[busy] " + b"y" * OFFLOAD_MIN + b"\n")  # type: ignore[attr-defined]
    busy.close()


def test_a_failing_step_log_write_is_raised_to_the_caller(tmp_path: Path) -> None:
    """Disk full while the writer thread writes the step log: the error reaches the runner, it is not lost."""

    class Full(io.BytesIO):
        def write(self, data):  # noqa: ANN001, ANN202
            raise OSError(28, "No space left on device")

    full = Full()
    log = JobLog(io.BytesIO(), logs_dir=tmp_path, open_log=lambda path, append: full)
    sink = log.step_output("s")
    chunk = b"z" * 99 + b"\n"
    try:
        for _ in range(2000):  # 200 KB in 100-line pieces: the first piece starts the thread
            sink.write("stdout", chunk * 1000)
    except OSError as exc:
        assert exc.errno == 28
    else:
        try:
            sink.close()
        except OSError as exc:
            assert exc.errno == 28
        else:
            raise AssertionError("the write error was lost")
    try:
        sink.close()
    except OSError:
        pass
    assert full.closed  # the step log is closed whatever happened
