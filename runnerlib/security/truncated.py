"""Secrets cut short by the tool that prints them: a beginning of a secret, then `...` or `…`.

`strace -s 32` prints the first 32 bytes of a string and `"...`, HTTP client debug logs and `ps`-like columns cut
long values with an ellipsis. No registered pattern matches the piece (it is not the whole secret), and in a stream
the held partial match is released as soon as the marker shows it cannot complete. So a beginning of a registered
form of at least HEAD bytes, directly followed by a marker (an optional closing quote, then `...` or `…`), is
masked:

- each plain form of a secret longer than HEAD registers its first HEAD bytes as a trigger (`heads`); the trigger
  shares the form's own key in the engine's database, so it costs no key of its own;
- a trigger hit makes `occurrences` extend the match along every pattern with that head (a bisect in the sorted
  patterns) and mask it when a marker follows where the match ends;
- `tail_live_start` holds such a beginning at the end of a stream's buffer while the bytes after it are the start
  of a marker (`"..` may still become `"...`).

Why HEAD bytes: a random 12-byte beginning of a secret followed by an ellipsis does not occur by chance; a public
beginning (`https://github.c`, a JWT's `eyJhbGciOiJIUzI1`) that another value shares is masked with it, which
costs a few bytes of someone else's text, never a secret.

>>> occurrences(b'write(1, "tok-0123456789abcdef"..., 40)', [(10, 22)],
...             lambda head: [b"tok-0123456789abcdefghij-rest"])
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


def heads(form: bytes) -> list[bytes]:
    """The trigger that finds `form` cut short: its first HEAD bytes (none if it is not longer)."""
    return [form[:HEAD]] if len(form) > HEAD else []


def occurrences(data: bytes, hits: list[tuple[int, int]], with_head: Callable[[bytes], list[bytes]]
                ) -> list[tuple[int, int]]:
    """Runs to mask: at each hit of a head, the longest beginning of a pattern starting with it that `data` holds,
    when a marker follows it (and it is not the whole pattern: that one the plain scan found).

    `with_head(head)`: the patterns that start with `head`.
    """
    out: list[tuple[int, int]] = []
    for a, b in hits:
        if b - a != HEAD:
            continue
        best = 0
        for pattern in with_head(data[a:b]):
            n = _common(data, a, pattern)
            if n < len(pattern):
                best = max(best, n)
        if best and data.startswith(MARKERS, a + best):
            out.append((a, a + best))
    return out


def tail_live_start(buf: bytes, live_start: Callable[[bytes], int]) -> int:
    """Where a stream must hold `buf` from (len(buf) if nowhere): a beginning of a pattern of at least HEAD bytes
    followed by the beginning of a marker at the very end. `live_start(b)` is the masker's: the smallest p such that
    b[p:] is a proper beginning of a pattern."""
    end = len(buf)
    for k in range(1, min(_MARKER_MAX, end)):
        if buf[end - k:] in _MARKER_STARTS:
            cut = end - k
            p = live_start(buf[:cut])
            if cut - p >= HEAD:
                return p
    return end


def _common(data: bytes, a: int, pattern: bytes) -> int:
    """How many bytes of `pattern` data[a:] starts with."""
    n = min(len(pattern), len(data) - a)
    if data.startswith(pattern[:n], a):
        return n
    lo, hi = HEAD, n  # data[a:a+lo] matches (the head did), data[a:a+hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if data.startswith(pattern[:mid], a):
            lo = mid
        else:
            hi = mid
    return lo
