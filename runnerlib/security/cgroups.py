"""A step's own cgroup for its memory and process limits: cgroup v2 (the unified hierarchy) or v1, chosen here.

Why cgroups where they are writable: RLIMIT_AS limits each process's address space (a build of 20
processes may use 20 times the limit, and a runtime that reserves address space fails early), and
RLIMIT_NPROC counts every process of a uid, so parallel untrusted steps (all uid 65534) share one count. A
cgroup counts the step's processes only, and its OOM kill is recorded (v2 memory.events, v1
memory.oom_control: oom_kill), so the step is reported as `killed: memory limit 512 MiB`.

Which hierarchy, per controller: cgroup v2 where the runner's own v2 cgroup offers the controller (a pure v2
host, /sys/fs/cgroup being cgroup2, or a subtree delegated to the runner's uid), else the controller's v1
hierarchy (root only). A hybrid host (v1 controllers, an empty /sys/fs/cgroup/unified) uses v1 for the limits.
A v2 cgroup also gives `cgroup.kill`: every process of the step killed at once, forks in flight included;
the runner uses it, where the step has one, before its sweep of the step's process tree.

The step's cgroups are made beneath the runner's own (from /proc/self/cgroup), named runnerlib-<pid>-<n>; the
step moves itself in (cgroup.procs) before it drops root, and `remove()` deletes them once the step's
processes are gone. cgroup v2's rule that a cgroup with processes cannot hand controllers to its children
(the no-internal-process rule) means a runner in a delegated, non-root cgroup first moves itself into a leaf
of its own (runnerlib-runner), and only when that cgroup holds nothing but the runner and its descendants
(never somebody else's processes). Elsewhere (not root and nothing delegated, read-only cgroupfs) the spawner
falls back to rlimits.
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from dataclasses import dataclass

_ROOT = "/sys/fs/cgroup"
_counter = itertools.count(1)
CONTROLLERS = ("memory", "pids", "cpu")
# The step limit each controller enforces (runnerlib.security.limits.StepLimits field -> controller).
LIMIT_CONTROLLERS = {"memory": "memory", "pids": "pids", "cpus": "cpu"}
_LIMIT_FILES = {"memory": ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"), "pids": ("pids.max",),
                "cpu": ("cpu.cfs_period_us", "cpu.cfs_quota_us")}
# v2: memory.swap.max 0 is v1's memsw limit equal to the memory limit (no swap beyond it).
_V2_LIMIT_FILES = {"memory": ("memory.max", "memory.swap.max"), "pids": ("pids.max",), "cpu": ("cpu.max",)}
_V2_SWAP_VALUE = "0"
CPU_PERIOD_US = 100_000  # the kernel's default period; the quota is cpus times it


def _values(controller: str, value: float, version: int) -> list[str]:
    """What goes into the controller's limit files (in _LIMIT_FILES / _V2_LIMIT_FILES order)."""
    if controller == "cpu":
        quota = max(1000, round(value * CPU_PERIOD_US))
        return [f"{quota} {CPU_PERIOD_US}"] if version == 2 else [str(CPU_PERIOD_US), str(quota)]
    if controller == "memory" and version == 2:
        return [str(int(value)), _V2_SWAP_VALUE]
    return [str(int(value))] * len(_LIMIT_FILES[controller] if version == 1 else _V2_LIMIT_FILES[controller])
RUNNER_LEAF = "runnerlib-runner"


@dataclass(frozen=True)
class Hierarchy:
    """Where a controller's step cgroups are made: cgroup `version` 1 or 2, beneath `path`."""

    version: int
    path: str

    def __str__(self) -> str:  # what `available()` used to hold: the directory
        return self.path


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _own_dirs() -> dict[str, str]:
    """controller -> this process's cgroup directory, for the v1 memory and pids hierarchies."""
    dirs: dict[str, str] = {}
    try:
        lines = _read("/proc/self/cgroup").splitlines()
    except OSError:
        return dirs
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        for name in controllers.split(","):
            if name in _LIMIT_FILES:
                base = os.path.join(_ROOT, name, path.lstrip("/"))
                if os.path.isfile(os.path.join(base, "cgroup.procs")):
                    dirs[name] = base
    return dirs


