"""The console shows no byte that moves the cursor (execution/console_controls.py): properties of `inert`."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from runnerlib.execution.console_controls import inert, needs_inert

_SGR = re.compile(rb"\x1b\[[0-?]*[ -/]*m")
# Pieces terminals act on, glued to text: CRs, CRLFs, CSI of every kind, OSC, lone escapes.
_pieces = st.lists(st.sampled_from([b"\r", b"\r\n", b"\n", b"\x1b", b"\x1b[", b"\x1b[1A", b"\x1b[2K", b"\x1b[31m",
                                    b"\x1b[0m", b"\x1b[38;5;1m", b"\x1b]0;t\x07", b"[", b"m", b"A", b"x", b"10%"]),
                   max_size=40).map(b"".join)


def _lines(body: bytes) -> bytes:
    return body + b"\n"  # the console is handed whole lines


@given(_pieces)
def test_no_bare_cr_and_no_escape_but_colours(body):
    out = inert(_lines(body))
    assert re.search(rb"\r(?!\n)", out) is None, out
    assert b"\x1b" not in _SGR.sub(b"", out), out


@given(_pieces)
def test_text_is_kept_and_the_result_is_stable(body):
    out = inert(_lines(body))
    # Every visible character stays (CR turned into LF; ESC shown as "^[" unless it starts a colour).
    strip = lambda b: re.sub(rb"\^\[|\x1b", b"", b.replace(b"\r", b"\n").replace(b"\n", b""))  # noqa: E731
    assert strip(out) == strip(_lines(body))
    assert inert(out) == out
    if not needs_inert(_lines(body)):  # the bulk path's shortcut skips only what inert leaves alone
        assert out == _lines(body)


def test_plain_output_is_untouched():
    data = b"the quick brown fox\n" * 100
    assert not needs_inert(data) and inert(data) == data
