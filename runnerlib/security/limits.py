"""Resource limits of a step: the job file's `limits:` model, the `--limit NAME=VALUE` parser, sizes, defaults.

A limit is a plain number once parsed (bytes, seconds, counts). Which kernel mechanism enforces each one is
decided by the spawner for the machine it runs on (`runnerlib.security.spawn.plan_sandbox`) and stated by
`runnerlib sandbox policy`; this module only parses, validates and names them. Untrusted steps get
`UNTRUSTED_DEFAULTS` for every limit they do not set; trusted steps get only what they ask for.

Example::

    limits = StepLimits.model_validate({"pids": 256, "memory": "512M", "cpu_seconds": 600})
    limits = parse_limit_options(["memory=512M", "pids=256"])
    describe_limit("memory", limits.memory)    # '512 MiB'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runnerlib.security import cgroups

# Binary multiples whichever way they are written: CI users write 512M meaning MiB (as docker, k8s' Mi and
# ulimit do); a decimal reading would give 488 MiB and surprise nobody in a good way.
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
SIZE_FIELDS = ("memory", "file_size")
COUNT_FIELDS = ("pids", "cpu_seconds", "open_files")
LIMIT_NAMES = ("pids", "memory", "cpu_seconds", "file_size", "open_files", "cpus")
# CPU bandwidth: a cgroup's cpu.max (v2) or cfs quota (v1) caps it; nothing smaller than the kernel's 1 ms quota
# in a 100 ms period.
MIN_CPUS = 0.01
TRUSTED_CPUS_REFUSED = ("limits cpus: applies to untrusted steps only (a trusted step gets no cgroup of its own, and "
                        "no rlimit caps CPU bandwidth): set it in the untrusted steps' own limits")


class LimitError(ValueError):
    """A limit that cannot be parsed; the message names the field and the rule."""


def parse_size(value: Any, field: str = "size") -> int:
    """Bytes from 512M, 1G, 1.5GiB, 4096, 100k (binary multiples); a clear error naming `field` otherwise.

    >>> parse_size("1.5GiB")
    1610612736
    """
    if isinstance(value, bool):
        raise LimitError(f"{field}: {value!r} is not a size (like 512M, 1G, 1.5GiB or a number of bytes)")
    if isinstance(value, int):
        number: float = value
    else:
        match = _SIZE_RE.match(str(value)) if isinstance(value, str | float) else None
        if isinstance(value, float):
            match = _SIZE_RE.match(repr(value))
        if match is None:
            raise LimitError(f"{field}: {value!r} is not a size (like 512M, 1G, 1.5GiB or a number of bytes)")
        number = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if number < 1 or number >= 1 << 62:
        raise LimitError(f"{field}: {value!r} must be at least 1 byte and below 4 EiB")
    return int(number)


def format_size(size: int) -> str:
    """512 MiB, 1.5 GiB, 100 KiB, 12 bytes: how a size limit is shown in messages."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            text = f"{size / factor:.1f}".removesuffix(".0")
            return f"{text} {unit}"
    return f"{size} bytes"


def describe_limit(name: str, value: float) -> str:
    """The value as a person reads it: `512 MiB`, `600 s`, `256`, `1.5 CPUs`."""
    if name in SIZE_FIELDS:
        return format_size(int(value))
    if name == "cpu_seconds":
        return f"{value} s"
    if name == "cpus":
        return f"{value:g} CPU" + ("" if value == 1 else "s")
    return str(value)


def parse_cpus(value: Any) -> float:
    """CPUs as docker's --cpus and Kubernetes write them: 2, 1.5, "500m" (millicpus); at least 0.01.

    >>> parse_cpus("500m")
    0.5
    """
    text = str(value).strip().lower() if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
    try:
        number = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of CPUs (like 2, 1.5 or 500m)") from None
    if not MIN_CPUS <= number <= 1 << 20:  # also refuses nan and inf
        raise ValueError(f"{value!r} must be at least {MIN_CPUS} CPUs (10m)")
    return number


def limit_label(name: str) -> str:
    """The limit's name in a step's status line: `memory`, `cpu`, `pids`, `file size`, `open files`."""
    return {"cpu_seconds": "cpu", "file_size": "file size", "open_files": "open files"}.get(name, name)


