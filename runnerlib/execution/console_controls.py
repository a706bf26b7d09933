"""What of a step's bytes may move the console's cursor: nothing.

The console interleaves every step's lines behind a `[step]` prefix, and runnerlib's own lines (`==> ...
[deploy] finished (ok)`) between them. A bare carriage return, or a cursor-moving escape (`ESC[1A` up a line,
`ESC[2K` erase it), in a step's output redraws what is already on a terminal or in a viewer that honours them:
an untrusted step's `x\r==> 09:00:00 [deploy] finished (ok)` put a forged status line over its own, and a
trusted step that prints an untrusted report does the same. So on the console, before the prefixes go in:

- a carriage return not followed by a line feed ends a line there (a progress bar's redraws become lines
  of their own, each with its prefix, as GitHub's log viewer shows them);
- an escape sequence is kept only when it sets colours (SGR, `ESC[...m`); any other escape byte is shown as
  the two characters `^[`, so the sequence is visible and inert.

The step's log file keeps the bytes as the step wrote them (masked). Output with neither byte (all bulk
output in practice) costs two memchr scans.
"""

from __future__ import annotations

import re

# CSI: ESC [ parameter bytes, intermediate bytes, one final byte (ECMA-48 5.4); SGR is the one ending in "m".
_ESCAPE = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~])?")
_BARE_CR = re.compile(rb"\r+(?!\n)")


def _escape(match: re.Match[bytes]) -> bytes:
    whole = match.group(0)
    return whole if whole.endswith(b"m") and match.group(1) else b"^[" + whole[1:]


def inert(lines: bytes) -> bytes:
    """`lines` with no byte that moves the cursor: bare CRs become line breaks, escapes other than colours
    are shown as `^[` (see the module's docstring). Whole lines in, whole lines out.

    >>> inert(b"10%\\r20%\\r\\n\\x1b[1A\\x1b[31mred\\x1b[0m\\n")
    b'10%\\n20%\\r\\n^[[1A\\x1b[31mred\\x1b[0m\\n'
    """
    if b"\x1b" in lines:
        lines = _ESCAPE.sub(_escape, lines)
    if b"\r" in lines:
        lines = _BARE_CR.sub(b"\n", lines)
    return lines


def needs_inert(data: bytes, end: int | None = None) -> bool:
    """Whether `data[:end]` holds a byte that `inert` changes (two memchr scans, no copy: the bulk path's whole
    cost)."""
    return data.find(b"\r", 0, end) >= 0 or data.find(b"\x1b", 0, end) >= 0
