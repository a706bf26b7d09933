"""Secrets folded by the tool that prints them: a multi-word secret at a space, a line break (and indentation) for
the space (FoldSet); any value cut by a line break anywhere after other text on its line (BreakSet, below).

`yaml.dump` folds a scalar longer than its width (80 columns) at a space and continues it on the next line,
indented; `fold -s`, `fmt` and Python's textwrap break at a space too. A passphrase of a few words then reads
`p: correct horse battery\\n  staple ...`. No pattern matches it (the break sits at a place that depends on the
column the value started at), so a secret's single-line plain forms with a space and MIN_LENGTH bytes or more
(`foldable`) are looked for in a view that reads every fold - blanks, one line break, blanks - as one space. In
double quotes (`default_style='"'`) yaml folds with an escaped line break instead, `\\` at the end of the line and
the space escaped after the indentation (`"correct horse\\` then `  \\ battery ...`): the view reads that as one
space too (a `\\` and a line break alone, a shell continuation, are no such fold):

- each such form registers, as triggers, its first HEAD bytes and the HEAD bytes after each of its spaces
  (`heads`): every line piece of the folded form begins at a word, and one piece of two or more holds HEAD bytes;
- at a trigger hit that is such a head, `FoldSet.occurrences` reads the lines around it unfolded and keeps an
  occurrence of the head's own form, at the place the head implies, when it is there in full: nothing else is
  looked for (a view that scanned every pattern in the unfolded lines also masked other secrets crossing a line
  break, and a stream that held only their tail did not);
- in a stream, `FoldSet.tail_live_start` holds the end of a buffer that, unfolded, is a proper beginning of such a
  form, a fold the buffer may end inside of read as a space coming (blanks or a line break at the very end, or an
  escaped fold cut after its `\\`, its line break, in its indentation or after its second `\\`): the next line may
  continue it. So a folded occurrence is whole in one buffer when it is decided, and the stream masks what the
  whole output does. It looks only where the word before the buffer's last fold (before the `\\` of an escaped
  one) is a word of such a form, or ends in its first word (`'correct` of a quoted passphrase folded after it):
  a few percent of stream throughput with one passphrase registered; 10-35% when it unfolded every write's tail.

>>> fs = FoldSet().with_forms([b"correct horse battery staple correct horse"])
>>> fs.occurrences(b"p: correct horse battery\\n  staple correct horse\\n", [(3, 15)])
[(3, 47)]
>>> fs.occurrences(b'p: "correct horse battery\\\\\\n  \\\\ staple correct horse"\\n', [(4, 16)])
[(4, 51)]
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from runnerlib.security.wrapped import fragments

HEAD = 12
# Shorter values are left alone: the tools this is for fold at 80 columns (a few at 40).
MIN_LENGTH = 2 * HEAD
# Indentation and blanks allowed each fold when sizing the window read around a hit.
_FOLD_SLACK = 64


def foldable(form: bytes) -> bool:
    """Whether a plain form can be folded at a space: one line, a space, at least MIN_LENGTH bytes."""
    return (len(form) >= MIN_LENGTH and b" " in form and b"\n" not in form and b"\r" not in form
            and form[:1] not in (b" ", b"\t") and form[-1:] not in (b" ", b"\t"))


def heads(form: bytes) -> list[bytes]:
    """The triggers that find a foldable `form` folded at its spaces: HEAD bytes from its start and after each space
    (none for a form that is not foldable)."""
    if not foldable(form):
        return []
    return list(dict.fromkeys(form[s:s + HEAD] for s in _head_starts(form)))


def _head_starts(form: bytes) -> list[int]:
    """Where a head begins: the form's start and after each space, HEAD bytes before its end at the latest."""
    return [s for s in (0, *(i + 1 for i, byte in enumerate(form) if byte == 0x20)) if len(form) - s >= HEAD]


