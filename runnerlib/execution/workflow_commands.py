"""Workflow commands in a step's output, as GitHub Actions defines them: `::group::`, `::endgroup::`,
`::error ...::`, `::warning ...::`, `::notice ...::`, `::debug::`, `::stop-commands::TOKEN` ... `::TOKEN::`.

A byte-stream stage placed in front of the ::add-mask:: stage (security/inband.py) of each output pipe:

    raw output -> WorkflowCommandFilter -> AddMaskFilter -> masker -> console / step log

- A command is a whole line `::name[ key=value,...]::data` (blanks before it allowed, the name compared
  case-insensitively, `%25 %0D %0A` unescaped in data and `%3A %2C` too in property values, as GitHub does).
  The line is replaced by a marker line in GitHub's raw-log format, which flows on to be masked like any
  output: `##[group]title`, `##[endgroup]`, `##[error]file:line:col: title: message` (warning, notice alike),
  `##[debug]message` (only with --log-level debug; dropped otherwise). "Folded" for a text console and a log
  file means these marker lines: a live console cannot take back what it printed, so every line of a group is
  shown; a viewer that folds (GitHub's format, the HTML report) folds between ##[group] and ##[endgroup].
- error/warning/notice are collected as annotations (level, message, file, line, col, end_line, end_col,
  title), every text masked with the job's registry when collected (nothing in them is registered); at most
  MAX_ANNOTATIONS per step, the rest counted.
- `::stop-commands::TOKEN`: until a line `::TOKEN::`, no line is a command here. Both lines are swallowed.
  `::add-mask::` lines still reach the ::add-mask:: stage and still register for a trusted step (unlike
  GitHub): a file the step prints (an untrusted step's report) could otherwise switch off the step's own later
  registrations and have its fresh token printed in clear; masking more never leaks.
- `::add-mask::` lines pass on untouched to the ::add-mask:: stage; a malformed command (an unknown property,
  a line number that is not a positive integer) and commands this runner does not implement (set-output,
  set-env, add-path: disabled on GitHub too; use the step files) are ordinary text.

Hold-back: only a line that starts (after blanks) with `::` or a prefix of it is held until its newline, at
most MAX_LINE bytes (a longer one passes as text); everything else passes as it arrives, and a piece with no
`::` in it passes without any per-line work.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from runnerlib.security.stage import Stage

MAX_LINE = 64 * 1024
MAX_INDENT = 64
MAX_ANNOTATIONS = 100
ANNOTATION_LEVELS = ("error", "warning", "notice")
_PROPERTIES = {"file": "file", "line": "line", "col": "col", "endline": "end_line", "endcolumn": "end_col",
               "title": "title"}
_NUMERIC = ("line", "col", "end_line", "end_col")
_LINE_START = re.compile(rb"^[ \t]*::", re.MULTILINE)


def unescape_data(text: str) -> str:
    """GitHub's command-data unescaping: %0D, %0A, %25 (one pass, so %2525 gives %25)."""
    return re.sub(r"%(0D|0A|25)", lambda m: {"0D": "\r", "0A": "\n", "25": "%"}[m.group(1).upper()], text,
                  flags=re.IGNORECASE) if "%" in text else text


def unescape_property(text: str) -> str:
    """GitHub's property unescaping: the data escapes plus %3A (:) and %2C (,)."""
    if "%" not in text:
        return text
    table = {"0D": "\r", "0A": "\n", "25": "%", "3A": ":", "2C": ","}
    return re.sub(r"%(0D|0A|25|3A|2C)", lambda m: table[m.group(1).upper()], text, flags=re.IGNORECASE)


def parse_command(line: str) -> tuple[str, dict[str, str], str] | None:
    """`::name key=v,...::data` as (lower-case name, raw properties, raw data); None when not that shape."""
    body = line.lstrip(" \t")
    if not body.startswith("::"):
        return None
    end = body.find("::", 2)
    if end < 0:
        return None
    head, data = body[2:end], body[end + 2:]
    name, _, props = head.partition(" ")
    if not name or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        return None
    properties: dict[str, str] = {}
    for item in filter(None, props.split(",")):
        key, eq, value = item.strip().partition("=")
        if not eq or not key:
            return None
        properties[key] = value
    return name.lower(), properties, data


class WorkflowCommands:
    """The commands of one step attempt: makes a filter per output pipe, collects the annotations.

    `mask` is the job registry's mask_text: every collected text goes through it. `debug` shows ::debug::.
    """

    def __init__(self, mask: Callable[[str], str], *, debug: bool = False) -> None:
        self.mask = mask
        self.debug = debug
        self.annotations: list[dict[str, Any]] = []
        self.dropped = 0
        self._lock = threading.Lock()

    def filter(self, sink: Any) -> WorkflowCommandFilter:
        """A stage writing to `sink` (an AddMaskFilter, or anything with write/close)."""
        return WorkflowCommandFilter(self, sink)

    def annotate(self, level: str, properties: dict[str, str], message: str) -> bool:
        """Record an annotation; False when a property is malformed (the line is then ordinary text)."""
        record: dict[str, Any] = {"level": level, "message": self.mask(unescape_data(message))}
        for key, value in properties.items():
            field = _PROPERTIES.get(key.lower())
            if field is None:
                return False
            value = unescape_property(value)
            if field in _NUMERIC:
                if not value.isdigit() or int(value) < 1 or len(value) > 9:
                    return False
                record[field] = int(value)
            else:
                record[field] = self.mask(value)
        with self._lock:
            if len(self.annotations) >= MAX_ANNOTATIONS:
                self.dropped += 1
            else:
                self.annotations.append(record)
        return True


