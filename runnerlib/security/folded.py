"""Multi-word secrets folded at a space by the tool that prints them: a line break and indentation for a space.

`yaml.dump` folds a plain or quoted scalar longer than its width (80 columns) at a space, and continues it on the
next line, indented: a passphrase of a few words then reads `p: correct horse battery\n  staple ...`. No pattern
matches it (where the space was there is a line break and indentation, at a place that depends on the column the
value started at), so:

- a multi-word secret of at least MIN_LENGTH bytes registers, as triggers, its first HEAD bytes and the HEAD bytes
  after each of its spaces (`heads`): every line piece of the folded secret begins at a word, so a piece of HEAD
  bytes or more holds one whole;
- a trigger hit with an indented line nearby makes `occurrences` read the lines around it with each line break
  and the indentation after it as one space, scan that for every masked pattern, and map what it finds back
  (covering the line breaks and indentation between);
- in a stream, `tail_live_start` holds a line that ends with the beginning of a pattern once its line break is
  read as a space (the next line may continue it), so the first piece is still there when the rest comes.

>>> secret = b"correct horse battery staple correct horse"
>>> text = b"p: correct horse battery\\n  staple correct horse\\n"
>>> occurrences(text, [(25, 37)], lambda s: [(i, i + len(secret))] if (i := s.find(secret)) >= 0 else [], 100)
[(3, 47)]
"""

from __future__ import annotations

import re
from collections.abc import Callable

from runnerlib.security.wrapped import hit_windows

HEAD = 12
# Shorter values are left alone: the tools this is for fold at 80 columns (a few at 40).
MIN_LENGTH = 2 * HEAD
# A line break and the indentation of the line after it: what a fold put where a space was.
_FOLD = re.compile(rb"\n[ \t]+")
# Also a line break at the end of a buffer, with the indentation read so far: the next line may continue it.
_FOLD_OR_END = re.compile(rb"\n[ \t]+|\n[ \t]*\Z")
# Indentation looked at beyond the longest pattern, at the end of a stream's buffer.
_INDENT_MAX = 256


def heads(value: bytes) -> list[bytes]:
    """The triggers that find `value` folded at its spaces: HEAD bytes from its start and after each space."""
    if b" " not in value or len(value) < MIN_LENGTH:
        return []
    starts = [0, *(i + 1 for i, byte in enumerate(value) if byte == 0x20)]
    return list(dict.fromkeys(value[s:s + HEAD] for s in starts if len(value) - s >= HEAD))


def occurrences(data: bytes, hits: list[tuple[int, int]], find: Callable[[bytes], list[tuple[int, int]]],
                budget: int) -> list[tuple[int, int]]:
    """Runs to mask in `data`: around each hit with an indented line within `budget` bytes, what `find` (the masked
    occurrences in a byte string) finds in the lines read with every line break and indentation as one space."""
    out: list[tuple[int, int]] = []
    for lo, hi in hit_windows(len(data), hits, budget):
        if data.find(b"\n ", lo, hi) < 0 and data.find(b"\n\t", lo, hi) < 0:
            continue  # nothing folded near this hit: the plain scan saw it as it is
        joined, origin = _unfolded(data[lo:hi])
        out.extend((lo + origin[s], lo + origin[e - 1] + 1) for s, e in find(joined))
    return out


def _unfolded(window: bytes, fold: re.Pattern[bytes] = _FOLD) -> tuple[bytes, list[int]]:
    """`window` with each line break and the indentation after it as one space, and where each byte came from."""
    parts: list[bytes] = []
    origin: list[int] = []
    pos = 0
    for m in fold.finditer(window):
        parts += [window[pos:m.start()], b" "]
        origin += [*range(pos, m.start()), m.start()]
        pos = m.end()
    parts.append(window[pos:])
    origin += range(pos, len(window))
    return b"".join(parts), origin


def tail_live_start(buf: bytes, live_start: Callable[[bytes], int], maxlen: int) -> int:
    """Where a stream must hold `buf` from (len(buf) if nowhere): the beginning of a pattern that the end of `buf`
    continues when its line breaks and indentation (a line break at the very end too: the next line may be an
    indented continuation) are read as spaces. `live_start(b)`: the smallest p such that b[p:] is a proper
    beginning of a pattern."""
    end = len(buf)
    lo = max(0, end - 2 * maxlen - _INDENT_MAX)
    if buf.find(b"\n", lo) < 0:
        return end
    window = buf[lo:]
    joined, origin = _unfolded(window, _FOLD_OR_END)
    if joined == window:
        return end  # nothing read differently: the plain live start is the answer
    p = live_start(joined)
    return lo + origin[p] if p < len(joined) else end
