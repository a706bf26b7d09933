"""A step's own cgroup (cgroup v1 memory and pids controllers) for its memory and process limits, as root.

Why cgroups where they are writable: RLIMIT_AS limits each process's address space (a build of 20
processes may use 20 times the limit, and a runtime that reserves address space fails early), and
RLIMIT_NPROC counts every process of a uid, so parallel untrusted steps (all uid 65534) share one count. A
cgroup counts the step's processes only, and its OOM kill is recorded (memory.oom_control: oom_kill), so
the step is reported as `killed: memory limit 512 MiB`.

The cgroup is made beneath the runner's own (from /proc/self/cgroup), named runnerlib-<pid>-<n>; the step
moves itself in (cgroup.procs) before it drops root, and `remove()` deletes it once the step's processes are
gone. Elsewhere (not root, cgroup v2 only, read-only cgroupfs) the spawner falls back to rlimits.
"""

from __future__ import annotations

import itertools
import os
import time

_ROOT = "/sys/fs/cgroup"
_counter = itertools.count(1)
_LIMIT_FILES = {"memory": ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"), "pids": ("pids.max",)}


def _own_dirs() -> dict[str, str]:
    """controller -> this process's cgroup directory, for the v1 memory and pids hierarchies."""
    dirs: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return dirs
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        for name in controllers.split(","):
            if name in _LIMIT_FILES:
                base = os.path.join(_ROOT, name, path.lstrip("/"))
                if os.path.isfile(os.path.join(base, "cgroup.procs")):  # the root cgroup has no limit files
                    dirs[name] = base
    return dirs


def available() -> dict[str, str]:
    """controller -> directory where a step's cgroup can be made (root and a writable v1 hierarchy)."""
    if os.geteuid() != 0:
        return {}
    return {name: d for name, d in _own_dirs().items() if os.access(d, os.W_OK)}


class StepCgroup:
    """The cgroups of one step: one directory per controller that enforces one of its limits."""

    def __init__(self, dirs: dict[str, str]) -> None:
        self.dirs = dirs

    @classmethod
    def create(cls, memory: int | None, pids: int | None) -> StepCgroup | None:
        """Make the step's cgroups for the limits given (None: not limited); None when none can be made."""
        bases = available()
        wanted = {"memory": memory, "pids": pids}
        name = f"runnerlib-{os.getpid()}-{next(_counter)}"
        made: dict[str, str] = {}
        try:
            for controller, value in wanted.items():
                if value is None or controller not in bases:
                    continue
                path = os.path.join(bases[controller], name)
                os.mkdir(path)
                made[controller] = path
                for i, limit_file in enumerate(_LIMIT_FILES[controller]):
                    target = os.path.join(path, limit_file)
                    if i and not os.path.exists(target):
                        continue  # memsw exists only with swap accounting
                    with open(target, "w") as f:
                        f.write(str(value))
        except OSError:
            cls(made).remove()
            return None
        return cls(made) if made else None

    @property
    def controllers(self) -> list[str]:
        return sorted(self.dirs)

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs.values()]

    def _counter(self, controller: str, filename: str, key: str) -> int:
        try:
            with open(os.path.join(self.dirs[controller], filename)) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except (OSError, KeyError, ValueError):
            pass
        return 0

    def memory_killed(self) -> bool:
        """Whether the kernel OOM-killed a process of the step for its memory limit."""
        return self._counter("memory", "memory.oom_control", "oom_kill") > 0

    def pids_refused(self) -> bool:
        """Whether a fork of the step was refused for its pids limit."""
        return self._counter("pids", "pids.events", "max") > 0

    def remove(self, wait: float = 5.0) -> None:
        """Delete the cgroups (retrying while the last processes exit)."""
        deadline = time.monotonic() + wait
        for path in list(self.dirs.values()):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # left behind empty-ish; harmless, named for the runner's pid
                    time.sleep(0.001)  # a dying task leaves its cgroup within a few ms
        self.dirs = {}
