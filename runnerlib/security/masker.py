"""Union-of-occurrences masking over a multi-pattern engine, with a small delta for recent additions.

The invariant, stated once: every byte covered by ANY occurrence of ANY pattern is replaced; a run of
covered bytes (overlapping or adjacent occurrences) becomes ONE replacement; every other byte is kept, in
order. Leftmost-longest matching or a loop of replaces both leave part of overlapping secrets in the clear
(secrets `AAAABB` and `BBBBBB` in `AAAABBBBBB`: replacing `AAAABB` first leaves `BBBB` of the second, replacing
`BBBBBB` first leaves `AAAA` of the first); only the union is safe, so engines here report every occurrence,
overlapping ones included.

Adding a secret must not rebuild the automaton of 10,000 others. Patterns live in layers: a large "base"
compiled with the fast engine in a background thread, and small ahocorasick-rs layers for what was added
since (built in milliseconds). A scan asks every layer; when the background merge finishes, the layers fold
back into one base. A `MaskSnapshot` is immutable, so a stream scanning it never sees a half-built set.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from runnerlib.security.matcher import Matcher, build_matcher, default_engine

log = logging.getLogger("runnerlib.secrets")

# Live partial matches are found with a filter on the first PREFIX_LEN bytes of each pattern (an engine scan
# of the last few hundred bytes), then checked exactly; shorter partials are looked up in a set.
PREFIX_LEN = 4
# Recent patterns stay in one ahocorasick-rs layer rebuilt on each add while it is this small (a few ms);
# past it the layer is frozen and a new one started, so an add never pays for more than this many patterns.
DELTA_LAYER_MAX = 512
# With the ahocorasick-rs engine (its build holds the GIL), a large base is merged only once this many
# delta layers exist, or the deltas hold an eighth of the base's patterns.
AC_MERGE_LAYERS = 4


@dataclass(frozen=True)
class _Layer:
    start: int  # index range [start, stop) in the masker's pattern list
    stop: int
    matcher: Matcher
    prefixes: Matcher | None  # first PREFIX_LEN bytes of each pattern longer than that
    base: bool  # compiled with the main engine (the others are deltas waiting for a merge)


class MaskSnapshot:
    """An immutable compiled pattern set: find occurrences, find live partial matches, mask a buffer."""

    __slots__ = ("layers", "maxlen", "_sorted", "_short", "replacement", "count")

    def __init__(self, layers: tuple[_Layer, ...], maxlen: int, sorted_patterns: list[bytes],
                 short_prefixes: set[bytes], replacement: bytes, count: int) -> None:
        self.layers = layers
        self.maxlen = maxlen
        self._sorted = sorted_patterns
        self._short = short_prefixes
        self.replacement = replacement
        self.count = count  # number of patterns

    def find(self, data: bytes) -> list[tuple[int, int]]:
        """(start, end) of every occurrence of every pattern, in no particular order."""
        layers = self.layers
        if len(layers) == 1:
            return layers[0].matcher.find(data)
        out: list[tuple[int, int]] = []
        for layer in layers:
            out.extend(layer.matcher.find(data))
        return out

    def live_start(self, buf: bytes) -> int:
        """The smallest p such that buf[p:] is a proper prefix of some pattern (len(buf) if none).

        Bytes before p can never be covered by an occurrence that ends later; bytes from p on might be.
        """
        end = len(buf)
        lo = end - self.maxlen + 1
        if lo < 0:
            lo = 0
        if lo >= end:
            return end
        window = buf[lo:]
        candidates: list[int] = []
        for layer in self.layers:
            if layer.prefixes is not None:
                candidates.extend(s for s, _ in layer.prefixes.find(window))
        if candidates:
            patterns = self._sorted
            for p in sorted(set(candidates)):
                frag = window[p:]
                i = bisect.bisect_left(patterns, frag)
                # Patterns are distinct and sorted: if frag itself is a pattern, a longer one follows it.
                while i < len(patterns) and patterns[i].startswith(frag):
                    if len(patterns[i]) > len(frag):
                        return lo + p
                    i += 1
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


def render(buf: bytes, occurrences: list[tuple[int, int]], emitted: int, masked_until: int, limit: int,
           replacement: bytes, out: list[bytes]) -> tuple[int, int]:
    """Append to `out` the masked form of buf[emitted:...] and return the new (emitted, masked_until).

    Bytes before `limit` are final (no later occurrence can cover them) and bytes covered by an occurrence
    are final (masked whatever comes next); output stops at the first byte that is neither. A covered run
    that starts exactly where the previous replacement ended (`masked_until`) continues it: no second
    replacement, so adjacent secrets and a run split across writes give one replacement, like the whole.
    """
    c = emitted
    if occurrences:
        occurrences.sort()
        for a, b in occurrences:
            if b <= c:
                continue
            if a > c:
                if a > limit:
                    break
                out.append(buf[c:a])
                c = a
            if c != masked_until:
                out.append(replacement)
            c = masked_until = b
    if c < limit:
        out.append(buf[c:limit])
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
        # The reference engine stays pure (tests); otherwise deltas use the engine that builds fastest.
        self._delta_engine = "reference" if self.engine == "reference" else "ahocorasick"
        self._background = background
        self._lock = threading.Lock()
        self._patterns: list[bytes] = []
        self._index: set[bytes] = set()
        self._sorted: list[bytes] = []
        self._short: set[bytes] = set()
        self._maxlen = 0
        self._merge_thread: threading.Thread | None = None
        self._merge_failed = False
        self._merged_event = threading.Event()
        self._merged_event.set()
        self.snapshot = MaskSnapshot((), 0, [], set(), replacement, 0)

    def __len__(self) -> int:
        return len(self._patterns)

    @property
    def patterns(self) -> list[bytes]:
        """A copy of every pattern, in the order added."""
        return list(self._patterns)

    def add(self, patterns: Iterable[bytes]) -> int:
        """Add patterns (duplicates ignored); returns how many were new. The new set is live on return."""
        with self._lock:
            new = []
            for p in patterns:
                if p and p not in self._index:
                    self._index.add(p)
                    new.append(bytes(p))
            if not new:
                return 0
            self._patterns.extend(new)
            merged = sorted(new)
            # Copy-on-write: a stream may be bisecting the old list right now.
            self._sorted = _merge_sorted(self._sorted, merged)
            for p in new:
                for j in range(1, min(PREFIX_LEN, len(p))):
                    self._short.add(p[:j])  # grows only, before the snapshot that needs it is published
                self._maxlen = max(self._maxlen, len(p))
            n = len(self._patterns)
            layers = list(self.snapshot.layers)
            last = layers[-1] if layers else None
            if last is not None and not last.base and last.stop - last.start + len(new) <= DELTA_LAYER_MAX:
                layers[-1] = self._build_layer(last.start, n, self._delta_engine)
            else:
                layers.append(self._build_layer(n - len(new), n, self._delta_engine))
            self._publish(tuple(layers))
            self._schedule_merge()
            return len(new)

    def wait_merged(self, timeout: float | None = None) -> bool:
        """Block until no background merge is pending (for benchmarks and tests); True if settled."""
        while True:
            if not self._merged_event.wait(timeout):
                return False
            with self._lock:
                layers = self.snapshot.layers
                if self._merge_thread is None and (not layers or (len(layers) == 1 and layers[0].base)):
                    return True
                if self._merge_failed:
                    return False
                if self._merge_thread is None:
                    self._schedule_merge(force=True)

    def mask(self, data: bytes) -> bytes:
        """Mask a whole buffer with the current patterns."""
        return self.snapshot.mask(data)

    # -- internals -------------------------------------------------------------------------------------

    def _build_layer(self, start: int, stop: int, engine: str, base: bool = False) -> _Layer:
        patterns = self._patterns[start:stop]
        prefixes = sorted({p[:PREFIX_LEN] for p in patterns if len(p) > PREFIX_LEN})
        quick = not base  # a delta is rebuilt on every add: build time matters more than scan speed
        return _Layer(start, stop, build_matcher(patterns, engine, quick_build=quick),
                      build_matcher(prefixes, engine, quick_build=quick) if prefixes else None, base)

    def _publish(self, layers: tuple[_Layer, ...]) -> None:
        self.snapshot = MaskSnapshot(layers, self._maxlen, self._sorted, self._short, self.replacement,
                                     len(self._patterns))

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
        stop = len(self._patterns)
        if not self._background:
            self._install_merged(self._build_layer(0, stop, self.engine, base=True))
            return
        self._merged_event.clear()
        self._merge_thread = threading.Thread(target=self._merge, args=(stop,), daemon=True,
                                              name="runnerlib-mask-merge")
        self._merge_thread.start()

    def _merge(self, stop: int) -> None:
        try:
            base = self._build_layer(0, stop, self.engine, base=True)  # hyperscan compiles without the GIL
        except Exception as exc:  # noqa: BLE001 - the delta layers keep masking correctly; say why it's slow
            # The engine's message names a pattern id at most, never its bytes.
            log.error("masking: merging the pattern layers failed (%s: %s); masking stays correct but slower",
                      type(exc).__name__, exc)
            with self._lock:
                self._merge_failed = True
                self._merge_thread = None
                self._merged_event.set()
            return
        with self._lock:
            self._install_merged(base)
            self._merge_thread = None
            self._merged_event.set()
            self._schedule_merge()

    def _install_merged(self, base: _Layer) -> None:
        # Called with the lock held: the base replaces every layer it covers; later patterns get one delta.
        layers = [base]
        if base.stop < len(self._patterns):
            layers.append(self._build_layer(base.stop, len(self._patterns), self._delta_engine))
        self._publish(tuple(layers))


def _merge_sorted(old: list[bytes], new_sorted: Sequence[bytes]) -> list[bytes]:
    if len(new_sorted) < 64:
        out = list(old)
        for p in new_sorted:
            bisect.insort(out, p)
        return out
    return sorted([*old, *new_sorted])


def reference_mask(data: bytes, patterns: Iterable[bytes], replacement: bytes = b"***") -> bytes:
    """The obviously-correct masker tests compare against: mark covered bytes, collapse each run.

    >>> reference_mask(b"x abab1234 y", [b"abab", b"ab1234"])
    b'x *** y'
    """
    covered = bytearray(len(data))
    for p in patterns:
        if not p:
            continue
        i = data.find(p)
        while i >= 0:
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
