"""Dumps that no fragment of a secret finds, read from their first line (wrapped.DUMP_START): plain `hexdump` and
`od -x` (16-bit words, little-endian: `715a` is the bytes 5a 71), `hexdump -x`, `od -tx2`, the octal `od -b`
and `hexdump -b`, the numeric dumps: decimal, octal and wider hex words (`od -tu1`, `od -d`, `hexdump -d`,
`od -o`, `od -tx4`, ...), and `xxd -g4`, `-g8`, `-u` (from xxd's own first line, wrapped.XXD_START).

Each of them printed a secret's bytes in the clear before (docs/masking.md listed the word dumps as a limit, the
octal ones not at all). The check is by dependence: every character of the dump that changes when the secret's
bytes do must be masked, for the secret at each of 16 offsets, and a stream cut every 7 bytes masks as the whole
output. The control takes the trigger away and finds the leaks.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from runnerlib.security import wrapped
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import stream_through

TOOLS = [["hexdump"], ["hexdump", "-x"], ["od", "-x"], ["od", "-tx2"], ["od", "-b"], ["hexdump", "-b"]]
# Numeric dumps (wrapped._numeric_line): decimal, octal and wider hex words, each byte order and width as printed.
NUMERIC = [["od", "-tu1"], ["od", "-td1"], ["od", "-d"], ["od", "-s"], ["od", "-o"], ["od", "-tu4"], ["od", "-td4"],
           ["od", "-to4"], ["od", "-tx4"], ["od", "-tx8"], ["od", "-tu8"], ["od", "-td8"], ["od", "-to8"],
           ["hexdump", "-d"], ["hexdump", "-o"]]
VALUES = [b"Zq8vN3kLp2Xr7TmW9bYc", b"Xk9fQ2mLp", b"S^8$8RlgDTU4", "Pässwört-Grü".encode(), bytes(range(200, 220))]


def _run(argv: list[str], data: bytes) -> bytes:
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed (bsdextrautils has hexdump, coreutils od)")
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


def _registry(value: bytes) -> SecretRegistry:
    registry = SecretRegistry(background_merge=False)
    registry.add(value, source="test")
    return registry


def _shown(argv: list[str], value: bytes) -> list[int]:
    """The offsets (of 16) at which some character of the dump that depends on `value` stays visible."""
    registry = _registry(value)
    other = bytes(b ^ 0x49 for b in value)  # changes every hex digit and every octal digit of each byte
    shown = []
    for offset in range(16):
        dump = _run(argv, b"k" * offset + value + b"\n")
        alt = _run(argv, b"k" * offset + other + b"\n")
        assert len(alt) == len(dump)
        masked = [False] * len(dump)
        for s, e in registry._masker.current().find(dump):
            masked[s:e] = [True] * (e - s)
        if any(a != b and not masked[i] for i, (a, b) in enumerate(zip(dump, alt, strict=True))):
            shown.append(offset)
        assert stream_through(registry, [dump[i:i + 7] for i in range(0, len(dump), 7)]) == registry.mask(dump)
    return shown


# `xxd`'s groups of 4 and 8 bytes and its uppercase hex, read from its own first line (wrapped.XXD_START).
XXD = [["xxd", "-g4"], ["xxd", "-g8"], ["xxd", "-u"], ["xxd", "-u", "-g4"]]


@pytest.mark.parametrize("argv", [*TOOLS, *NUMERIC, *XXD], ids=" ".join)
@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{len(v)}-bytes")
def test_every_byte_of_the_value_is_masked_at_every_offset(argv: list[str], value: bytes) -> None:
    if argv == ["od", "-tu1"] and value == VALUES[-1]:
        # Bytes 200-207 print `200 201 ... 207`: a line that reads as `od -b` first (docs/masking.md, Limits).
        value = bytes(range(208, 228))
    assert _shown(argv, value) == []


@pytest.mark.parametrize("argv", [*TOOLS, *NUMERIC], ids=" ".join)
def test_without_the_trigger_they_leak(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wrapped, "DUMP_START", b"never-in-a-dump")
    assert _shown(argv, VALUES[0]) == list(range(16))


@pytest.mark.parametrize("argv", [["xxd", "-e"], ["xxd", "-e", "-u"]], ids=" ".join)
@pytest.mark.parametrize("value", VALUES[:3], ids=lambda v: f"{len(v)}-bytes")
def test_xxd_e_little_endian_groups_are_read_in_order(argv: list[str], value: bytes) -> None:
    """`xxd -e` prints each 4-byte group little-endian (`5f706867` is `ghp_`), a short last group right-aligned; its
    ASCII column tells it from `xxd -g4` (wrapped._xxd_le_line). A line whose bytes all print as `.` cannot tell, and
    is read as `xxd -g4` (docs/masking.md, Limits): printable values here."""
    assert _shown(argv, value) == []


def test_without_the_little_endian_reading_xxd_e_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wrapped, "_xxd_le_line", lambda *_args: None)
    assert _shown(["xxd", "-e"], VALUES[0]) == list(range(16))


def test_xxd_e_lines_read_as_their_bytes() -> None:
    dump = b"00000000: 5f706867 646e3452 30546d30 566e656b  ghp_R4nd0mT0kenV\n00000010:     6c61" + b" " * 29 + b"al\n"
    first, second = wrapped.classify(dump, 0, 63), wrapped.classify(dump, 64, len(dump) - 1)
    assert first is not None and first.content == b"ghp_R4nd0mT0kenV".hex().encode()
    assert second is not None and second.content == b"al".hex().encode()
    as_g4 = b"00000000: 6768705f 52346e64 306d5430 6b656e56  ghp_R4nd0mT0kenV\n"  # xxd -g4: in order already
    read = wrapped.classify(as_g4, 0, len(as_g4) - 1)
    assert read is not None and read.content == b"ghp_R4nd0mT0kenV".hex().encode()


@pytest.mark.parametrize("argv", XXD, ids=" ".join)
def test_without_xxd_s_trigger_they_leak(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: a value under 16 bytes or not printable ASCII (its ASCII column is dots) has no fragment of its own in
    these groupings at most offsets."""
    monkeypatch.setattr(wrapped, "XXD_START", b"never-in-a-dump")
    assert len(_shown(argv, "Pässwört-Grü".encode())) >= 8


