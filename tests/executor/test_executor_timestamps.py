"""Line timestamps (issue 13): step log lines with --log-timestamps, the console with --timestamps; stamps are
inserted into masked bytes, so they never let a secret or a fragment of one through."""

from __future__ import annotations

import base64
import calendar
import io
import re
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runnerlib.execution.logs import JobLog
from runnerlib.execution.timestamps import STAMP, STAMP_LEN, StampClock, stamp, stamped, strip_stamps
from runnerlib.security.registry import SecretRegistry
from tests.executor.test_executor_cli import cli

LINE = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


# -- the format ------------------------------------------------------------------------------------------------


def test_stamp_is_iso_8601_utc_with_milliseconds() -> None:
    assert stamp(1796454062.345) == b"2026-12-05T07:01:02.345Z "
    assert stamp(0.9996) == b"1970-01-01T00:00:01.000Z "  # rounded to the millisecond, carried into the second
    assert len(stamp()) == STAMP_LEN and STAMP.fullmatch(stamp())
    before = time.time()
    now = stamp()
    seconds = calendar.timegm(time.strptime(now[:19].decode(), "%Y-%m-%dT%H:%M:%S"))  # read back as UTC
    assert before - 1 <= seconds + int(now[20:23]) / 1000 <= time.time() + 1
    clock = StampClock()
    assert STAMP.fullmatch(clock()) and strip_stamps(clock().decode() + "x\n") == "x\n"


def _log(tmp: Path, **kw) -> JobLog:  # noqa: ANN003
    kw.setdefault("file_timestamps", True)  # what --log-timestamps asks for (off by default)
    return JobLog(io.BytesIO(), logs_dir=tmp, **kw)


def test_every_step_log_line_is_stamped_and_the_console_only_when_asked(tmp_path: Path) -> None:
    for console in (False, True):
        logs = tmp_path / str(console)
        logs.mkdir()
        log = _log(logs, timestamps=console)
        with log.step_output("s") as sink:
            sink.write("stdout", b"one\ntw")
            sink.write("stderr", b"err\n")
            sink.write("stdout", b"o\nthree\nno newline")
        log.event("after")
        lines = (logs / "s.log").read_bytes().split(b"\n")
        assert lines[-1] == b"" and all(LINE.match(line) for line in lines[:-1])
        assert [line[STAMP_LEN:] for line in lines[:-1]] == [b"one", b"err", b"two", b"three", b"no newline"]
        out = log.out.getvalue().splitlines()  # type: ignore[attr-defined]
        assert all(bool(LINE.match(line)) == console for line in out)
        stripped = [line[STAMP_LEN:] if console else line for line in out]
        assert stripped[:5] == [b"[s] one", b"[s] err", b"[s] two", b"[s] three", b"[s] no newline"]
        assert stripped[5].startswith(b"==> ")


