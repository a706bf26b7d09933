"""Multi-pattern literal engines behind one interface: every occurrence, overlapping, of every pattern.

Three engines, same answer (a differential test keeps them identical):
- `HyperscanMatcher`: Intel Hyperscan / Vectorscan. The only engine measured near 1 GB/s at thousands of
  patterns; used whenever the `hyperscan` module imports (no wheel on every platform).
- `AhoCorasickMatcher`: ahocorasick-rs, bytes API, overlapping search. Wheels everywhere and it builds an
  automaton in milliseconds, so it is also the engine of the small "delta" of recently added secrets.
- `ReferenceMatcher`: `bytes.find` at every position. Obviously correct; tests and fuzzers compare against it.

Only the set of (start, end) occurrences matters to the masker, so engines may report them in any order.

>>> sorted(build_matcher([b"abab", b"ab1234"], engine="reference").find(b"ababab1234"))
[(0, 4), (2, 6), (4, 10)]
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import ahocorasick_rs

_hyperscan: Any
try:  # Hyperscan has no wheel on some platforms (e.g. Linux aarch64 on the index used here).
    import hyperscan as _hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    _hyperscan = None

log = logging.getLogger("runnerlib.secrets")

ENGINE_ENV = "RUNNERLIB_MASK_ENGINE"
# Hyperscan refuses literals of 16 KiB and more ("Pattern length exceeds limit"); longer ones (a whole
# certificate bundle registered as one secret) go to the ahocorasick-rs side matcher with the NUL ones.
HS_MAX_LITERAL = 16000
# Up to these sizes ahocorasick-rs builds a DFA (about 300 bytes of table per pattern byte; ~50 ms for
# 32 KiB of patterns, but seconds for a few very long patterns).
AC_DFA_MAX_BYTES = 48 * 1024
AC_DFA_MAX_PATTERN = 512


class Matcher(Protocol):
    """A compiled, immutable set of literal byte patterns."""

    name: str

    @property
    def patterns(self) -> Sequence[bytes]: ...

    def find(self, data: bytes) -> list[tuple[int, int]]:
        """(start, end) of every occurrence of every pattern in `data`, overlapping ones included."""
        ...


class ReferenceMatcher:
    """Brute force: `bytes.find` for each pattern at each position. O(len(data) x patterns), for tests."""

    name = "reference"

    def __init__(self, patterns: Sequence[bytes]) -> None:
        self.patterns = list(patterns)

    def find(self, data: bytes) -> list[tuple[int, int]]:
        data = bytes(data)
        out = []
        for pattern in self.patterns:
            i = data.find(pattern)
            while i >= 0:
                out.append((i, i + len(pattern)))
                i = data.find(pattern, i + 1)
        return out


class AhoCorasickMatcher:
    """ahocorasick-rs over bytes with overlapping matches (its str API is 3-45x slower: never used)."""

    name = "ahocorasick"

    def __init__(self, patterns: Sequence[bytes], *, quick_build: bool = False) -> None:
        self.patterns = list(patterns)
        self._ac = None
        if self.patterns:
            # ahocorasick-rs picks a DFA for few patterns whatever their length: 20 forms of a 19 KB
            # certificate took 22 s to build. The DFA scans 2-3x faster than the contiguous NFA, so it is used
            # for small sets of short patterns, unless the caller needs the build to be quick (a delta layer
            # is rebuilt on every add: the NFA builds in about a millisecond).
            small = (not quick_build and sum(map(len, self.patterns)) <= AC_DFA_MAX_BYTES
                     and max(map(len, self.patterns)) <= AC_DFA_MAX_PATTERN)
            impl = ahocorasick_rs.Implementation.DFA if small else ahocorasick_rs.Implementation.ContiguousNFA
            self._ac = ahocorasick_rs.BytesAhoCorasick(self.patterns, implementation=impl)

    def find(self, data: bytes) -> list[tuple[int, int]]:
        if self._ac is None:
            return []
        return [(s, e) for _, s, e in self._ac.find_matches_as_indexes(data, overlapping=True)]


# Hyperscan's compile time grows faster than linearly with the number of literals (measured here: 10,000 in
# 0.16 s, 40,000 in 1.0 s, 80,000 in 2.4 s of CPU), and a secret's forms share heads: its base64 with and without
# padding, its JSON, shell and percent forms up to the first escaped character, the trigger fragments that start
# a form. So the database holds KEYS, prefixes of the patterns, each standing for a few patterns that a hit
# confirms with bytes.startswith (see literal_keys). Keys are at least KEY_MIN bytes (a shorter pattern is its
# own key) and a key stands for at most KEY_GROUP_MAX patterns, so a hit costs at most that many comparisons
# whatever the output holds: a key shared by many patterns (a public prefix such as `postgres://app:`) is
# lengthened until the groups are small again, and then holds secret bytes. Groups of up to 8 rather than 4: the
# 90,000 literals of `runnerlib mask` at N=1,000 make 62,600 keys rather than 68,200, and the start-up compiles
# in 0.96x the time (10 rounds each, medians); a hit on a key then costs at most 8 comparisons.
KEY_MIN = 8
KEY_GROUP_MAX = 8


def literal_keys(patterns: Sequence[bytes], key_min: int = KEY_MIN, group_max: int = KEY_GROUP_MAX
                 ) -> dict[bytes, list[int]]:
    """Keys for `patterns` (distinct): key -> indices of the patterns it is a prefix of, at most `group_max`.

    Every pattern is under exactly one key, a prefix of it: `key_min` bytes, or the whole pattern if shorter,
    or longer when more than `group_max` patterns share that prefix (doubled until they no longer do).

    >>> literal_keys([b"abcdefghij", b"abcdefghXY", b"abc"], key_min=8)
    {b'abcdefgh': [0, 1], b'abc': [2]}
    """
    keys: dict[bytes, list[int]] = {}
    work = [(key_min, list(range(len(patterns))))]
    while work:
        k, indices = work.pop()
        buckets: dict[bytes, list[int]] = {}
        for i in indices:
            buckets.setdefault(patterns[i][:k], []).append(i)
        for key, members in buckets.items():
            if len(members) <= group_max:
                keys[key] = members
                continue
            # Distinct patterns with the same k-byte head: at most one of them is the head itself.
            longer = [i for i in members if len(patterns[i]) > k]
            if len(longer) < len(members):
                keys[key] = [i for i in members if len(patterns[i]) <= k]
            work.append((2 * k, longer))
    return keys


def _members(keys: dict[bytes, list[int]], plain: list[bytes]) -> list[tuple[bytes, ...] | None]:
    """What each key of `literal_keys(plain)` stands for: None where it is its one pattern whole (no check at a
    hit), else the patterns a hit confirms with bytes.startswith."""
    return [None if len(m) == 1 and len(plain[m[0]]) == len(k) else tuple(plain[i] for i in m) for k, m in keys.items()]


class _Tables:
    """One compiled form of a pattern set: its databases and what a key id stands for."""

    __slots__ = ("dbs", "key_len", "members", "masked")

    def __init__(self, dbs: tuple[Any, ...], key_len: list[int], members: list[tuple[bytes, ...] | None],
                 masked: int | None = None) -> None:
        self.dbs = dbs
        self.key_len = key_len
        self.members = members  # None: the key is the one pattern it stands for (no check needed)
        # Ids from `masked` on are extra literals (HyperscanMatcher's `extra`), reported apart.
        self.masked = len(key_len) if masked is None else masked


class HyperscanMatcher:
    """Hyperscan block mode over pure literals (hs_compile_lit_multi).

    Every match is reported by its end offset; a literal has a fixed length, so the start is `end - len(key)`
    and HS_FLAG_SOM_LEFTMOST (which slows compiling and scanning) is not needed.
    A large set (over SPLIT_MIN_KEYS) is first compiled fast: as keys (prefixes standing for up to
    KEY_GROUP_MAX patterns, confirmed with bytes.startswith; see literal_keys) in two databases compiled at the
    same time; the database of every pattern as it is, which scans 10-20% faster than keys of 8 bytes, is
    compiled next in the background and swapped in (`whole` is set then). `keyed=True` forces keys (tests).
    python-hyperscan passes literals as C strings, so a pattern containing a NUL byte would be cut at the NUL
    (and then match far too much); those few patterns, and literals too long for Hyperscan, go to an
    ahocorasick-rs side matcher instead.
    Scratch space is per thread: Hyperscan forbids sharing one scratch between concurrent scans.
    `extra`: literals compiled into the same database with ids of their own and reported apart by `scan` (the
    known-format prefixes: one pass over a write finds both; see runnerlib.security.known_formats). Only a set
    compiled whole (not split, not keyed) takes them; past `extra_max` extra hits in one buffer `scan` gives up
    on them (None) and scans again without them, so output made of those literals costs no Python per hit.
    """

    name = "hyperscan"

    def __init__(self, patterns: Sequence[bytes], *, keyed: bool | None = None, extra: Sequence[bytes] = (),
                 extra_max: int = 64, parts: KeyedParts | None = None) -> None:
        if _hyperscan is None:
            raise RuntimeError("the hyperscan module is not installed; use engine='ahocorasick'")
        self.patterns = list(patterns)
        self._local = threading.local()
        self.extra: list[bytes] = []
        self.whole = threading.Event()  # set once no database is still to be swapped in
        self._whole_now = threading.Event()  # start compiling the whole database without the delay (hurry)
        self._extra_max = extra_max
        self._plain: _Tables | None = None  # compiled without the extras at the first dense buffer
        if parts is not None:
            # Compiled part by part while the patterns were produced (KeyedParts): wait for the last parts.
            self._tables, plain, side = parts.finish()
            self._set_side(side)
            self._start_whole(plain, True)  # keys: the whole database scans faster
            return
        plain, side = _plain_and_side(self.patterns)
        self._set_side(side)
        split = len(plain) > SPLIT_MIN_KEYS and _cpu_count() > 1
        if split:
            _steady_heap()
        if keyed or (keyed is None and split):
            keys = literal_keys(plain, KEY_MIN, KEY_GROUP_MAX)  # read here: tests shrink them
            key_list = list(keys)
            members: list[tuple[bytes, ...] | None] = []

            def tables() -> None:  # Python work done while the databases compile
                members.extend(_members(keys, plain))

            if split:
                dbs: tuple[Any, ...] = _compile_split(key_list, tables)
            else:
                dbs = (_compile(key_list, range(len(key_list))),) if key_list else ()
                tables()
            self._tables = _Tables(dbs, [len(k) for k in key_list], members)
            self._start_whole(plain, split)  # nothing will replace keys that are not split
        else:
            self.extra = [bytes(e) for e in extra if e and b"\0" not in e]
            self._tables = _whole_tables(plain, self.extra)
            self.whole.set()

    def _set_side(self, side: list[bytes]) -> None:
        self._side = AhoCorasickMatcher(side)
        self._side_always = any(b"\0" not in p for p in side)  # a literal too long for Hyperscan

    def _side_find(self, data: bytes) -> list[tuple[int, int]]:
        # The side matcher's NUL patterns (UTF-16 forms) can only occur where the output holds a NUL (a memchr).
        if self._side.patterns and (self._side_always or b"\0" in data):
            return self._side.find(data)
        return []

    def _start_whole(self, plain: list[bytes], later: bool) -> None:
        """Compile the whole database of `plain` in the background if `later`, else say that none will come."""
        if later:
            threading.Thread(target=_compile_whole, args=(weakref.ref(self), plain), daemon=True,
                             name="runnerlib-mask-hs-whole").start()
        else:
            self.whole.set()

    def hurry(self) -> None:
        """Start compiling the whole database now rather than after WHOLE_DELAY (benchmarks, wait_merged)."""
        self._whole_now.set()

    def find(self, data: bytes) -> list[tuple[int, int]]:
        return self.scan(data)[0]

    def scan(self, data: bytes, beside: Callable[[bytes | memoryview], list[tuple[int, int]] | None] | None = None,
             beside_span: int = 0) -> tuple[list[tuple[int, int]], list[tuple[int, int]] | None]:
        """`find(data)`, and the (start, index in `extra`) of every extra literal in `data` from the same
        pass; None instead when there are no extras or more than `extra_max` hits of them.

        `beside`: for a set without extras, a scan whose answer is returned in their place when it can run
        beside a parallel scan (the known-format prefilter, in the time the two threads would otherwise wait):
        (start, index) of literals of at most `beside_span` bytes, or None; None too when it did not run. Each
        thread scans half of `data` with it (plus the span), after its databases: one pass on each side."""
        out = self._side_find(data)
        tables = self._tables  # read once: _compile_whole may swap in the whole database meanwhile
        if not tables.dbs or not data:
            return out, ([] if self.extra else None)
        if not isinstance(data, bytes):
            data = bytes(data)
        extra: list[tuple[int, int]] | None = [] if tables.masked < len(tables.key_len) else None
        if extra is None and len(tables.dbs) >= 2 and len(data) >= PARALLEL_SCAN_MIN:
            # A large set's keyed databases (no extras there): python-hyperscan releases the GIL while it scans,
            # so the second half of them runs in a helper thread meanwhile.
            scratches, other = self._scratches(tables), []  # type: list[Any], list[tuple[int, int]]
            h = len(tables.dbs) // 2
            first, second = (_Tables(dbs, tables.key_len, tables.members) for dbs in (tables.dbs[:h], tables.dbs[h:]))
            aside: list[list[tuple[int, int]] | None] = [None, None]
            mid = len(data) // 2 if beside is not None and beside_span > 0 else 0
            view = memoryview(data)
            helper_beside = beside
            if mid and beside is not None:
                # The helper's half reaches span - 1 bytes past the middle: a literal starting before it is whole.
                helper_beside = functools.partial(_on_part, beside, view[:mid + beside_span - 1])

            def mine() -> None:
                _scan_tables(first, scratches[:h], data, out, None, 0)
                if mid and beside is not None:
                    aside[1] = beside(view[mid:])

            _scan_helper().run_with(_scan_beside, (second, scratches[h:], data, other, helper_beside, aside), mine)
            out.extend(other)
            if not mid:
                return out, aside[0]
            head, tail = aside
            if head is None or tail is None:
                return out, None
            return out, [*(hit for hit in head if hit[0] < mid), *((p + mid, i) for p, i in tail)]
        try:
            _scan_tables(tables, self._scratches(tables), data, out, extra, self._extra_max)
        except _hyperscan.ScanTerminated:
            # Dense extras (output made of `ghp_`...): the same scan without them, and no extra hits.
            del out[:]
            out.extend(self._side_find(data))
            plain = self._plain
            if plain is None:
                # Compiled once, in the scanning thread: a small set (extras are only in a whole compilation).
                plain = self._plain = _whole_tables([p for p in self.patterns
                                                     if b"\0" not in p and len(p) <= HS_MAX_LITERAL])
            _scan_tables(plain, self._scratches(plain), data, out, None, 0)
            return out, None
        return out, extra

    def _scratches(self, tables: _Tables) -> list[Any]:
        """This thread's scratches for `tables` (the tables in use, or the plain ones of a dense buffer)."""
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        entry = cache.get(id(tables))
        if entry is None or entry[0] is not tables:
            if len(cache) > 2:  # the tables in use were swapped (_compile_whole): drop the old scratches
                cache.clear()
            entry = cache[id(tables)] = (tables, [_hyperscan.Scratch(db) for db in tables.dbs])
        return entry[1]