@pytest.mark.parametrize("argv", NUMERIC, ids=" ".join)
def test_without_the_numeric_reading_they_leak(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the trigger alone finds the dump's first line, but nothing reads it."""
    monkeypatch.setattr(wrapped, "_numeric_line", lambda *_args: None)
    assert _shown(argv, VALUES[0]) == list(range(16))


@pytest.mark.parametrize(("line", "fmt", "content"), [
    (b"0000000 103 104 112  95 128 255   1   0", "n10.1", "6768705f80ff0100"),  # od -tu1
    (b"0000000  103  104 -128   -1", "n10.1", "676880ff"),  # od -td1
    (b"0000000 26727 24432 65408     1", "n10.2", "6768705f80ff0100"),  # od -d
    (b"0000000  26727   -128      1", "n10.2", "676880ff0100"),  # od -s
    (b"0000000 064147 057560 177600", "n8.2", "6768705f80ff"),  # od -o
    (b"0000000   26727   24432   00001", "n10.2", "6768705f0100"),  # hexdump -d
    (b"0000000  064147  057560", "n8.2", "6768705f"),  # hexdump -o
    (b"0000000 5f706867 0001ff80", "n16.4", "6768705f80ff0100"),  # od -tx4
    (b"0000000 1601202279     130944", "n10.4", "6768705f80ff0100"),  # od -tu4
    (b"0000000 13734064147 00000377600", "n8.4", "6768705f80ff0100"),  # od -to4
    (b"0000000 0001ff805f706867", "n16.8", "6768705f80ff0100"),  # od -tx8
    (b"0000000      562401798809703", "n10.8", "6768705f80ff0100"),  # od -tu8
    (b"0000020  2660", "n10.2", "640a"),  # od -d's last line: 4 digits in a field of 6, no `od -x` word
])
def test_numeric_dump_lines_are_read_as_their_bytes(line: bytes, fmt: str, content: str) -> None:
    read = wrapped.classify(line + b"\n", 0, len(line))
    assert read is not None and (read.fmt, read.content.decode()) == (fmt, content)


@pytest.mark.parametrize("line", [b"0000000 103 104 1122", b"0000000 26727 24432 6540", b"1234567 42 17 99",
                                  b"0000000 5f706867 0001ff8", b"0000000 300 104"])
def test_fields_of_another_width_or_out_of_range_are_no_numeric_line(line: bytes) -> None:
    read = wrapped.classify(line + b"\n", 0, len(line))
    assert read is None or read.fmt[0] != "n"


def test_words_are_read_in_little_endian_order() -> None:
    line = wrapped.classify(b"0000000 715a 7638 0051\n", 0, 22)
    assert line is not None and line.fmt == "hw"
    assert line.content == b"5a713876" + b"5100"
    assert line.origin[:4] == [10, 11, 8, 9]


ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789" * 20  # no two lines alike: `hexdump` and `od` print a repeat as `*`


@pytest.mark.parametrize("argv", [["hexdump"], ["od", "-b"]], ids=" ".join)
def test_a_stream_reaches_as_far_into_the_dump_as_the_whole_output(argv: list[str]) -> None:
    """The value is found from the dump's first line while it ends within the view's reach (as many bytes as the
    longest form of a registered secret: at least 4 per byte of the value), and a stream keeps that first line
    for as long, so it masks what the whole output masks at every offset, past the reach too."""
    value = VALUES[0]
    registry = _registry(value)
    for offset in range(0, 200, 3):
        dump = _run(argv, ALPHABET[:offset] + value + b"\n")
        masked = registry.mask(dump)
        if offset + len(value) <= 4 * len(value):
            assert masked != dump, offset
        for step in (5, 7, 16):
            assert stream_through(registry, [dump[i:i + step] for i in range(0, len(dump), step)]) == masked, offset


@pytest.mark.parametrize("prompt", [b"done\n0000000", b"step 3\n0000", b"x\n0000000 "])
def test_a_last_line_of_zeros_is_shown_when_the_step_goes_quiet(prompt: bytes) -> None:
    """The trigger's beginnings (`\n0000`, and a lone line break) are not held: a dump's first line is kept as context
    anyway. Control: the same beginnings of another trigger are held at an idle flush (and a lone `\n` after every
    write, which the first case's check would show too)."""
    for other in (False, True):
        registry = _registry(VALUES[0])
        if other:
            registry._masker.add([], triggers=[b"\n0000000 0000 0000 0000"])
        out: list[bytes] = []
        stream = registry.stream(out.append)
        stream.write(prompt)
        stream.flush_idle()
        assert (b"".join(out) == prompt) is not other
        stream.close()
        assert b"".join(out) == prompt
    registry = _registry(VALUES[0])
    stream = registry.stream(lambda data: None)
    stream.write(b"a line\n")
    assert stream.held == 0  # not `\n`: a beginning of DUMP_START


def test_the_trigger_fires_at_a_line_start_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """`od -v -tx4` of zeros holds `0000000 ` at every word: the trigger, which begins with a line break, fires at none
    of them (each hit costs a look at its line). Control: without the line break it fired at every word."""
    dump = _run(["od", "-v", "-tx4"], bytes(4096))
    registry = _registry(VALUES[0])
    assert not [h for h in registry._masker.current().find_raw(dump) if dump[h[0]:h[1]].endswith(b"0000000 ")]
    monkeypatch.setattr(wrapped, "DUMP_START", b"0000000 ")
    registry = _registry(VALUES[0])
    hits = [h for h in registry._masker.current().find_raw(dump) if dump[h[0]:h[1]] == b"0000000 "]
    assert len(hits) > 2 * dump.count(b"\n")  # every word followed by a space
