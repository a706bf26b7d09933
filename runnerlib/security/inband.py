"""In-band registration: a trusted step prints `::add-mask::VALUE` (GitHub Actions' form) to mask VALUE.

A byte-stream stage placed BEFORE the masking stream of a step's output:

- trusted step: `::add-mask::VALUE` registers VALUE in the job's registry before any later byte of the
  output passes on, and the command is swallowed (never echoed, so VALUE never reaches the masker in clear
  with a chance to slip past it): at a line start (blanks before it allowed) with its whole line; within a
  line (GitHub: line start only) from the command to the line break, the text before it and the line break
  passed on. Within a line because text printed just before the command without a newline (an untrusted
  step's report that a trusted step cats) must not hide it;
- untrusted step: nothing is recognised; every byte passes on unchanged and is masked as ordinary output.
  An untrusted step that could register values could mask arbitrary text (hiding its own output) and learn
  by elimination whether a guess is a secret, so it gets no say.

Hold-back: only the end of a write that could still become the command is held (a line start: blanks and
a prefix of `::add-mask::`, compared case-insensitively as the GitHub runner does; within a line: a prefix
of it), at most a few dozen bytes; everything else passes as it arrives. A command is held until its
newline (bounded by `max_command`; a longer one is dropped whole, never echoed). flush() keeps the partial
prefix (releasing `::add-m` and then receiving `ask::VALUE` would print VALUE); close() releases it, and
registers an unterminated command at end of stream.

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


def command_values(raw: bytes) -> list[bytes]:
    """What a command `::add-mask::RAW` registers: RAW (a trailing CR cut) unescaped and, when that differs,
    as written; and the same for what follows every later start of the command within it.

    Why the later ones: text printed before a trusted step's command without a line break (an untrusted
    report) can end in a piece of the command itself, `...::add-mask` + `::add-mask::T` reads as the command
    with the value `add-mask::T`, which does not mask a later `echo $T`. The command's own value is always
    what follows one of the starts, so each is registered (more masking, never less).

    >>> command_values(b"add-mask::T0k%25")
    [b'add-mask::T0k%', b'add-mask::T0k%25', b'T0k%', b'T0k%25']
    """
    value = raw[:-1] if raw.endswith(b"\r") else raw
    line = (PREFIX + value).lower()
    forms: list[bytes] = []
    at = 0  # a start of the command in `line` is followed by value[at:]
    while at >= 0:
        piece = value[at:]
        if piece.strip():
            unescaped = unescape_command_data(piece)
            forms += [unescaped] if unescaped == piece else [unescaped, piece]
        at = line.find(PREFIX, at + 1)
    return forms


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
        # Line state: "start" = at the start of a line, `_held` may be a command candidate; "pass" = inside an
        # ordinary line, `_held` may be a command's first bytes; "command" = inside a command, `_held` is its
        # value so far;
        # "skip" = inside an over-long command line being dropped.
        self._state = "start"
        self._held = bytearray()
        self._keep_newline = False  # the command in hand began within a line: its line break is printed
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
        if self._held:  # a possible start of the command from the previous write: scanned again with this one
            data = bytes(self._held) + bytes(data)
            self._held.clear()
        else:
            data = bytes(data)
        if self._state in ("start", "pass") and (b":" not in data or b"::" not in data):
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
            else:
                pos = self._scan_lines(data, low, pos, out)
        self._emit(out)

    def _scan_lines(self, data: bytes, low: bytes, pos: int, out: bytearray) -> int:
        """Pass everything up to the next command, or hold a possible start of one at the end. Only C-level
        searches run per write, not Python code per line."""
        hit = low.find(PREFIX, pos)
        if hit < 0:
            out += data[pos:self._hold_tail(data, pos)]
            return len(data)
        line_start = data.rfind(b"\n", pos, hit) + 1 or pos
        starts_line = line_start > pos or self._state == "start" or (pos > 0 and data[pos - 1 : pos] == b"\n")
        indent = data[line_start:hit]
        if starts_line and len(indent) <= MAX_INDENT and not indent.strip(b" \t"):
            out += data[pos:line_start]  # the command's line goes whole, its indent and line break too
            self._keep_newline = False
        else:
            out += data[pos:hit]  # text before it on its line stays, and so does the line break
            self._keep_newline = True
        self._state = "command"
        return hit + len(PREFIX)

    def _hold_tail(self, data: bytes, pos: int) -> int:
        """No command starts in data[pos:]: hold the end of it if it could still become one (a line start:
        blanks and a prefix of the command; within a line: a prefix of the command).

        Returns where the held bytes begin (len(data) when nothing is held); sets the line state."""
        last_newline = data.rfind(b"\n", pos)
        if last_newline >= 0 or self._state == "start":
            tail_start = last_newline + 1 if last_newline >= 0 else pos
            tail = data[tail_start:]
            stripped = tail.lstrip(b" \t")
            if len(tail) - len(stripped) <= MAX_INDENT and PREFIX.startswith(stripped.lower()):
                self._held = bytearray(tail)  # at most the indent and 11 bytes
                self._state = "start"
                return tail_start
        self._state = "pass"
        # Within a line: the longest end of the data that the command could begin with (`report::add-m`).
        if b":" in data[1 - len(PREFIX):]:  # every prefix of the command begins with ":"
            for size in range(min(len(PREFIX) - 1, len(data) - pos), 0, -1):
                if PREFIX.startswith(data[-size:].lower()):
                    self._held = bytearray(data[-size:])
                    return len(data) - size
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
        if self._keep_newline:
            out += b"\n"
        self._state = "start"
        return newline + 1, out

    def _register(self, raw: bytes) -> None:
        forms = command_values(raw)
        if not forms:
            log.warning("%s: ::add-mask:: with an empty value ignored", self.source)
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
        if self._state in ("start", "pass") and self._held:
            self._emit(self._held)
        elif self._state == "command":
            self._register(bytes(self._held))
        self._held.clear()
        self._close_sink()

    def __enter__(self) -> AddMaskFilter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