def render_annotation(record: dict[str, Any]) -> str:
    """The marker line of an annotation: `##[error]file:line:col: title: message`."""
    where = ""
    if record.get("file"):
        where = str(record["file"]) + "".join(f":{record[k]}" for k in ("line", "col") if record.get(k))
        where += ": "
    title = f"{record['title']}: " if record.get("title") else ""
    return f"{where}{title}{record['message']}"


class WorkflowCommandFilter(Stage):
    """write(bytes) / flush() / close(): replaces workflow-command lines (module docstring), forwards the rest.

    Single writer, like any stream.
    """

    def __init__(self, commands: WorkflowCommands, sink: Any) -> None:
        self.commands = commands
        super().__init__(sink)
        self._held = b""  # the start of a line that may be a command (held lines always start a line)
        self._line_start = True  # the next byte starts a line
        self._stop: bytes | None = None  # the ::stop-commands:: token while commands are stopped
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("write to a closed WorkflowCommandFilter")
        if not data:
            return
        data = bytes(data)
        line_start = self._line_start
        if self._held:
            data, line_start = self._held + data, True
            self._held = b""
        # The one-byte test is a memchr (tens of GB/s); the two-byte search it usually spares runs at ~3.6 GB/s,
        # a quarter of a millisecond per MiB of bulk output (measured: bench/bench_executor.py).
        if b":" not in data or b"::" not in data:
            self._forward(self._tail(data, 0, line_start))
            return
        out = bytearray()
        pos = 0
        for match in _LINE_START.finditer(data):
            start = match.start()
            if start < pos or (start == 0 and not line_start):
                continue
            out += data[pos:start]
            newline = data.find(b"\n", start)
            if newline < 0:
                if len(data) - start > MAX_LINE:
                    out += data[start:]  # too long for a command: plain text
                    self._line_start = False
                else:
                    self._held = data[start:]
                self._forward(out)
                return
            out = self._line(data[start:newline], out)
            pos = newline + 1
        out += self._tail(data, pos, line_start if pos == 0 else True)
        self._forward(out)

    def _tail(self, data: bytes, pos: int, line_start: bool) -> bytes:
        """data[pos:] holds no command line: what passes now (a last line that may still become one is held)."""
        newline = data.rfind(b"\n", pos)
        begin = newline + 1 if newline >= 0 else pos
        if newline < 0 and not line_start:
            return data[pos:]
        tail = data[begin:]
        stripped = tail.lstrip(b" \t")
        if tail and len(tail) - len(stripped) <= MAX_INDENT and b"::".startswith(stripped):
            self._held = tail
            return data[pos:begin]
        self._line_start = not tail
        return data[pos:]

    def _line(self, line: bytes, out: bytearray) -> bytearray:
        """One complete line starting with `::` (newline excluded): append what replaces it to `out`."""
        self._line_start = True
        text = line.decode("utf-8", "surrogateescape")
        plain = line + b"\n"
        if self._stop is not None:
            if text.strip(" \t\r") == f"::{self._stop.decode('utf-8', 'surrogateescape')}::":
                self._forward(out)
                self._stop = None
                return bytearray()
            return out + plain
        parsed = parse_command(text.rstrip("\r"))
        if parsed is None:
            return out + plain
        name, properties, data = parsed
        marker: str | None
        if name == "group":
            marker = f"##[group]{unescape_data(data)}"
        elif name == "endgroup":
            marker = "##[endgroup]"
        elif name == "debug":
            if not self.commands.debug:
                return out
            marker = f"##[debug]{unescape_data(data)}"
        elif name in ANNOTATION_LEVELS:
            if not self.commands.annotate(name, properties, data):
                return out + plain
            record = {k: unescape_property(v) for k, v in properties.items()}
            record = {_PROPERTIES.get(k.lower(), k): v for k, v in record.items()}
            record["message"] = unescape_data(data)
            marker = f"##[{name}]{render_annotation(record)}"
        elif name == "stop-commands":
            token = data.rstrip("\r").encode("utf-8", "surrogateescape")
            if not token.strip():
                return out + plain
            self._forward(out)
            self._stop = token
            return bytearray()
        else:  # ::add-mask:: (the next stage's) and commands not implemented here: unchanged
            return out + plain
        # Multi-line data (%0A): every line keeps the marker, so none of it passes as a bare line.
        tag = marker[:marker.index("]") + 1]
        body = marker.replace("\n", "\n" + tag)
        return out + body.encode("utf-8", "surrogateescape") + b"\n"

    def _forward(self, out: bytes | bytearray) -> None:
        if out:
            self._write(bytes(out))

    def close(self) -> None:
        """End of stream: a held last line is handled as a line of its own, then the sink is closed."""
        if self._closed:
            return
        self._closed = True
        held, self._held = self._held, b""
        if held:
            out = self._line(held, bytearray()) if held.lstrip(b" \t").startswith(b"::") else bytearray(held)
            if out.endswith(b"\n") and not held.endswith(b"\n"):
                out = out[:-1]  # the step's output had no final newline: do not add one
            self._forward(out)
        self._close_sink()