# Writes at least this large scan two databases (a large set's keyed halves) in two threads at once: the hand-off
# costs tens of microseconds, a scan of 1 MiB with two databases about 2 ms (the reads of `runnerlib mask`).
PARALLEL_SCAN_MIN = 256 << 10
_helper: _ScanHelper | None = None
_helper_lock = threading.Lock()


class _ScanHelper:
    """One daemon thread running the scans handed to it, shared by every matcher. (Not a ThreadPoolExecutor:
    its worker is not a daemon, and `runnerlib`'s quick exit joins every thread that is not one.)"""

    def __init__(self) -> None:
        import queue  # only for large keyed sets

        self._jobs: Any = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True, name="runnerlib-mask-scan").start()

    def _run(self) -> None:
        while True:
            fn, args, result = self._jobs.get()
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
                result.append(exc)
            result.append(None)
            result[0].set()

    def run_with(self, fn: Callable[..., object], args: tuple[Any, ...], meanwhile: Callable[[], object]) -> None:
        """Run fn(*args) in the helper thread and meanwhile() in this one; raise what either raised."""
        result: list[Any] = [threading.Event()]
        self._jobs.put((fn, args, result))
        meanwhile()
        result[0].wait()
        if result[1] is not None:
            raise result[1]


def _scan_helper() -> _ScanHelper:
    global _helper
    if _helper is None:
        with _helper_lock:
            if _helper is None:
                _helper = _ScanHelper()
    return _helper


