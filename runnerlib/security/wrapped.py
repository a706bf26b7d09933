"""Encoded forms cut by line breaks: base64, base32 and hex wrapped at any width, and hex dumps with offsets.

`base64` wraps at 76 columns, `openssl base64` at 64, `xxd -p` at 60, and `od`, `hexdump -C`, `xxd` print 16
bytes a line between an offset and an ASCII column. A secret's encoding then crosses a line break at any
offset, and no literal pattern matches it. Registering the encoding with a break at every position would take
hundreds of patterns a secret; scanning every line of the output with a regular expression costs as much as the
whole masking pass (measured: 1.3-2.6 GB/s for the detector alone). Instead:

- Each wrappable form of a secret registers a few TRIGGERS (`wrap_triggers`): fragments placed so that any
  piece of the form at least half its length, or one line long, contains one. Cut by one or more line breaks,
  the form always leaves such a piece, so the main engine's single pass finds a trigger.
- A trigger hit makes `view_occurrences` read the lines around it: a run of lines of one kind (encoding
  alphabet only, or hex-dump lines) is joined into its content (without line breaks, indentation, offsets,
  separators and ASCII columns), the content is scanned for every masked pattern, and what is found is mapped
  back, covering the line breaks between and, for a dump, the bytes' characters in the ASCII column.
- In a stream, `tail_live_start` holds back the end of such a run while its joined content ends with the
  beginning of a pattern (the next line may complete it), and `context_start` keeps the current line so that
  the next write sees it whole.

A line joins the next one when it is an encoding line of at least JOIN_MIN characters (the widths tools wrap
at: 60-76) or a dump line. Wrapped forms are guaranteed to be found for widths of at least WRAP_MIN_WIDTH.
"""

from __future__ import annotations

import base64
import bisect
import re
import struct
from collections.abc import Callable

# An encoding line shorter than this does not join the next line (a short word on its own line is not wrapped
# output). Any width from WRAP_MIN_WIDTH up has trigger fragments placed for it.
JOIN_MIN = 16
WRAP_MIN_WIDTH = 60
# Longer lines are not looked at (no tool wraps wider); also bounds what a stream keeps as context.
LINE_MAX = 4096

# One alternation, matched once per line: an encoding line (w: base64, base64url, hex, base32, and `.` for a
# folded registered JWT, whose raw fragments are its triggers); `hexdump -C` (offset, bytes separated by spaces,
# two after the 8th, |ASCII|: hd, hda); `xxd` (offset and colon, groups of hex digits, two spaces, ASCII: xx,
# xxa); plain `hexdump`, `hexdump -x`, `od -x` (offset, 16-bit words in little-endian order: hw);
# numeric dumps, decimal, octal or hex words of 1-8 bytes (`od -tu1`, `od -d`, `hexdump -d`, `od -o`, `od -tx4`: nw);
# `od -tx1` / `od -An -tx1` (optional offset: octal, `-Ad` decimal, `-Ax` hex of 6 digits, ` NN` bytes, `od -tx1z`'s >ASCII<), `bytes.hex(" ")`,
# `xxd -i` and C `0xNN,` lists, `\xNN` strings, colon-separated `openssl` hex (hl, hla).
_WRAP_RX = rb"[ \t]*(?P<w>[A-Za-z0-9+/_=.-]+)\r?"
# `od -c`: one field of 4 columns a byte, right-aligned: a printable character, a space (4 spaces), a C escape,
# or 3 octal digits (oc).
_OD_C_FIELD = rb"(?:   [!-~]|    |  \\[0abfnrtv]| [0-7]{3})"
_OD_C_ESCAPES = {ord(c): b for c, b in zip("0abfnrtv", b"\0\a\b\f\n\r\t\v", strict=True)}
_HEX_DUMP_RX = (rb"[0-9a-fA-F]{8,16}  (?P<hd>(?:[0-9a-fA-F]{2}  ?)*[0-9a-fA-F]{2}) *(?:\|(?P<hda>.*)\||\|.*)?\r?"
                rb"|[0-9a-fA-F]{7,16} +(?P<hw>[0-9a-fA-F]{4}(?: +[0-9a-fA-F]{4})*) *\r?"
                rb"|[0-9a-fA-F]{7,16}: (?P<xx>(?:[0-9a-fA-F]{2})+(?: (?:[0-9a-fA-F]{2})+)*)(?P<xxa> *|  .*)\r?"
                rb"|[ \t]*(?:[0-9a-fA-F]{6,16} )?(?P<hl>(?:(?:0x|\\x)?[0-9a-fA-F]{2}(?:, ?|:| |(?=\\x)|$|(?=\r)))+)"
                rb"[ \t]*(?:>(?P<hla>.*)<)?\r?")
_OD_C_RX = rb"(?:[0-9a-fA-F]{6,16})?(?=[^\n]*[^ \n\r])(?P<oc>(?:" + _OD_C_FIELD + rb")+)\r?"
_NUMERIC_RX = rb"(?P<nwo>[0-9a-fA-F]{6,8})(?P<nw>(?: +-?[0-9a-fA-F]+)+) *\r?"
_XXD_E_RX = rb"(?P<xe>[0-9a-fA-F]{8}:  +[0-9a-fA-F]{2,6}  .*)\r?"
_DUMP_RX = b"|".join((_HEX_DUMP_RX, _OD_C_RX, _NUMERIC_RX, _XXD_E_RX))
_LINE = re.compile(_WRAP_RX + rb"|" + _DUMP_RX)
# A line next to dump lines is read as one first (` 7a`, the last line of `od`, also reads as an encoding).
_DUMP_LINE = re.compile(_DUMP_RX)
# The other reading of a line that is both (`0000000   1   1` is `od -c` of "11" and `od -tu1` of 1, 1): a stream
# holds an unfinished line for both, not knowing which the whole line will be (tail_live_start).
_NUMBERS_FIRST = re.compile(b"|".join((_HEX_DUMP_RX, _NUMERIC_RX, _OD_C_RX, _XXD_E_RX)))
_HEX_PAIR = re.compile(rb"[0-9a-fA-F]{2}")
_HEX_WORD = re.compile(rb"[0-9a-fA-F]{4}")

WRAP, DUMP, ANSI = 1, 2, 3
# Colour and erase-line codes (`grep --color=always` highlighting part of a secret), and one cut at the end of a
# write: an ANSI line is read without them, where a trigger hits it (view_occurrences) and at the end of a
# stream's buffer (ansi_tail_live_start); it joins no other line, so it needs no context before its partial match.
_SGR = re.compile(rb"\x1b\[[0-9;]*[mK]")
_SGR_CUT = re.compile(rb"\x1b(?:\[[0-9;]*)?")