def v2_mount(mountinfo: str = "/proc/self/mountinfo") -> tuple[str, str] | None:
    """(mount point, root within the hierarchy) of the cgroup2 mount: /sys/fs/cgroup on a v2 host,
    /sys/fs/cgroup/unified on a hybrid one; None without one."""
    found: dict[str, tuple[str, str]] = {}
    try:
        lines = _read(mountinfo).splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, fstype = left.split(), right.split(" ", 1)[0]
        if fstype == "cgroup2" and len(fields) > 4:
            point = fields[4].replace("\\040", " ")
            found.setdefault(point, (point, fields[3]))
    for preferred in (_ROOT, f"{_ROOT}/unified"):
        if preferred in found:
            return found[preferred]
    return next(iter(found.values()), None)


def _own_v2_path() -> str | None:
    try:
        for line in _read("/proc/self/cgroup").splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        pass
    return None


_v2_bases: dict[int, str | None] = {}


def v2_base() -> str | None:
    """The runner's own cgroup in the v2 hierarchy, when the runner may make cgroups beneath it (root, or a
    subtree delegated to its uid); remembered per process (the runner may move itself into a leaf of it)."""
    pid = os.getpid()
    if pid not in _v2_bases:
        _v2_bases.clear()
        base = None
        mount, own = v2_mount() or (None, None), _own_v2_path()
        if mount[0] is not None and own is not None and not own.endswith(" (deleted)"):
            point, root = mount
            rel = own[len(root):] if root != "/" and own.startswith(root) else own
            path = os.path.normpath(os.path.join(point, rel.lstrip("/")))
            if os.path.basename(path) == RUNNER_LEAF:  # a runner before us moved the process here
                path = os.path.dirname(path)
            if os.access(path, os.W_OK) and os.access(os.path.join(path, "cgroup.procs"), os.W_OK):
                base = path
        _v2_bases[pid] = base
    return _v2_bases[pid]


def v2_controllers(base: str) -> set[str]:
    """The controllers `base` can hand to its children (its cgroup.controllers)."""
    try:
        return set(_read(os.path.join(base, "cgroup.controllers")).split())
    except OSError:
        return set()


def available() -> dict[str, Hierarchy]:
    """controller -> where a step's cgroup for it can be made: cgroup v2 where the runner's v2 cgroup offers
    the controller, else its v1 hierarchy (root and writable). No side effects (see StepCgroup.create)."""
    out: dict[str, Hierarchy] = {}
    base = v2_base()
    if base is not None:
        out.update({c: Hierarchy(2, base) for c in CONTROLLERS if c in v2_controllers(base)})
    if os.geteuid() == 0:
        for name, d in _own_dirs().items():
            if name not in out and os.access(d, os.W_OK):
                out[name] = Hierarchy(1, d)
    return out


def version_of(controller: str) -> int | None:
    """1 or 2: the hierarchy a step's cgroup for `controller` would be made in; None without one."""
    where = available().get(controller)
    return where.version if where else None


def _write(path: str, value: str) -> None:
    # O_CREAT: cgroupfs refuses to create a file it does not offer (the error then says so); a plain directory
    # standing in for cgroupfs (tests) gets the file.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether `pid` is `ancestor` or beneath it (by /proc/<pid>/stat's ppid chain)."""
    seen = 0
    while pid > 1 and seen < 4096:
        if pid == ancestor:
            return True
        try:
            stat = _read(f"/proc/{pid}/stat")
        except OSError:
            return False
        pid = int(stat[stat.rfind(")") + 2:].split()[1])
        seen += 1
    return pid == ancestor


def prepare_v2(base: str, wanted: set[str], *, owner: int | None = None) -> set[str]:
    """Enable `wanted` controllers for the children of `base` (cgroup.subtree_control); return those enabled.

    A non-root cgroup holding processes cannot enable them (EBUSY, the no-internal-process rule): when
    every process in it is `owner` (default: this process) or a descendant of it, they move into the leaf
    base/runnerlib-runner first; somebody else's processes are never moved (the controllers stay off).
    """
    owner = os.getpid() if owner is None else owner
    sub = os.path.join(base, "cgroup.subtree_control")

    def enabled() -> set[str]:
        try:
            return set(_read(sub).split())
        except OSError:
            return set()

    missing = (wanted & v2_controllers(base)) - enabled()
    if not missing:
        return wanted & enabled()
    try:
        _write(sub, " ".join(f"+{c}" for c in sorted(missing)))
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            return wanted & enabled()
        procs = [int(p) for p in _read(os.path.join(base, "cgroup.procs")).split()]
        if not all(_descends_from(p, owner) for p in procs):
            return wanted & enabled()
        leaf = os.path.join(base, RUNNER_LEAF)
        try:
            os.makedirs(leaf, exist_ok=True)
            for pid in procs:
                try:
                    _write(os.path.join(leaf, "cgroup.procs"), str(pid))
                except ProcessLookupError:
                    pass
            _write(sub, " ".join(f"+{c}" for c in sorted(missing)))
        except OSError:
            pass
    return wanted & enabled()


