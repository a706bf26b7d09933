"""In-band registration: a trusted step prints `::add-mask::VALUE` (GitHub Actions' form) to mask VALUE.

A byte-stream stage placed BEFORE the masking stream of a step's output:

- trusted step: a line `::add-mask::VALUE` registers VALUE in the job's registry before any later byte of the
  output passes on, and the line itself is swallowed (never echoed, so VALUE never reaches the masker in
  clear with a chance to slip past it);
- untrusted step: nothing is recognised; every byte passes on unchanged and is masked as ordinary output.
  An untrusted step that could register values could mask arbitrary text (hiding its own output) and learn
  by elimination whether a guess is a secret, so it gets no say.

Hold-back: only the start of a line that could still become the command (optional spaces or tabs, then a
prefix of `::add-mask::`, compared case-insensitively as the GitHub runner does) is held, at most a few
dozen bytes; everything else passes as it arrives. A command line is held until its newline (bounded by
`max_command`; a longer one is dropped whole, never echoed). flush() keeps the partial prefix (releasing
`::add-m` and then receiving `ask::VALUE` would print VALUE); close() releases it, and registers an
unterminated command at end of stream.

Like GitHub's runner, VALUE is unescaped (%25 -> %, %0D -> CR, %0A -> LF) so multi-line values can be
registered on one line; the escaped form is registered too when it differs.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from runnerlib.security.stage import Stage

log = logging.getLogger("runnerlib.secrets.inband")

PREFIX = b"::add-mask::"
# Leading blanks allowed before the command: scripts indent. Bounded so a line of blanks is not held forever.
MAX_INDENT = 64
MAX_COMMAND = 1024 * 1024


class Registry(Protocol):
    def add(self, value: str | bytes, *, source: str) -> bool: ...


def unescape_command_data(data: bytes) -> bytes:
    """GitHub Actions' command-data unescaping: %0D -> CR, %0A -> LF, %25 -> % (in that order of meaning)."""
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x25 and data[i + 1 : i + 3].upper() in (b"0D", b"0A", b"25"):
            out += {b"0D": b"\r", b"0A": b"\n", b"25": b"%"}[bytes(data[i + 1 : i + 3]).upper()]
            i += 3
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