class _Line:
    """One classified line: its content (encoding characters, or hex digits) with the offset in the output of
    each content character, and for dumps the offset of each byte's ASCII-column character."""

    __slots__ = ("kind", "fmt", "content", "origin", "ascii", "pending", "begun")

    def __init__(self, kind: int, fmt: str, content: bytes, origin: list[int], ascii_at: list[int] | None,
                 pending: bool = False) -> None:
        self.kind, self.fmt, self.content, self.origin, self.ascii = kind, fmt, content, origin, ascii_at
        self.pending = pending  # a dump line whose ASCII column is not (completely) written yet
        self.begun: int | None = None  # where a token cut by the end of the data starts (classify_tail)

    @property
    def joins(self) -> bool:
        """Whether the next line may continue this one's content."""
        return self.kind == DUMP or self.kind == WRAP and len(self.content) >= JOIN_MIN


def classify(data: bytes, start: int, end: int, kind: int = 0, numbers_first: bool = False) -> _Line | None:
    """The line data[start:end] (no line break) as an encoding or dump line (as a dump line first when `kind`
    is DUMP, as numbers first when `numbers_first`: the other reading of a line that is `od -c` too), or None. A
    line not followed by a line break may be incomplete: its ASCII column is not read."""
    if end - start > LINE_MAX or end <= start:
        return None
    m = (_NUMBERS_FIRST if numbers_first else _DUMP_LINE if kind == DUMP else _LINE).fullmatch(data, start, end)
    if m is None and kind == DUMP:
        m = _LINE.fullmatch(data, start, end)
    if m is None:
        return None
    if m.re is _LINE and m.start("w") >= 0:
        a = m.start("w")
        return _Line(WRAP, "w", m.group("w"), list(range(a, m.end("w"))), None)
    if m.start("oc") >= 0:
        return _od_c_line(data, m.start("oc"), m.end("oc"))
    if m.start("hw") >= 0:
        # Words of 4 hex digits one space (`od -x`, `hexdump`) or four (`hexdump -x`) after the offset; other gaps are
        # 4-digit numbers in wider fields (`od -d`'s last line `0000020  2660`).
        offset_end = data.find(b" ", start, end)
        if m.start("hw") - offset_end in (1, 4):
            return _words_line(data, m.start("hw"), m.end("hw"))
        return _numeric_line(data, offset_end, m.end("hw"))
    if m.start("nw") >= 0:
        return _numeric_line(data, m.end("nwo"), m.end("nw"), numbers_first)
    complete = end < len(data) and data[end] == 0x0A
    if complete and (m.start("xx") >= 0 or m.start("xe") >= 0):
        le = _xxd_le_line(data, start, end)
        if le is not None:
            return le
    for hexes, col in (("hd", "hda"), ("xx", "xxa"), ("hl", "hla")):
        if m.start(hexes) >= 0:
            return _dump_line(data, m, hexes, col, complete)
    return None  # `xxd -e`'s last line of one short group, not (yet) confirmed by its ASCII column


def _classify_at(data: bytes, start: int, end: int, line_start: bool, kind: int = 0) -> _Line | None:
    # A stream's buffer may begin in the middle of a line (what came before was emitted and dropped): that
    # line's beginning is unknown, so it is never read as an encoding or dump line.
    # A line with colour codes reads the same from anywhere: from the start of the buffer, as it is.
    return _ansi_line(data, start, end) if start == 0 and not line_start else classify(data, start, end, kind)


def classify_tail(data: bytes, start: int, kind: int = 0, numbers: bool | None = None) -> _Line | None:
    """`classify` for an incomplete last line data[start:], maybe cut inside its last token ("70 4", "0x7"). A token
    begun is not read; `begun` says where it starts (a stream holds it: it may be the first byte of a value).
    `numbers` asks for one reading of a line that may be both `od -c` and numbers: True as numbers only, False
    not as numbers (None: the one the line has so far)."""
    end = len(data)

    def read(stop: int) -> _Line | None:
        line = classify(data, start, stop, kind, numbers is True)
        return line if numbers is None or line is None or (line.fmt[0] == "n") == numbers else None

    line, stop = read(end), end
    # What a cut drops must be able to begin a token: a line holding other bytes (`aaaa\0`) is no encoding or dump
    # line however it goes on (quick_candidate says so too, and a stream held a view's run there: `held`).
    if line is None and end - start > 1 and (data[end - 1:end].isalnum() or data[end - 1] == 0x20):
        # an odd hex digit ("6162 4"), or a space after a field (`od -b`'s "132 ")
        line, stop = read(end - 1), end - 1
    for cut in (2, 3):  # an `od -c` field begun ("   Q   2  ", " 153 13")
        if line is None and end - start > cut and all(32 <= b < 127 for b in data[end - cut:end]):
            line, stop = read(end - cut), end - cut
            line = line if line is not None and line.fmt == "oc" else None
    if line is None and end - start > 1:  # a token begun ("0x", "\\x6", `od -tx8`'s "646e3452")
        lo = max(start, end - _TOKEN_MAX - 1)  # not below 0: a negative bound counts from the end
        cut = max(data.rfind(b" ", lo, end), data.rfind(b",", max(start, end - 5), end),
                  data.rfind(b":", max(start, end - 5), end))
        if cut > start:
            line, stop = read(cut + 1), cut + 1
        backslash = data.rfind(b"\\", max(start, end - 4), end)
        if line is None and backslash > start:  # a `\\xNN` separator begun after hex ("61\\", "61\\x6")
            line, stop = read(backslash), backslash
    if line is None and end - start > 1:  # `od -tx1z`'s >ASCII< column begun, not ended: still to be written
        gt = data.rfind(b">", start, end)
        if gt > start and data.find(b"<", gt, end) < 0:
            line = classify(data, start, gt, DUMP)
            if line is not None and line.fmt == "hl":
                line.pending = True
            else:
                line = None
            return line
    if line is not None and stop < end:
        rest = data[stop:end].lstrip(b" ")
        if rest:
            line.begun = end - len(rest)
    if line is not None and line.kind == DUMP and (line.begun is not None or data[end - 1] == 0x20):
        # Held from the padding before the token begun or at the end (`od -tu1`'s "  8" of 88, or "   "): a numeric
        # field's is masked with its digits (_numeric_line), and a line cut there may read as another format
        # (`0000000 107` as `od -b`).
        upto = end if line.begun is None else line.begun
        after = start + len(data[start:upto].rstrip(b" ")) + 1
        if after < upto:
            line.begun = after
    return line


def _dump_line(data: bytes, m: re.Match[bytes], hexes: str, col: str, complete: bool) -> _Line:
    origin: list[int] = []
    for p in _HEX_PAIR.finditer(data, m.start(hexes), m.end(hexes)):
        origin.extend((p.start(), p.start() + 1))
    content = bytes(data[i] for i in origin)
    ascii_at = None
    nbytes = len(origin) // 2
    if complete and m.start(col) >= 0 and m.end(col) - nbytes >= m.end(hexes) + 1:
        # One character per byte, in order, ending the column (xxd pads the space before it on a short line).
        ascii_at = list(range(m.end(col) - nbytes, m.end(col)))
    return _Line(DUMP, hexes, content, origin, ascii_at, ascii_at is None and col != "hla")


