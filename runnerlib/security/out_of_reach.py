"""runnerlib's own files out of untrusted reach: where untrusted steps can write, runnerlib keeps nothing it obeys.

The triggers file is signed and published by the runner, the work directory holds its secrets socket and
scratch files, the summary is its report. An untrusted step that could write one of them would have its forged
trigger signed, or its own words taken for runnerlib's. So before anything runs, each of these paths is checked
by two rules, and refused with one line naming the option when either says an untrusted step could write it:

1. by resolved path: not inside (nor, for a directory, around) a tree untrusted steps are given to write: the
   source tree, the artifacts (hand-over) directory, the untrusted copy of the source. This is the rule that
   holds for an unprivileged runner, whose untrusted steps share its uid and are kept to those trees by
   Landlock, not by file modes;
2. by ownership and modes, when the runner is root and untrusted steps run as another uid: along the resolved
   path, no directory lets that uid replace the next component (write permission, unless a sticky bit
   protects an entry it does not own), the nearest existing directory does not let it create the missing
   rest, and the entry itself (for a directory: anything under it, `spawn._writable_by`) is not writable by it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from runnerlib.security.spawn import _dac_writable, _writable_by


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def untrusted_reach(path: str, *, trees: Iterable[str], sandbox: tuple[int, int] | None = None,
                    directory: bool = False) -> str | None:
    """Why an untrusted step could write `path`, or None when it cannot (see the module doc).

    `trees`: the trees untrusted steps write; `sandbox`: (uid, gid) they run as when the runner is root and
    that uid differs from the runner's (None: rule 1 only); `directory`: `path` is a directory runnerlib fills.
    """
    real = os.path.realpath(path)
    for tree in dict.fromkeys(t for t in trees if t):
        base = os.path.realpath(tree)
        if _inside(real, base):
            return f"it lies in {tree}, which untrusted steps can write"
        if directory and _inside(base, real):
            return f"it contains {tree}, which untrusted steps can write"
    if sandbox is None:
        return None
    uid, gid = sandbox
    parts = [p for p in real.split("/") if p]
    current = "/"
    parent_st = os.lstat("/")
    for index, name in enumerate(parts):
        entry = os.path.join(current, name)
        try:
            st = os.lstat(entry)
        except FileNotFoundError:
            if _dac_writable(parent_st, uid, gid):
                return f"uid {uid} may create {entry} (its directory {current} is writable by that uid)"
            return None  # runnerlib creates the rest itself, in a directory only it may write
        sticky_protects = bool(parent_st.st_mode & stat.S_ISVTX) and uid not in (parent_st.st_uid, st.st_uid)
        if _dac_writable(parent_st, uid, gid) and not sticky_protects:
            return f"uid {uid} may replace {entry} (its directory {current} is writable by that uid)"
        if index == len(parts) - 1:
            if directory and stat.S_ISDIR(st.st_mode):
                found = _writable_by(entry, uid, gid)
                if found:
                    return f"uid {uid} may write {found}"
            elif _dac_writable(st, uid, gid):
                return f"uid {uid} may write {entry}"
        current, parent_st = entry, st
    return None
