"""What trusted steps wrote into the source tree with a secret in it stays out of the untrusted copy.

The untrusted steps' copy of /job/src (runnerlib.source.pristine) is made when the first untrusted step starts,
after the trusted steps before it. Those often write credentials next to the project (`.npmrc` with an
`_authToken`, `.pypirc`, `.docker/config.json`, a token in `.git/config`): copied, the pull request's code would
read them. So the files of the source tree created or changed since source preparation ended (ctime, which
no process can set back: plugins' and trusted steps' writes) are read once, and each one that holds a
registered secret or an encoded form of one (`holds_secret`, the job registry's masker) is removed from the
copy and named in the log. Files from source preparation are not read (the tree as fetched holds no secret of
the job); the cost is reading the files written since (a dependency install included), at the masker's speed.

Limit: a secret spread over two files, or transformed in a way the masker does not know, is not found.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from runnerlib.security.paths import Workspace

# Read in windows of this size, overlapping by OVERLAP bytes so that a secret across a window edge is seen whole.
WINDOW = 8 << 20
OVERLAP = 64 << 10


def leave_out_secret_files(workspace: Workspace, src: str, copy: str, *, since: float,
                           holds_secret: Callable[[bytes], bool]) -> list[str]:
    """Remove from the copy `copy` every file whose original in `src` changed at or after `since` (time.time())
    and holds a secret (`holds_secret(data)`); their paths relative to `src`, in walk order.

    >>> leave_out_secret_files(Workspace("/job"), "/job/src", "/job/.untrusted/src", since=t0,
    ...                        holds_secret=lambda data: registry.mask(data) != data)   # doctest: +SKIP
    ['.npmrc']
    """
    base = str(workspace.path(src))
    found: list[str] = []

    def visit(fd: int, st: os.stat_result, where: str) -> None:
        if not stat.S_ISREG(st.st_mode) or st.st_ctime < since:
            return
        if _file_holds_secret(fd, holds_secret):
            found.append(os.path.relpath(where, base))

    workspace.walk(src, visit)
    for rel in found:
        workspace.remove(os.path.join(copy, rel), missing_ok=True)
    return found


def _file_holds_secret(path_fd: int, holds_secret: Callable[[bytes], bool]) -> bool:
    # The walk hands an O_PATH fd; reading goes through our own fd's magic link (the very file checked).
    fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        tail = b""
        while True:
            chunk = os.read(fd, WINDOW)
            if not chunk:
                return False
            if holds_secret(tail + chunk):
                return True
            tail = (tail + chunk)[-OVERLAP:]
    finally:
        os.close(fd)
