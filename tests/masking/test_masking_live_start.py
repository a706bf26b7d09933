"""MaskSnapshot._live_start against brute force: the earliest p where the buffer's end is a proper beginning of a
pattern, with patterns and buffers holding line breaks (the lookup of NewlineHeads) and without."""

from __future__ import annotations

from collections.abc import Callable, Collection

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.security.masker import PREFIX_LEN, Masker, NewlineHeads, one_character_a_line
from runnerlib.security.matcher import available_engines

# A small alphabet with a line break makes beginnings, breaks and repeats common.
_BYTES = st.binary(min_size=1, max_size=3).map(lambda b: bytes(b"ab\n\r"[c % 4] for c in b))
_PATTERN = st.lists(_BYTES, min_size=2, max_size=8).map(b"".join).filter(lambda p: len(p) >= 4)
_TEXT = st.lists(st.one_of(_BYTES, _PATTERN), max_size=12).map(b"".join)


def brute_force(buf: bytes, patterns: list[bytes], accept: Callable[[bytes], bool] | None = None,
                line_starts: Collection[bytes] = ()) -> int:
    """With `accept`, beginnings of PREFIX_LEN bytes or more only (the prefix filter's heads). A pattern of
    `line_starts` one character a line, its beginning holding a line break, counts only where it begins a line
    (NewlineHeads)."""
    stop = len(buf) if accept is None else len(buf) - PREFIX_LEN + 1

    def counts(q: bytes, p: int) -> bool:
        return (q not in line_starts or not one_character_a_line(q) or b"\n" not in buf[p:] or p == 0
                or buf[p - 1:p] == b"\n")

    return next((p for p in range(max(0, stop))
                 if any(len(q) > len(buf) - p and q.startswith(buf[p:]) and (accept is None or accept(q))
                        and counts(q, p) for q in patterns)), len(buf))


@pytest.mark.parametrize("engine", available_engines())
@settings(max_examples=150, deadline=None)
@given(patterns=st.lists(_PATTERN, min_size=1, max_size=6, unique=True), text=_TEXT, data=st.data())
def test_live_start_is_the_earliest_proper_beginning(engine: str, patterns: list[bytes], text: bytes,
                                                     data: st.DataObject) -> None:
    masker = Masker(engine=engine, background=False)
    masker.add(patterns[:1])
    if data.draw(st.booleans()):  # a base and a delta layer: both are asked
        masker.add(patterns[1:])
    else:  # as line starts (the forms one character a line count only where they begin a line)
        masker.add([], line_starts=patterns[1:])
    lines = set(masker.line_starts)
    snap = masker.snapshot
    cut = data.draw(st.integers(0, len(text)))
    buf = text[:cut] + data.draw(st.sampled_from(patterns))[:data.draw(st.integers(0, 12))]
    assert snap._live_start(buf) == brute_force(buf, patterns, line_starts=lines)
    longer = data.draw(st.integers(4, 9))

    def accept(q: bytes) -> bool:
        return len(q) > longer

    assert snap._live_start(buf, accept) == brute_force(buf, [q for q in patterns if len(q) > 4], accept, lines)


def test_a_beginning_across_the_last_break_is_found_by_its_head_before_the_break() -> None:
    """The case the lookup is for: a pattern whose break the buffer's end has passed. Without the lookup (the
    prefix filter reading only the last line) the stream would let `ab1234\\nx` go: the next write's `yz`
    completes the secret across the writes."""
    masker = Masker(background=False)
    masker.add([b"key-ab1234\nxyz"])
    snap = masker.snapshot
    assert snap._live_start(b"log key-ab1234\nx") == 4
    assert snap._live_start(b"log key-ab1234\n") == 4
    snap._nl_heads = NewlineHeads()  # the protection off: the beginning is missed
    assert snap._live_start(b"log key-ab1234\nx") > 4
