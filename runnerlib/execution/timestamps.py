"""Line timestamps of step output: `2026-12-05T07:01:02.345Z ` before every line, as GitHub's raw logs have.

Every line of a step's log file carries one; the console too with `--timestamps` (REACTORCIDE_TIMESTAMPS).

Invariants:
- stamps are inserted into bytes that are already masked (logs.StepOutput gets its input from the masker):
  a prefix never lands inside a secret, and a secret cut across lines (a wrapped base64 run) is joined and
  masked as the step printed it, before any prefix could break the run apart;
- one stamp per piece of output as it was read (not per line): a bulk writer's megabyte gets its stamp with
  one C-level `bytes.replace` of the newline, so the bulk path pays no Python per line. A line gets the stamp
  of the read that brought its first byte (a line cut across reads keeps the earlier one).

UTC, millisecond precision, ISO 8601 with a `Z`: sortable, the same on every host, what log tools parse.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

# `YYYY-MM-DDTHH:MM:SS.mmmZ ` (25 bytes with the space).
STAMP_LEN = 25
STAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
_STAMP_TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", re.MULTILINE)


def stamp(now: float | None = None) -> bytes:
    """The prefix for a line read at `now` (seconds since the epoch; default: the current time).

    >>> stamp(1796454062.345)
    b'2026-12-05T07:01:02.345Z '
    """
    seconds, millis = divmod(round((time.time() if now is None else now) * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%03dZ " % millis


class StampClock:
    """`stamp()` of the current time, formatted once per millisecond: a step printing many small pieces pays
    a clock read, not a strftime, for each."""

    def __init__(self) -> None:
        self._millis = -1
        self._stamp = b""

    def __call__(self) -> bytes:
        millis = round(time.time() * 1000)
        if millis != self._millis:
            self._millis, self._stamp = millis, stamp(millis / 1000)
        return self._stamp


def prefix_lines(first: bytes, pending: bytes, data: bytes, end: int, later: bytes) -> tuple[bytes, bytes, memoryview]:
    """The lines `pending + data[:end]` (`end` just past a newline of `data`) with `first` before the first
    line and `later` before every other one, as pieces to write one after the other: one C-level replace for
    the whole piece, never a Python loop per line (this path carries the 1 GiB benchmark).

    >>> b"".join(prefix_lines(b"1 ", b"a", b"b\\nc\\nde", 4, b"2 "))
    b'1 ab\\n2 c\\n'
    """
    body = data.replace(b"\n", b"\n" + later)
    # The bytes after `end` hold no newline: they come out unchanged at the end of `body`; the view cuts them
    # off together with the prefix left after the final newline.
    stop = len(body) - (len(data) - end) - len(later)
    return first, pending, memoryview(body)[:stop]


def prefix_after_newline(piece: bytes, later: bytes) -> memoryview:
    """The lines of `piece[1:]` with `later` before each, as one buffer: `piece` starts with the newline that
    ends the line before (so that one replace also puts the first line's `later`) and ends with a newline.

    >>> bytes(prefix_after_newline(b"\\na\\nb\\n", b"> "))
    b'> a\\n> b\\n'
    """
    body = piece.replace(b"\n", b"\n" + later)
    return memoryview(body)[1:len(body) - len(later)]


def stamped(echo: Callable[[str], object]) -> Callable[[str], None]:
    """`echo` with the current stamp before every line it is given (the workflow runner's console)."""

    def echo_stamped(text: str) -> None:
        now = stamp().decode()
        echo(now + text.replace("\n", "\n" + now))

    return echo_stamped


def strip_stamps(text: str) -> str:
    """`text` without the line stamps (for readers of a step log that look at line starts: ##[group]...)."""
    return _STAMP_TEXT.sub("", text)
