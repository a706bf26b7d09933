"""Step-scoped output: live lines prefixed by the step's name, one masked log file per step, a summary.

Invariants:
- a line on the console is never a mix of two steps or two streams: each step's stdout and stderr are
  line-buffered separately and whole lines are written under one lock (a line longer than
  MAX_PENDING_LINE is cut and marked, so a step printing without newlines cannot hold memory);
- every byte written here is masked: step output arrives already masked from the process wrapper
  (`run_process(on_output=...)`), and the runner's own messages go through `mask` before they are written;
- runnerlib's own words are never masked: a status line given as an `Own` and the summary mask their user
  parts only (own_words.py), so `::add-mask::failed` cannot hide that a step failed.

Text format: ``[step] line`` for step output (the name coloured on a TTY, NO_COLOR honoured) and
``==> HH:MM:SS [step] message`` for the runner's own lines (local time). JSON format (--log-format json,
LOG_FORMAT=json): one object per line with time, level, job_id, job, step, stream, message, and the W3C
trace_id and span_id of the job (or of the step's current attempt) when the runner traces.
Step log files hold the step's masked output with a UTC timestamp before every line
(``2026-12-05T07:01:02.345Z line``); with --timestamps (REACTORCIDE_TIMESTAMPS) every text console line starts
with one too (execution/timestamps.py).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from runnerlib.execution.console_controls import inert, needs_inert
from runnerlib.execution.own_words import Own, own_record, render, summary_document
from runnerlib.execution.timestamps import StampClock, prefix_after_newline, prefix_lines, stamp

MAX_PENDING_LINE = 64 * 1024
# A step whose output arrives in pieces this large is a bulk writer: its lines are written by two threads of its
# own, one for the log file and one that prefixes and writes the console (the two copies into the page cache run
# at once, and overlap the reading and masking of the next piece) when a core is free for them (core_free).
# Smaller output is written at once by the caller, so a step printing a few lines costs no thread.
OFFLOAD_MIN = 64 * 1024
# Pieces queued for each thread at most (a piece is one read, up to 512 KiB): bounds memory (about 8 MiB a bulk
# step) and lag. 8 rather than 4: fewer stalls of the reading thread on a full queue; measured neutral to
# better (docs/internals/executor.md).
OFFLOAD_QUEUE = 8
# A bulk piece is prefixed (or stamped) and written in slices this large, by the console's thread and, with
# --log-timestamps, the log file's (_slices).
WRITE_SLICE = 64 * 1024


def core_free() -> bool:
    """Whether a second CPU is likely free for the console thread (two or more cores, not oversubscribed).

    The thread only pays when it gets a core of its own. Measured on a 2-CPU machine at a load of 4-7
    (bench_executor's 56-byte lines, 256 MiB, 11 interleaved pairs): handing each piece to it cost 25-45% more
    CPU than writing the console in the reading thread, and the step took longer, not less, in 10 of 11. On the
    same machine otherwise idle it is the other way round (7 interleaved triples: 1.07 s with the thread, 1.51 s
    without, tee 0.96 s). The bound is above the core count because the load average counts the runner's own
    recent work (a busy job, a benchmark's previous run): at "cores - 0.5" the thread was off exactly where
    it helped.
    """
    try:
        cores = len(os.sched_getaffinity(0))
        return cores >= 2 and os.getloadavg()[0] < 1.5 * cores
    except (AttributeError, OSError):
        return True


def _slices(data: bytes, end: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of the slices of `data[:end]` (`end` just past a newline) that a bulk piece is written in:
    about WRITE_SLICE bytes, each ending just past a newline; the whole as one when it is under two slices."""
    start = 0
    while start < end:
        stop = data.find(b"\n", start + WRITE_SLICE, end) + 1 if end - start >= 2 * WRITE_SLICE else 0
        stop = stop or end  # the last slice, or no newline left before end - 1 (a long last line)
        yield start, stop
        start = stop


_LEVEL_RANK = {"debug": 0, "info": 1, "warning": 2, "error": 3, "critical": 4}
_COLOURS = (36, 33, 35, 32, 34, 91, 96, 93, 95, 92, 94)
_STATUS_COLOURS = {"success": 32, "failed": 31, "timed_out": 31, "refused": 31, "cancelled": 33,
                   "skipped": 90, "allowed_failure": 33}


def clock() -> str:
    """HH:MM:SS, local time: the stamp of the runner's text lines (a test may replace it with a fixed one)."""
    return time.strftime("%H:%M:%S")


def want_colour(stream: Any, setting: str = "auto") -> bool:
    """Colour on a TTY unless NO_COLOR is set; `always` / `never` override."""
    if setting == "always":
        return True
    if setting == "never" or os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class JobLog:
    """The output of one job: console (text or JSON), per-step log files, runner messages, summary."""

    def __init__(
        self,
        out: BinaryIO,
        *,
        job_name: str = "job",
        job_id: str | None = None,
        fmt: str = "text",
        colour: bool = False,
        logs_dir: Path | None = None,
        mask: Callable[[str], str] = lambda s: s,
        level: str = "INFO",
        open_log: Callable[[Path, bool], BinaryIO] | None = None,
        timestamps: bool = False,
        file_timestamps: bool = False,
    ) -> None:
        self.out = out
        self.job_name = job_name
        self.job_id = job_id
        self.fmt = fmt
        self.colour = colour
        self.logs_dir = logs_dir
        self.mask = mask
        self.debug = level.upper() == "DEBUG"
        # Line timestamps (execution/timestamps.py): on the console with --timestamps, in step log files with --log-timestamps.
        self.timestamps = timestamps
        self.file_timestamps = file_timestamps
        # --log-level WARNING / ERROR hide the runner's lower messages (step output and the summary stay).
        self.min_rank = _LEVEL_RANK.get(level.lower(), 1)
        # How step log files are opened: the runner passes one that goes through security.paths.Workspace
        # (no symlink can redirect a log out of the workspace).
        self.open_log = open_log or _open_log
        self._lock = threading.Lock()
        self._steps = 0
        # step name (or None) -> (trace id, span id) for JSON lines; set by the job's observer.
        self.trace: Callable[[str | None], tuple[str, str]] | None = None

    # -- runner messages ---------------------------------------------------------------------------------

    def event(self, message: str | Own, *, step: str | None = None, level: str = "info", **fields: Any) -> None:
        """A message of the runner itself (phase changes, errors); masked before it is written (an `Own` in
        its user parts only)."""
        if _LEVEL_RANK.get(level, 1) < self.min_rank:
            return
        message = render(message, self.mask)
        if self.fmt == "json":
            record = self._record(level, step, "runner", message)
            record.update({k: render(v, self.mask) if isinstance(v, (str, Own)) else v for k, v in fields.items()})
            self._write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
            return
        # Local wall-clock time, HH:MM:SS, always the 8 characters after "==> " (tests and greps rely on it).
        label = clock() + " " + (f"[{step}] " if step else "")
        if self.colour:
            tint = {"error": "31", "warning": "33", "debug": "90"}.get(level, "1")
            line = f"\x1b[{tint}m==> {label}{message}\x1b[0m\n"
        else:
            line = f"==> {label}{message}\n"
        data = line.encode("utf-8", "replace")
        self._write(stamp() + data if self.timestamps else data)

    def _record(self, level: str, step: str | None, stream: str, message: str) -> dict[str, Any]:
        return {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
                "level": level, "job_id": self.job_id, "job": self.job_name, "step": step, "stream": stream,
                "message": message, **self._trace_fields(step)}

    def _trace_fields(self, step: str | None) -> dict[str, str]:
        if self.trace is None:
            return {}
        trace_id, span_id = self.trace(step)
        return {"trace_id": trace_id, "span_id": span_id}

    def _write(self, data: bytes) -> None:
        with self._lock:
            self.out.write(data)
            self.out.flush()

    def _write_parts(self, *parts: bytes | memoryview) -> None:
        # Several writes under one lock: a line is never split between two writers. Nothing large is copied; the
        # parts before the last (a prefix, a line's beginning) are joined into one write: a raw stdout
        # (PYTHONUNBUFFERED, as many CI images set) would otherwise get a write() each.
        if len(parts) > 2:
            parts = (b"".join(parts[:-1]), parts[-1])
        with self._lock:
            for part in parts:
                if part:
                    self.out.write(part)
            self.out.flush()

    # -- step output -------------------------------------------------------------------------------------

    def step_output(self, step: str, *, attempt: int = 1) -> StepOutput:
        """A sink for one attempt of one step: pass `.write` as run_process's on_output."""
        with self._lock:
            colour = _COLOURS[self._steps % len(_COLOURS)]
            self._steps += 1
        path = None
        if self.logs_dir is not None:
            path = self.logs_dir / f"{step}.log"
        return StepOutput(self, step, colour, path, append=attempt > 1)

    # -- summary -----------------------------------------------------------------------------------------

    def summary(self, results: Iterable[Any], plugin_timings: Iterable[tuple[str, float, int]] = (),
                *, total: float | None = None, exit_code: int | None = None, notes: Iterable[str] = ()) -> None:
        """The table at the end: step, status, duration, exit code, attempts, why; then plugin timings and
        `notes` (lines such as where the step summaries are)."""
        notes = list(notes)
        results = list(results)
        timings = list(plugin_timings)
        mask = self.mask
        if self.fmt == "json":
            record = self._record("info", None, "summary", "job finished")
            document = summary_document(job=self.job_name, job_id=self.job_id, exit_code=exit_code, steps=results,
                                        plugins=[(n, round(s, 6), c) for n, s, c in timings], mask=mask)
            record["job"], record["job_id"] = document["job"], document["job_id"]
            record.update(steps=document["steps"], plugins=document["plugins"], exit_code=exit_code,
                          duration=None if total is None else round(total, 3))
            if notes:
                record["notes"] = [mask(note) for note in notes]
            # Not masked again as a whole: the user fields are (see own_words).
            self._write((json.dumps(record, ensure_ascii=False) + "\n").encode())
            return
        rows = [("STEP", "STATUS", "DURATION", "EXIT", "TRIES", "NOTE")] if results else []
        for r in results:
            own = own_record({"name": r.name, "status": r.status, "reason": r.reason or ""}, mask)
            rows.append((own["name"], own["status"], _seconds(r.duration),
                         "-" if r.exit_code is None else str(r.exit_code), str(r.attempts), own["reason"]))
        widths = [max((len(row[i]) for row in rows), default=0) for i in range(5)]
        lines = []
        for index, row in enumerate(rows):
            cells = [row[i].ljust(widths[i]) for i in range(5)]
            if self.colour and index and row[1] in _STATUS_COLOURS:
                cells[1] = f"\x1b[{_STATUS_COLOURS[row[1]]}m{cells[1]}\x1b[0m"
            lines.append("  ".join(cells + [row[5]]).rstrip())
        if timings:
            names = [mask(n) for n, _, _ in timings]
            width = max(6, *(len(n) for n in names))
            lines.append("")
            lines.append("PLUGIN".ljust(width) + "  TIME      CALLS")
            for name, (_, seconds, calls) in zip(names, timings, strict=True):
                lines.append(f"{name.ljust(width)}  {_seconds(seconds).ljust(8)}  {calls}")
        if notes:
            lines.append("")
            lines.extend(mask(note) for note in notes)
        if total is not None:
            lines.append("")
            lines.append(Own("job {name}: {status} (exit {code}) in {took}", name=self.job_name,
                             status=Own("success" if exit_code == 0 else "failed"), code=exit_code,
                             took=Own(_seconds(total))).render(mask))
        text = "\n".join(lines) + "\n"
        self._write(("\n" + text).encode("utf-8", "replace"))


def _open_log(path: Path, append: bool) -> BinaryIO:
    # 0600: the file is masked, but a log is nobody else's business. Never through a symlink.
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o600), "wb")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.2f}s"
    return f"{int(value // 60)}m{value % 60:04.1f}s"