class StepLimits(BaseModel):
    """Resource limits of one step (`limits:` in a job file). None leaves a limit unset.

    Sizes accept 512M, 1G, 1.5GiB or bytes (binary multiples); the rest are positive integers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pids: int | None = Field(default=None, gt=0, description="Processes and threads the step may have.")
    memory: int | None = Field(default=None, description="Memory, e.g. 512M or 2G.")
    cpu_seconds: int | None = Field(default=None, gt=0, description="CPU time in seconds (per process with "
                                                                     "RLIMIT_CPU).")
    file_size: int | None = Field(default=None, description="Largest file the step may write, e.g. 1G.")
    open_files: int | None = Field(default=None, gt=0, description="Open file descriptors per process.")
    cpus: float | None = Field(default=None, description="CPU bandwidth, e.g. 1.5 or 500m (a cgroup's cpu.max; "
                                                         "untrusted steps only).")

    @field_validator("memory", "file_size", mode="before")
    @classmethod
    def _size(cls, value: Any, info: Any) -> Any:
        if value is None:
            return None
        try:
            return parse_size(value, info.field_name)
        except LimitError as exc:
            # pydantic prefixes the field's location itself: keep only the rule.
            raise ValueError(str(exc).split(": ", 1)[1]) from None

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, value: Any) -> Any:
        return None if value is None else parse_cpus(value)

    @field_validator("pids", "cpu_seconds", "open_files", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be a whole number")
        return value

    def items(self) -> list[tuple[str, Any]]:
        """(name, value) of every limit that is set, in LIMIT_NAMES order."""
        return [(n, getattr(self, n)) for n in LIMIT_NAMES if getattr(self, n) is not None]

    def merged_over(self, base: StepLimits | None) -> StepLimits:
        """These limits, with `base` filling the ones left unset."""
        if base is None:
            return self
        return StepLimits(**{**base.model_dump(), **self.model_dump(exclude_none=True)})

    def describe(self) -> str:
        """`pids=256, memory=512 MiB` (or `none`)."""
        return ", ".join(f"{n}={describe_limit(n, v)}" for n, v in self.items()) or "none"

    def __str__(self) -> str:  # how `runnerlib config` and messages show it
        return self.describe()


# What an untrusted step gets unless it (or --limit) says otherwise: generous for a build, small enough that
# a fork bomb, a memory hog or a runaway writer cannot take the machine (or its disk) down.
UNTRUSTED_DEFAULTS = StepLimits(pids=4096, memory=8 << 30, cpu_seconds=3600, file_size=16 << 30,
                                open_files=8192)


def parse_limit_options(options: Iterable[str], *, option: str = "--limit") -> StepLimits:
    """`--limit NAME=VALUE` options (repeatable) as StepLimits; one clear error naming the option otherwise
    (`option=""` leaves the prefix to the caller, e.g. pydantic naming the field)."""
    where = f"{option} " if option else ""
    values: dict[str, str] = {}
    for item in options:
        name, sep, value = str(item).partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not value.strip():
            raise LimitError(f"{where}{item!r}: must be NAME=VALUE, e.g. memory=512M")
        if name not in LIMIT_NAMES:
            raise LimitError(f"{where}{item!r}: unknown limit {name!r} (known: {', '.join(LIMIT_NAMES)})")
        values[name] = value.strip()
    return limits_from_mapping(values, where=option)


def limits_from_mapping(values: Mapping[str, Any] | None, *, where: str = "limits") -> StepLimits:
    """StepLimits from a mapping, with pydantic's errors turned into one line naming the field."""
    try:
        return StepLimits.model_validate(dict(values or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "?"
        prefix = f"{where} " if where else ""
        raise LimitError(f"{prefix}{field}: {err['msg'].removeprefix('Value error, ')}") from None


# RLIMIT_CPU sends SIGXCPU at the soft limit (a step may catch it to save its work) and SIGKILL at the hard.
CPU_GRACE_SECONDS = 5


def rlimits_for(limits: StepLimits, *, by_cgroup: Iterable[str] = (), hard_nofile: int | None = None
                ) -> tuple[dict[str, int | list[int]], list[str]]:
    """The setrlimit values ({RLIMIT name: value | [soft, hard]}) that enforce `limits`, minus those a cgroup
    enforces (`by_cgroup`), and notes on what was adjusted (open_files above the runner's own hard limit,
    which an unprivileged process cannot raise, is lowered to it)."""
    cg = set(by_cgroup)
    out: dict[str, int | list[int]] = {}
    notes: list[str] = []
    if limits.pids is not None and "pids" not in cg:
        out["nproc"] = limits.pids
    if limits.memory is not None and "memory" not in cg:
        out["as"] = limits.memory
    if limits.cpu_seconds is not None:
        out["cpu"] = [limits.cpu_seconds, limits.cpu_seconds + CPU_GRACE_SECONDS]
    if limits.file_size is not None:
        out["fsize"] = limits.file_size
    if limits.open_files is not None:
        value = limits.open_files
        if hard_nofile is not None and 0 <= hard_nofile < value:
            notes.append(f"open_files {value} lowered to the runner's hard limit {hard_nofile}")
            value = hard_nofile
        out["nofile"] = value
    return out, notes


def address_space_note(rlimits: Mapping[str, Any]) -> str | None:
    """What a failed step's report says when its memory limit was RLIMIT_AS (`rlimits` as rlimits_for gives
    them): `memory limit 512 MiB (an address-space limit) may have been reached`; None otherwise.

    Why "may": an allocation beyond RLIMIT_AS simply fails inside the step (MemoryError, ENOMEM, a runtime that
    cannot reserve its heap), and no kernel counter records it, so nothing outside the step can tell; reading
    the step's own output for it would let untrusted code choose runnerlib's words. The untrusted default is a
    safety net, not a limit somebody chose: it gets no note (every failing step would carry one).
    """
    value = rlimits.get("as")
    if not isinstance(value, int) or value == UNTRUSTED_DEFAULTS.memory:
        return None
    return f"memory limit {format_size(value)} (an address-space limit) may have been reached"


def mechanism(name: str, *, by_cgroup: Iterable[str] = (), user_namespace: bool = False) -> str:
    """Which kernel mechanism enforces limit `name` (for `runnerlib sandbox policy` and the step's log)."""
    if name in set(by_cgroup):
        if cgroups.version_of(cgroups.LIMIT_CONTROLLERS[name]) == 2:
            return {"memory": "cgroup v2 memory.max (the step's own cgroup; OOM kill, read from memory.events)",
                    "pids": "cgroup v2 pids.max (the step's own cgroup)",
                    "cpus": "cgroup v2 cpu.max (the step's own cgroup; throttled beyond it)"}[name]
        return {"memory": "cgroup v1 memory.limit_in_bytes (the step's own cgroup; OOM kill)",
                "pids": "cgroup v1 pids.max (the step's own cgroup)",
                "cpus": "cgroup v1 cpu.cfs_quota_us (the step's own cgroup; throttled beyond it)"}[name]
    return {
        "cpus": "NOT ENFORCED: no writable cgroup cpu controller here (best-effort mode)",
        "memory": "RLIMIT_AS per process (address space: an allocation beyond it fails)",
        "pids": "RLIMIT_NPROC (counted per uid" + (", inside the step's own user namespace)" if user_namespace
                                                  else ": every process of that uid counts)"),
        "cpu_seconds": f"RLIMIT_CPU per process (SIGXCPU, SIGKILL {CPU_GRACE_SECONDS} s later)",
        "file_size": "RLIMIT_FSIZE per process (SIGXFSZ)",
        "open_files": "RLIMIT_NOFILE per process",
    }[name]


def coerce_limits(value: Any) -> Any:
    """A `limits` value as written anywhere (a mapping, `--limit` items, "memory=512M,pids=256" from the
    environment) as StepLimits; for pydantic before-validators (a LimitError is a ValueError)."""
    if value is None or isinstance(value, StepLimits):
        return value
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if isinstance(value, list | tuple):
        return parse_limit_options(value, option="")
    if isinstance(value, Mapping):
        return limits_from_mapping(value, where="")
    raise LimitError(f"{value!r} must be a mapping such as {{pids: 256, memory: 512M}}")