def _kill_v2(path: str) -> list[int]:
    """cgroup.kill of a v2 cgroup (SIGKILL to every process in it, forks in flight included); the pids it
    held, read just before."""
    try:
        pids = [int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()]
    except OSError:
        return []
    if pids:
        try:
            _write(os.path.join(path, "cgroup.kill"), "1")
        except OSError:
            return []  # a kernel before 5.14 has no cgroup.kill: the process-tree sweep does the work
    return pids


class StepCgroup:
    """The cgroups of one step: one directory per controller that enforces one of its limits (v1: one per
    controller's hierarchy; v2: one directory for all), and a v2 one for `kill()` when asked."""

    def __init__(self, dirs: dict[str, str], v2: str | None = None) -> None:
        self.dirs = dirs  # controller -> its directory (v1 or v2)
        self.v2 = v2  # the step's v2 cgroup, when it has one

    @classmethod
    def create(cls, memory: int | None, pids: int | None, *, cpus: float | None = None, kill: bool = False,
               where: dict[str, Hierarchy] | None = None, v2: str | None = None) -> StepCgroup | None:
        """Make the step's cgroups for the limits given (None: not limited); None when none can be made.

        `kill`: make a v2 cgroup even with no controller from it, for cgroup.kill (a step without a PID
        namespace). `where` / `v2` (tests): the hierarchies to use instead of the runner's own.
        """
        where = available() if where is None else where
        v2_base_dir = v2_base() if v2 is None else v2
        wanted = {c: v for c, v in (("memory", memory), ("pids", pids), ("cpu", cpus))
                  if v is not None and c in where}
        name = f"runnerlib-{os.getpid()}-{next(_counter)}"
        made = cls({})
        try:
            v2_wanted = {c for c in wanted if where[c].version == 2}
            if v2_wanted:
                v2_wanted = prepare_v2(where[sorted(v2_wanted)[0]].path, v2_wanted)
                for c in set(wanted) - v2_wanted:
                    if where[c].version == 2:
                        wanted.pop(c)  # not delegated after all: rlimits for it
            v2_parent = where[sorted(v2_wanted)[0]].path if v2_wanted else v2_base_dir if kill else None
            if v2_parent is not None:
                path = os.path.join(v2_parent, name)
                os.mkdir(path)
                made.v2 = path
                for controller in sorted(v2_wanted):
                    made.dirs[controller] = path
                    values = _values(controller, wanted[controller], 2)
                    for i, limit_file in enumerate(_V2_LIMIT_FILES[controller]):
                        target = os.path.join(path, limit_file)
                        if i and not os.path.exists(target):
                            continue  # memory.swap.max exists only with swap accounting
                        _write(target, values[i])
            for controller, value in wanted.items():
                if where[controller].version != 1:
                    continue
                path = os.path.join(where[controller].path, name)
                os.mkdir(path)
                made.dirs[controller] = path
                values = _values(controller, value, 1)
                for i, limit_file in enumerate(_LIMIT_FILES[controller]):
                    target = os.path.join(path, limit_file)
                    if i and controller == "memory" and not os.path.exists(target):
                        continue  # memsw exists only with swap accounting
                    _write(target, values[i])
        except OSError:
            made.remove()
            return None
        return made if made.dirs or made.v2 else None

    @property
    def controllers(self) -> list[str]:
        return sorted(self.dirs)

    @property
    def limit_names(self) -> list[str]:
        """The step limits (StepLimits fields) these cgroups enforce, sorted."""
        return sorted(n for n, c in LIMIT_CONTROLLERS.items() if c in self.dirs)

    def procs_files(self) -> list[str]:
        """The files the step writes "0" into to move itself in (each directory once): `tasks` in a v1
        hierarchy, cgroup.procs in a v2 one.

        Why `tasks` on v1: the kernel moves the writing thread alone without taking the global threadgroup
        lock when the pid written is 0 and the file is a per-thread one, while cgroup.procs takes it, and
        taking it for writing waits for an RCU grace period (0.1 ms on an idle machine, 5-20 ms while
        another sandbox's network namespace is torn down: bench_spawn.py's `sandboxed-cg`). The step is
        single-threaded when it writes (forked, not yet exec'd), so moving its thread moves the process.
        v2 domain cgroups have no per-thread file (cgroup.threads needs a threaded cgroup).
        """
        files = []
        for d in dict.fromkeys([*self.dirs.values(), *([self.v2] if self.v2 else [])]):
            v1_tasks = os.path.join(d, "tasks")
            files.append(v1_tasks if d != self.v2 and os.path.exists(v1_tasks) else os.path.join(d, "cgroup.procs"))
        return files

    def version(self, controller: str) -> int:
        return 2 if self.v2 is not None and self.dirs.get(controller) == self.v2 else 1

    def _counter(self, controller: str, filename: str, key: str) -> int:
        try:
            for line in _read(os.path.join(self.dirs[controller], filename)).splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        except (OSError, KeyError, ValueError):
            pass
        return 0

    def memory_killed(self) -> bool:
        """Whether the kernel OOM-killed a process of the step for its memory limit."""
        if self.version("memory") == 2:
            return self._counter("memory", "memory.events", "oom_kill") > 0
        return self._counter("memory", "memory.oom_control", "oom_kill") > 0

    def pids_refused(self) -> bool:
        """Whether a fork of the step was refused for its pids limit."""
        return self._counter("pids", "pids.events", "max") > 0

    def kill(self) -> list[int]:
        """SIGKILL every process of the step through its v2 cgroup's cgroup.kill; the pids it held ([] without
        a v2 cgroup: the caller's sweep of the process tree remains)."""
        return _kill_v2(self.v2) if self.v2 else []

    def populated(self) -> bool | None:
        """Whether a process of the step is still alive (v2 cgroup.events); None without a v2 cgroup."""
        if not self.v2:
            return None
        try:
            for line in _read(os.path.join(self.v2, "cgroup.events")).splitlines():
                if line.startswith("populated "):
                    return line.split()[1] != "0"
        except OSError:
            pass
        return None

    def remove(self, wait: float = 5.0) -> None:
        """Delete the cgroups (killing what is left in a v2 one, retrying while the last processes exit)."""
        deadline = time.monotonic() + wait
        if self.v2:
            _kill_v2(self.v2)
        for path in dict.fromkeys([*self.dirs.values(), *([self.v2] if self.v2 else [])]):
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
        self.v2 = None