# `xxd -e` (its default 4-byte groups, 16 bytes a line): each group printed little-endian (`5f706867` is `ghp_`), a
# short last group right-aligned in its field; hex in columns 10-44, two spaces, the ASCII column from 47.
_XXD_LE_FIELDS = (0, 9, 18, 27)


def _xxd_le_line(data: bytes, start: int, end: int) -> _Line | None:
    """A complete `xxd -e` line read as the hex of its bytes in order, when its ASCII column says the groups are
    little-endian (and not that they are in order, as `xxd -g4` prints them); None otherwise. Read as `xx` then:
    the format name is the same, so a run joins its lines whichever way each was read (a line whose bytes print as
    `.` reads either way)."""
    hexes, text = start + 10, start + 47
    if end <= text or end - text > 16 or data[start + 8:hexes] != b": " or data[text - 2:text] != b"  ":
        return None
    if _HEX.fullmatch(data, hexes, hexes + 8) is not None:  # a first group whole: its first byte tells at once
        first, last = _ascii_column(bytes.fromhex(data[hexes:hexes + 8].decode()))[::3]
        if first == data[text] != last:
            return None  # in order: `xxd -g4` (`xxd -u -g4` of random bytes streamed at 408 MB/s without this, 468)
    content, origin, order = bytearray(), list[int](), bytearray()
    ended = False
    for f in _XXD_LE_FIELDS:
        a = hexes + f
        field = data[a:a + 8]
        if f and data[a - 1] != 0x20:
            return None
        digits = field.lstrip(b" ")
        if ended and digits or len(digits) % 2 or _HEX.fullmatch(digits or b"0") is None:
            return None
        ended = len(digits) < 8
        first = a + 8 - len(digits)
        for j in range(len(digits) - 2, -1, -2):  # the last pair printed is the first byte
            content += digits[j:j + 2]
            origin.extend((first + j, first + j + 1))
        order += bytes.fromhex(digits.decode())
    le = bytes.fromhex(content.decode())
    shown = data[text:end].rstrip(b"\r")
    if len(shown) != len(le) or _ascii_column(le) != shown or _ascii_column(bytes(order)) == shown:
        return None
    return _Line(DUMP, "xx", bytes(content), origin, list(range(text, text + len(le))))


def _ascii_column(raw: bytes) -> bytes:
    """What xxd prints for `raw` in its ASCII column: printable ASCII as it is, other bytes as `.`."""
    return bytes(b if 32 <= b < 127 else 46 for b in raw)


def _ansi_line(data: bytes, start: int, end: int) -> _Line | None:
    """A line with colour codes, read without them (and without a code cut by the end of the data)."""
    if data.find(b"\x1b[", start, end) < 0 and data.find(b"\x1b", end - 1, end) < 0:
        return None
    content, origin = bytearray(), list[int]()
    pos = start
    for m in _SGR.finditer(data, start, end):
        content += data[pos:m.start()]
        origin.extend(range(pos, m.start()))
        pos = m.end()
    cut = _SGR_CUT.fullmatch(data, data.rfind(b"\x1b", pos, end), end) if end == len(data) else None
    stop = cut.start() if cut is not None and cut.start() >= pos else end
    content += data[pos:stop]
    origin.extend(range(pos, stop))
    return _Line(ANSI, "ansi", bytes(content), origin, None)


def _od_c_line(data: bytes, start: int, end: int) -> _Line:
    """An `od -c` line read as the hex of its bytes (what the secrets' hex forms match), each hex digit mapped to
    a character of its field."""
    content, origin = bytearray(), list[int]()
    for p in range(start, end - 3, 4):
        field = data[p:p + 4]
        if field[2] == 0x5C and field[1] == 0x20:  # "  \n"
            byte, first = _OD_C_ESCAPES[field[3]], p + 2
        elif field[1] != 0x20:  # " 303"
            byte, first = int(field[1:], 8) & 0xFF, p + 1
        else:  # "   X", "    " (a space)
            byte, first = field[3], p + 3
        content += b"%02x" % byte
        origin.extend((first, p + 3))
    return _Line(DUMP, "oc", bytes(content), origin, None)


def _words_line(data: bytes, start: int, end: int) -> _Line:
    """A line of 16-bit words in little-endian order (`hexdump`, `od -x`: `715a` is the bytes 5a 71) read as the hex
    of its bytes, each hex digit mapped to where it is printed (so the origins are not in order)."""
    content, origin = bytearray(), list[int]()
    for w in _HEX_WORD.finditer(data, start, end):
        p = w.start()
        content += data[p + 2:p + 4] + data[p:p + 2]
        origin.extend((p + 2, p + 3, p, p + 1))
    return _Line(DUMP, "hw", bytes(content), origin, None)


# Numeric dumps (`od -t{u,d,o,x}N`, `od -d`/`-o`/`-s`, `hexdump -d`/`-o`): right-aligned fields of one width, which
# says the word's size and, with the digits, the radix (od pads each field to the widest value's digits and a
# space; hexdump -d/-o to 8). Octal words are zero-padded to all their digits, which a decimal one of the same
# width never has. Each word is little-endian, as od and hexdump print them on the machines runnerlib runs on.
# (`od -tx1`, `od -x` and `od -b` are read above: hl, hw, oc.)
_NUMERIC_WIDTHS = {4: (10, 1), 5: (10, 1), 6: (10, 2), 7: (10, 2), 8: (10, 2), 9: (16, 4), 11: (10, 4), 12: (10, 4),
                   17: (16, 8), 21: (10, 8), 23: (10, 8)}
_OCTAL_DIGITS = {2: 6, 4: 11, 8: 22}
_STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_HEX = re.compile(rb"[0-9a-fA-F]+")
_TOKEN_MAX = 22  # the longest field (`od -to8`: 22 octal digits)
_OCTAL = re.compile(rb"[0-7]+")


