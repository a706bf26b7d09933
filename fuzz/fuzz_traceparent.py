"""atheris harness: the strict W3C traceparent parser and the ::error/::warning annotation reader of the report.

Run: .venv/bin/python fuzz/fuzz_traceparent.py -atheris_runs=1000

Properties: parse_traceparent either raises ValueError or returns a context whose traceparent re-parses to
itself (lower-case hex, exact lengths, no all-zero id); annotations_in_log never raises and returns only
error, warning and notice entries.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.observability.report import annotations_in_log
    from runnerlib.observability.tracecontext import parse_traceparent


def TestOneInput(data: bytes) -> None:  # noqa: N802 - atheris's name
    text = data.decode("utf-8", "replace")
    try:
        ctx = parse_traceparent(text)
    except ValueError:
        pass
    else:
        assert len(ctx.trace_id) == 32 and len(ctx.span_id) == 16 and ctx.trace_id != "0" * 32
        assert parse_traceparent(ctx.traceparent) == ctx
    for entry in annotations_in_log(text):
        assert entry["level"] in ("error", "warning", "notice")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
