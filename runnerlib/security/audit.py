"""Audit the job's processes: which expose a registered secret in /proc/<pid>/cmdline or environ.

cmdline is world-readable, and environ is readable by the same uid while the process is dumpable: a
secret on either is visible to other processes. The report names the pid, where, and the entry with the
secret masked; never the value. The runner runs it after each step in debug mode.

Example::

    report = audit(registry)              # the calling process's descendants
    for finding in report.findings:
        log.warning("%s", finding)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runnerlib.security import proctree


@dataclass(frozen=True)
class Finding:
    """One /proc entry that holds a secret: `entry` is masked."""

    pid: int
    where: str  # "cmdline" or "environ"
    entry: str
    comm: str = ""

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.comm}) exposes a secret in its {self.where}: {self.entry}"


@dataclass
class AuditReport:
    scanned: list[int] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    unreadable: list[tuple[int, str]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def describe(self) -> str:
        lines = [f"audited {len(self.scanned)} process(es): "
                 + ("no secret exposed" if self.clean else f"{len(self.findings)} exposure(s)")]
        lines += [f"  {f}" for f in self.findings]
        if self.unreadable:
            lines.append("  unreadable (not checked): "
                         + ", ".join(f"{pid} {where}" for pid, where in self.unreadable))
        return "\n".join(lines)


def _session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2:].split()[3])


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def job_processes(*, session: int | None = None, root: int | None = None) -> list[int]:
    """Processes of a session, or the descendants of `root` (default: the calling process)."""
    if session is not None:
        return sorted(p for p in proctree.parent_map() if _session_of(p) == session)
    return sorted(proctree.descendants(os.getpid() if root is None else root))


def audit(registry: Any, pids: Iterable[int] | None = None, *, session: int | None = None,
          root: int | None = None) -> AuditReport:
    """Scan cmdline and environ of `pids` (default: `job_processes(session=..., root=...)`)."""
    report = AuditReport()
    targets = list(pids) if pids is not None else job_processes(session=session, root=root)
    for pid in targets:
        report.scanned.append(pid)
        for where in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{where}", "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                break  # the process is gone
            except OSError:
                report.unreadable.append((pid, where))
                continue
            for entry in data.split(b"\0"):
                if entry and registry.mask(entry) != entry:
                    shown = registry.mask(entry).decode("utf-8", errors="replace")
                    report.findings.append(Finding(pid, where, shown, _comm(pid)))
    return report