def _numeric_line(data: bytes, offset_end: int, end: int, octal_bytes: bool = False) -> _Line | None:
    """A line of numeric words after its offset (`0000000 103 104 112  95`, `od -tu1`) read as the hex of its bytes,
    or None when its fields are not of one width in the table above. Every hex digit of a word maps to the first
    and last characters of the word's field after its separating space (a decimal digit stands for no one byte, and
    the padding says how many digits there are): a match covers whole fields. `octal_bytes`: read fields that are
    all `od -b`'s too (3 octal digits in 4 columns), as the numbers they also are (`255 255` of `od -tu1`).

    Checked by slices rather than token by token: a stream reads a dump's last lines at every write (token by token,
    `od -tu1` output streamed at 280 MB/s rather than 370-390)."""
    fields = data[offset_end:end]
    gap = fields.find(b" ", len(fields) - len(fields.lstrip(b" ")))  # the end of the first token
    width = gap if gap >= 0 else len(fields)
    spec = _NUMERIC_WIDTHS.get(width)
    if spec is None or len(fields) % width:
        return None
    tokens = fields.split()
    n = len(fields) // width
    # One token a field, right-aligned: each field begins with a space and ends with a digit.
    if len(tokens) != n or fields[::width].strip(b" ") or b" " in fields[width - 1::width]:
        return None
    if width == 4 and not octal_bytes and all(len(t) == 3 for t in tokens) \
            and _OCTAL.fullmatch(fields.replace(b" ", b"")):
        return None  # `od -b` (oc above), here cut after a space
    radix, size = spec
    if len(tokens[0]) == _OCTAL_DIGITS.get(size) and _OCTAL.fullmatch(tokens[0]):
        radix = 8
    if radix != 10:  # zero-padded to all their digits
        joined = fields.replace(b" ", b"")
        if len(joined) != n * (_OCTAL_DIGITS[size] if radix == 8 else 2 * size) \
                or (_OCTAL if radix == 8 else _HEX).fullmatch(joined) is None:
            return None
    modulus = 1 << 8 * size
    try:
        values = [int(t, radix) for t in tokens]
    except ValueError:  # hex digits in a decimal field
        return None
    if min(values) < -modulus // 2 or max(values) >= modulus:  # `od -o` prints up to 177777, 6 octal digits
        return None
    if min(values) < 0:
        values = [v % modulus for v in values]
    raw = struct.pack(f"<{n}{_STRUCT_CODES[size]}", *values)
    base = offset_end + 1
    origin = [p for i in range(n) for p in (base + i * width, base + i * width + width - 2) * size]
    return _Line(DUMP, f"n{radix}.{size}", raw.hex().encode(), origin, None)


def od_c_form(value: bytes) -> bytes:
    """`value` as `od -c` prints it on one line, without the first field's padding (a space byte keeps its own
    column)."""
    escapes = {b: c for c, b in _OD_C_ESCAPES.items()}
    out = bytearray()
    for b in value:
        if b in escapes:
            out += b"  \\" + bytes((escapes[b],))
        elif 0x20 <= b <= 0x7E:
            out += b"   " + bytes((b,))
        else:
            out += b" %03o" % b
    return bytes(out[len(out) - len(out.lstrip(b" ")) if out[:4] != b"    " else 3:])


def _line_bounds(data: bytes, pos: int) -> tuple[int, int]:
    return data.rfind(b"\n", 0, pos) + 1, _end_of_line(data, pos)


def _end_of_line(data: bytes, pos: int) -> int:
    end = data.find(b"\n", pos)
    return len(data) if end < 0 else end


def _run(data: bytes, start: int, end: int, line: _Line, budget: int, line_start: bool
         ) -> tuple[list[_Line], int, int, list[int] | None]:
    """The run of joined lines around data[start:end]: up to `budget` content characters before and twice that
    after; and when that cut it short (more lines of the run follow), the end of `line` and of each line after it
    in the run (None otherwise: see _held_through)."""
    before: list[_Line] = []
    got, s = 0, start
    while s > 0 and got < budget:
        ps = data.rfind(b"\n", 0, s - 1) + 1
        prev = _classify_at(data, ps, s - 1, line_start, line.kind)
        if prev is None or prev.fmt != line.fmt or not prev.joins:
            break
        before.append(prev)
        got += len(prev.content)
        s = ps
    lines = [*reversed(before), line]
    ends = [end]
    got, e, cur = 0, end, line
    while e < len(data) and got < 2 * budget and cur.joins:
        ne = _end_of_line(data, e + 1)
        nxt = classify(data, e + 1, ne, line.kind) if ne < len(data) else classify_tail(data, e + 1, line.kind)
        if nxt is None or nxt.fmt != line.fmt:
            break
        lines.append(nxt)
        ends.append(ne)
        got += len(nxt.content)
        e, cur = ne, nxt
    return lines, s, e, ends if got >= 2 * budget and e < len(data) and cur.joins else None


def _held_through(lines: list[_Line], ends: list[int], budget: int) -> int:
    """Where the occurrences a run cut short holds whole end: through the last of its lines from the trigger's on
    (`ends`, as _run gives them) with at least `budget` content characters after it in the run (an occurrence that
    touches such a line ends within the run)."""
    after = lines[len(lines) - len(ends) + 1:]
    rest = sum(len(ln.content) for ln in after)
    held = ends[0]
    for ln, e in zip(after, ends[1:], strict=True):
        rest -= len(ln.content)
        if rest < budget:
            break
        held = e
    return held


def _joined(lines: list[_Line]) -> tuple[bytes, list[int]]:
    origin: list[int] = []
    for ln in lines:
        origin.extend(ln.origin)
    return b"".join(ln.content for ln in lines), origin


def view_occurrences(data: bytes, hits: list[tuple[int, int]], find: Callable[[bytes], list[tuple[int, int]]],
                     budget: int = 1 << 16, line_start: bool = True, held: list[int] | None = None
                     ) -> list[tuple[int, int]]:
    """Runs to mask in `data` for forms cut by line breaks, looked for around each hit (of a trigger, or of a
    masked pattern in a dump line).

    `find` returns the masked occurrences in a byte string. `budget` bounds how much content is joined on
    each side of the hit's line (the longest pattern is enough).
    `line_start`: whether data[0] begins a line (False for a stream buffer that starts mid-line).
    `held`: `data` is a stream's buffer, which may go on. A run of encoding or dump lines read into its last line,
    unfinished, is not returned; its start is appended to `held`. What follows may make that line no encoding line
    (`000123` then ` tail`), and the whole output would not mask the run: the stream holds it until the line is
    done. (A line read without its colour codes reads the same whatever follows: its runs are final.)
    """
    out: list[tuple[int, int]] = []
    done_until = -1
    if b"%" in data:
        out.extend(mixed_case_occurrences(data, hits, find, budget))
    ordered = sorted(hits)
    for a, b in ordered:
        # DUMP_START (or the first dump line at the start, (0, 0)): a dump of a short input, read on from its first
        # line, where no fragment of a secret's own may be (see `reach` below).
        # Only the dump-start triggers: a secret's own form that begins with a line break (`\naaaa`, a multi-line
        # value's) read its line's colour view from anywhere, which a stream that let the break go could not.
        reach = a == b or data[a:b] in dump_starts()
        if data[a:a + 1] == b"\n":
            a += 1  # the line it begins (DUMP_START's, or a multi-line value's second)
        if a < done_until:
            continue
        start, end = _line_bounds(data, a)
        line = _classify_at(data, start, end, line_start)
        if line is None and end == len(data) and (start > 0 or line_start):
            line = classify_tail(data, start)  # the last line, cut inside a field ("   a   a ")
        if line is None:
            line = _ansi_line(data, start, end)
        if line is None:
            done_until = end
            continue
        lines, run_start, run_end, cut = _run(data, start, end, line, budget, line_start)
        # Cut short, the run does not hold the occurrences of its last lines (one may go on past it): their triggers
        # get runs of their own. Reading twice the budget after, each run moves on by at least the budget.
        done_until = run_end if cut is None else _held_through(lines, cut, budget)
        if len(lines) == 1 and line.kind == WRAP:
            continue  # one line of encoding: the plain scan already saw it as it is
        # A view masks what touches the line of a hit it reads: a form long enough to be guaranteed has a trigger in
        # one of its lines at least (every line, wrapped at 60 columns or more). Anything else in the run (`aaaa`'s
        # hex wrapped, no trigger of its own) the whole output would mask by the luck of a hit lines away, which a
        # stream cut between them cannot: it has let it go before the hit came, or dropped the hit from its kept
        # lines before the rest came.
        hits_read = ordered[bisect.bisect_left(ordered, (run_start,)):bisect.bisect_left(ordered, (run_end,))]
        if reach:
            touched = None
        elif line.kind == ANSI:
            # A line read without its colour codes can be longer than a stream keeps: what a code cuts is masked where
            # a hit begins inside it (a long value's fragment, or a secret found whole), not anywhere on the line. A
            # stream holds such a value from its start, so its hits are still there; one that began before it (a
            # secret masked whole whose last byte begins the value) may be gone.
            touched = [(h, h) for h, _ in hits_read]
        else:
            touched = [_line_bounds(data, h) for h, _ in hits_read]
        runs = _map_back(lines, find, touched)
        if held is not None and line.kind != ANSI and run_end == len(data) and data[-1:] != b"\n":
            last = data.rfind(b"\n") + 1
            if any(b > last for _, b in runs):
                # From the hit's line too: the next write must find the hit again to open this view (a run's end
                # more than `maxlen` after its hit was held, and then nothing in the kept bytes read it).
                held.append(min(start, *(a for a, b in runs if b > last)))
                runs = [o for o in runs if o[1] <= last]
        out.extend(runs)
    return out


