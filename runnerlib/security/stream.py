"""MaskedStream: masking a byte stream written in pieces of any size, holding back as little as possible.

Invariant: the bytes given to the sink, concatenated, equal the whole-buffer masking of everything written
(see masker.render), as long as no flush was forced in the middle of a secret. To get there a stream emits
a byte only when it is final: either no occurrence that is still incomplete can cover it (it lies before
the earliest live partial match), or a complete occurrence already covers it. What is held back is exactly
the tail that could still be the start of a secret, so `tail -f | runnerlib mask` shows each line at once.

The tail held back is rescanned with the next write, so a secret split across any number of writes at any
offset is found (the peers' `abab` + `ab1234` leak comes from dropping the tail before the rescan).

Limits. Output is never held for ever: held-back bytes beyond `hold_cap`, an explicit `flush()` and
`close()` emit pending bytes as they are. If that happens in the middle of a secret, the part already written
is out; the rest is still masked because the stream keeps the tail to rescan. An idle flush (`flush_idle`,
`flush_if_idle`, `IdleFlusher`, `pump`) shows a held prompt but keeps holding a partial match of
IDLE_KEEP_FRAGMENT bytes or more, so a writer stalling mid-secret leaks nothing.
"""

from __future__ import annotations

import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType

from runnerlib.security.masker import MaskSnapshot, render
from runnerlib.security.wrapped import context_start, quick_candidate

# Held-back bytes past this are emitted as they are. A partial match is shorter than the longest pattern,
# so this only matters for secrets longer than the cap (certificates bundles, whole files).
DEFAULT_HOLD_CAP = 256 * 1024
# An idle flush keeps holding a partial match this long or longer: it would be a fragment of a secret (the
# registry's default minimum secret length, and the fragment size the tests look for).
IDLE_KEEP_FRAGMENT = 4