def _unfolded(window: bytes, at_end: bool = False, hard: bool = False) -> tuple[bytes, list[int], list[int]]:
    """`window` with each fold (blanks, one line break, blanks; or yaml's double-quoted one, `\\` line break blanks
    `\\ `, not a shell continuation's `\\` line break alone) as one space - and with `at_end`, blanks or a `\r`
    ending it too (a fold may be coming; only BreakSet's hold passes it, in hard mode: FoldSet's builds the "fold
    coming" reading itself, stop 30) - and where its pieces came from: `(joined, starts, origins)`, joined
    byte j of the piece starting at starts[k] came from origins[k] + (j - starts[k]) (a fold's space: where the
    fold began). See _origin. (By hand, not a regex: `[ \t]*\r?\n` is tried at every byte, 20 us
    a stream's tail.) `hard`: a fold is a line break alone (`\r\n` too), read as nothing (BreakSet)."""
    parts: list[bytes] = []
    starts: list[int] = []
    origins: list[int] = []
    pos = j = 0
    n = len(window)
    i = window.find(b"\n")
    while True:
        if i == -1:
            if not at_end:
                break
            a = n - 1 if window.endswith(b"\r") and n - 1 >= pos else n
            i = b = n
        else:
            a, b = i, i + 1
            if a > pos and window[a - 1] == 0x0D:
                a -= 1
        if not hard:
            while b < n and window[b] in (0x20, 0x09):
                b += 1
            if a > pos and window[a - 1] == 0x5C and window[b:b + 2] == b"\\ ":
                a, b = a - 1, b + 2  # yaml's double-quoted fold: `\` (the break is nothing), then the escaped space
            else:
                while a > pos and window[a - 1] in (0x20, 0x09):
                    a -= 1
        if a == b:  # nothing at the end
            break
        if hard:
            starts.append(j)
            origins.append(pos)
            parts.append(window[pos:a])
            j += a - pos
        else:
            starts += [j, j + a - pos]
            origins += [pos, a]
            parts += [window[pos:a], b" "]
            j += a - pos + 1
        pos = b
        if i == n:
            break
        i = window.find(b"\n", b)
    starts.append(j)
    origins.append(pos)
    parts.append(window[pos:])
    return b"".join(parts), starts, origins


def _origin(starts: list[int], origins: list[int], j: int) -> int:
    """Where joined byte j of an `_unfolded` window came from."""
    k = bisect.bisect_right(starts, j) - 1
    return origins[k] + j - starts[k]


def _joined_at(starts: list[int], origins: list[int], o: int) -> int:
    """Where window byte o (not inside a fold) is in the joined view."""
    k = bisect.bisect_right(origins, o) - 1
    return starts[k] + o - origins[k]


def _placed(data: bytes, a: int, b: int, found: tuple[tuple[bytes, int], ...], span: int, hard: bool
            ) -> list[tuple[int, int]]:
    """Where each form of `found` ((form, offset of the hit data[a:b] in it)) is in `data` in full, read unfolded
    (`hard`: as _unfolded) within `span` bytes of the hit: (first, last) in `data`, folds inside included. The
    callers keep those their fold rule allows."""
    lo, hi = max(0, a - span), min(len(data), b + span)
    if data.find(b"\n", lo, hi) < 0:
        return []  # nothing folded here: the plain scan saw it as it is
    joined, starts, origins = _unfolded(data[lo:hi], hard=hard)
    at = _joined_at(starts, origins, a - lo)  # the hit is no fold: its first byte is in the view
    out: list[tuple[int, int]] = []
    for form, s in found:
        start = at - s
        if start >= 0 and joined.startswith(form, start):
            out.append((lo + _origin(starts, origins, start), lo + _origin(starts, origins, start + len(form) - 1) + 1))
    return out