_PERCENT_ESCAPE = re.compile(rb"%[0-9a-fA-F]{2}")


def upper_escapes(data: bytes) -> bytes:
    """`data` with the hex digits of every `%XX` escape in uppercase (same length, so offsets map 1:1)."""
    return _PERCENT_ESCAPE.sub(lambda m: m.group().upper(), data)


def mixed_case_occurrences(data: bytes, hits: list[tuple[int, int]], find: Callable[[bytes], list[tuple[int, int]]],
                           budget: int) -> list[tuple[int, int]]:
    """Percent forms written with mixed-case hex (`p%40ss%2fw%3Ax`), around each hit: the window of `budget`
    bytes before it and twice that after it, with its escapes in uppercase, scanned for the registered (uppercase)
    forms. The window holds every occurrence that touches a hit starting less than `budget` after this one (such
    an occurrence is at most `budget` long): those hits need no window of their own, later ones do, so windows
    move on by at least `budget` and a form that begins in this window and ends past it is read whole."""
    out: list[tuple[int, int]] = []
    done_until = -1
    for a, b in sorted(hits):
        if a < done_until:
            continue
        lo, hi = max(0, a - budget), min(len(data), b + 2 * budget)
        window = data[lo:hi]
        upper = upper_escapes(window)
        if upper != window:
            out.extend((lo + s, lo + e) for s, e in find(upper))
        done_until = b + budget
    return out