class AddMaskFilter(Stage):
    """write(bytes) / flush() / close(): recognises `::add-mask::` lines and forwards the rest to `sink`.

    `sink` is a stream with write() (and optionally flush()/close(), which are passed on) or a callable
    taking bytes. `source` names the step in the registry's records. Single writer, like any stream.

    Example::

        masked = registry.stream(out.write)
        stage = AddMaskFilter(registry, masked, trusted=step.trusted, source=f"::add-mask:: in {step.name}")
        for chunk in process_output:
            stage.write(chunk)
        stage.close()                  # closes `masked` too
    """

    def __init__(self, registry: Registry, sink: Any, *, trusted: bool, source: str = "::add-mask::",
                 max_command: int = MAX_COMMAND) -> None:
        self.registry = registry
        self.trusted = trusted
        self.source = source
        self.max_command = max_command
        super().__init__(sink)
        # Line state: "start" = at the start of a line, `_held` may be a command candidate;
        # "pass" = inside an ordinary line; "command" = inside a command line, `_held` is its value so far;
        # "skip" = inside an over-long command line being dropped.
        self._state = "start"
        self._held = bytearray()
        self._closed = False
        self.registered = 0

    # --- the stream ----------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("write to a closed AddMaskFilter")
        if not data:
            return
        if not self.trusted:
            self._write(bytes(data))
            return
        data = bytes(data)
        if self._state in ("start", "pass") and not self._held and (b":" not in data or b"::" not in data):
            # Bulk output: no command can start in this write (every case of the prefix contains "::"), so it
            # passes whole, without the lowered copy, except a tail that could still become one. (The one-byte
            # test is a memchr, several times faster than the two-byte search it usually makes unnecessary.)
            cut = self._hold_tail(data, 0)
            if cut:
                self._write(data if cut == len(data) else data[:cut])
            return
        low = data.lower()  # one C-speed copy per write: commands are matched case-insensitively
        out = bytearray()
        pos = 0
        end = len(data)
        while pos < end:
            if self._state in ("command", "skip"):
                pos, out = self._command_bytes(data, pos, out)
            elif self._state == "start" and self._held:
                pos = self._scan_start(data, pos, out)  # a partial prefix from the previous write
            else:
                pos = self._scan_lines(data, low, pos, out)
        self._emit(out)

    def _scan_lines(self, data: bytes, low: bytes, pos: int, out: bytearray) -> int:
        """Fast path: pass everything up to the next command at a line start, or hold a possible prefix at the
        end. Only C-level searches run per write, not Python code per line."""
        at_line_start = self._state == "start"
        hit = low.find(PREFIX, pos)
        while hit >= 0:
            line_start = data.rfind(b"\n", pos, hit) + 1
            if line_start == 0:
                line_start = pos
            starts_line = line_start > pos or at_line_start or (pos > 0 and data[pos - 1 : pos] == b"\n")
            indent = data[line_start:hit]
            if starts_line and len(indent) <= MAX_INDENT and not indent.strip(b" \t"):
                out += data[pos:line_start]
                self._state = "command"
                self._held.clear()
                return hit + len(PREFIX)
            hit = low.find(PREFIX, hit + 1)
        out += data[pos:self._hold_tail(data, pos)]
        return len(data)

    def _hold_tail(self, data: bytes, pos: int) -> int:
        """No command starts in data[pos:]: hold its last line's start if it could still become one.

        Returns where the held bytes begin (len(data) when nothing is held); sets the line state."""
        last_newline = data.rfind(b"\n", pos)
        if last_newline >= 0:
            tail_start = last_newline + 1
        elif self._state == "start":
            tail_start = pos
        else:  # still inside the line that was already passing
            return len(data)
        tail = data[tail_start:]
        stripped = tail.lstrip(b" \t")
        if len(tail) - len(stripped) <= MAX_INDENT and PREFIX.startswith(stripped.lower()):
            self._held = bytearray(tail)  # could still become a command: hold it (at most indent + 11 bytes)
            self._state = "start"
            return tail_start
        self._state = "pass"
        return len(data)

    def _command_bytes(self, data: bytes, pos: int, out: bytearray) -> tuple[int, bytearray]:
        """Inside a command line: hold its value until the newline, then register it before going on."""
        newline = data.find(b"\n", pos)
        stop = len(data) if newline < 0 else newline
        if self._state == "command":
            self._held += data[pos:stop]
            if len(self._held) > self.max_command:
                log.warning("%s: ::add-mask:: value longer than %d bytes dropped (not registered)",
                            self.source, self.max_command)
                self._held.clear()
                self._state = "skip"
        if newline < 0:
            return len(data), out
        if self._state == "command":
            # Everything before this line is handed on first; everything after waits for add() to return.
            self._emit(out)
            out = bytearray()
            self._register(bytes(self._held))
        self._held.clear()
        self._state = "start"
        return newline + 1, out

    def _scan_start(self, data: bytes, pos: int, out: bytearray) -> int:
        """At a line start: extend the held candidate byte by byte while it can still become the command."""
        end = len(data)
        while pos < end:
            byte = data[pos : pos + 1]
            candidate = self._held + byte
            stripped = bytes(candidate).lstrip(b" \t")
            indent = len(candidate) - len(stripped)
            if indent <= MAX_INDENT and PREFIX.startswith(stripped.lower()):
                self._held = bytearray(candidate)
                pos += 1
                if len(stripped) == len(PREFIX):
                    self._held.clear()
                    self._state = "command"
                    return pos
                continue
            # Not (or no longer) a command: release what was held and pass the rest of the line.
            out += self._held
            self._held.clear()
            self._state = "pass"
            return pos
        return pos

    def _register(self, raw: bytes) -> None:
        value = raw[:-1] if raw.endswith(b"\r") else raw
        if not value.strip():
            log.warning("%s: ::add-mask:: with an empty value ignored", self.source)
            return
        forms = [unescape_command_data(value)]
        if forms[0] != value:
            forms.append(value)
        for form in forms:
            if self.registry.add(form, source=self.source):
                self.registered += 1

    def _emit(self, out: bytearray) -> None:
        if out:
            self._write(bytes(out))

    def close(self) -> None:
        """End of stream: release a held partial prefix, register an unterminated command, close the sink."""
        if self._closed:
            return
        self._closed = True
        if self._state == "start" and self._held:
            self._emit(self._held)
        elif self._state == "command":
            self._register(bytes(self._held))
        self._held.clear()
        self._close_sink()

    def __enter__(self) -> AddMaskFilter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