class FoldSet:
    """The foldable forms of the registered secrets, by head. Immutable: `with_forms` returns a new one (a
    masker snapshot keeps the set it was published with)."""

    __slots__ = ("forms", "by_head", "maxlen", "words", "firsts", "first_words", "first_lengths")

    def __init__(self, forms: tuple[bytes, ...] = (), by_head: dict[bytes, tuple[tuple[bytes, int], ...]] | None = None,
                 maxlen: int = 0) -> None:
        self.forms = forms  # sorted
        self.by_head = by_head or {}
        self.maxlen = maxlen
        # A folded occurrence that a buffer ends in has a whole word of its form before its last fold: after a space
        # or a line break, or for its first word, anywhere (`"correct` of a quoted passphrase folded after it).
        self.words = frozenset(w for form in forms for w in form.split(b" "))
        self.firsts = frozenset(form[0] for form in forms)
        self.first_words = frozenset(form.split(b" ", 1)[0] for form in forms)
        self.first_lengths = sorted({len(w) for w in self.first_words})

    def __bool__(self) -> bool:
        return bool(self.forms)

    def with_forms(self, forms: list[bytes]) -> FoldSet:
        """This set and the foldable ones of `forms`."""
        known = set(self.forms)
        new = [f for f in dict.fromkeys(forms) if foldable(f) and f not in known]
        if not new:
            return self
        by_head = dict(self.by_head)
        for form in new:
            for s in _head_starts(form):
                by_head[form[s:s + HEAD]] = (*by_head.get(form[s:s + HEAD], ()), (form, s))
        return FoldSet(tuple(sorted({*self.forms, *new})), by_head, max(self.maxlen, *map(len, new)))

    def occurrences(self, data: bytes, hits: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The folded occurrences in `data` of the forms whose heads were hit: around a hit of the head at offset
        `s` of form F, F read unfolded from `s` bytes before the hit; only occurrences with a fold inside."""
        out: list[tuple[int, int]] = []
        for a, b in hits:
            found = self.by_head.get(data[a:b])
            if not found:
                continue
            span = max(len(f) + (f.count(b" ") + 1) * _FOLD_SLACK for f, _ in found)
            out.extend((first, last) for first, last in _placed(data, a, b, found, span, hard=False)
                       if data.find(b"\n", first, last) >= 0)
        return out

    def tail_live_start(self, buf: bytes) -> int:
        """Where a stream must hold `buf` from (len(buf) if nowhere): the earliest proper beginning of a foldable
        form that the end of `buf` is, read unfolded, when it holds a fold (without one, the plain live start holds
        it). Blanks at the very end are read both ways: as a fold still coming (a space) and as they are (a form
        may hold a tab); so is a `\\` at the very end, and a line break after one (yaml's double-quoted fold)."""
        end = len(buf)
        lo = max(0, end - 4 * self.maxlen - 256)
        tail = buf[-1:]
        hold = end
        if tail in (b" ", b"\t", b"\r", b"\n", b"\\"):  # a fold may be in progress at the end (`\`: yaml's escaped one)
            body = buf[lo:]
            if tail == b"\\":  # a `\` may begin one, or be the `\` of the escaped space after its break
                hold = self._hold(buf, lo, end - 1, True)
                k = _fold_start(body, len(body) - 1)
            else:
                k = _fold_start(body, len(body))
                hold = self._hold(buf, lo, lo + k, True)
            if body[k - 1:k] == b"\\" and body[k:k + 1] in (b"\r", b"\n"):  # an escaped fold, its break begun
                hold = min(hold, self._hold(buf, lo, lo + k - 1, True))
        if tail not in (b"\r", b"\n"):
            last = buf.rfind(b"\n", lo)
            if last >= 0:
                # Indices, not copies, until the word is known (this runs at every write).
                stop = last
                while stop > lo and buf[stop - 1] in (0x20, 0x09, 0x0D):
                    stop -= 1
                if stop > lo and buf[stop - 1] == 0x5C and _escaped_at(buf, last):
                    stop -= 1  # the word before an escaped fold ends before its `\`
                hold = min(hold, self._hold(buf, lo, stop, False))
        return hold

    def _hold(self, buf: bytes, lo: int, stop: int, pending: bool) -> int:
        """tail_live_start for the buffer's last fold, after buf[lo:stop] (up to the fold), one way of reading the
        end (`pending`: the rest of the buffer is a fold coming, one space)."""
        end = len(buf)
        # An occurrence the buffer ends in crosses its last fold, with a whole word of its form before it.
        token = buf[max(buf.rfind(b" ", lo, stop), buf.rfind(b"\n", lo, stop), lo - 1) + 1:stop]
        word = token[token.rfind(b"\t") + 1:]
        if token.lstrip(b"\t") not in self.words and word not in self.words \
                and not any(token[-k:] in self.first_words for k in self.first_lengths if k <= len(token)):
            return end
        head = buf[lo:stop]
        if pending:  # the caller knows where the fold coming begins (blanks, a `\r`, a `\` and what follows it)
            joined, starts, origins = _unfolded(head)
            joined += b" "
            starts.append(len(joined) - 1)
            origins.append(len(head))
        else:
            joined, starts, origins = _unfolded(buf[lo:])
        forms, firsts = self.forms, self.firsts
        for p in range(max(0, len(joined) - self.maxlen + 1), len(joined)):
            if joined[p] not in firsts:
                continue
            rest = joined[p:]
            i = bisect.bisect_left(forms, rest)
            # Distinct and sorted: if `rest` is a form itself, a longer one follows it.
            while i < len(forms) and forms[i].startswith(rest):
                if len(forms[i]) > len(rest):
                    at = lo + _origin(starts, origins, p)
                    return at if pending or buf.find(b"\n", at) >= 0 else end
                i += 1
        return end


def _fold_start(body: bytes, end: int) -> int:
    """Where the fold that body[:end] may end inside begins: its last blanks, one line break (`\\r\\n`, or a `\\r` at
    the very end of `body`), and the blanks before it (earlier breaks are folds of their own: a run of blank lines
    is no fold)."""
    k = end
    while k and body[k - 1] in (0x20, 0x09):
        k -= 1
    if k and body[k - 1] == 0x0A:
        k -= 1
        if k and body[k - 1] == 0x0D:
            k -= 1
    elif k == len(body) and k and body[k - 1] == 0x0D:
        k -= 1
    while k and body[k - 1] in (0x20, 0x09):
        k -= 1
    return k


def _escaped_at(body: bytes, nl: int) -> bool:
    """Whether the line break at `nl` is yaml's escaped fold, as _unfolded reads it: `\\` right before it (or before
    its `\\r`), `\\ ` after its blanks."""
    return (body.endswith(b"\\", 0, nl) or body.endswith(b"\\\r", 0, nl)) \
        and body[nl + 1:].lstrip(b" \t").startswith(b"\\ ")


# A piece of a value before a line break, in BreakSet, is at least this long: the tail check looks at the 4
# bytes before a write's last line break (a fold within a value's first 3 bytes is not read).
MIN_PIECE = 4
_BLOOM_BITS = 1 << 22
_RAW_LEN = 8  # the length of every raw fragment (wrapped._KINDS["raw"]): other hits are no heads here
# A fragment that more values than this hold is public text (`postgres` of 200 URLs): at its hits
# (every `postgres` of a log) the values' other fragments decide, so they cost no look.
_SHARED_MAX = 4


def _bloom_index(gram: bytes) -> int:
    return (int.from_bytes(gram, "little") * 2654435761 >> 7) & (_BLOOM_BITS - 1)


class BreakSet:
    """Registered values cut by line breaks anywhere: `fold -w 20` of `token: <token>`, a narrow column, a tool
    that wraps long lines. The wrapped view (security/wrapped.py) joins only lines made wholly of encoding
    characters, so a value after other text on its first line, or of other characters, was not read.

    - The heads are the value's raw fragments (wrapped.fragments(value, "raw"), 8 bytes, placed so that lines of
      16 or more hold one whole): they are triggers already, for the ASCII column of dumps. A fragment that
      more than _SHARED_MAX values hold is public text and no head: a value whose every piece
      holds only such fragments (a short password inside a long URL, folded) is not found.
    - At a hit, `occurrences` reads the lines around it with each line break as nothing and keeps the value at
      the place the fragment implies, when it is there in full, crosses a break, and each piece before a break
      is MIN_PIECE bytes or more.
    - In a stream, `tail_live_start` holds an end that, read so, is a proper beginning of such a value with a
      break inside; it looks only where the 4 bytes before the write's last break are 4 bytes of some value (a
      Bloom filter of every value's 4-byte pieces: 512 KiB).

    Grow-only and shared by every snapshot of a masker (added to under its lock): a snapshot that sees a value
    added later finds none of its fragments (they are not in its layers) and at most holds a tail longer.
    """

    __slots__ = ("forms", "by_fragment", "maxlen", "_bloom", "_values_of")

    def __init__(self) -> None:
        self.forms: set[bytes] = set()
        self.by_fragment: dict[bytes, tuple[tuple[bytes, int], ...]] = {}  # (value, where in it)
        self._values_of: dict[bytes, int] = {}  # how many values hold each fragment
        self.maxlen = 0
        self._bloom = bytearray()  # allocated at the first value

    def __bool__(self) -> bool:
        return bool(self.forms)

    def add(self, forms: list[bytes]) -> None:
        """Add the values of `forms` that a break may cut (single-line, long enough for raw fragments)."""
        for form in forms:
            if form in self.forms or b"\n" in form or b"\r" in form:
                continue
            frags = fragments(form, "raw")
            if not frags:
                continue
            if not self._bloom:  # at the first value: a registry of short values never pays the 512 KiB
                self._bloom = bytearray(_BLOOM_BITS // 8)
            bloom = self._bloom
            assert all(len(f) == _RAW_LEN for f in frags)
            for frag in frags:  # distinct
                self._values_of[frag] = self._values_of.get(frag, 0) + 1
                at = form.find(frag)
                while at >= 0:
                    self.by_fragment[frag] = (*self.by_fragment.get(frag, ()), (form, at))
                    at = form.find(frag, at + 1)
            for i in range(len(form) - MIN_PIECE + 1):
                k = _bloom_index(form[i:i + MIN_PIECE])
                bloom[k >> 3] |= 1 << (k & 7)
            self.maxlen = max(self.maxlen, len(form))
            self.forms.add(form)

    def occurrences(self, data: bytes, hits: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The values cut by line breaks in `data` whose raw fragments were hit (see the class)."""
        out: list[tuple[int, int]] = []
        for a, b in hits:
            if b - a != _RAW_LEN:
                continue
            frag = data[a:b]
            found = self.by_fragment.get(frag)
            if not found or self._values_of[frag] > _SHARED_MAX:
                continue  # not a head, or public text many values share (`postgres`): their other fragments
            # The common case first: the value printed whole (the plain scan masks it), nothing to unfold.
            found = tuple((f, s) for f, s in found if a < s or not data.startswith(f, a - s))
            if not found:
                continue
            span = 2 * max(len(f) for f, _ in found)
            out.extend((first, last) for first, last in _placed(data, a, b, found, span, hard=True)
                       if _pieces_ok(data, first, last))
        return out

    def tail_live_start(self, buf: bytes, live_start_of: Callable[[bytes, Callable[[bytes], bool]], int]) -> int:
        """Where a stream must hold `buf` from (len(buf) if nowhere): the earliest proper beginning of such a value
        that the end of `buf` is, its line breaks read as nothing (one at the very end too), when it holds one.
        `live_start_of(b, accept)`: the smallest p such that b[p:] is a proper beginning of a pattern `accept`
        takes (the masker's prefix filter)."""
        end = len(buf)
        lo = max(0, end - 2 * self.maxlen - 64)
        pending = end > 0 and buf[-1] in (0x0A, 0x0D)  # a break may be in progress at the end
        if pending:
            cut = end - 1
            while cut > lo and buf[cut - 1] in (0x0A, 0x0D):
                cut -= 1
        else:
            cut = buf.rfind(b"\n", lo)
            if cut < 0:
                return end  # no break: the plain live start is the answer
            if cut > lo and buf[cut - 1] == 0x0D:
                cut -= 1
        if cut - lo < MIN_PIECE:
            return end
        # Indices, not copies, until here: this runs at every write of a registry with a value of 15 bytes.
        k = _bloom_index(buf[cut - MIN_PIECE:cut])
        if not self._bloom[k >> 3] & (1 << (k & 7)):
            return end  # the 4 bytes before the last break are no value's: no value crosses it here
        joined, starts, origins = _unfolded(buf[lo:], at_end=True, hard=True)
        p = live_start_of(joined, self.forms.__contains__)
        if p >= len(joined):
            return end
        at = lo + _origin(starts, origins, p)
        return at if pending or buf.find(b"\n", at) >= 0 else end


def _pieces_ok(data: bytes, first: int, last: int) -> bool:
    """Whether data[first:last] crosses a line break and each piece before one is MIN_PIECE bytes or more."""
    pos, crossed = first, False
    nl = data.find(b"\n", pos, last)
    while nl >= 0:
        stop = nl - 1 if nl > pos and data[nl - 1] == 0x0D else nl
        if stop - pos < MIN_PIECE:
            return False
        crossed, pos = True, nl + 1
        nl = data.find(b"\n", pos, last)
    return crossed
