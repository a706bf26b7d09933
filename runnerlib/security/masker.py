"""Union-of-occurrences masking over a multi-pattern engine, with a small delta for recent additions.

The invariant, stated once: every byte covered by ANY occurrence of ANY pattern is replaced; a run of
covered bytes (overlapping or adjacent occurrences) becomes ONE replacement; every other byte is kept, in
order. Leftmost-longest matching or a loop of replaces both leave part of overlapping secrets in the clear
(secrets `AAAABB` and `BBBBBB` in `AAAABBBBBB`: replacing `AAAABB` first leaves `BBBB` of the second, replacing
`BBBBBB` first leaves `AAAA` of the first); only the union is safe, so engines here report every occurrence,
overlapping ones included.

Adding a secret must not rebuild the automaton of 10,000 others. Patterns live in layers: a large "base"
compiled with the fast engine in a background thread, and small ahocorasick-rs layers for what was added
since (built in about a millisecond). A scan asks every layer. The background thread first recompiles the
recent deltas as one layer of the fast engine, then, once additions pause, merges everything into a new
base. A `MaskSnapshot` is immutable, so a stream scanning it never sees a half-built set.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass

from runnerlib.security import known_formats, truncated, wrapped
from runnerlib.security.folded import BreakSet, FoldSet
from runnerlib.security.matcher import KeyedParts, Matcher, build_head_matcher, build_matcher, default_engine

log = logging.getLogger("runnerlib.secrets")

# Live partial matches are found with a filter on the first PREFIX_LEN bytes of each pattern (an engine scan
# of the last few hundred bytes), then checked exactly; shorter partials are looked up in a set.
PREFIX_LEN = 4
# A pattern holding a line break is indexed by the NL_KEY bytes up to and including each of its breaks: a buffer's
# live partial match that starts before its last line break must hold that break (MaskSnapshot._live_start).
NL_KEY = 8
# Recent patterns stay in one ahocorasick-rs layer rebuilt on each add while it is this small (a few ms);
# past it the layer is frozen and a new one started, so an add never pays for more than this many patterns.
DELTA_LAYER_MAX = 512
# Up to this many recent patterns are recompiled by the background thread as one main-engine layer before
# the full merge (see Masker._fold_deltas).
FOLD_MAX = 4096
# Past this many recently added patterns, the sorted list of recent ones is merged into the large one.
RECENT_SORTED_MAX = 32768
# Scanning costs one engine call per layer: past this many deltas they are folded into one.
MAX_DELTA_LAYERS = 8
# The background merge starts once no pattern was added for this long (see Masker._merge).
MERGE_AFTER_QUIET = 0.2
# With the ahocorasick-rs engine (its build holds the GIL), a large base is merged only once this many
# delta layers exist, or the deltas hold an eighth of the base's patterns.
AC_MERGE_LAYERS = 4
# A large first set (a job's or `runnerlib mask`'s secrets, added in one batch) is compiled in parts of about
# this many literals while the forms of the rest are still being computed (matcher.KeyedParts). Hyperscan's
# compile time grows as about the 1.5th power of the number of keys (measured here: 16,000 keys in 0.22-0.3 s of
# CPU, 32,000 in 0.6-0.8 s, 64,000 in 1.7-2.1 s), so four parts cost two-thirds of the CPU of two halves, and
# the first ones compile while the main thread computes the rest. Each part is one more database a write is
# scanned with (about 2 GB/s each, two threads at a time) until the whole database is swapped in: more parts
# compile sooner but scan slower (six made `runnerlib mask` on 256 MiB slower than four).
PART_LITERALS = 20000
MAX_PARTS = 4
# add_forms sizes a batch's parts from the forms of its first this many secrets.
PART_PROBE = 32


class MaskingFailed(RuntimeError):
    """The secrets could not be registered (a background fill failed): nothing can be written masked."""


@dataclass(frozen=True)
class _Layer:
    start: int  # index range [start, stop) in the masker's pattern list
    stop: int
    matcher: Matcher
    prefixes: Matcher | None  # first PREFIX_LEN bytes of each pattern longer than that
    base: bool  # compiled with the main engine (the others are deltas waiting for a merge)


class MaskSnapshot:
    """An immutable compiled pattern set: find occurrences, find live partial matches, mask a buffer."""

    __slots__ = ("layers", "maxlen", "_sorted", "_short", "replacement", "count", "triggers", "folds", "breaks",
                 "_nl_heads")

    def __init__(self, layers: tuple[_Layer, ...], maxlen: int, sorted_patterns: tuple[list[bytes], ...],
                 short_prefixes: set[bytes], replacement: bytes, count: int,
                 triggers: set[bytes] | frozenset[bytes] = frozenset(), folds: FoldSet | None = None,
                 breaks: BreakSet | None = None, nl_heads: NewlineHeads | None = None) -> None:
        self.layers = layers
        self.maxlen = maxlen
        self._sorted = sorted_patterns
        self._short = short_prefixes
        # The patterns holding a line break, by the bytes before each break (grow-only, shared like _short).
        self._nl_heads = nl_heads if nl_heads is not None else NewlineHeads()
        self.replacement = replacement
        self.count = count  # number of patterns
        # Patterns that are not masked themselves: a hit sends the lines around it through the wrapped view
        # (runnerlib.security.wrapped), which masks what crosses a line break of an encoded run.
        self.triggers = triggers
        # Multi-word secrets a tool may fold at a space (security/folded.py): their view and tail hold.
        self.folds = folds or FoldSet()
        # Values cut by a line break anywhere (`fold -w 20` after other text): shared, grow-only (BreakSet).
        self.breaks = breaks or BreakSet()

    def find_raw(self, data: bytes) -> list[tuple[int, int]]:
        """(start, end) of every occurrence of every pattern, triggers included, in no particular order."""
        layers = self.layers
        if len(layers) == 1:
            return layers[0].matcher.find(data)
        out: list[tuple[int, int]] = []
        for layer in layers:
            out.extend(layer.matcher.find(data))
        return out

    def find(self, data: bytes, line_start: bool = True, held: list[int] | None = None) -> list[tuple[int, int]]:
        """(start, end) of every run to mask: occurrences of the masked patterns, and of encoded forms wrapped
        across line breaks (found where a trigger matched), in no particular order. `line_start`: whether
        data[0] begins a line (a stream's buffer may start in the middle of one).

        `held`: given by a stream, whose buffer may go on. A run that a line view reads into the buffer's last,
        unfinished line is left out and its start appended to `held`: the rest of that line decides whether it
        is an encoding line at all (wrapped.view_occurrences), so the stream holds it and looks again.
        """
        return self._masks(data, self.find_raw(data), line_start, held)

    def find_with_known(self, data: bytes, line_start: bool = True, held: list[int] | None = None
                        ) -> tuple[list[tuple[int, int]], list[tuple[int, int]] | None]:
        """`find(data, line_start)`, and from the same pass the known-format prefixes in `data` as
        `known_formats`' prefilter gives them ((start, prefix index), the answer of its `find`), or None when
        this snapshot cannot tell (no base layer compiled with them, or too many of them in `data`).

        One Hyperscan pass instead of two over every write of a step's output: the base layer's database
        holds the known-format prefixes too, with ids of their own (matcher.HyperscanMatcher's `extra`).
        """
        found: list[tuple[int, int]] = []
        known = None
        for layer in self.layers:
            scan = getattr(layer.matcher, "scan", None) if layer.base else None
            if scan is not None:
                # Without the prefixes in its database (a large set's keyed parts), a parallel scan runs the
                # known-format prefilter beside its databases, half of the write in each thread.
                occurrences, known = scan(data, None if layer.matcher.extra else known_formats.literal_hits,  # type: ignore[attr-defined]
                                          known_formats.MAX_PREFIX)
                found.extend(occurrences)
                if known is not None and len(known) > known_formats.DENSE_HITS:
                    known = None  # the prefilter's two halves found more than its answer may hold
            else:
                found.extend(layer.matcher.find(data))
        return self._masks(data, found, line_start, held), known

    def _masks(self, data: bytes, found: list[tuple[int, int]], line_start: bool, held: list[int] | None = None
               ) -> list[tuple[int, int]]:
        if found and self._nl_heads.one_a_line:
            found = self._nl_heads.anchored(data, found, line_start)
        if not self.triggers:
            return found
        # A dump's first line at the start (no line break before it for a dump-start trigger to hold): read as a hit.
        first_dump = line_start and wrapped.starts_a_dump(data)
        if not found and not first_dump:
            return found
        triggers = self.triggers
        masks = [o for o in found if data[o[0]:o[1]] not in triggers]
        # The trigger hits, counted before the views add to `masks` (counted after, a view's runs hid them, and a
        # secret cut short by `...` went unmasked in a whole output that a stream cut elsewhere masked).
        triggered = len(masks) < len(found)
        # A secret found whole can be the ASCII column of a dump line (`xxd` of a short secret): its hex digits
        # are found by the same look as a trigger's.
        masks.extend(wrapped.view_occurrences(data, [*found, (0, 0)] if first_dump else found, self._find_masks,
                                              self.maxlen, line_start, held))
        if triggered:  # a trigger hit: it may be the head of a secret cut short by `...`
            masks.extend(truncated.occurrences(data, [o for o in found if data[o[0]:o[1]] in triggers],
                                               self.longest_beginning))
        if self.folds.forms:  # a multi-word secret's head (a trigger, or a pattern too): it may be folded at a space
            masks.extend(self.folds.occurrences(data, found))
        if self.breaks.forms:  # a raw fragment of a value: it may be cut by line breaks after other text
            masks.extend(self.breaks.occurrences(data, found))
        return masks

    def longest_beginning(self, data: bytes, a: int) -> int:
        """The most bytes data[a:] shares with the start of a pattern it does not hold whole (0 if none).

        Of sorted strings, the one sharing the longest start with a probe sorts next to it: two comparisons a
        sorted list, however many patterns share a public head (`postgres://a`). A masked pattern held whole on
        that side covers any beginning the other patterns there share (a trigger, not masked, counts as one).
        """
        probe = data[a:a + self.maxlen]
        best = 0
        triggers = self.triggers
        for patterns in self._sorted:
            i = bisect.bisect_left(patterns, probe)
            for pattern in patterns[max(0, i - 1):i + 1]:
                n = truncated.common_length(probe, pattern)
                if n < len(pattern) or pattern in triggers:  # a trigger held whole is not masked: it counts
                    best = max(best, n)
        return best

    def _find_masks(self, data: bytes) -> list[tuple[int, int]]:
        triggers = self.triggers
        return [o for o in self.find_raw(data) if data[o[0]:o[1]] not in triggers]

    def live_start(self, buf: bytes, line_start: bool = True, candidate: bool | None = None) -> int:
        """The smallest p such that buf[p:] is a proper prefix of some pattern, in the bytes as they are or in
        the joined view of an encoded run at the end of `buf` (len(buf) if none).

        Bytes before p can never be covered by an occurrence that ends later; bytes from p on might be.
        """
        live = self._live_start(buf, line_start=line_start)
        if self.triggers and buf.find(b"%", max(0, len(buf) - self.maxlen)) >= 0:
            # A percent form with mixed-case hex is a prefix of the uppercase form once its escapes are.
            tail = buf[-self.maxlen:]
            upper = wrapped.upper_escapes(tail)
            if upper != tail:
                live = min(live, self._live_start(upper) + len(buf) - len(tail))
        if self.triggers:  # colour codes inside a secret (wrapped.py's ANSI lines; nothing without an escape)
            live = min(live, wrapped.ansi_tail_live_start(buf, self._live_start, self._find_masks))
        if candidate is None:
            candidate = bool(self.triggers) and wrapped.quick_candidate(buf, line_start)
        if candidate:  # the last line may be part of an encoded run (`candidate`: the caller already knows)
            live = min(live, wrapped.tail_live_start(buf, self._live_start, self.maxlen, line_start, self._find_masks))
        if self.triggers:  # a secret's beginning, then the beginning of `...` (only a buffer ending with one)
            live = min(live, truncated.tail_live_start(buf, self._live_start, self.maxlen))
        if self.folds.forms:  # a multi-word secret's beginning that the lines after may continue, folded
            live = min(live, self.folds.tail_live_start(buf))
        if self.breaks.forms:  # a value's beginning that the next line may continue, cut by a line break
            live = min(live, self.breaks.tail_live_start(buf, self._live_start))
        return live

    def _live_start(self, buf: bytes, accept: Callable[[bytes], bool] | None = None, line_start: bool = True) -> int:
        """The smallest p such that buf[p:] is a proper beginning of a pattern, or len(buf). With `accept`: a beginning
        of at least PREFIX_LEN bytes, of a pattern `accept` takes (at least PREFIX_LEN + 1 bytes long).

        The dump-start triggers' beginnings (wrapped.dump_starts) are not held (nor noted: _note): a dump's first line is
        kept as context anyway (the view reads from it at the next write), and every write ending in a line break would
        be held otherwise.

        A beginning that starts before the last line break holds that break: only patterns with a line break can
        give one, and they are looked up by the bytes before it (NewlineHeads). The prefix filter then reads only
        what follows the last break, not the last `maxlen` bytes (a tenth of a 64 KiB write's time at N=1,000).
        `line_start`: whether buf begins a line (the forms one character a line count only where they begin one).
        """
        end = len(buf)
        lo = end - self.maxlen + 1
        if lo < 0:
            lo = 0
        if lo >= end:
            return end
        nl = buf.rfind(b"\n", lo)
        if nl >= 0:
            nl_heads = self._nl_heads
            if nl_heads.index or nl_heads.one_a_line:
                p = nl_heads.live_start(buf, lo, nl, accept, line_start)
                if p < end:
                    return p  # every later candidate starts after the break
            lo = nl + 1
            if lo == end:
                return end
        window = buf[lo:]
        candidates: list[int] = []
        for layer in self.layers:
            if layer.prefixes is not None:
                candidates.extend(s for s, _ in layer.prefixes.find(window))
        if candidates:
            segments = self._sorted
            for p in sorted(set(candidates)):
                frag = window[p:]
                for patterns in segments:
                    i = bisect.bisect_left(patterns, frag)
                    # Patterns are distinct and sorted: if frag itself is a pattern, a longer one follows it.
                    while i < len(patterns) and patterns[i].startswith(frag):
                        if len(patterns[i]) > len(frag) and (accept is None or accept(patterns[i])) \
                                and patterns[i] not in wrapped.dump_starts():
                            return lo + p
                        i += 1
        if accept is not None:
            return end
        short = self._short
        for r in range(min(PREFIX_LEN - 1, end - lo), 0, -1):
            if buf[end - r:] in short:
                return end - r
        return end

    def mask(self, data: bytes) -> bytes:
        """`data` with every covered run replaced, as if it were the whole output."""
        if not self.count or not data:
            return bytes(data)
        occurrences = self.find(data)
        if not occurrences:
            return bytes(data)
        out: list[bytes] = []
        render(data, occurrences, 0, -1, len(data), self.replacement, out)
        return b"".join(out)


def one_character_a_line(pattern: bytes) -> bool:
    """Whether `pattern` is two lines or more of one character each (a UTF-8 character or one byte): the form of a
    value that `fold -w1` prints (rearranged_forms).

    >>> one_character_a_line(b"a\\nb\\nc"), one_character_a_line("\u00e4\\nb".encode()), one_character_a_line(b"a\\nbc")
    (True, True, False)
    """
    lines = pattern.split(b"\n")
    return len(lines) > 1 and all(map(_one_character, lines))


def _one_character(line: bytes) -> bool:
    """Whether `line` is one byte (a value's bytes one a line: the C locale) or one UTF-8 character."""
    if len(line) == 1:
        return True
    try:
        return 1 < len(line) <= 4 and len(line.decode("utf-8")) == 1
    except UnicodeDecodeError:
        return False


class NewlineHeads:
    """The patterns holding a line break, each by the NL_KEY bytes up to and including each of its breaks (fewer
    when the break is nearer its start): where a buffer's last break can fall inside a pattern's beginning.

    The patterns given as line starts (Masker.add: a value's forms printed by `fold -w1`,
    rearranged_forms.one_a_line_forms; not a multi-line secret that looks the same) count only where they begin a
    line, in a whole output (`anchored`) as in a stream's hold: held wherever a line ends in a character that begins
    one, every write ending in `...ing\\n` would wait for the next (a job with a `ghp_` token) or the idle flush. So
    the form rearranged_forms registers is the value's lines from the second on, which begins a line whether or not
    the first followed other text (`S=`, then `fold -w1`): the first character shows. They are kept apart, by their
    characters joined (the value), sorted, and looked at only when the buffer's last line is one character: indexed
    by their breaks, their keys (`a\\n`, one for each first character) matched most line ends (12% of the N=1,000
    stream; indexing 35 breaks a value, 0.1 s of `runnerlib mask` at N=1,000).

    Grow-only and shared by every snapshot of a masker (added to under its lock, each entry or list replaced, never
    changed in place): a snapshot that sees a pattern added later at most holds a tail longer. `demote` only moves a
    form from counting at line starts to counting everywhere, which masks and holds more, never less.
    """

    __slots__ = ("index", "key_lengths", "one_a_line", "_one_a_line_forms")

    def __init__(self) -> None:
        self.index: dict[bytes, tuple[tuple[bytes, int], ...]] = {}  # key -> (pattern, where its break is)
        self.key_lengths: tuple[int, ...] = ()
        self.one_a_line: list[bytes] = []  # the forms one character a line, their lines joined, sorted
        self._one_a_line_forms: dict[bytes, tuple[bytes, ...]] = {}  # joined -> the forms

    def add(self, patterns: Iterable[bytes], line_only: Container[bytes] = ()) -> None:
        """Index the breaks of `patterns` that a proper beginning can hold (not one that ends the pattern); those in
        `line_only` (the masker's line starts, one character a line) are kept apart: they count only where they begin
        a line."""
        one_a_line: list[bytes] = []
        indexed: list[bytes] = []
        for pattern in [p for p in patterns if b"\n" in p]:  # a few: don't loop over the 90,000 of `mask`
            (one_a_line if pattern in line_only else indexed).append(pattern)
        self._index_breaks(indexed)
        if one_a_line:
            forms = self._one_a_line_forms
            values = list(self.one_a_line)  # a copy, then swapped in: a snapshot may be reading the list
            for pattern in one_a_line:
                joined = pattern.replace(b"\n", b"")
                if joined not in forms:
                    bisect.insort(values, joined)
                forms[joined] = (*forms.get(joined, ()), pattern)
            self.one_a_line = values

    def demote(self, patterns: Iterable[bytes]) -> None:
        """Count `patterns` wherever they are from now on: forms one character a line that were added as line starts
        and are now patterns of their own too (Masker.add)."""
        forms = self._one_a_line_forms
        moved: list[bytes] = []
        for pattern in patterns:
            joined = pattern.replace(b"\n", b"")
            if pattern in forms.get(joined, ()):
                forms[joined] = tuple(f for f in forms[joined] if f != pattern)
                moved.append(pattern)
        if moved:
            self.one_a_line = [v for v in self.one_a_line if forms.get(v)]  # a copy, swapped in
            self._index_breaks(moved)

    def _index_breaks(self, patterns: list[bytes]) -> None:
        index = self.index
        lengths = set(self.key_lengths)
        for pattern in patterns:
            q = pattern.find(b"\n")
            while 0 <= q < len(pattern) - 1:
                key = pattern[max(0, q + 1 - NL_KEY):q + 1]
                index[key] = (*index.get(key, ()), (pattern, q))
                lengths.add(len(key))
                q = pattern.find(b"\n", q + 1)
        if len(lengths) != len(self.key_lengths):
            self.key_lengths = tuple(sorted(lengths, reverse=True))

    def anchored(self, data: bytes, found: list[tuple[int, int]], line_start: bool) -> list[tuple[int, int]]:
        """`found` without the occurrences of a form one character a line that do not begin a line (`line_start`:
        whether data does)."""
        forms = self._one_a_line_forms

        def counts(a: int, b: int) -> bool:
            if (data[a - 1] == 0x0A if a else line_start) or b"\n" not in data[a + 1:a + 5]:
                return True  # it begins a line, or is no form one a line (their second line starts by then)
            return data[a:b] not in forms.get(data[a:b].replace(b"\n", b""), ())

        return [(a, b) for a, b in found if counts(a, b)]

    def live_start(self, buf: bytes, lo: int, nl: int, accept: Callable[[bytes], bool] | None,
                   line_start: bool = True) -> int:
        """The smallest p in [lo, nl] such that buf[p:] is a proper beginning of an indexed pattern, where buf[nl]
        is the last line break of buf[lo:]; len(buf) if none. With `accept`: of PREFIX_LEN bytes or more, of a
        pattern `accept` takes (as MaskSnapshot._live_start). A form one character a line counts only where it
        begins a line (`line_start`: whether buf does)."""
        end = len(buf)
        best = end
        index = self.index
        for k in self.key_lengths:
            if nl + 1 - k < lo:
                continue
            for pattern, q in index.get(buf[nl + 1 - k:nl + 1], ()):
                p = nl - q
                if lo <= p < best and len(pattern) > end - p and buf.startswith(pattern[:end - p], p) \
                        and (accept is None or end - p >= PREFIX_LEN and accept(pattern)):
                    best = p
        if self.one_a_line and end - nl <= 5:  # the line after the last break is a character at most
            best = self._one_a_line_start(buf, lo, nl, accept, best, line_start)
        return best

    def _one_a_line_start(self, buf: bytes, lo: int, nl: int, accept: Callable[[bytes], bool] | None, best: int,
                          line_start: bool) -> int:
        """live_start among the forms one character a line: the earliest start of a line, from which every line up
        to the last break is one character, where a form's proper beginning starts (`best` if none before it)."""
        starts = []
        stop = nl  # the end of a line (its break)
        while True:
            brk = buf.rfind(b"\n", max(0, stop - 5), stop)
            if brk >= 0:
                begin = brk + 1
            elif stop <= 4 and line_start:
                begin = 0
            else:
                break
            if begin < lo or not _one_character(buf[begin:stop]):
                break
            starts.append(begin)
            if not begin:
                break
            stop = brk
        values, forms = self.one_a_line, self._one_a_line_forms
        for p in reversed(starts):  # the earliest first
            if p >= best:
                break
            head = buf[p:]
            joined = head.replace(b"\n", b"")
            i = bisect.bisect_left(values, joined)
            while i < len(values) and values[i].startswith(joined):
                for form in forms[values[i]]:
                    if len(form) > len(head) and form.startswith(head) \
                            and (accept is None or len(head) >= PREFIX_LEN and accept(form)):
                        return p
                i += 1
        return best


def render(buf: bytes, occurrences: list[tuple[int, int]], emitted: int, masked_until: int, limit: int,
           replacement: bytes, out: list[bytes], kept: list[tuple[int, int, int]] | None = None) -> tuple[int, int]:
    """Append to `out` the masked form of buf[emitted:...] and return the new (emitted, masked_until).

    Bytes before `limit` are final (no later occurrence can cover them) and bytes covered by an occurrence
    are final (masked whatever comes next); output stops at the first byte that is neither. A covered run
    that starts exactly where the previous replacement ended (`masked_until`) continues it: no second
    replacement, so adjacent secrets and a run split across writes give one replacement, like the whole.
    `kept`: (start, stop, offset in the output) of each run of `buf` passed on unchanged is appended to it.
    """
    c = emitted
    size = 0  # bytes appended so far (kept only)
    if occurrences:
        occurrences.sort()
        for a, b in occurrences:
            if b <= c:
                continue
            if a > c:
                if a > limit:
                    break
                out.append(buf[c:a])
                if kept is not None:
                    kept.append((c, a, size))
                    size += a - c
                c = a
            if c != masked_until:
                out.append(replacement)
                size += len(replacement)
            c = masked_until = b
    if c < limit:
        out.append(buf[c:limit])
        if kept is not None:
            kept.append((c, limit, size))
        c = limit
    return c, masked_until


class Masker:
    """A growing set of literal patterns; `snapshot` is always the latest complete, compiled set.

    `add()` publishes a new snapshot before it returns. Thread-safe.
    """

    def __init__(self, *, replacement: bytes = b"***", engine: str | None = None,
                 background: bool = True) -> None:
        if not replacement:
            raise ValueError("replacement: must not be empty (an empty replacement hides that masking happened)")
        self.replacement = replacement
        self.engine = engine or default_engine()
        self._background = background
        self._lock = threading.Lock()
        self._patterns: list[bytes] = []
        self._index: set[bytes] = set()
        # Every pattern, sorted, in two lists: a large one replaced rarely, and the recent additions (copied on
        # each add: copying all 500,000 patterns of 10,000 secrets would cost tens of milliseconds an add).
        self._sorted: list[bytes] = []
        self._recent: list[bytes] = []
        self._short: set[bytes] = set()
        self._prefixes: dict[bytes, None] = {}  # PREFIX_LEN-byte heads, kept as patterns come
        self._nl_heads = NewlineHeads()  # the patterns holding a line break (grow-only, like _short)
        # A parted first set's patterns not noted yet (_note): noted after their part started compiling, so that the
        # 20-50 ms of Python a part does not delay its compilation. No snapshot is published meanwhile (a batch).
        self._unnoted: list[bytes] | None = None
        self._maxlen = 0
        self._last_add = 0.0
        self._merge_thread: threading.Thread | None = None
        self._merge_failed = False
        self._merge_now = threading.Event()
        self._merged_event = threading.Event()
        self._merged_event.set()
        self._triggers: set[bytes] = set()
        self._line_only: set[bytes] = set()  # added as line starts only (add): masked where they begin a line
        self._unsorted: list[bytes] = []  # added inside a batch, not yet in _sorted
        self._batch = 0  # depth of batch() blocks: adds are compiled once, at the end
        self._ready = threading.Event()  # cleared while a batch's first compilation runs in the background
        self._ready.set()
        self._parts: KeyedParts | None = None  # a batch's first set, compiling part by part (add_forms)
        self._filler: threading.Thread | None = None  # a background fill (fill_in_background) while it runs
        self._fill_error: Exception | None = None
        self._part_from = 0  # patterns from here on are in no part yet
        self._folds = FoldSet()  # the foldable forms (add_forms), published with every snapshot
        self._breaks = BreakSet()  # the forms a line break may cut (add_forms): one, shared by every snapshot
        self.snapshot = MaskSnapshot((), 0, ([],), set(), replacement, 0)

    def __len__(self) -> int:
        return len(self._patterns)

    @property
    def patterns(self) -> list[bytes]:
        """A copy of every masked pattern, in the order added (triggers left out)."""
        triggers = self._triggers
        return [p for p in self._patterns if p not in triggers]

    @property
    def triggers(self) -> list[bytes]:
        """Every trigger (searched, not masked), in the order added."""
        triggers = self._triggers
        return [p for p in self._patterns if p in triggers]

    @property
    def line_starts(self) -> list[bytes]:
        """The patterns masked only where they begin a line (add's `line_starts`), in the order added."""
        line_only = self._line_only
        return [p for p in self._patterns if p in line_only]

    def add(self, patterns: Iterable[bytes], *, triggers: Iterable[bytes] = (), line_starts: Iterable[bytes] = ()
            ) -> int:
        """Add patterns (duplicates ignored); returns how many were new. The new set is live on return.

        `triggers` are searched like patterns but not masked: a hit makes the wrapped view look at the lines
        around it (see runnerlib.security.wrapped). A byte string both added as a pattern and as a trigger is
        masked. `line_starts`: patterns one character a line (one_character_a_line) masked only where they begin a
        line (the forms `fold -w1` prints: NewlineHeads); one also added as a pattern, now or at any other time, is
        masked wherever it is (a multi-line secret that looks the same), and so is one not of that shape.
        """
        self._wait_for_fill()
        with self._lock:
            # Comprehensions over distinct values (the 75,000 patterns of `runnerlib mask` at N=1,000 spent
            # 0.15 s in a per-pattern loop): patterns first, then the triggers that are not patterns.
            index = self._index
            masks = dict.fromkeys(patterns)
            line_starts = dict.fromkeys(line_starts)
            # Not one character a line: no line start (NewlineHeads reads those line by line), a pattern.
            masks.update(dict.fromkeys(p for p in line_starts if not one_character_a_line(p)))
            new = [bytes(p) for p in masks if p and p not in index]
            index.update(new)
            given = [bytes(p) for p in line_starts if p and p not in masks]
            lines = [p for p in given if p not in index]
            if lines:
                index.update(lines)
                self._line_only = self._line_only | set(lines)
                new.extend(lines)
            anywhere = masks.keys() & self._line_only if self._line_only else ()
            if anywhere:  # given as a pattern too: masked wherever it is
                self._line_only = self._line_only - anywhere
                self._nl_heads.demote(anywhere)
            fresh = [bytes(p) for p in dict.fromkeys(triggers) if p and p not in index]
            index.update(fresh)
            fresh_triggers = set(fresh)
            new.extend(fresh)
            if given and self._triggers:  # a trigger given as a line start is masked (anywhere, as it was noted)
                masks.update(dict.fromkeys(p for p in given if p in self._triggers))
            demoted = masks.keys() & self._triggers if self._triggers else ()
            if demoted:
                # Copy-on-write: a snapshot keeps the set it was published with (a trigger it searched as such).
                self._triggers = self._triggers - demoted
            # Grows only, like _short: a snapshot seeing a newer trigger never finds it (not in its layers).
            self._triggers |= fresh_triggers
            if not new:
                if demoted and self.snapshot.layers and not self._batch and self._unnoted is None:
                    # Nothing to compile, but a trigger is masked now: the same layers with the new trigger set.
                    self._publish(self.snapshot.layers)
                return 0
            self._last_add = time.monotonic()
            self._patterns.extend(new)
            if self._batch:
                self._unsorted.extend(new)  # sorted once, when the batch ends
            else:
                # Copy-on-write: a stream may be bisecting the old list right now.
                self._recent = _merge_sorted(self._recent, sorted(new))
                if len(self._recent) > RECENT_SORTED_MAX:
                    self._sorted, self._recent = sorted([*self._sorted, *self._recent]), []
            if self._unnoted is not None:
                self._unnoted.extend(new)  # a parted first set: noted once its part compiles (add_forms)
                return len(new)
            self._note(new)
            if self._batch:
                return len(new)  # compiled when the batch ends
            if not self.snapshot.layers:
                # The first set (a job's or `runnerlib mask`'s known secrets) is compiled with the main engine
                # at once: scanning starts at full speed, and no delta automaton is built to be thrown away.
                self._publish_base_now()
                return len(new)
            self._publish(self._layers_with(len(new)))
            self._schedule_merge()
            return len(new)

    def _note(self, new: list[bytes]) -> None:
        # Called with the lock held: what the hold-back needs of new patterns. Grows only, before the snapshot that
        # needs it is published. (Comprehensions: 75,000 patterns of `runnerlib mask` at N=1,000 took 0.11 s in a
        # plain loop.)
        self._maxlen = max(self._maxlen, *map(len, new))
        starts = wrapped.dump_starts()
        if any(trigger in new for trigger in starts):
            # Their beginnings are never held (see _live_start); `\n` among the short tails would hold every line
            # break that ends a write.
            new = [p for p in new if p not in starts]
        self._short.update([p[:j] for p in new for j in range(1, min(PREFIX_LEN, len(p)))])
        self._nl_heads.add(new, self._line_only)
        self._prefixes.update(dict.fromkeys([p[:PREFIX_LEN] for p in new if len(p) > PREFIX_LEN]))

    def _note_unnoted(self) -> None:
        # Called with the lock held, once the part holding them started compiling.
        if self._unnoted:
            self._note(self._unnoted)
            self._unnoted = []

    def add_forms(self, forms: Iterable[tuple[list[bytes], ...]], count: int,
                  folds: Iterable[bytes] = (), breaks: Iterable[bytes] = ()) -> int:
        """`add` for the (patterns, triggers[, line starts]) of `count` secrets, computed as they are consumed (the
        registry passes a generator of variants.secret_forms); returns how many patterns were new. `folds`: their plain
        forms that a tool may fold at a space (folded.foldable), looked for folded (security/folded.py);
        `breaks`: their plain single-line forms, looked for cut by line breaks (folded.BreakSet).

        The first set of a batch, when it is large, is compiled in parts (matcher.KeyedParts) while the forms of
        the rest are computed: `runnerlib mask` at N=1,000 waited 0.4 s of Python before the first key compiled.
        """
        forms = iter(forms)
        self._wait_for_fill()
        with self._lock:
            parted = (self._batch > 0 and self.engine == "hyperscan" and not self.snapshot.layers
                      and (self._parts is not None or not self._patterns))
            if not parted:
                # Before the forms: published with the first snapshot that holds their heads (or earlier: it
                # only holds a stream's tail a little longer meanwhile).
                self._add_views(folds, breaks)
        if not parted:
            return self._add_chunk(list(forms))
        probe = [f for _, f in zip(range(PART_PROBE), forms, strict=False)]
        per_secret = sum(len(f[0]) + len(f[1]) for f in probe) / max(1, len(probe))
        parts = min(MAX_PARTS, int(per_secret * count / PART_LITERALS))
        if parts < 2:
            with self._lock:
                self._add_views(folds, breaks)
            return self._add_chunk([*probe, *forms])
        size = -(-count // parts)  # secrets a part, rounded up
        rest = itertools.chain(probe, forms)
        added = 0
        # Added after the first part started compiling (the batch publishes nothing before it ends): the views'
        # 30 ms of Python no longer delay the first compilation.
        views: tuple[Iterable[bytes], Iterable[bytes]] | None = (folds, breaks)
        with self._lock:
            if self._unnoted is None:
                self._unnoted = []
        while True:
            chunk = list(itertools.islice(rest, size))
            added += self._add_chunk(chunk)
            if len(chunk) < size:
                break  # the last part: compiled with whatever else the batch adds, when it ends
            with self._lock:
                self._start_part()
                self._note_unnoted()
                if views is not None:
                    self._add_views(*views)
                    views = None
        if views is not None:  # no part was full
            with self._lock:
                self._add_views(*views)
        return added

    def _add_views(self, folds: Iterable[bytes], breaks: Iterable[bytes]) -> None:
        # Called with the lock held: the plain forms the folded and line-break views look for (add_forms).
        self._folds = self._folds.with_forms(list(folds))
        self._breaks.add(list(breaks))

    def _add_chunk(self, forms: list[tuple[list[bytes], ...]]) -> int:
        # Every pattern, then the triggers: a value that is both is masked (add). A third list: line starts.
        return self.add([p for f in forms for p in f[0]], triggers=[t for f in forms for t in f[1]],
                        line_starts=[p for f in forms if len(f) > 2 for p in f[2]])

    def _start_part(self) -> None:
        # Called with the lock held: the patterns added since the last part start compiling as one more.
        if self._part_from == len(self._patterns):
            return
        if self._parts is None:
            self._parts = KeyedParts()
        self._parts.add(self._patterns[self._part_from:])
        self._part_from = len(self._patterns)

    def current(self) -> MaskSnapshot:
        """The latest snapshot, once a background fill (if any) is compiled: nothing is scanned with a pattern
        set that is still being computed or compiled. Raises if the fill failed (see fill_in_background)."""
        if not self._ready.is_set():
            self._ready.wait()
        if self._fill_error is not None:
            # The type only: an exception raised while computing a secret's forms may quote its bytes.
            raise MaskingFailed(f"masking: registering the secrets failed ({type(self._fill_error).__name__}); "
                                "nothing is written unmasked")
        return self.snapshot

    def fill_in_background(self, fill: Callable[[], object]) -> None:
        """Run `fill` (adds, as one batch) and the compilation of what it adds in a thread; `current()` (every
        stream write and `mask()`) waits for them, and so does `add()` from any other thread.

        `runnerlib mask` computes its secrets' forms so while it waits for its input: an empty input never pays
        for them. If `fill` raises, `current()` raises too: no write goes out masked with part of the secrets.
        If only the main engine's compilation fails, the delta engine masks instead (correct, slower).
        """
        with self._lock:
            self._ready.clear()
            thread = threading.Thread(target=self._fill, args=(fill,), daemon=True, name="runnerlib-mask-compile")
            self._filler = thread
            thread.start()

    def _wait_for_fill(self) -> None:
        # Another thread's add waits for a background fill: it then lands after the fill's first set, as a delta.
        filler = self._filler
        if filler is not None and filler is not threading.current_thread():
            self._ready.wait()

    def _fill(self, fill: Callable[[], object]) -> None:
        try:
            with self._lock:
                self._batch += 1
            try:
                fill()
            except Exception as exc:  # noqa: BLE001 - current() raises in its place
                self._fill_error = exc
            finally:
                self._end_batch(fallback=True)
        except Exception as exc:  # noqa: BLE001 - even the fallback failed: current() raises
            self._fill_error = self._fill_error or exc
        finally:
            self._filler = None
            self._ready.set()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Add many patterns at start-up with one compilation: adds inside the block are compiled when it
        ends, all at once with the main engine (a large first set in parts as it comes: add_forms). Only for
        before any stream is written: inside the block the new patterns are not masked yet.
        """
        with self._lock:
            self._batch += 1
        try:
            yield
        finally:
            self._end_batch()

    def _end_batch(self, fallback: bool = False) -> None:
        """End a batch block; the outermost compiles what it added. `fallback`: if the main engine fails on a
        first set, use the delta engine (a background fill has no caller to raise to)."""
        with self._lock:
            self._batch -= 1
            if self._batch:
                return
            if self._parts is not None:
                self._start_part()  # the last part: what was added since the others
            if self._unnoted is not None:
                self._note_unnoted()  # before anything is published
                self._unnoted = None
            if self._unsorted:
                self._sorted = sorted([*self._sorted, *self._unsorted])
                self._unsorted = []
            added = len(self._patterns) - self.snapshot.count
            if not added:
                return
            if self.snapshot.layers:
                self._publish(self._layers_with(added))
                self._schedule_merge()
                return
            try:
                self._publish_base_now()
            except Exception as exc:
                if not fallback:
                    raise
                log.error("masking: compiling the patterns failed (%s: %s); masking stays correct but slower",
                          type(exc).__name__, exc)
                self._publish((self._build_layer(0, len(self._patterns), self._delta_engine()),))

    def wait_merged(self, timeout: float | None = None) -> bool:
        """Merge now and block until one base layer holds everything (benchmarks, tests); True if settled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._ready.wait(timeout):  # a background batch's first compilation
            return False
        while True:
            with self._lock:
                layers = self.snapshot.layers
                if self._merge_thread is None and (not layers or (len(layers) == 1 and layers[0].base)):
                    return True
                if self._merge_failed:
                    return False
                self._merge_now.set()
                if self._merge_thread is None:
                    self._schedule_merge(force=True)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._merged_event.wait(left)

    def mask(self, data: bytes) -> bytes:
        """Mask a whole buffer with the current patterns."""
        return self.current().mask(data)

    # -- internals -------------------------------------------------------------------------------------

    def _delta_engine(self) -> str:
        # ahocorasick-rs builds a few hundred patterns in about a millisecond (Hyperscan takes 1-20 ms for a
        # few dozen, more on a loaded machine): add() uses it, and the merge thread later recompiles the
        # deltas with the main engine (see _fold_deltas).
        return "reference" if self.engine == "reference" else "ahocorasick"

    def _layers_with(self, added: int) -> tuple[_Layer, ...]:
        # Called with the lock held: the current layers plus the `added` newest patterns, rebuilding as
        # little as possible: only the last delta, while it is small and built by the delta engine.
        n = len(self._patterns)
        layers = list(self.snapshot.layers)
        last = layers[-1] if layers and not layers[-1].base else None
        if last is not None and last.matcher.name == self._delta_engine() and n - last.start <= DELTA_LAYER_MAX:
            layers[-1] = self._build_layer(last.start, n, self._delta_engine())
            return tuple(layers)
        layers.append(self._build_layer(n - added, n, self._delta_engine()))
        deltas = [layer for layer in layers if not layer.base]
        if len(deltas) > MAX_DELTA_LAYERS:
            # Each layer costs a scan per write: fold the deltas into one until the background merge runs.
            first = deltas[0].start
            layers = [layer for layer in layers if layer.base]
            layers.append(self._build_layer(first, n, self._delta_engine()))
        return tuple(layers)

    def _build_layer(self, start: int, stop: int, engine: str, base: bool = False,
                     prefixes: list[bytes] | None = None, parts: KeyedParts | None = None) -> _Layer:
        patterns = self._patterns[start:stop]
        if prefixes is None:
            prefixes = list(dict.fromkeys(p[:PREFIX_LEN] for p in patterns if len(p) > PREFIX_LEN))
        quick = not base  # a delta is rebuilt on every add: build time matters more than scan speed
        # A base layer also finds the known-format prefixes (MaskSnapshot.find_with_known): one pass per write.
        extra = known_formats.PREFIXES if base else ()
        # The prefix filter first: built in this thread while the last parts (if any) compile.
        heads = build_head_matcher(prefixes, engine, quick_build=quick) if prefixes else None
        return _Layer(start, stop, build_matcher(patterns, engine, quick_build=quick, extra=extra,
                                                 extra_max=known_formats.DENSE_HITS, parts=parts), heads, base)

    def _take_parts(self) -> KeyedParts | None:
        # Called with the lock held: the parts of the first set (every pattern so far), for its compilation.
        parts, self._parts, self._part_from = self._parts, None, 0
        return parts

    def _publish_base_now(self) -> None:
        # Called with the lock held: everything as one main-engine layer, compiled in this thread.
        self._publish((self._build_layer(0, len(self._patterns), self.engine, base=True,
                                         prefixes=list(self._prefixes), parts=self._take_parts()),))

    def _publish(self, layers: tuple[_Layer, ...]) -> None:
        self.snapshot = MaskSnapshot(layers, self._maxlen, (self._sorted, self._recent), self._short, self.replacement,
                                     len(self._patterns), self._triggers, self._folds, self._breaks, self._nl_heads)

    def _schedule_merge(self, force: bool = False) -> None:
        # Called with the lock held.
        layers = self.snapshot.layers
        if self._merge_thread is not None or self._merge_failed or (len(layers) == 1 and layers[0].base):
            return
        if self.engine == "ahocorasick" and not force and layers[0].base:
            # ahocorasick-rs builds while holding the GIL, stalling every thread (adds included) for the
            # length of the build: merge a large base only once enough deltas piled up.
            pending = sum(layer.stop - layer.start for layer in layers[1:])
            if len(layers) - 1 < AC_MERGE_LAYERS and pending * 8 < layers[0].stop:
                return
        if not self._background:
            self._install_merged(self._build_layer(0, len(self._patterns), self.engine, base=True))
            return
        self._merged_event.clear()
        self._merge_thread = threading.Thread(target=self._merge, daemon=True, name="runnerlib-mask-merge")
        self._merge_thread.start()

    def _merge(self) -> None:
        while True:
            self._fold_deltas()
            with self._lock:
                layers = self.snapshot.layers
                if len(layers) == 1 and layers[0].base:  # the fold made everything one base: done
                    self._finish_merge()
                    return
            # Wait for a pause in additions: a burst of add() calls then never competes with a merge for
            # the GIL (parts of every engine's build hold it), and one merge covers the whole burst.
            while not self._merge_now.is_set():
                quiet = time.monotonic() - self._last_add
                if quiet >= MERGE_AFTER_QUIET:
                    break
                self._merge_now.wait(MERGE_AFTER_QUIET - quiet)
            with self._lock:
                stop = len(self._patterns)
                prefixes = list(self._prefixes)
            try:
                base = self._build_layer(0, stop, self.engine, base=True, prefixes=prefixes)
            except Exception as exc:  # noqa: BLE001 - the deltas keep masking correctly; say why it's slow
                # The engine's message names a pattern id at most, never its bytes.
                log.error("masking: merging the pattern layers failed (%s: %s); masking stays correct but "
                          "slower", type(exc).__name__, exc)
                with self._lock:
                    self._merge_failed = True
                    self._finish_merge()
                return
            with self._lock:
                self._install_merged(base)
                if len(self.snapshot.layers) == 1:
                    self._finish_merge()
                    return

    def _fold_deltas(self) -> None:
        """Recompile the recent deltas as one layer of the main engine, in this background thread.

        Rebuilding a base of 70,000 patterns takes seconds; a few hundred recent ones take milliseconds, and
        then scan at the main engine's speed instead of ahocorasick-rs's until the full merge is done.
        """
        with self._lock:
            layers = self.snapshot.layers
            deltas = [layer for layer in layers if not layer.base]
            if self.engine != "hyperscan" or not layers or not deltas:
                return
            has_base = layers[0].base
            first, stop = deltas[0].start, len(self._patterns)
            if has_base and (stop - first > FOLD_MAX or (len(deltas) == 1 and deltas[0].matcher.name == self.engine)):
                return
        if not has_base:
            self._first_base()
            return
        try:
            folded = self._build_layer(first, stop, self.engine)  # outside the lock: adds go on
        except Exception:  # noqa: BLE001 - the full merge reports failures; the deltas stay correct
            return
        with self._lock:
            layers = self.snapshot.layers
            n = len(self._patterns)
            keep = [layer for layer in layers if layer.base]
            if not keep or keep[0].stop != first:
                return  # a merge installed something else meanwhile
            new = [keep[0], folded]
            if stop < n:
                new.append(self._build_layer(stop, n, self._delta_engine()))
            self._publish(tuple(new))

    def _first_base(self) -> None:
        """Make a job's first few patterns the base at once, not after the quiet period.

        They compile in milliseconds; until then ahocorasick-rs scans every write, and patterns whose first
        bytes are common in the output slow it to ~450 MB/s (one random socket token in five, on a log of
        "xxx" lines: measured in bench_executor's 1 GiB step).
        """
        with self._lock:
            stop = len(self._patterns)
            if stop > FOLD_MAX:
                return
            prefixes = list(self._prefixes)
        try:
            base = self._build_layer(0, stop, self.engine, base=True, prefixes=prefixes)  # adds go on
        except Exception:  # noqa: BLE001 - the full merge reports failures; the deltas stay correct
            return
        with self._lock:
            if not self.snapshot.layers[0].base:  # nothing installed a base meanwhile
                self._install_merged(base)

    def _finish_merge(self) -> None:
        # Called with the lock held.
        self._merge_thread = None
        self._merge_now.clear()
        self._merged_event.set()

    def _install_merged(self, base: _Layer) -> None:
        # Called with the lock held: the base replaces every layer it covers; later patterns get one delta.
        # Its prefix filter may know heads of patterns added during the build: extra candidates, all of them
        # real patterns of this snapshot, only cost a check.
        layers = [base]
        n = len(self._patterns)
        if base.stop < n:
            layers.append(self._build_layer(base.stop, n, self._delta_engine()))
        self._publish(tuple(layers))


def _merge_sorted(old: list[bytes], new_sorted: Sequence[bytes]) -> list[bytes]:
    if len(new_sorted) < 64:
        out = list(old)
        for p in new_sorted:
            bisect.insort(out, p)
        return out
    return sorted([*old, *new_sorted])


def reference_mask(data: bytes, patterns: Iterable[bytes], replacement: bytes = b"***",
                   line_starts: Collection[bytes] = ()) -> bytes:
    """The obviously-correct masker tests compare against: mark covered bytes, collapse each run. A pattern of
    `line_starts` (Masker.line_starts) covers only where it begins a line, as the masker's do.

    >>> reference_mask(b"x abab1234 y", [b"abab", b"ab1234"])
    b'x *** y'
    """
    covered = bytearray(len(data))
    for p in patterns:
        if not p:
            continue
        anchored = p in line_starts  # counts where it begins a line (NewlineHeads)
        i = data.find(p)
        while i >= 0:
            if not anchored or i == 0 or data[i - 1] == 0x0A:
                covered[i:i + len(p)] = b"\1" * len(p)
            i = data.find(p, i + 1)
    out = bytearray()
    i = 0
    while i < len(data):
        start = covered.find(1, i)  # next covered byte
        if start < 0:
            out += data[i:]
            break
        out += data[i:start]
        out += replacement
        end = covered.find(0, start)  # end of the covered run
        i = len(data) if end < 0 else end
    return bytes(out)