class StepOutput:
    """Line-buffers one step's streams and writes whole lines to the console and the step's log file.

    Every line of the log file starts with its UTC timestamp (execution/timestamps.py), the console's with
    `timestamps` (--timestamps). Stamps are taken once per piece of output and inserted into masked bytes.
    """

    def __init__(self, log: JobLog, step: str, colour: int, path: Path | None, *, append: bool) -> None:
        self.log = log
        self.step = step
        self._pending: dict[str, bytes] = {}
        self._pending_stamp: dict[str, bytes] = {}  # the stamp of a pending line: the read of its first byte
        self._cut: set[str] = set()  # streams whose last line in the log file was cut (continues unstamped)
        self._file: BinaryIO | None = None
        self._file_lock = threading.Lock()
        if path is not None:
            self._file = log.open_log(path, append)
        label = f"[{step}]"
        self._prefix = (f"\x1b[{colour}m{label}\x1b[0m " if log.colour else f"{label} ").encode()
        self._stamp_file = log.file_timestamps
        self._stamp_console = log.timestamps and log.fmt != "json"  # JSON lines carry their own "time"
        self._clock = StampClock() if self._stamp_file or self._stamp_console else None
        self._writer: _Writer | None = None  # the console's, once bulk output started its threads
        self._file_writer: _Writer | None = None  # the log file's
        self._offload: bool | None = None  # whether bulk output has its threads (None: no bulk yet)

    def write(self, stream: str, data: bytes) -> None:
        """Take already-masked bytes of `stream` ("stdout"/"stderr"); emit the complete lines."""
        if not data:
            return
        now = self._clock() if self._clock is not None else b""
        pending = self._pending.get(stream, b"")
        if not pending:
            self._pending_stamp[stream] = now
        cut = data.rfind(b"\n")
        if cut < 0:
            buf = pending + data if pending else data
            if len(buf) > MAX_PENDING_LINE:
                self._dispatch(stream, b"", buf + b"\n", len(buf) + 1, self._pending_stamp[stream], now, True)
                self._pending_stamp[stream] = now
                buf = b""
            self._pending[stream] = buf
            return
        # Only the tail after the last newline is kept (a copy of less than a line); the lines before it are
        # written from `data` itself, never joined to the pending bytes or sliced out of it.
        end = cut + 1
        first = self._pending_stamp[stream]
        self._pending[stream] = data[end:]
        self._pending_stamp[stream] = now
        if self._offload is None and len(data) >= OFFLOAD_MIN:
            self._offload = core_free()  # decided once, at the step's first bulk piece
            if self._offload:
                self._writer = _Writer(self._write_console, f"runnerlib-log-{self.step}")
                if self._file is not None:
                    emit = self._write_file_stamped if self._stamp_file else self._write_file
                    self._file_writer = _Writer(emit, f"runnerlib-logfile-{self.step}")
        self._dispatch(stream, pending, data, end, first, now)

    def _dispatch(self, stream: str, pending: bytes, data: bytes, end: int, first: bytes, later: bytes,
                  partial: bool = False) -> None:
        # Once bulk output started its threads, each copy is written by its own (write() releases the GIL, and the
        # two copies into the page cache run at once), and the console's thread also prefixes its lines. The
        # prefixing (one bytes.replace, a memchr and two copies a line) holds the GIL for about a third of the
        # reading thread's time; in the console's thread it overlaps the reads and the masker's scan, which release
        # the GIL, and it writes in slices (_write_console). Measured with 1 GiB of 56-byte lines, each build
        # following tee equally often (docs/internals/executor.md): the prefixing moved to the console's thread,
        # 0.99x of the wall time; with the slices, 0.90x more.
        if self._writer is not None:  # once started, every line goes through them: each keeps its order
            if self._file_writer is not None and self._stamp_file:  # stamped by the log file's thread
                self._file_writer.put(pending, data, end, *self._file_stamps(stream, first, later, partial), partial)
            elif self._file_writer is not None:
                self._file_writer.put(*self._file_parts(stream, pending, data, end, first, later, partial))
            self._writer.put(stream, pending, data, end, first, later)
            return
        file_parts = self._file_parts(stream, pending, data, end, first, later, partial)
        if file_parts:
            self._write_file(*file_parts)
        self.log._write_parts(*self._console_parts(stream, pending, data, end, first, later))

    def _write_console(self, stream: str, pending: bytes, data: bytes, end: int, first: bytes,
                       later: bytes) -> None:
        # The console's thread: _console_parts reads nothing that changes (the prefix, the format, the stamps given).
        # A large piece is prefixed and written in slices of about WRITE_SLICE bytes, cut after a newline: each
        # prefixed slice is still in the core's cache when write() copies it, and each replace holds the GIL for
        # a slice's time, not a piece's. Paired against whole pieces (1 GiB of 56-byte lines, 10 rounds, each
        # build following tee equally often): 0.90x of the wall time, 0.87x of the CPU, for one more copy.
        if self.log.fmt == "json" or end < 2 * WRITE_SLICE:
            self.log._write_parts(*self._console_parts(stream, pending, data, end, first, later))
            return
        # The prefix of every line after a piece's first (_console_parts' `later + prefix` when stamped).
        lead = later + self._prefix if self._stamp_console else self._prefix
        for start, stop in _slices(data, end):
            if not start:
                self.log._write_parts(*self._console_parts(stream, pending, data[:stop], stop, first, later))
                continue
            # From the newline before the slice: one write a slice (a raw stdout, PYTHONUNBUFFERED as many CI
            # images set, wrote a separate prefix apart).
            piece = data[start - 1:stop]
            if needs_inert(piece):
                self.log._write_parts(*self._console_parts(stream, b"", piece[1:], stop - start, later, later))
            else:
                self.log._write_parts(prefix_after_newline(piece, lead))

    def _write_file_stamped(self, pending: bytes, data: bytes, end: int, first: bytes, later: bytes,
                            partial: bool) -> None:
        # The log file's thread, when its lines are stamped (--log-timestamps): the stamps are put in here, in
        # slices like the console's prefixes (_write_console), rather than by the reading thread a piece at a time.
        for start, stop in _slices(data, end):
            if not start:
                parts: tuple[bytes | memoryview, ...] = prefix_lines(first, pending, data[:stop], stop, later)
            else:
                parts = (prefix_after_newline(data[start - 1:stop], later),)
            if partial and stop == end:  # a cut line: written without the newline the reader added
                parts = (*parts[:-1], parts[-1][:-1])
            self._write_file(*parts)

    def _write_file(self, *parts: bytes | memoryview) -> None:
        with self._file_lock:
            if self._file is not None:
                for part in parts:
                    if part:
                        self._file.write(part)

    def _file_parts(self, stream: str, pending: bytes, data: bytes, end: int, first: bytes, later: bytes,
                    partial: bool) -> tuple[bytes | memoryview, ...]:
        """The lines `pending + data[:end]` for the step's log file (see _console_parts); a cut line is
        written without its newline, as the step printed it, and its continuation gets no stamp."""
        if self._file is None:
            return ()
        first, later = self._file_stamps(stream, first, later, partial)
        if self._stamp_file:
            parts: tuple[bytes | memoryview, ...] = prefix_lines(first, pending, data, end, later)
        else:
            parts = (pending, memoryview(data)[:end])
        return (*parts[:-1], parts[-1][:-1] if partial else parts[-1])

    def _file_stamps(self, stream: str, first: bytes, later: bytes, partial: bool) -> tuple[bytes, bytes]:
        """The stamps of a piece's first line and of the others in the step's log file (none without
        --log-timestamps; none for the continuation of a cut line), and the cut noted for the next piece."""
        if not self._stamp_file:
            first = later = b""
        elif stream in self._cut:
            first = b""
            self._cut.discard(stream)
        if partial:
            self._cut.add(stream)
        return first, later

    def _console_parts(self, stream: str, pending: bytes, data: bytes, end: int, first: bytes = b"",
                       later: bytes = b"") -> tuple[bytes | memoryview, ...]:
        """The lines `pending + data[:end]` (the last one ends at end - 1 with a newline) for the console."""
        log = self.log
        if log.fmt == "json":
            out = []
            for line in (pending + data[:end - 1]).split(b"\n"):
                record = log._record("info", self.step, stream, line.decode("utf-8", "replace"))
                out.append(json.dumps(record, ensure_ascii=False).encode())
            return (b"\n".join(out) + b"\n",)
        prefix = self._prefix
        if needs_inert(pending) or needs_inert(data, end):  # a CR or an escape must not move the cursor
            pending, data = b"", inert(pending + data[:end])
            end = len(data)
        if self._stamp_console:
            return prefix_lines(first + prefix, pending, data, end, later + prefix)
        return prefix_lines(prefix, pending, data, end, prefix)

    def close(self) -> None:
        """Flush what is left of partial lines (marked with no newline at end of output)."""
        try:
            for stream, rest in list(self._pending.items()):
                if rest:
                    stamp = self._pending_stamp[stream]
                    self._dispatch(stream, rest, b"\n", 1, stamp, stamp)
            self._pending.clear()
        finally:
            writers = [w for w in (self._writer, self._file_writer) if w is not None]
            self._writer = self._file_writer = None
            try:
                _close_all(writers)  # every queued line is written before the runner's next message
            finally:
                if self._file is not None:
                    with self._file_lock:
                        self._file.close()
                        self._file = None

    def __enter__(self) -> StepOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_all(writers: list[_Writer]) -> None:
    """Close every writer, even when one raises; raise the first error."""
    error: BaseException | None = None
    for writer in writers:
        try:
            writer.close()
        except BaseException as exc:  # noqa: BLE001 - raised below, after the other writers are closed
            error = error or exc
    if error is not None:
        raise error


