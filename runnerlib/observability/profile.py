"""Per-step resource profiles: what the zygote's supervisor measured when it had reaped the step's subtree.

Source (chosen over cgroup accounting, which this runner cannot count on: cgroup v1 hosts, no delegation):
getrusage(RUSAGE_CHILDREN) in the per-step supervisor, which is a subreaper and reaps the step and every
descendant, daemons included, so CPU covers the whole subtree; max_rss_bytes is the peak of the largest
single process (the kernel keeps a maximum, not a sum); read_bytes/write_bytes (bytes through read/write
syscalls) are the difference of the supervisor's /proc/self/io across the step (the kernel adds each reaped
child's counters to its reaper's); they are absent under an unprivileged runner, where the non-dumpable
supervisor cannot read its own /proc/self/io (root owns it). disk_read_bytes/disk_write_bytes come from
rusage's block counts (what reached the block layer; 0 on tmpfs).
output_bytes is what the step printed (and the masker scanned).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FIELDS = ("cpu_user_seconds", "cpu_system_seconds", "max_rss_bytes", "read_bytes", "write_bytes",
          "disk_read_bytes", "disk_write_bytes", "output_bytes")


def merge_usage(total: Mapping[str, Any] | None, more: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Two attempts' profiles as one: sums, except the peak RSS, which is the larger."""
    if not more:
        return dict(total) if total else None
    if not total:
        return dict(more)
    out = dict(total)
    for key, value in more.items():
        if not isinstance(value, (int, float)):
            continue
        old = out.get(key, 0)
        out[key] = max(old, value) if key == "max_rss_bytes" else round(old + value, 6)
    return out


def human_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return "-"


def profile_table(steps: Iterable[Any]) -> str:
    """The `--profile` table printed under the summary: one row per step that ran."""
    rows = [("STEP", "CPU-USER", "CPU-SYS", "PEAK-RSS", "READ", "WRITTEN", "OUTPUT")]
    for r in steps:
        res = getattr(r, "resources", None)
        if not res:
            continue
        rows.append((r.name, f"{res.get('cpu_user_seconds', 0):.2f}s", f"{res.get('cpu_system_seconds', 0):.2f}s",
                     human_bytes(res.get("max_rss_bytes")), human_bytes(res.get("read_bytes")),
                     human_bytes(res.get("write_bytes")), human_bytes(res.get("output_bytes"))))
    if len(rows) == 1:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows) + "\n"