def cgroup_limits(limits: object, defaults: object) -> list[str]:
    """The limits of `limits` (StepLimits) a step's own cgroup enforces here, sorted: those set to something
    other than `defaults` (the untrusted defaults are rlimits: no per-step cgroup cost) whose controller is
    available."""
    where = available()
    return sorted(n for n, c in LIMIT_CONTROLLERS.items() if c in where and getattr(limits, n, None) is not None
                  and getattr(limits, n) != getattr(defaults, n, None))


def leftover_mechanism(*, pid_namespace: bool, step_cgroup: bool) -> str:
    """How the processes a step leaves behind are ended, for `runnerlib sandbox policy` and the docs.

    `pid_namespace`: the step has its own PID namespace; `step_cgroup`: a cgroup is made for its limits
    (a memory or pids limit somebody set, with a writable hierarchy)."""
    if pid_namespace:
        return ("its own PID namespace: when the step's main process exits, its init kills every process left, "
                "and the kernel ends the namespace")
    sweep = "the subreaper supervisor's sweep of the step's process tree (repeated until it is empty)"
    if step_cgroup and v2_base() is not None:
        return f"cgroup.kill of the step's own cgroup v2, then {sweep}"
    return sweep


def summary() -> dict[str, object]:
    """What `runnerlib sandbox probe` shows: per controller, the hierarchy a step's cgroup would use, and the
    v2 cgroup beneath which a step can get one of its own (cgroup.kill)."""
    where = available()
    return {"limits": {c: {"version": h.version, "path": h.path} for c, h in where.items()},
            "v2": v2_base(), "v2_mount": (v2_mount() or (None,))[0]}
