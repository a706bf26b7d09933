"""Process-tree walking over /proc: the descendants of a process, and killing them until none are left.

Daemonising descendants leave their process group and session (setsid, double fork), so a group kill does
not reach them; but they cannot leave the subtree of a child subreaper, which adopts them when their parent
dies. Each step has a subreaper (its supervisor), so "everything the step started" is the subtree beneath it.
"""

from __future__ import annotations

import os
import signal
import time


def parent_map() -> dict[int, int]:
    """pid -> ppid for every live (non-zombie) process in /proc; processes that vanish mid-walk are skipped."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm (field 2) may contain spaces and ')': the fields after the last ')' are state, ppid, ...
        rest = stat[stat.rfind(b")") + 2:].split()
        # A zombie is already dead (its children were re-parented): nothing left to signal.
        if len(rest) > 1 and rest[0] != b"Z":
            parents[int(name)] = int(rest[1])
    return parents


def descendants(root: int) -> list[int]:
    """Every process beneath `root` (not `root` itself), parents before children."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_map().items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def kill_tree(root: int, sig: int = signal.SIGKILL, *, include_root: bool = False, rounds: int = 50,
              seen: set[int] | None = None) -> int:
    """Send `sig` to every descendant of `root` (and to root if asked), repeating while new ones appear.

    Returns how many distinct processes were signalled. With SIGKILL the loop ends when the subtree is empty (a fork racing
    the walk is caught on the next round); with other signals one round is made. `seen`, when given,
    collects every pid signalled (across calls).
    """
    sent: set[int] = set()
    for _ in range(rounds if sig == signal.SIGKILL else 1):
        targets = descendants(root)
        if include_root:
            targets.append(root)
        if not targets:
            break
        for pid in targets:
            try:
                os.kill(pid, sig)
                sent.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        if include_root and sig == signal.SIGKILL:
            include_root = False
        time.sleep(0.002)  # let the killed exit before walking again
    if seen is not None:
        seen |= sent
    return len(sent)
