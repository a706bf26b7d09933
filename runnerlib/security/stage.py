"""One stage of a step's output chain (AddMaskFilter, KnownFormatsFilter, WorkflowCommandFilter): it writes what
it lets through to the next stage, its `sink`, and passes flush() and close() on to it.

`sink` is a stream with write() (flush()/close() passed on when present) or a callable taking bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Stage:
    """The sink plumbing shared by the output filters; each subclass does its own write() and close()."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self._write: Callable[[bytes], Any] = sink.write if hasattr(sink, "write") else sink

    def flush(self) -> None:
        """Flush the sink (what a stage holds stays held: at most a line, or a token in progress)."""
        flush = getattr(self._sink, "flush", None)
        if flush is not None:
            flush()

    def _close_sink(self) -> None:
        close = getattr(self._sink, "close", None)
        if close is not None:
            close()