class MaskedStream:
    """A write-only byte stream that masks secrets before handing bytes to `sink`.

    >>> from runnerlib.security.masker import Masker
    >>> m = Masker(); _ = m.add([b"abab1234"]); out = []
    >>> with MaskedStream(lambda: m.snapshot, out.append) as s:
    ...     _ = s.write(b"key=ab"); _ = s.write(b"ab1234 done\\n")
    >>> b"".join(out)
    b'key=*** done\\n'
    """

    def __init__(self, snapshot: Callable[[], MaskSnapshot], sink: Callable[[bytes], object], *,
                 hold_cap: int = DEFAULT_HOLD_CAP, on_close: Callable[[MaskedStream], None] | None = None
                 ) -> None:
        if hold_cap < 0:
            raise ValueError("hold_cap: must be >= 0")
        self._snapshot = snapshot
        self._sink = sink
        self._hold_cap = hold_cap
        self._on_close = on_close
        # Reentrant: a sink may add a secret, and add() waits on every live stream's lock.
        self.lock = threading.RLock()
        self._buf = b""  # the rescan window: starts at the earliest live partial match
        self._line_start = True  # whether _buf (or, when empty, the next write) begins a line
        self._emitted = 0  # bytes of _buf already given to the sink (masked or not)
        self._masked_until = -1  # position in _buf where the last replacement's run ended
        self._closed = False
        self.last_write = time.monotonic()
        self.bytes_in = 0
        # `scanned_sink(data, hits, kept)` instead of `sink`, with the known-format prefixes `hits` found in `buf`
        # by the masker's own pass (MaskSnapshot.find_with_known), and where `data` holds bytes of `buf` as
        # they were: (start, stop, offset in data) of each unchanged run (the rest of `data` is replacements).
        # The known-formats stage then needs no scan of its own.
        self.scanned_sink: Callable[[bytes, list[tuple[int, int]], list[tuple[int, int, int]]], object] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def held(self) -> int:
        """How many written bytes have not been given to the sink yet."""
        return len(self._buf) - self._emitted

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Mask and forward what is final of `data`; returns len(data)."""
        n = len(data)
        if not n:
            return 0
        with self.lock:
            if self._closed:
                raise ValueError("write to a closed MaskedStream")
            self.last_write = time.monotonic()
            self.bytes_in += n
            if not isinstance(data, bytes):
                data = bytes(data)
            snap = self._snapshot()
            buf = self._buf + data if self._buf else data
            if not snap.count:
                self._emit_plain(buf)
                return n
            line_start = self._line_start
            known = None
            # Runs a line view reads into the last, unfinished line: held, since the rest of the line decides them.
            held: list[int] = []
            if self.scanned_sink is not None:
                occurrences, known = snap.find_with_known(buf, line_start, held)
            else:
                occurrences = snap.find(buf, line_start, held)
            candidate = bool(snap.triggers) and quick_candidate(buf, line_start)
            live = snap.live_start(buf, line_start, candidate)
            if held:
                live = min(live, *held)
            # An encoding or dump line at the end is kept (already emitted) so the next write sees it whole.
            keep = context_start(buf, live, snap.maxlen, line_start, candidate) if snap.triggers else live
            if not occurrences and self._emitted == 0 and keep == len(buf):
                # The common case: nothing found, nothing pending. Zero-copy.
                self._buf = b""
                self._masked_until = -1
                self._line_start = buf[-1] == 0x0A
                if known is not None:
                    self.scanned_sink(buf, known, [(0, len(buf), 0)])  # type: ignore[misc]
                else:
                    self._sink(buf)
                return n
            limit = max(live, len(buf) - self._hold_cap)
            out: list[bytes] = []
            kept: list[tuple[int, int, int]] | None = [] if known is not None else None
            emitted, masked_until = render(buf, occurrences, self._emitted, self._masked_until, limit,
                                           snap.replacement, out, kept)
            # Keep from the earliest live partial match on: the next write completes or refutes it.
            keep = min(keep, emitted)
            if keep:
                self._line_start = buf[keep - 1] == 0x0A
            self._buf = buf[keep:]
            self._emitted = emitted - keep
            self._masked_until = masked_until - keep if masked_until >= keep else -1
            if out:
                data = out[0] if len(out) == 1 else b"".join(out)
                if kept is not None:
                    self.scanned_sink(data, known, kept)  # type: ignore[misc, arg-type]
                else:
                    self._sink(data)
            return n

    def _emit_plain(self, buf: bytes) -> None:
        rest = buf[self._emitted:]
        self._buf, self._emitted, self._masked_until = b"", 0, -1
        self._line_start = buf[-1] == 0x0A
        if rest:
            self._sink(rest)

    def flush(self) -> None:
        """Emit every held-back byte now (masked where a complete occurrence covers it). Never drops bytes.

        A secret cut by the flush has its first part emitted; the rest is still masked when it arrives.
        """
        self._flush(keep_fragment=False)

    def flush_idle(self) -> bool:
        """The flush for a quiet stream (a prompt without a newline): emit what is held back, except a partial
        match of IDLE_KEEP_FRAGMENT bytes or more, which stays held until the next write completes or refutes
        it, or the stream closes. True if anything was emitted.

        A writer that stalls in the middle of a secret (a slow pipe, a descheduled process) then leaks
        nothing: the part already written is masked together with the rest when it arrives. A prompt is still
        shown unless it ends with that many bytes of a secret's beginning.
        """
        return self._flush(keep_fragment=True)

    def _flush(self, *, keep_fragment: bool) -> bool:
        with self.lock:
            if self._closed or self.held == 0:
                return False
            buf = self._buf
            snap = self._snapshot()
            limit = len(buf)
            if keep_fragment and snap.count:
                live = snap.live_start(buf, self._line_start)
                if len(buf) - live >= IDLE_KEEP_FRAGMENT:
                    limit = live
            if limit <= self._emitted:
                return False
            out: list[bytes] = []
            found = snap.find(buf, self._line_start) if snap.count else []
            emitted, masked_until = render(buf, found, self._emitted, self._masked_until, limit, snap.replacement,
                                           out)
            self._emitted, self._masked_until = emitted, masked_until
            if out:
                self._sink(b"".join(out))
            return bool(out)

    def flush_if_idle(self, idle_seconds: float) -> bool:
        """The flush-on-idle hook: `flush_idle()` if bytes are held and nothing was written for
        `idle_seconds`; True if anything was emitted."""
        if self.held and time.monotonic() - self.last_write >= idle_seconds:
            with self.lock:
                if self.held and time.monotonic() - self.last_write >= idle_seconds:
                    return self.flush_idle()
        return False

    def close(self) -> None:
        """Flush and close; later writes raise ValueError. Idempotent."""
        with self.lock:
            if self._closed:
                return
            self.flush()
            self._closed = True
            self._buf = b""
        if self._on_close is not None:
            self._on_close(self)

    def __enter__(self) -> MaskedStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class IdleFlusher:
    """One daemon thread that calls `flush_if_idle` on registered streams, so a prompt without a newline
    that happens to look like the start of a secret is shown after `idle_seconds` instead of never."""

    def __init__(self, idle_seconds: float = 0.5) -> None:
        if idle_seconds <= 0:
            raise ValueError("idle_seconds: must be > 0")
        self.idle_seconds = idle_seconds
        self._streams: weakref.WeakSet[MaskedStream] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, stream: MaskedStream) -> None:
        with self._lock:
            self._streams.add(stream)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="runnerlib-idle-flush")
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.idle_seconds / 2)
            with self._lock:
                streams = [s for s in self._streams if not s.closed]
                if not streams:
                    self._thread = None
                    return
            for s in streams:
                s.flush_if_idle(self.idle_seconds)


def write_all(fd: int) -> Callable[[bytes], None]:
    """A sink writing every byte to a file descriptor, unbuffered (so a line shows as soon as it is final)."""

    def sink(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    return sink


def pump(in_fd: int, stream: MaskedStream, *, idle_flush: float | None = 0.2, read_size: int = 65536) -> int:
    """Copy `in_fd` to `stream` until EOF, then close the stream; returns the bytes read.

    Reads with os.read (whatever is available, up to `read_size`: a line from `tail -f` is processed at once,
    never waiting for a buffer to fill) and flushes held-back bytes after `idle_flush` seconds without input.
    """
    total = 0
    try:
        while True:
            if idle_flush is not None and stream.held:
                ready, _, _ = select.select([in_fd], [], [], idle_flush)
                if not ready:
                    stream.flush_idle()
                    continue
            data = os.read(in_fd, read_size)
            if not data:
                break
            total += len(data)
            stream.write(data)
    finally:
        stream.close()
    return total
