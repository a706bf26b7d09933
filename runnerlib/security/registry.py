"""SecretRegistry: the one thread-safe registry of a job's secrets, and the factory of its masked streams.

Every output path of a job (step stdout/stderr, logs, error lines, files written by the runner) goes through
`registry.stream(sink)` or `registry.mask(...)`. Adding a secret takes effect in every live stream before
`add()` returns: the new pattern set is published first, then add() waits for any write that started with
the old set to finish.

>>> r = SecretRegistry()
>>> r.add("hunter2-is-long", source="example")
True
>>> r.mask_text("login hunter2-is-long and aHVudGVyMi1pcy1sb25n")
'login *** and ***'
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator

from runnerlib.security.folded import foldable
from runnerlib.security.json_secret_parts import secret_parts
from runnerlib.security.masker import Masker
from runnerlib.security.stream import DEFAULT_HOLD_CAP, IdleFlusher, MaskedStream
from runnerlib.security.variants import covered_forms, password_covers, plain_forms, secret_forms

log = logging.getLogger("runnerlib.secrets")


class SecretRegistry:
    """The secrets of one job: add them, mask bytes and text, open masked streams.

    `min_length`: shorter values are refused (masking `ab` would shred every log line) with a warning that
    names the source, never the value. Empty and whitespace-only values are ignored. `replacement` is what
    a masked run becomes (GitHub Actions prints `***`). `engine` picks the matcher (default: hyperscan if it
    imports, else ahocorasick-rs; see runnerlib.security.matcher).
    """

    def __init__(self, *, min_length: int = 4, replacement: str = "***", engine: str | None = None,
                 background_merge: bool = True) -> None:
        if min_length < 1:
            raise ValueError("min_length: must be at least 1")
        if not replacement:
            raise ValueError("replacement: must not be empty")
        self.min_length = min_length
        self.replacement = replacement
        self._masker = Masker(replacement=replacement.encode("utf-8"), engine=engine,
                              background=background_merge)
        self._lock = threading.Lock()
        self._secrets: dict[bytes, None] = {}
        self._streams: weakref.WeakSet[MaskedStream] = weakref.WeakSet()
        self._flushers: dict[float, IdleFlusher] = {}
        self._batch_depth = 0
        self._batch_values: list[bytes] = []  # added inside batch(): their forms are computed when it ends

    @property
    def engine(self) -> str:
        return self._masker.engine

    def add(self, value: str | bytes, *, source: str) -> bool:
        """Register one secret (and its encoded forms). False if refused or ignored; True if masked.

        Returns only once every live stream masks it.
        """
        return self.add_many([value], source=source) == 1

    def add_many(self, values: Iterable[str | bytes], *, source: str) -> int:
        """Register several secrets with one automaton update; returns how many are masked."""
        if isinstance(values, (str, bytes, bytearray)):
            raise TypeError(f"add_many (source {source}): takes an iterable of values; use add() for one value")
        accepted: list[bytes] = []
        parts: list[bytes] = []  # registered with `accepted`, not counted
        refused = 0
        for value in values:
            if isinstance(value, str):
                raw = value.encode("utf-8", "surrogateescape")
            elif isinstance(value, (bytes, bytearray, memoryview)):
                raw = bytes(value)
            else:  # bytes(5) would be five NUL bytes: refuse anything that is not text or bytes
                raise TypeError(f"secret from {source}: a {type(value).__name__}, expected str or bytes")
            if not raw.strip():
                log.debug("ignored an empty secret value from %s", source)
                continue
            if len(raw) < self.min_length:
                refused += 1
                continue
            accepted.append(raw)
            # A JSON document's secret fields too: `jq .` reformats it (security/json_secret_parts.py).
            parts.extend(p for p in secret_parts(raw) if len(p.strip()) >= self.min_length)
        if refused:
            # Names the source and the rule, never the value (nor its length).
            log.warning("refused %d secret value(s) from %s: shorter than the minimum length %d "
                        "(such a value would mask too much; it is NOT masked)", refused, source,
                        self.min_length)
        if not accepted:
            return 0
        with self._lock:
            fresh = [v for v in dict.fromkeys(accepted + parts) if v not in self._secrets]
            if fresh and self._batch_depth:
                self._batch_values.extend(fresh)  # one masker.add for the whole batch (see batch)
            elif fresh:
                self._add_forms(fresh)
            self._secrets.update(dict.fromkeys(fresh))
        self._wait_for_streams()
        return len(accepted)

    def _add_forms(self, values: list[bytes]) -> None:
        # Uses the masker only (its own lock). The forms are computed as the masker takes them: a large start-up
        # batch compiles its first part while the rest are computed (Masker.add_forms).
        min_length = self.min_length
        plain = [f for v in values for f in plain_forms(v, min_length=min_length)]
        batch = set(values)

        def registered(value: bytes) -> bool:
            return value in batch or value in self._secrets

        self._masker.add_forms(
            (covered_forms(v, min_length=min_length) if password_covers(v, registered)
             else secret_forms(v, min_length=min_length) for v in values),
            len(values), [f for f in plain if foldable(f)], plain)

    def _wait_for_streams(self) -> None:
        # A write that read the old pattern set before the swap may still be running: wait for it, so that
        # nothing is emitted with the old set after add() returns. The set is copied under the lock: another
        # thread opening a stream meanwhile made list() fail with "Set changed size during iteration".
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            with stream.lock:
                pass

    def mask(self, data: bytes) -> bytes:
        """`data` with every occurrence of every secret (and encoded form) replaced."""
        return self._masker.mask(bytes(data))

    def mask_text(self, text: str) -> str:
        """`mask` for text (UTF-8; undecodable characters round-trip through surrogateescape)."""
        masked = self.mask(text.encode("utf-8", "surrogateescape"))
        return masked.decode("utf-8", "surrogateescape")

    def stream(self, sink: Callable[[bytes], object], *, hold_cap: int = DEFAULT_HOLD_CAP,
               idle_flush: float | None = None) -> MaskedStream:
        """A MaskedStream writing masked bytes to `sink`; it sees every secret added while it lives.

        `idle_flush` (seconds): emit held-back bytes after that long without a write (see IdleFlusher).
        """
        s = MaskedStream(self._masker.current, sink, hold_cap=hold_cap, on_close=self._forget)
        with self._lock:
            self._streams.add(s)
        if idle_flush is not None:
            with self._lock:
                flusher = self._flushers.get(idle_flush)
                if flusher is None:
                    flusher = self._flushers[idle_flush] = IdleFlusher(idle_flush)
            flusher.watch(s)
        return s

    def _forget(self, stream: MaskedStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def secrets(self) -> list[bytes]:
        """The raw registered values (not their variants), in the order added."""
        with self._lock:
            return list(self._secrets)

    def patterns(self) -> list[bytes]:
        """Every pattern masked (values and their encoded forms)."""
        return self._masker.patterns

    def batch(self, *, background: bool = False) -> contextlib.AbstractContextManager[None]:
        """A block of start-up additions compiled once, with the main engine, when it ends (`runnerlib mask`
        loads its secrets in one): the first write of a stream then scans at full speed. Use it before any
        stream is written: inside it, new secrets are not masked yet. `background=True`: their forms are
        computed and compiled in a thread when the block ends; writes and `mask()` wait for it (a filter reads
        its input meanwhile, and an empty input never waits; see Masker.fill_in_background)."""
        return self._batch(background)

    @contextlib.contextmanager
    def _batch(self, background: bool) -> Iterator[None]:
        # The forms of the values added inside go to the masker in one add when the outermost block ends: one
        # add per value (load_secrets adds them one by one) cost 0.1-0.2 s more for `runnerlib mask`'s 1,400.
        with contextlib.nullcontext() if background else self._masker.batch():
            with self._lock:
                self._batch_depth += 1
            try:
                yield
            finally:
                with self._lock:
                    self._batch_depth -= 1
                    values = self._batch_values if not self._batch_depth else []
                    if values:
                        self._batch_values = []
                        if background:
                            self._masker.fill_in_background(lambda: self._add_forms(values))
                        else:
                            self._add_forms(values)

    def triggers(self) -> list[bytes]:
        """The trigger fragments searched (not masked) to find wrapped and dumped forms (security.wrapped)."""
        return self._masker.triggers

    def line_starts(self) -> list[bytes]:
        """The patterns masked only where they begin a line: the forms one character a line (`fold -w1`), among
        `patterns()` (reference_mask's `line_starts`)."""
        return self._masker.line_starts

    def wait_merged(self, timeout: float | None = None) -> bool:
        """Wait for the background automaton merge (benchmarks, tests), and for a large base compiled as two
        halves to be replaced by its whole database (matcher.SPLIT_MIN_KEYS); masking is correct without it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._masker.wait_merged(timeout):
            return False
        for layer in self._masker.snapshot.layers:
            whole = getattr(layer.matcher, "whole", None)
            hurry = getattr(layer.matcher, "hurry", None)
            if hurry is not None:
                hurry()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if whole is not None and not whole.wait(left):
                return False
        return True

    def __len__(self) -> int:
        return len(self._secrets)

    def __repr__(self) -> str:  # never the values
        return f"<SecretRegistry secrets={len(self)} engine={self.engine}>"