def _scan_tables(tables: _Tables, scratches: list[Any], data: bytes, out: list[tuple[int, int]],
                 extra: list[tuple[int, int]] | None, extra_max: int) -> None:
    """Scan `data` with every database of `tables`: occurrences to `out`, extra literals to `extra` (a hit
    past `extra_max` of them ends the scan: ScanTerminated)."""
    key_len, members, masked = tables.key_len, tables.members, tables.masked
    append = out.append

    def on_match(kid: int, _start: int, end: int, _flags: int, _ctx: object) -> bool:
        if kid >= masked:
            extra.append((end - key_len[kid], kid - masked))  # type: ignore[union-attr]
            return len(extra) > extra_max  # type: ignore[arg-type]
        group = members[kid]
        start = end - key_len[kid]
        if group is None:
            append((start, end))
            return False
        for p in group:
            if data.startswith(p, start):
                append((start, start + len(p)))
        return False

    for db, scratch in zip(tables.dbs, scratches, strict=True):
        db.scan(data, match_event_handler=on_match, scratch=scratch)


def _plain_and_side(patterns: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """The patterns Hyperscan can take, and the others (a NUL byte, or too long) for an ahocorasick-rs side
    matcher."""
    # Two C-speed tests for the usual set (no NUL, nothing too long) rather than two passes of Python.
    if b"\0" not in b"\n".join(patterns) and max(map(len, patterns), default=0) <= HS_MAX_LITERAL:
        return patterns, []
    return ([p for p in patterns if b"\0" not in p and len(p) <= HS_MAX_LITERAL],
            [p for p in patterns if b"\0" in p or len(p) > HS_MAX_LITERAL])


def _on_part(scan: Callable[[bytes | memoryview], list[tuple[int, int]] | None], part: memoryview,
             _data: bytes | memoryview) -> list[tuple[int, int]] | None:
    """`scan(part)` in place of `scan(data)` (a parallel scan's half of `beside`)."""
    return scan(part)


def _scan_beside(tables: _Tables, scratches: list[Any], data: bytes, out: list[tuple[int, int]],
                 beside: Callable[[bytes | memoryview], list[tuple[int, int]] | None] | None,
                 aside: list[list[tuple[int, int]] | None]) -> None:
    """The helper thread's share of a parallel scan: its databases, then `beside(data)` into aside[0]."""
    _scan_tables(tables, scratches, data, out, None, 0)
    if beside is not None:
        aside[0] = beside(data)


_SEPARATORS = (b" ", b"\n")


def _whole_tables(plain: list[bytes], extra: Sequence[bytes] = ()) -> _Tables:
    """Every pattern as it is in one database (`extra` after them, with ids of their own), but a pattern ending in a
    space or a line break and one byte after another byte (`a b c`, `a\\nb\\nc`), compiled without its last byte
    and confirmed at a hit.

    Such literals slow Hyperscan's literal filter (FDR) on text with spaces: the 1,000 spaced-out forms of
    `sed 's/./& /g'` (rearranged_forms) cost 7-12% of a scan at N=1,000 as they are, and nothing measurable without
    their last byte (`a b ` ends in a space; a run of spaces at the end was slow too: wrapped.od_c_fragments). The
    forms one character a line are the same on text with lines: 16% of the N=1,000 stream as they are, about 3%
    without their last byte.
    """
    keys: dict[bytes, list[bytes]] = {}
    for p in plain:
        keys.setdefault(p[:-1] if p[-2:-1] in _SEPARATORS and p[-1:] not in _SEPARATORS
                        and p[-3:-2] not in (b" ", b"\n", b"") else p, []).append(p)
    keys = _under_prefixes(keys, KEY_MIN, KEY_GROUP_MAX)  # read here: tests shrink them
    literals = [*keys, *extra]
    members = [None if len(group) == 1 and group[0] == key else tuple(group) for key, group in keys.items()]
    return _Tables((_compile(literals, range(len(literals))),) if literals else (), [len(p) for p in literals],
                   [*members, *[None] * len(extra)], len(keys))


def _under_prefixes(keys: dict[bytes, list[bytes]], key_min: int = KEY_MIN, group_max: int = KEY_GROUP_MAX
                    ) -> dict[bytes, list[bytes]]:
    """`keys` (key -> the patterns a hit confirms) with each key that begins with a shorter key of at least `key_min`
    bytes folded into that key's group, while the group stays within `group_max` patterns: one literal fewer for
    Hyperscan, and a hit of the shorter key, where the longer one's patterns can only begin, confirms them.

    Hyperscan's literal filter costs about the same for each literal, whatever its length: a secret's wrapped forms
    all begin with their first trigger fragment, its `...` head with its first raw fragment, and its forms with the
    head that `truncated` registers (12,000 of 74,000 literals at N=1,000 in the bench: 5% of a 64 KiB scan).

    >>> _under_prefixes({b"abcdefgh": [b"abcdefgh"], b"abcdefghij": [b"abcdefghij"], b"abc": [b"abc"]})
    {b'abc': [b'abc'], b'abcdefgh': [b'abcdefgh', b'abcdefghij']}
    """
    out: dict[bytes, list[bytes]] = {}
    stack: list[bytes] = []  # the keys that are prefixes of the current one, shortest first
    for key in sorted(keys):
        while stack and not key.startswith(stack[-1]):
            stack.pop()
        for shorter in stack:
            group = out.get(shorter)
            if group is not None and len(shorter) >= key_min and len(group) + len(keys[key]) <= group_max:
                group.extend(keys[key])
                break
        else:
            out[key] = list(keys[key])
        stack.append(key)
    return out


# Past this many patterns (about 300 secrets with every form), the first compilation is keys in two databases
# compiled at the same time in two threads (python-hyperscan releases the GIL while compiling): the 56,000
# keys of `runnerlib mask` at N=1,000 (75,000 patterns) take 1.9 s of CPU as one database of patterns and
# 0.9-1.0 s each as two databases of keys, so the scan starts about twice as soon on two cores. Two databases
# scan at about half the speed of one: the whole one is compiled next, in the background, and replaces them.
SPLIT_MIN_KEYS = 16000


_heap_tuned = False


def _steady_heap() -> None:
    """Keep glibc from returning the heap's top to the system after every large free, once per process.

    After a split compilation (its tables built in threads, the keyed ones dropped at the swap), glibc trimmed the
    heap's top after the frees of each write's buffers and grew it again at the next write: streaming at N=1,000
    fell from 720-770 to 510-640 MB/s of CPU (measured; MALLOC_TRIM_THRESHOLD_ alone gave the speed back). Fixed
    thresholds: buffers up to 4 MiB (the pumps read 1 MiB) from the heap, trimmed past 128 MiB of free top.
    """
    global _heap_tuned
    if _heap_tuned:
        return
    _heap_tuned = True
    with contextlib.suppress(Exception):  # not glibc (musl's mallopt does nothing), or no libc found: as it is
        import ctypes

        libc = ctypes.CDLL(None)  # the libc already loaded (find_library would run ldconfig)
        libc.mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _compile(keys: list[bytes], ids: Iterable[int], first_id: int = 0) -> Any:
    """A database of keys[i] for i in `ids`, each reported as id `first_id + i`."""
    ids = list(ids)
    db = _hyperscan.Database(mode=_hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[keys[i] for i in ids], ids=[first_id + i for i in ids] if first_id else ids,
               elements=len(ids), flags=0, literal=True)
    return db


def _compile_split(keys: list[bytes], meanwhile: Callable[[], object] = lambda: None) -> tuple[Any, Any]:
    """Two databases, of the even and the odd keys, compiled at the same time in two threads; `meanwhile` runs
    in the caller's thread in the meantime (python-hyperscan releases the GIL while compiling)."""
    results: dict[int, Any] = {}

    def half(i: int) -> None:
        try:
            results[i] = _compile(keys, range(i, len(keys), 2))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            results[i] = exc

    threads = [threading.Thread(target=half, args=(i,), name=f"runnerlib-mask-hs-half{i}") for i in (0, 1)]
    for thread in threads:
        thread.start()
    try:
        meanwhile()
    finally:
        for thread in threads:
            thread.join()
    for i in (0, 1):
        if isinstance(results[i], BaseException):
            raise results[i]
    return results[0], results[1]


class KeyedParts:
    """A large pattern set compiled part by part as it is produced.

    Each `add` starts compiling its literals (distinct, and not in an earlier part) as keys (literal_keys) in a
    database of their own, in a thread, at most one compilation per processor at a time; `finish` waits for them
    and gives the tables of every part. `HyperscanMatcher(patterns, parts=p)` takes them, where `patterns` are
    the literals of every part. Usage, as the masker does it for a batch of secrets:

        parts = KeyedParts()
        parts.add(forms_of_the_first_secrets)   # compiling from here
        parts.add(forms_of_the_others)
        matcher = HyperscanMatcher([*forms_of_the_first_secrets, *forms_of_the_others], parts=parts)
    """

    def __init__(self) -> None:
        if _hyperscan is None:
            raise RuntimeError("the hyperscan module is not installed")
        _steady_heap()
        self._slots = threading.Semaphore(_cpu_count())
        self._key_len: list[int] = []
        self._plain: list[bytes] = []
        self._side: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._results: list[Any] = []  # per part: (database, members), or the exception its compilation raised

    def add(self, literals: Sequence[bytes]) -> None:
        """Start compiling `literals` as one more part."""
        plain, side = _plain_and_side(list(literals))
        self._side.extend(side)
        if not plain:
            return
        keys = literal_keys(plain, KEY_MIN, KEY_GROUP_MAX)
        first = len(self._key_len)  # ids are global: one table of key lengths and members for every part
        self._key_len.extend(map(len, keys))
        self._plain.extend(plain)
        self._results.append(None)
        thread = threading.Thread(target=self._compile_part, args=(len(self._threads), keys, first, plain),
                                  daemon=True, name=f"runnerlib-mask-hs-part{len(self._threads)}")
        self._threads.append(thread)
        thread.start()

    def _compile_part(self, i: int, keys: dict[bytes, list[int]], first: int, plain: list[bytes]) -> None:
        try:
            with self._slots:
                db = _compile(list(keys), range(len(keys)), first)
            self._results[i] = (db, _members(keys, plain))  # Python work, done while another part compiles
        except BaseException as exc:  # noqa: BLE001 - raised again by finish(), in the caller's thread
            self._results[i] = exc

    def finish(self) -> tuple[_Tables, list[bytes], list[bytes]]:
        """Wait for every part: (their tables, the literals they hold, the literals Hyperscan cannot take)."""
        for thread in self._threads:
            thread.join()
        members: list[tuple[bytes, ...] | None] = []
        for result in self._results:
            if isinstance(result, BaseException):
                raise result
            members.extend(result[1])
        return (_Tables(tuple(r[0] for r in self._results), self._key_len, members), self._plain, self._side)


# The whole database is compiled this long after the keyed ones are in use (or at once when asked: hurry): an
# input that is over by then (`runnerlib mask` on a 256 MiB file: 0.5 s of scanning) never pays for a compilation
# it would not use; started at once, it slowed those scans by a quarter on two cores (memory and cores shared).
WHOLE_DELAY = 2.0


def _compile_whole(ref: weakref.ref[HyperscanMatcher], plain: list[bytes]) -> None:
    """Compile every pattern as it is in one database and swap it in for the keys (unless the matcher is gone)."""
    matcher = ref()
    if matcher is None:
        return
    now = matcher._whole_now
    del matcher  # the wait must not keep the matcher alive
    now.wait(WHOLE_DELAY)
    if ref() is None:
        return
    with contextlib.suppress(AttributeError, OSError):
        # Lowest priority for this thread only (Linux nice is per thread): the scans with the keys, which
        # mask the output meanwhile, keep the processors; this only uses what they leave.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    try:
        tables = _whole_tables(plain)
    except Exception as exc:  # noqa: BLE001 - the keys stay in use: correct, a little slower
        log.warning("masking: compiling the patterns as one database failed (%s); the keyed databases stay in "
                    "use", type(exc).__name__)
        return
    matcher = ref()
    if matcher is not None:
        matcher._tables = tables
        matcher.whole.set()


ENGINES: dict[str, type] = {
    "hyperscan": HyperscanMatcher,
    "ahocorasick": AhoCorasickMatcher,
    "reference": ReferenceMatcher,
}


def available_engines() -> list[str]:
    """Engine names usable on this machine, fastest first."""
    return [n for n in ENGINES if n != "hyperscan" or _hyperscan is not None]


def default_engine() -> str:
    """The engine used unless one is asked for: $RUNNERLIB_MASK_ENGINE, else hyperscan if it imports."""
    wanted = os.environ.get(ENGINE_ENV, "").strip()
    if wanted:
        if wanted not in ENGINES:
            raise ValueError(f"{ENGINE_ENV}={wanted!r}: not one of {', '.join(ENGINES)}")
        if wanted not in available_engines():
            raise ValueError(f"{ENGINE_ENV}={wanted!r}: that engine does not import on this machine")
        return wanted
    return available_engines()[0]


def build_matcher(patterns: Sequence[bytes], engine: str | None = None, *, quick_build: bool = False,
                  extra: Sequence[bytes] = (), extra_max: int = 64, parts: KeyedParts | None = None) -> Matcher:
    """Compile `patterns` (non-empty byte strings) with `engine` (default: `default_engine()`).

    `quick_build` favours build time over scan speed (small delta layers rebuilt on every add). `extra`:
    literals the Hyperscan engine also finds, reported apart (HyperscanMatcher.scan); other engines ignore them.
    `parts`: `patterns` already being compiled by the Hyperscan engine (KeyedParts); `extra` is not taken then.
    """
    name = engine or default_engine()
    if name not in ENGINES:
        raise ValueError(f"unknown masking engine {name!r}: not one of {', '.join(ENGINES)}")
    if not all(patterns):
        raise ValueError("an empty pattern would match everywhere")
    if name == "ahocorasick":
        return AhoCorasickMatcher(patterns, quick_build=quick_build)
    if name == "hyperscan" and parts is not None:
        return HyperscanMatcher(patterns, parts=parts)
    if name == "hyperscan" and extra:
        return HyperscanMatcher(patterns, extra=extra, extra_max=extra_max)
    return ENGINES[name](patterns)


# Hyperscan compiles thousands of very short literals slowly (the 17,600 four-byte heads of 1,000 secrets' forms
# took 0.5 s of CPU), while the masker's head filter only ever scans the last `maxlen` bytes of a write, where
# ahocorasick-rs takes microseconds and builds them in about 20 ms.
HEADS_HS_MAX = 2048


def build_head_matcher(heads: Sequence[bytes], engine: str | None = None, *, quick_build: bool = False
                       ) -> Matcher:
    """`build_matcher` for the short pattern heads of the masker's live-partial-match filter (short windows)."""
    name = engine or default_engine()
    if name == "hyperscan" and len(heads) > HEADS_HS_MAX:
        name = "ahocorasick"
    return build_matcher(heads, name, quick_build=quick_build)