def _map_back(lines: list[_Line], find: Callable[[bytes], list[tuple[int, int]]],
              touched: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """The runs to mask for the occurrences `find` gives in the lines' joined content; with `touched`, only those
    of occurrences whose characters reach one of these (start, end) ranges of the output (view_occurrences)."""
    content, origin = _joined(lines)
    found = find(content)
    if found and touched is not None:
        found = [(s, e) for s, e in found
                 if any(max(origin[s:e]) >= ls and min(origin[s:e]) <= le for ls, le in touched)]
    words = lines[0].fmt == "hw" or lines[0].fmt[0] == "n"
    if found and (words or lines[0].fmt == "oc"):
        # `od -c` prints characters, not hex, and word dumps print each byte's hex after the next one's: their content
        # is hex made here, two digits a byte, so a match that starts or ends between a byte's two digits is no form
        # the output holds (it over-masked a space's field before a secret of NUL bytes, in the whole output but not
        # in a stream cut there).
        found = [(s, e) for s, e in found if not (s | e) & 1]
    if not found:
        return []
    # A word's bytes are printed in reverse order (or as one number), and so are `xxd -e`'s groups: every digit of
    # the range is covered.
    out = [(min(origin[s:e]), max(origin[s:e]) + 1) for s, e in found]
    if words:
        return out
    if lines[0].kind == DUMP:
        ascii_at: list[int | None] = []
        for ln in lines:
            n = len(ln.content) // 2
            ascii_at.extend(ln.ascii if ln.ascii is not None else [None] * n)
        for s, e in found:
            for i in range(s // 2, (e + 1) // 2):
                pos = ascii_at[i] if i < len(ascii_at) else None
                if pos is not None:
                    out.append((pos, pos + 1))
    return out


def _tail_lines(buf: bytes, budget: int, line_start: bool) -> tuple[list[_Line], _Line | None]:
    """The lines of a run that ends at the end of `buf` (the last one possibly incomplete), oldest first, and how
    that incomplete line reads (None if there is none, or it is no encoding or dump line), in the run or not."""
    end = len(buf)
    nl = buf.rfind(b"\n")
    lines: list[_Line] = []
    tail = classify_tail(buf, nl + 1) if nl < end - 1 and (nl >= 0 or line_start) else None
    got, e, kind = 0, nl, 0
    last_start = -1
    while e >= 0 and got < budget:
        s = buf.rfind(b"\n", 0, e) + 1
        line = _classify_at(buf, s, e, line_start, kind)
        if line is not None and kind == WRAP and line.kind == DUMP and len(lines) == 1:
            # The line after it (` 7a`, the last line of `od`) also reads as a dump line: read it so.
            again = classify(buf, last_start, nl, DUMP)
            if again is not None and again.fmt == line.fmt:
                lines, kind, got = [again], DUMP, len(again.content)
        if line is None or not line.joins or (lines and line.fmt != lines[-1].fmt):
            break
        kind = line.kind
        lines.append(line)
        got += len(line.content)
        last_start, e = s, s - 1
    lines.reverse()
    # The incomplete line counts when it reads as the same kind; read otherwise (an offset not yet followed
    # by hex digits reads as an encoding line), it adds nothing, but the lines before it still hold back.
    if tail is not None and lines and tail.fmt != lines[-1].fmt:
        tail = classify_tail(buf, nl + 1, kind)
    if tail is not None and (not lines or tail.fmt == lines[-1].fmt):
        lines.append(tail)
    return lines, tail


def tail_live_start(buf: bytes, live_start: Callable[[bytes], int], maxlen: int, line_start: bool = True,
                    find: Callable[[bytes], list[tuple[int, int]]] | None = None) -> int:
    """Where a stream must start holding back for a pattern that the next lines may complete: the offset of
    the earliest live partial match in the joined content of the run at the end of `buf` (len(buf) if none).
    Callers test `quick_candidate(buf)` first: without it, this reads the last lines for nothing.

    `find` (the masked patterns' occurrences in a content) is for an unfinished line that reads two ways: what
    the other reading holds whole is held too (a view reads the line the first way, and `held` only what it finds:
    view_occurrences)."""
    if maxlen < 2:
        return len(buf)
    lines, tail = _tail_lines(buf, maxlen, line_start)
    if not lines:
        return _first_token_begun(buf)
    hold = _run_hold(buf, lines, live_start)
    if tail is not None and (tail.fmt == "oc" or tail.fmt[0] == "n"):
        # An unfinished line of `od -c` may turn out to be numbers (`0000000   1   1` is also `od -tu1` of 1, 1), and
        # numbers cut after a space `od -c` ("   1   1 "): the whole line is read one way, not known yet. Hold for both.
        other = classify_tail(buf, buf.rfind(b"\n") + 1, 0, tail.fmt == "oc")
        if other is not None:
            done = lines[:-1] if lines[-1] is tail else lines  # the complete lines of the run
            run = [*done, other] if done and done[-1].fmt == other.fmt else [other]
            hold = min(hold, _run_hold(buf, run, live_start, find))
    return min(hold, _first_token_begun(buf))


def _run_hold(buf: bytes, lines: list[_Line], live_start: Callable[[bytes], int],
              find: Callable[[bytes], list[tuple[int, int]]] | None = None) -> int:
    """Where a stream holds from for the run `lines` at the end of `buf` (tail_live_start): from the earliest
    live partial match, and with `find` from the earliest occurrence too."""
    content, origin = _joined(lines)
    last = lines[-1]
    if last.pending and last.content and buf[-1:] != b"\n":
        # Its ASCII column is still to come, and with it maybe the only trigger of an occurrence that the
        # hex digits already complete: hold the line, and what of the lines before could start a pattern.
        before = len(content) - len(last.content)
        p = min(live_start(content[:before]), before)
    else:
        p = live_start(content)
        if buf[-1:] != b"\n" and len(lines) > 1:
            # An incomplete last line may be misread: the first digits of `od`'s next offset ("\n00") read as a
            # byte, which ends the partial match of the lines before. Hold for either reading.
            p = min(p, live_start(content[:len(content) - len(last.content)]))
    if find is not None:
        p = min([p, *(a for a, _ in find(content))])
    # A word dump prints each byte's hex after the next one's: the earliest digit of the match on.
    hold = min(origin[p:]) if p < len(content) else len(buf)
    if last.begun is not None and buf[-1:] != b"\n":
        # A token cut by the end of the write (`od -b`'s " 13" of 132): it may begin a value (whose dump no
        # fragment of its own finds: DUMP_START), and its byte is not known yet.
        hold = min(hold, last.begun)
    return hold


# An incomplete dump line whose first token is cut ("0000010    7", "0000000 13", "0000000 5f70" of `od -tx4`'s
# 5f706867): nothing of it reads as a line yet, or not as what it will be.
# From the first field's padding on (a numeric field's padding is masked with its digits: _numeric_line).
_OFFSET_BEGUN = re.compile(rb"[0-9a-fA-F]{7,16} (?P<t> *-?[0-9a-fA-F]{0,%d})" % _TOKEN_MAX)


def _first_token_begun(buf: bytes) -> int:
    """Where the first field of an incomplete dump line at the end of `buf` starts, its padding included (after the
    offset's one separating space), when that field is all the line has yet; len(buf) if none."""
    start = buf.rfind(b"\n") + 1
    m = _OFFSET_BEGUN.fullmatch(buf, start) if len(buf) - start <= 48 else None
    return m.start("t") if m is not None and m.end("t") > m.start("t") else len(buf)


def ansi_tail_live_start(buf: bytes, live_start: Callable[[bytes], int],
                         find: Callable[[bytes], list[tuple[int, int]]] | None = None) -> int:
    """Where a stream must start holding back for a pattern that colour codes cut: the earliest live partial
    match in the last line of `buf` read without its codes (len(buf) if none, or if the line has no code).
    A few microseconds a write, and only when the last line holds an escape byte (`tail_live_start`, for the
    runs of encoded lines, costs tens).

    With `find` (the masked patterns' occurrences in a content), also from the start of an occurrence that a
    partial match begins inside: the whole output masks it if that match completes (a hit that begins inside it:
    view_occurrences), and the next write would not see its start."""
    n = len(buf)
    start = max(buf.rfind(b"\n") + 1, n - LINE_MAX)
    if buf.find(b"\x1b", start) < 0:
        return n
    line = _ansi_line(buf, start, n)
    if line is None:
        return n
    p = live_start(line.content)
    if p < len(line.content) and find is not None:
        p = min([p, *(a for a, b in find(line.content) if b > p)])
    return line.origin[p] if p < len(line.content) else n


# How far before a stream's context a dump's first line is looked for: twice `maxlen` of content (hex digits, one
# byte each two) and two lines, at up to 5 characters of dump a byte (`od -b`: 4 and the offset), with room to spare.
_DUMP_REACH_PER_MAXLEN = 6
_DUMP_REACH_SLACK = 512


def context_start(buf: bytes, live: int, maxlen: int, line_start: bool = True,
                  candidate: bool | None = None) -> int:
    """How far back a stream keeps bytes (emitted or held) before `live`: when `live` lies in an encoding or
    dump line (or the last line may still become one), the start of that line and of the lines before it that
    join it, up to `maxlen` characters of content, so that the next write sees the run as the whole output does
    and finds again any occurrence that ends after `live`."""
    n = len(buf)
    pos = min(live, n)
    if pos == n and not (quick_candidate(buf, line_start) if candidate is None else candidate):
        return n
    if pos == n and n and buf[n - 1] == 0x0A:
        end = n - 1
    else:
        end = _end_of_line(buf, pos)
    start = buf.rfind(b"\n", 0, end) + 1
    if end - start > LINE_MAX or (start == 0 and not line_start):
        return pos
    line = classify(buf, start, end)
    if line is None and (end < n or _PREFIX.fullmatch(buf, start, end) is None):
        return pos
    # A dump line with an ASCII column (written or still to come), which is after `live`: the next write's view must
    # read the lines before it again, to find an occurrence that crosses into it and mask its characters in that
    # column, as the whole output does (one that begins up to `maxlen` before the line's content).
    got = 0 if line is None or line.ascii is not None or line.pending else len(line.content)
    # Lines of either kind: keeping a little more than the run needs costs nothing but a copy.
    while start > 0 and got < maxlen:
        ps = buf.rfind(b"\n", 0, start - 1) + 1
        prev = _classify_at(buf, ps, start - 1, line_start)
        if prev is None or not prev.joins:
            break
        got += len(prev.content)
        start = ps
    else:
        if start > 0:
            start = _dump_first_line(buf, start, maxlen, line_start)
    return min(start, pos)


def _dump_first_line(buf: bytes, start: int, maxlen: int, line_start: bool) -> int:
    """`start`, or the start of a dump's first line (DUMP_START) not far before it: a stream keeps that line as long
    as the whole output's view from it reads (twice its budget of content after it, view_occurrences), so that it
    finds what the whole output does. A text search, not a line-by-line read: dump lines are 2-5 characters a byte,
    and keeping a little more than the run needs costs a copy."""
    lo = max(0, start - _DUMP_REACH_PER_MAXLEN * maxlen - _DUMP_REACH_SLACK)
    first = max(buf.rfind(trigger, lo, start) for trigger in dump_starts())
    if first >= 0:
        return first + 1
    return 0 if lo == 0 and line_start and starts_a_dump(buf) else start


def starts_a_dump(data: bytes) -> bool:
    """Whether `data` begins with a dump's first line (a dump-start trigger without its line break)."""
    return any(data.startswith(trigger[1:]) for trigger in dump_starts())


# What the start of an encoding or dump line looks like: a cheap test on the last line of each write (most log
# lines fail it within a few characters), and what a stream keeps as context.
_QUICK = re.compile(rb"[ \t]*(?:[A-Za-z0-9+/_=.-]{16}|[A-Za-z0-9+/_=.-]*\r?$|[0-9a-fA-F]{6,16}(?::? | |$)"
                    rb"|(?:[0-7]{3}|\\?[!-~])(?:" + _OD_C_FIELD + rb"|\r?$)"  # `od -An -c` (`  \0`: one field)
                    rb"|(?:0x|\\x)?[0-9a-fA-F]{1,2}(?:[ ,:]|\\x|\r?$))")
# The last alternative is `od -An -c`: a token (a character, an escape, 3 octal digits) and the blanks before the
# next one, 1 to 3 and 4 more for each space byte between (`   k   e   y       i   s`: a space's field is blank).
_PREFIX = re.compile(rb"[ \t]*(?:[A-Za-z0-9+/_=.-]*|[0-9a-fA-F]{1,16}(?::? .*|  .*)?|[0-9a-fA-Fx\\ ,:]*"
                     rb"|(?:(?:[0-7]{3}|\\?[!-~]) +)*(?:[0-7]{1,3}|\\?[!-~])?)\r?")


def _last_line_start(buf: bytes) -> int:
    """Start of the line that decides whether a stream holds or keeps anything: the incomplete last line, or
    the last complete one when `buf` ends with a line break."""
    n = len(buf)
    end = n - 1 if buf[n - 1] == 0x0A else n
    return buf.rfind(b"\n", 0, end) + 1


def quick_candidate(buf: bytes, line_start: bool = True) -> bool:
    """Whether the last line of `buf` may be part of an encoding or dump run (a few hundred nanoseconds)."""
    if not buf:
        return False
    start = _last_line_start(buf)
    if start == 0 and not line_start:
        return False
    if buf[-1] == 0x0A:
        return _QUICK.match(buf, start) is not None
    # An incomplete line may be cut anywhere ("00000010:", "0x"): any start of a candidate line counts.
    return len(buf) - start <= LINE_MAX and _PREFIX.fullmatch(buf, start) is not None


# -- trigger fragments -----------------------------------------------------------------------------------------

# Per kind of form: the shortest fragment registered (8 base64/hex characters: 48/32 bits of the secret; 11
# for hex separated by spaces, "70 40 73 73", 4 bytes; 8 bytes of the raw value; 16 for `0xNN, ` lists, 3
# bytes), the longest fragment (longer ones buy nothing: the engine filters on 8 bytes), and the narrowest line
# the form is guaranteed to be found in: wrapped encodings from WRAP_MIN_WIDTH columns (`xxd -p` 60, `openssl
# base64` and PEM 64, `base64` and MIME 76); `od -tx1` 16 bytes (47 characters); the ASCII column of
# `hexdump -C` and `xxd`, 16 bytes; `xxd -i`, 12 bytes (70 characters).
# `od -c`: 4 bytes (13 characters `X   k   9   f`), 16 bytes a line (61 characters without the first padding).
# "half": `hexdump -C` prints two spaces after a line's 8th byte, which cut a fragment as a line break does: its
# hex is cut every 8 bytes (23 characters), and a value of 10-14 bytes can have both end fragments cut (`od -w8`
# too). A value under 16 bytes gets a fragment inside any 8 bytes. From 16 bytes "sep" is enough: two of its
# fragments 37 characters apart cannot both be cut by breaks a multiple of 8 bytes apart (that needs 10-15 bytes
# between breaks), nor the first and last of a 16-byte value (36 apart).
# "xxd": `xxd`'s hex column, two bytes a group (`6138 46e2`: 9 characters, 4 bytes), 16 bytes a line (39
# characters); only for a value its ASCII column does not show (see wrap_triggers).
_KINDS = {"enc": (8, 16, WRAP_MIN_WIDTH), "sep": (11, 11, 47), "half": (11, 11, 23), "raw": (8, 8, 16),
          "list": (16, 22, 70), "odc": (13, 13, 61), "xxd": (9, 9, 39)}


def fragments(form: bytes, kind: str = "enc") -> list[bytes]:
    """Fragments of `form` such that however line breaks cut it (lines at least as wide as the kind's
    narrowest line), one piece holds a whole fragment. Empty when the form is too short to cut soundly.

    One break leaves a piece that starts the form and one that ends it, the longer at least half of it: a
    fragment at each end, of at most half the form, is in one of them. More breaks leave at least one whole
    line inside the form: fragments every `width - f + 1` characters put one inside any line.
    """
    f_min, f_max, width = _KINDS[kind]
    e = len(form)
    f = min(-(-e // 2), f_max)
    if f < f_min:
        return []
    starts = [0]
    if e >= width + 2:  # room for two breaks
        starts.extend(range(width - f + 1, e - f, width - f + 1))
    starts.append(e - f)
    return list(dict.fromkeys(form[i:i + f] for i in starts))


# A form whose beginning is another form's whole (base64 padded, unpadded, and the core of its first alignment)
# needs no fragments of its own when it is at most this much longer: see _covering_fragments.
_PREFIX_SLACK = _KINDS["enc"][2] - _KINDS["enc"][1]


def _covering_fragments(encoded: list[bytes]) -> list[bytes]:
    """The fragments of the forms of `encoded` that are needed: none of a form that starts with another form P
    (whose fragments are kept) and is at most _PREFIX_SLACK characters longer. P's fragments find it as well: cut once
    at k, its first piece holds P's first fragment (k >= f) or its last piece holds P's last, which ends where P
    does (k < f, so k <= len(P) - f: f is at most half of len(P), rounded up); cut more often, a whole line of
    WRAP_MIN_WIDTH or more inside it holds one of P's fragments, every `width - f + 1` characters and at P's end,
    since such a line starting after P's last fragment would have to end past the form (more than _PREFIX_SLACK
    characters after P). A hit anywhere in the run makes the view read all of it (view_occurrences), so which
    form's fragment hit does not matter. Base64's padded and unpadded forms, and their URL-safe twins: 1,000 of
    the 62,600 keys of `runnerlib mask` at N=1,000."""
    kept: list[tuple[bytes, list[bytes]]] = []  # (form, its fragments), shortest first
    for form in sorted(dict.fromkeys(encoded), key=len):
        if not any(frags and len(form) - len(p) <= _PREFIX_SLACK and form.startswith(p) for p, frags in kept):
            kept.append((form, fragments(form)))
    return [f for _, frags in kept for f in frags]


# The start of the first line of `od` in every format and of `hexdump` in its own (not `-C`: 8 digits), after a line
# break: one trigger for every secret, so that a dump of a short input (`printf %s "$S" | hexdump`) is read from its first line
# in the formats no fragment of a secret's own finds: plain `hexdump` and `od -x` (16-bit words), `od -b` and
# `hexdump -b` (octal, read as `od -c`'s octal fields). The view reads `maxlen` bytes of content after the hit's line
# (view_occurrences' budget), so a value further into a longer dump is not found this way (docs/masking.md, Limits).
# With the line break a hit is a line that begins so (a look at one line): `0000000 ` alone also fired at every word
# of `od -v -tx4` of zeros (11 MB/s). At the start of the output, or of a stream's buffer that begins a line, the
# masker reads a first line that begins so without it (MaskSnapshot._masks).
DUMP_START = b"\n0000000 "
# The same for `xxd` (8 digits and a colon): its groups of 4 or 8 bytes (`-g4`, `-g8`) and uppercase hex (`-u`)
# hold no fragment of a value under 16 bytes, or of one with bytes shown as `.` in the ASCII column.
XXD_START = b"\n00000000: "
# GNU grep's highlighting (`--color=always`, with any GREP_COLORS but `ne`) and GCC's coloured diagnostics end every
# colour code with the erase-line code: `\x1b[01;31m\x1b[K` match `\x1b[m\x1b[K`. One trigger for every secret, as
# the dump starts: a line holding it is read without its codes (an ANSI line, view_occurrences), and a value that one
# of its codes cuts is masked however short the pieces are. A highlight inside a value cuts it in three, and its
# 8-byte raw fragments need a piece of 15 bytes or more to be whole in one.
COLOUR_ERASE = b"m\x1b[K"


def dump_starts() -> tuple[bytes, bytes]:
    """The dump-start triggers (DUMP_START, XXD_START), read when called: a test switches one off."""
    return DUMP_START, XXD_START


def wrap_triggers(value: bytes, encoded: list[bytes]) -> list[bytes]:
    """The trigger fragments of one secret form: its base64/base32/hex forms in `encoded` cut by line breaks,
    and the hex dumps of `value`: `od` and `hexdump -C` (hex separated by spaces, and the ASCII column, which
    `xxd` prints too), `xxd`'s hex column where the ASCII column cannot find the value, `xxd -i` lists."""
    out: dict[bytes, None] = {}
    out.update(dict.fromkeys(_covering_fragments(encoded)))
    low = [b"%02x" % b for b in value]
    out.update(dict.fromkeys(fragments(b" ".join(low), "sep" if len(value) >= 16 else "half")))
    out.update(dict.fromkeys(fragments(value, "raw")))
    # The raw fragments find a printable ASCII value of 16 bytes or more in the ASCII column; any other (shorter,
    # or with bytes shown as `.`: UTF-8 beyond ASCII, binary keys) needs its hex as `xxd` groups it, at both
    # phases (the value starts at an even or an odd offset of the dump). Few values: about 5 triggers each.
    if len(value) < 16 or not all(32 <= b < 127 for b in value):
        for phase in (0, 1):
            head = low[:phase]
            groups = [b"".join(low[i:i + 2]) for i in range(phase, len(low), 2)]
            out.update(dict.fromkeys(fragments(b" ".join(head + groups), "xxd")))
    out.update(dict.fromkeys(fragments(b", ".join(b"0x" + p for p in low), "list")))
    out.update(dict.fromkeys(od_c_fragments(value)))
    out.update(dict.fromkeys(dump_starts()))
    out[COLOUR_ERASE] = None
    return list(out)


def od_c_fragments(value: bytes) -> list[bytes]:
    """`fragments(od_c_form(value), "odc")`, each ending on a character of the dump rather than on the blanks
    between them: every `od -c` cell is 4 bytes with its character last, so a fragment that starts on a cell's
    last byte ends on one too (`p   a   s   s`). Blank-ended fragments (`   a   s   s `) made Hyperscan confirm
    candidates at every run of blanks in a log (7% of the N=1,000 stream).

    Sound as `fragments` is: starts every 48 bytes (a multiple of 4, under its 49) from the first cell end,
    and one at the last cell end that fits, so a whole line of 61 or more inside the dump holds one; and with
    the first start within 3 bytes of the dump's start and the last within 3 of its end, each end fragment
    lies in the longer piece a single break leaves, given a dump of at least 2 x (13 + 3) bytes (shorter
    ones keep the plain fragments)."""
    form = od_c_form(value)
    f_min, f_max, width = _KINDS["odc"]
    e = len(form)
    if e < 2 * (f_max + 3):
        return fragments(form, "odc")
    first = (len(od_c_form(value[:1])) - 1) % 4  # the first cell's character (its padding was cut off)
    step = (width - f_max + 1) // 4 * 4
    last = first + (e - f_max - first) // 4 * 4
    # The form's own start too (it differs when the first cell is an escape or octal, `377   x`): a stream
    # holds back the end of a write only while it is the start of some pattern, and a dump's first cell
    # must be held (a write cut at `0000000 3` released the `3` of `377`).
    starts = [0, *range(first, last, step), last]
    return list(dict.fromkeys(form[i:i + f_max] for i in starts))


def wrappable_forms(value: bytes, b64: list[bytes], b32: bytes | None = None) -> list[bytes]:
    """The forms of `value` that tools print wrapped: base64 (given) and URL-safe base64 (`basenc --base64url`
    wraps at 76), hex in lowercase and uppercase (`xxd -p`, `xxd -p -u`, `od`-free scripts' `%02X`), base32 as
    `base32` prints it (`b32`, without padding, if the caller has it). A URL-safe form adds fragments only where
    its base64 has a `+` or `/` (identical ones are registered once); uppercase hex adds those of a second hex
    form."""
    if b32 is None:
        b32 = base64.b32encode(value).rstrip(b"=")
    low = value.hex().encode()
    url = [f.replace(b"+", b"-").replace(b"/", b"_") for f in b64]
    return list(dict.fromkeys([*b64, *url, low, low.upper(), b32]))