def test_a_line_keeps_the_stamp_of_the_read_that_brought_its_first_byte(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from runnerlib.execution import logs

    ticks = iter([b"T1 ", b"T2 ", b"T3 "])
    monkeypatch.setattr(logs, "StampClock", lambda: lambda: next(ticks))
    log = _log(tmp_path, timestamps=True)
    with log.step_output("s") as sink:
        sink.write("stdout", b"a")
        sink.write("stdout", b"b\nc")
        sink.write("stdout", b"d\ne\n")
    assert (tmp_path / "s.log").read_bytes() == b"T1 ab\nT2 cd\nT3 e\n"
    assert log.out.getvalue() == b"T1 [s] ab\nT2 [s] cd\nT3 [s] e\n"  # type: ignore[attr-defined]


def test_raw_step_logs_when_switched_off(tmp_path: Path) -> None:
    log = _log(tmp_path, file_timestamps=False)
    with log.step_output("s") as sink:
        sink.write("stdout", b"plain\n")
    assert (tmp_path / "s.log").read_bytes() == b"plain\n"


def test_a_cut_over_long_line_continues_unstamped_in_the_step_log(tmp_path: Path) -> None:
    from runnerlib.execution.logs import MAX_PENDING_LINE

    log = _log(tmp_path)
    with log.step_output("s") as sink:
        sink.write("stdout", b"x" * (MAX_PENDING_LINE + 1))
        sink.write("stdout", b"yy\nnext\n")
    lines = (tmp_path / "s.log").read_bytes().split(b"\n")
    assert lines[0][STAMP_LEN:] == b"x" * (MAX_PENDING_LINE + 1) + b"yy" and LINE.match(lines[1])


def test_workflow_console_lines_are_stamped() -> None:
    seen: list[str] = []
    stamped(seen.append)("[job] a\n[job] b")
    first, second = seen[0].split("\n")
    assert LINE.match(first.encode()) and first[STAMP_LEN:] == "[job] a" and second[STAMP_LEN:] == "[job] b"


def test_cli_timestamps_option_and_environment(ws: Path) -> None:
    for args, env in ((["--timestamps"], {}), ([], {"REACTORCIDE_TIMESTAMPS": "true"})):
        r = cli("run", "--workspace-root", str(ws), *args, "--", "sh", "-c", "echo one; echo two", env=env)
        assert r.returncode == 0, r.stderr
        ours = [line for line in r.stdout.splitlines() if b"[job] " in line and b"trigger" not in line]
        assert len(ours) >= 4 and all(LINE.match(line) for line in ours), r.stdout  # step lines and events
        assert any(line[STAMP_LEN:] == b"[job] one" for line in ours)
    for args in ([], ["--no-log-timestamps"]):  # step logs are raw unless asked for (Buildkite, GitLab alike)
        r = cli("run", "--workspace-root", str(ws), *args, "--", "sh", "-c", "echo raw")
        assert r.returncode == 0 and not LINE.search(r.stdout)
        assert (ws / "artifacts" / "logs" / "job.log").read_bytes() == b"raw\n"
    for args, env in ((["--log-timestamps"], {}), ([], {"REACTORCIDE_LOG_TIMESTAMPS": "true"})):
        r = cli("run", "--workspace-root", str(ws), *args, "--", "sh", "-c", "echo raw", env=env)
        assert r.returncode == 0 and not LINE.search(r.stdout)
        logged = (ws / "artifacts" / "logs" / "job.log").read_bytes()
        assert LINE.match(logged) and logged[STAMP_LEN:] == b"raw\n", logged


# -- masking: stamps go into masked bytes ------------------------------------------------------------------------

_SECRET_CHARS = "ghjkmnpqrvwxyz"  # none of them in a stamp, the console label `[s] `, `***` or the filler
_secret = st.text(_SECRET_CHARS, min_size=8, max_size=24)
# base64 wrapped across lines is masked from 12 bytes (docs/masking.md, "Forms cut by line breaks").
_wrappable = st.text(_SECRET_CHARS, min_size=12, max_size=24)
_filler = st.text("~!@# ", max_size=30)


def _pipeline(chunks: list[bytes], secrets: list[bytes], stamps: bool) -> tuple[bytes, bytes]:
    """The step's path: the masking stream, then the step's output (console, step log)."""
    registry = SecretRegistry()
    registry.add_many(secrets, source="test")
    with tempfile.TemporaryDirectory() as tmp:
        log = JobLog(io.BytesIO(), logs_dir=Path(tmp), timestamps=stamps, file_timestamps=stamps)
        with log.step_output("s") as sink, registry.stream(lambda data: sink.write("stdout", data)) as masked:
            for chunk in chunks:
                masked.write(chunk)
        return log.out.getvalue(), (Path(tmp) / "s.log").read_bytes()  # type: ignore[attr-defined]


def _wrapped_b64(secret: bytes, offset: int, width: int) -> bytes:
    encoded = base64.b64encode(b"~" * offset + secret + b"~" * 20)
    return b"".join(encoded[i:i + width] + b"\n" for i in range(0, len(encoded), width))


def _unstamp(data: bytes) -> bytes:
    return re.sub(rb"(?m)^" + LINE.pattern, b"", data)


def _leaks(secret: bytes, text: bytes, width: int = 4) -> list[bytes]:
    return [secret[i:i + width] for i in range(len(secret) - width + 1) if secret[i:i + width] in text]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=_wrappable, multi=st.tuples(_secret, _secret), before=st.lists(_filler, max_size=4),
       offset=st.integers(0, 80), width=st.sampled_from([64, 76]), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_timestamps_never_let_a_secret_fragment_through(secret, multi, before, offset, width, cuts) -> None:  # noqa: ANN001
    """Whole secrets, a secret registered across two lines, and a secret inside base64 wrapped across lines, in
    any chunking: with stamps, the output is the unstamped masking plus stamps, and no fragment gets out."""
    secret_b, multi_b = secret.encode(), (multi[0] + "\n" + multi[1]).encode()
    output = ("".join(line + "\n" for line in before) + f"key={secret} and again {secret}\n").encode()
    output += multi_b + b"\n" + _wrapped_b64(secret_b, offset, width) + b"tail"
    points = sorted({c % (len(output) + 1) for c in cuts} | {0, len(output)})
    chunks = [output[a:b] for a, b in zip(points, points[1:], strict=False)]
    plain_console, plain_log = _pipeline(chunks, [secret_b, multi_b], stamps=False)
    console, step_log = _pipeline(chunks, [secret_b, multi_b], stamps=True)
    assert _unstamp(step_log) == plain_log and _unstamp(console) == plain_console
    for text in (console, step_log):
        for value in (secret_b, *multi_b.split(b"\n")):
            assert not _leaks(value, text)
        encoded = base64.b64encode(b"~" * offset + secret_b + b"~" * 20)
        assert encoded not in _unstamp(text).replace(b"\n", b"").replace(b"[s] ", b"")


def test_control_stamping_before_masking_leaks_a_wrapped_secret() -> None:
    """The order matters: the same wrapped base64 with the stamps inserted first (as a naive log shipper would)
    is no longer one run the masker can join, and the encoded secret comes out whole."""
    secret = b"hunter2-zqxjkvbw-correct-horse"
    registry = SecretRegistry()
    registry.add(secret, source="test")
    wrapped = _wrapped_b64(secret, 40, 76)
    encoded = base64.b64encode(b"~" * 40 + secret + b"~" * 20)
    stamp_first = b"".join(stamp() + line + b"\n" for line in wrapped.splitlines())
    assert _unstamp(registry.mask_text(stamp_first.decode()).encode()).replace(b"\n", b"") == encoded  # leaked
    console, step_log = _pipeline([wrapped], [secret], stamps=True)  # this runner's order: masked, then stamped
    for text in (console, step_log):
        assert encoded not in _unstamp(text).replace(b"\n", b"").replace(b"[s] ", b"")


def test_workflow_run_timestamps(tmp_path: Path) -> None:
    (tmp_path / ".reactorcide" / "workflows").mkdir(parents=True)
    (tmp_path / ".reactorcide" / "workflows" / "ci.yaml").write_text("name: ci\njobs:\n  hello:\n    command: echo hi\n")
    for args, env in ((["--timestamps"], {}), ([], {"REACTORCIDE_TIMESTAMPS": "1"}), ([], {})):
        r = cli("workflow", "run", ".reactorcide/workflows/ci.yaml", "--launcher", "shell", *args, env=env,
                cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        line = next(line for line in r.stdout.splitlines() if line.endswith(b"[hello] hi"))
        assert bool(LINE.match(line)) == bool(args or env), line