class _Writer:
    """One thread calling `emit(*args)` for each `put(*args)`, in order. An error is raised to the caller."""

    def __init__(self, emit: Callable[..., None], name: str) -> None:
        self._emit = emit
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(OFFLOAD_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._emit(*item)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller; keep draining so it never blocks
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error  # sticky: nothing after a lost piece is written, so no line goes missing unseen

    def put(self, *item: Any) -> None:
        self._raise()
        self._queue.put(item)

    def close(self) -> None:
        """Write everything queued, stop the thread, raise its error if it had one."""
        self._queue.put(None)
        self._thread.join()
        self._raise()


class MaskedTextWriter:
    """A text stream for sys.stdout / sys.stderr while a job runs: whole lines, masked, to `target`.

    Plugins and logging write with print() / logging in the runner's own process; without this their text
    would bypass the masking that step output gets. Partial lines are held until a newline or flush().
    """

    def __init__(self, target: Any, mask: Callable[[str], str]) -> None:
        self._target = target
        self._mask = mask
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            data = self._pending + text
            cut = data.rfind("\n")
            if cut < 0:
                self._pending = data
                if len(data) > MAX_PENDING_LINE:
                    self._pending = ""
                    self._target.write(self._mask(data))
                return len(text)
            self._pending = data[cut + 1:]
            self._target.write(self._mask(data[:cut + 1]))
            self._target.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._target.write(self._mask(self._pending))
                self._pending = ""
            self._target.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._target, "isatty", lambda: False)())

    def fileno(self) -> int:
        return int(self._target.fileno())

    @property
    def encoding(self) -> str:
        return str(getattr(self._target, "encoding", "utf-8"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)
