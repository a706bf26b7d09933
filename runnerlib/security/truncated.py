"""Secrets cut short by the tool that prints them: a beginning of a secret, then `...` or `…`.

`strace -s 32` prints the first 32 bytes of a string and `"...`, HTTP client debug logs and `ps`-like columns cut
long values with an ellipsis. No registered pattern matches the piece (it is not the whole secret), and in a stream
the held partial match is released as soon as the marker shows it cannot complete. So a beginning of a registered
form of at least HEAD bytes, directly followed by a marker (an optional closing quote, then `...` or `…`), is
masked:

- each plain form of a secret longer than HEAD registers its first HEAD bytes as a trigger (`heads`); the trigger
  shares the form's own key in the engine's database, so it costs no key of its own;
- a trigger hit makes `occurrences` find the longest beginning of a pattern there (a bisect in the sorted
  patterns: the pattern sharing the most with the text is next to where the text would sort) and mask it when a
  marker follows where it ends;
- `tail_live_start` holds such a beginning at the end of a stream's buffer while the bytes after it are the start
  of a marker (`"..` may still become `"...`).

Why HEAD bytes: a random 12-byte beginning of a secret followed by an ellipsis does not occur by chance; a public
beginning (`https://github.c`, a JWT's `eyJhbGciOiJIUzI1`) that another value shares is masked with it, which
costs a few bytes of someone else's text, never a secret.

>>> secret = b"tok-0123456789abcdefghij-rest"
>>> occurrences(b'write(1, "tok-0123456789abcdef"..., 40)', [(10, 22)],
...             lambda data, a: common_length(data[a:], secret))
[(10, 30)]
"""

from __future__ import annotations

from collections.abc import Callable

HEAD = 12
# A closing quote may stand between the piece and the ellipsis (strace: `"Xk9f"...`).
_QUOTES = (b'"', b"'")
_ELLIPSES = (b"...", "\u2026".encode())
MARKERS = tuple(q + e for q in (b"", *_QUOTES) for e in _ELLIPSES)
# Every proper beginning of a marker (`"..`, `\xe2\x80`): what a stream's buffer may end with while a marker comes.
_MARKER_STARTS = frozenset(m[:i] for m in MARKERS for i in range(1, len(m)))
_MARKER_MAX = max(map(len, MARKERS))
_MARKER_FIRST = frozenset(m[0] for m in MARKERS)
_MARKER_START_LAST = frozenset(m[-1] for m in _MARKER_STARTS)  # a buffer ending otherwise ends no marker start


def heads(form: bytes) -> list[bytes]:
    """The trigger that finds `form` cut short: its first HEAD bytes (none if it is not longer)."""
    return [form[:HEAD]] if len(form) > HEAD else []


def occurrences(data: bytes, hits: list[tuple[int, int]], longest: Callable[[bytes, int], int]
                ) -> list[tuple[int, int]]:
    """Runs to mask: at each hit of a head, the longest beginning of a pattern that `data` holds there (not a whole
    pattern: that one the plain scan found), when a marker follows it.

    `longest(data, a)`: how many bytes of the pattern sharing the most with data[a:] it shares, among those that
    data[a:] does not hold whole (the masker's `longest_beginning`: a bisect, whatever the number of patterns).
    """
    out: list[tuple[int, int]] = []
    for a, b in hits:
        if b - a != HEAD:
            continue
        n = longest(data, a)
        # The marker may begin inside what the text shares with the pattern (a secret holding `.` or `\xe2`): the
        # last marker from HEAD bytes on ends the piece.
        for k in range(min(n, len(data) - a - 1), HEAD - 1, -1):
            if data[a + k] in _MARKER_FIRST and data.startswith(MARKERS, a + k):
                out.append((a, a + k))
                break
    return out


def common_length(probe: bytes, pattern: bytes) -> int:
    """How many bytes `probe` and `pattern` share from their start (a binary search of C-speed comparisons)."""
    n = min(len(probe), len(pattern))
    if probe.startswith(pattern[:n]):
        return n
    lo, hi = 0, n  # probe starts with pattern[:lo], not with pattern[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if probe.startswith(pattern[:mid]):
            lo = mid
        else:
            hi = mid
    return lo


def tail_live_start(buf: bytes, live_start: Callable[[bytes], int], maxlen: int) -> int:
    """Where a stream must hold `buf` from (len(buf) if nowhere): a beginning of a pattern of at least HEAD bytes
    followed by the beginning of a marker at the very end. `live_start(b)` is the masker's: the smallest p such that
    b[p:] is a proper beginning of a pattern; it reads the last `maxlen` bytes only, so only those are copied."""
    end = len(buf)
    if not end or buf[-1] not in _MARKER_START_LAST:
        return end
    for k in range(1, min(_MARKER_MAX, end)):
        if buf[end - k:] in _MARKER_STARTS:
            cut = end - k
            lo = max(0, cut - maxlen)
            p = lo + live_start(buf[lo:cut])
            if cut - p >= HEAD:
                return p
    return end
