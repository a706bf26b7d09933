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

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import ahocorasick_rs

_hyperscan: Any
try:  # Hyperscan has no wheel on some platforms (e.g. Linux aarch64 on the index used here).
    import hyperscan as _hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    _hyperscan = None

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


class HyperscanMatcher:
    """Hyperscan block mode over pure literals (hs_compile_lit_multi).

    Every match of every pattern is reported by its end offset; a literal has a fixed length, so the start is
    `end - len(pattern)` and HS_FLAG_SOM_LEFTMOST (which slows compiling and scanning) is not needed.
    python-hyperscan passes literals as C strings, so a pattern containing a NUL byte would be cut at the NUL
    (and then match far too much); those few patterns, and literals too long for Hyperscan, go to an
    ahocorasick-rs side matcher instead.
    Scratch space is per thread: Hyperscan forbids sharing one scratch between concurrent scans.
    """

    name = "hyperscan"

    def __init__(self, patterns: Sequence[bytes]) -> None:
        if _hyperscan is None:
            raise RuntimeError("the hyperscan module is not installed; use engine='ahocorasick'")
        self.patterns = list(patterns)
        plain = [i for i, p in enumerate(self.patterns) if b"\0" not in p and len(p) <= HS_MAX_LITERAL]
        self._lengths = [len(p) for p in self.patterns]
        self._side = AhoCorasickMatcher([p for p in self.patterns if b"\0" in p or len(p) > HS_MAX_LITERAL])
        self._db = None
        if plain:
            db = _hyperscan.Database(mode=_hyperscan.HS_MODE_BLOCK)
            db.compile(expressions=[self.patterns[i] for i in plain], ids=plain, elements=len(plain),
                       flags=0, literal=True)
            self._db = db
        self._local = threading.local()

    def find(self, data: bytes) -> list[tuple[int, int]]:
        out = self._side.find(data) if self._side.patterns else []
        if self._db is None or not data:
            return out
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = _hyperscan.Scratch(self._db)
        lengths = self._lengths
        append = out.append

        def on_match(pid: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            append((end - lengths[pid], end))

        self._db.scan(data, match_event_handler=on_match, scratch=scratch)
        return out


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


def build_matcher(patterns: Sequence[bytes], engine: str | None = None, *, quick_build: bool = False) -> Matcher:
    """Compile `patterns` (non-empty byte strings) with `engine` (default: `default_engine()`).

    `quick_build` favours build time over scan speed (small delta layers rebuilt on every add).
    """
    name = engine or default_engine()
    if name not in ENGINES:
        raise ValueError(f"unknown masking engine {name!r}: not one of {', '.join(ENGINES)}")
    if any(not p for p in patterns):
        raise ValueError("an empty pattern would match everywhere")
    if name == "ahocorasick":
        return AhoCorasickMatcher(patterns, quick_build=quick_build)
    return ENGINES[name](patterns)
