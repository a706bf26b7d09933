"""One process of a step: spawned (sandboxed when untrusted), its output masked as it streams, its tree reaped.

Guarantees, for trusted and untrusted steps alike:
  * the step is a session and process-group leader, spawned through the fork server (no Python between
    fork and exec in this threaded process), beneath a per-step subreaper: nothing it starts can leave
    the subtree, and if the runner dies the fork server kills every step;
  * stdout and stderr are read by one poll loop (no deadlock whichever pipe fills; no reordering within a
    stream) and pass through `::add-mask::` (trusted steps only register) then the masker, before any
    byte reaches `on_output(stream_name, masked_bytes)` or the result;
  * timeout / cancellation: SIGTERM to the group and the subtree, `grace` seconds, then SIGKILL to the group
    and to every descendant (daemons included); exit 124 on timeout, 143 on cancellation;
  * when the step's main process exits, whatever it left running is killed (GitLab and Buildkite do the
    same with the process group; here it includes processes that left the group): by the kernel with the
    step's PID namespace (untrusted steps, where the kernel allows it), else by sweeping the supervisor's
    subtree until it is empty; `leftover_killed` counts them and `reason` says `killed leftover processes: N`;
  * limits (StepLimits) apply to trusted steps when given and to untrusted ones always (defaults for the
    rest); a limit that ended the step is named in `limit_hit` and `reason` (`killed: memory limit 512 MiB`);
  * the command line logged, the `reason` and every exception text are masked.

Example::

    result = run_process(["make", "test"], registry=reg, trusted=False, cwd="/job/src", timeout=600,
                         on_output=lambda stream, data: sys.stdout.buffer.write(data))
    if result.refused:
        print(result.reason)
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runnerlib.execution.allocator import keep_large_buffers_on_heap
from runnerlib.security import proctree
from runnerlib.security.inband import AddMaskFilter
from runnerlib.security.known_formats import MaskedThenKnown, NoticeOnce
from runnerlib.security.limits import (
    TRUSTED_CPUS_REFUSED,
    StepLimits,
    address_space_note,
    describe_limit,
    limit_label,
    rlimits_for,
)
from runnerlib.security.network import NetworkSpecError, parse_network, plan_for_trusted
from runnerlib.security.policy import PolicyError, SandboxPolicy
from runnerlib.security.spawn import (
    REFUSED_EXIT,
    SandboxPlan,
    SandboxRefused,
    SpawnedStep,
    SpawnError,
    plan_sandbox,
    spawn,
)
from runnerlib.security.untrusted_env import build_untrusted_env

log = logging.getLogger("runnerlib.process")

TIMEOUT_EXIT = 124
CANCELLED_EXIT = 143
# The worker's contract for cancellation: SIGTERM, 60 s of grace, SIGKILL.
DEFAULT_GRACE = 60.0
# A prompt without a newline that looks like the start of a secret is shown after this long (unless it ends
# with 4 or more bytes of one: see MaskedStream.flush_idle).
IDLE_FLUSH = 0.5
# Read this much at a time, and enlarge a pipe to this once a read finds it full: every read, ::add-mask::
# scan, masker scan and log write costs a fixed amount of Python per call, so a bulk writer (1 GiB of lines)
# must not be cut into 64 KiB pieces; but each piece goes through several passes (the masker's scan, the log
# file's copy, the console's prefixed copy), and a piece that no longer fits a core's L2 cache (1 MiB here)
# makes each pass a trip to memory. Measured with bench_executor's 1 GiB of 56-byte lines, 7-9 interleaved runs
# against tee: 1 MiB 3.32 and 2.83 s (CPU 3.97 and 3.27 s), 256 KiB 2.85 and 2.84 s (more Python calls),
# 512 KiB 2.40 and 2.46 s (CPU 2.59 and 2.58 s: tee's 2.85); with logs.py's thread change too, paired round by
# round over 11 rounds, 0.93x of the wall time (56-byte lines) and 1.03x (100-byte), 0.89x and 0.92x of the CPU
# (with the old build in the slower place right after tee: docs/internals/executor.md). Single A/Bs on this
# machine overstate or reverse such gains. A read still returns whatever is available, so a
# lone line is not delayed. Only pipes that filled are enlarged: pipe capacity counts against the uid's pipe
# quota (fs.pipe-user-pages-soft), which the steps of a non-root runner share with it.
READ_SIZE = PIPE_SIZE = 1 << 19
_DEFAULT_PIPE = 1 << 16


class ProcessError(RuntimeError):
    """The step could not be run at all (the fork server failed). The message is masked."""


@dataclass(frozen=True)
class ProcessResult:
    """What a step did. Every text field is already masked."""

    exit_code: int
    output: str = ""
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    cancelled: bool = False
    refused: bool = False
    reason: str | None = None
    duration: float = 0.0
    # Processes the step left running when its main process ended (or still running at a timeout or
    # cancellation beyond the main process), all killed; 0 when none.
    leftover_killed: int = 0
    # The limit that ended the step (a StepLimits field name: memory, cpu_seconds, pids, file_size), or None.
    limit_hit: str | None = None
    # The step's and its descendants' CPU, peak RSS and I/O (zygote's rusage event), and bytes masked.
    resources: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class _Stream:
    """One output pipe: raw bytes -> ::add-mask:: stage -> masked stream -> known formats -> collected + on_output."""

    def __init__(self, name: str, fd: int, registry: Any, trusted: bool, source: str,
                 combined: list[bytes], on_output: Callable[[str, bytes], object] | None,
                 keep: bool = True, commands: Any = None,
                 known_notice: Callable[[str], object] | None = None) -> None:
        self.name, self.fd = name, fd
        self.keep = keep
        self.chunks: list[bytes] = []
        self._combined = combined
        self._on_output = on_output
        # Known credential formats (on unless known_notice is None) are masked after the registered secrets.
        self.masked = registry.stream(self._sink) if known_notice is None else MaskedThenKnown(
            registry, self._sink, notice=known_notice, replacement=getattr(registry, "replacement", "***"))
        self.front = AddMaskFilter(registry, self.masked, trusted=trusted, source=source)
        if commands is not None:  # workflow commands (::group::, ::error:: ...) in front of ::add-mask::
            self.front = commands.filter(self.front)
        self.open = True
        self.enlarged = False

    def _sink(self, data: bytes) -> None:
        if not data:
            return
        if self.keep:
            self.chunks.append(data)
            self._combined.append(data)
        if self._on_output is not None:
            self._on_output(self.name, data)

    def read(self) -> None:
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return
        if data:
            if len(data) >= _DEFAULT_PIPE and not self.enlarged:
                self._enlarge()
            self.front.write(data)
        else:
            self.close()

    def _enlarge(self) -> None:
        self.enlarged = True
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # over fs.pipe-max-size or the uid's pipe quota: the default pipe still works

    def close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.fd)
            self.front.close()  # closes the masked stream too, releasing what it held

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")


def _argv(command: str | Sequence[str]) -> list[str]:
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("command: must not be empty")
        return ["/bin/sh", "-c", command]
    argv = [os.fspath(a) for a in command]
    if not argv:
        raise ValueError("command: must not be empty")
    return argv


def _refused(reason: str, start: float, **kw: Any) -> ProcessResult:
    return ProcessResult(exit_code=REFUSED_EXIT, refused=True, reason=reason,
                         duration=time.monotonic() - start, **kw)


def run_process(
    command: str | Sequence[str],
    *,
    registry: Any,
    trusted: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    policy: SandboxPolicy | None = None,
    on_output: Callable[[str, bytes], object] | None = None,
    cancel_event: threading.Event | None = None,
    grace: float = DEFAULT_GRACE,
    name: str = "step",
    keep_output: bool = True,
    commands: Any = None,
    add_mask: bool = True,
    network: Any = None,
    known_formats: bool = True,
    on_notice: Callable[[str], object] | None = None,
    limits: StepLimits | None = None,
    known_to_step: Mapping[str, str] | None = None,
) -> ProcessResult:
    """Run one step process and return its masked result (see the module docstring).

    `command` is a shell string (run by /bin/sh -c) or an argv list. An untrusted step (trusted=False) is
    sandboxed with `policy` (default: SandboxPolicy.from_env()) and gets an allow-listed environment built
    from `env`; a trusted step gets `env` as is (default: this process's environment) and is sandboxed only
    when a `policy` is given. A step the sandbox cannot confine is refused: exit 126, `refused`, `reason`.
    `keep_output=False` leaves output/stdout/stderr empty (the job runner streams through `on_output` and
    must not hold a step's gigabytes in memory). `commands` (an execution.workflow_commands.WorkflowCommands)
    turns on GitHub's workflow commands in the output and collects the step's annotations. `add_mask=False`: a trusted step's `::add-mask::` lines
    register nothing and pass as ordinary output (an untrusted step's never register).
    `network`: full | none | loopback | [host:port, ...] for this step (runnerlib.security.network); None keeps
    the policy's (untrusted) or the runner's (trusted).
    `known_formats` masks well-known credential formats nobody registered (security/known_formats.py);
    `on_notice(line)` gets one line per format found (default: this module's log, as a warning).
    `limits` (StepLimits) apply to the step; for a sandboxed step they override the policy's own (untrusted
    defaults) one by one. `known_to_step`: variables of `env` an untrusted step's own kind wrote (its
    untrusted upstream steps' GITHUB_ENV lines), passed on as written (security.untrusted_env, `known`).
    """
    start = time.monotonic()
    keep_large_buffers_on_heap()  # READ_SIZE reads would otherwise page-fault fresh memory every time
    mask = registry.mask_text
    argv = _argv(command)
    shown = mask(command if isinstance(command, str) else shlex.join(argv))
    log.info("%s: running %s step: %s", name, "trusted" if trusted else "untrusted", shown)
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout: must be > 0 seconds")
    if grace < 0:
        raise ValueError("grace: must be >= 0 seconds")
    if trusted and policy is None and limits is not None and limits.cpus is not None:
        reason = TRUSTED_CPUS_REFUSED  # no rlimit caps CPU bandwidth, and trusted steps get no cgroup
        log.error("%s: %s", name, reason)
        return _refused(reason, start)

    net: dict[str, Any] | None = None
    if network is not None:
        try:
            net_policy = parse_network(network)
            if policy is not None or not trusted:
                policy = (policy or SandboxPolicy.from_env()).with_(network=net_policy,
                                                                    deny_network=net_policy.mode == "none")
            elif net_policy.mode != "full":
                from runnerlib.security.probe import probe

                net_plan = plan_for_trusted(net_policy, probe())
                if net_plan.missing:
                    raise SandboxRefused(net_plan.missing)
                net = net_plan.request
                log.info("%s: %s", name, net_plan.describe())
        except (SandboxRefused, PolicyError, NetworkSpecError) as exc:
            reason = mask(str(exc))
            log.error("%s: %s", name, reason)
            return _refused(reason, start)
    plan: SandboxPlan | None = None
    if policy is not None or not trusted:
        try:
            policy = policy if policy is not None else SandboxPolicy.from_env()
            if limits is not None:
                policy = policy.with_(limits=limits.merged_over(policy.limits))
            plan = plan_sandbox(policy)
        except (SandboxRefused, PolicyError) as exc:
            reason = mask(str(exc))
            log.error("%s: %s", name, reason)
            return _refused(reason, start)
        log.info("%s: sandbox: %s", name, plan.describe())
    try:
        if trusted:
            step_env = dict(os.environ if env is None else env)
        else:
            assert plan is not None
            step_env = build_untrusted_env(env or {}, registry=registry, tmpdir=plan.private_tmp,
                                           known=known_to_step)
        notice = None
        if known_formats:
            notice = NoticeOnce(on_notice or (lambda line: log.warning("%s: %s", name, line)))
        return _run(argv, step_env, cwd, timeout, grace, plan, registry, trusted, on_output, cancel_event,
                    name, start, keep_output, commands, add_mask=add_mask, net=net, notice=notice,
                    limits=None if plan is not None else limits)
    finally:
        if plan is not None:
            plan.cleanup()


def _run(argv: list[str], env: dict[str, str], cwd: str | None, timeout: float | None, grace: float,
         plan: SandboxPlan | None, registry: Any, trusted: bool,
         on_output: Callable[[str, bytes], object] | None, cancel_event: threading.Event | None,
         name: str, start: float, keep_output: bool = True, commands: Any = None, *,
         add_mask: bool = True, net: dict[str, Any] | None = None,
         notice: Callable[[str], object] | None = None, limits: StepLimits | None = None) -> ProcessResult:
    mask = registry.mask_text
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    combined: list[bytes] = []
    inband = trusted and add_mask  # the ::add-mask:: stage obeys trusted steps only, and only when not switched off
    streams = [
        _Stream(stream, fd, registry, inband, f"::add-mask:: in {name}", combined, on_output, keep_output,
                commands, notice)
        for stream, fd in (("stdout", out_r), ("stderr", err_r))
    ]
    try:
        try:
            step = spawn(argv, env=env, cwd=cwd, plan=plan, stdout=out_w, stderr=err_w, net=net, limits=limits)
        finally:
            os.close(out_w)
            os.close(err_w)
    except (SpawnError, OSError, ValueError) as exc:
        for s in streams:
            s.close()
        raise ProcessError(mask(f"{name}: cannot start the step: {exc}")) from None
    try:
        timed_out, cancelled, swept = _pump(step, streams, timeout, grace, cancel_event, start, name)
    finally:
        for s in streams:
            s.close()
        step.close()

    reason = None
    refused = False
    if step.error is not None:
        code = int(step.error.get("code", REFUSED_EXIT))
        stage = step.error.get("stage")
        refused = code == REFUSED_EXIT and stage not in ("exec", "cwd", "stdio")
        reason = mask(f"{stage}: {step.error.get('message')}")
        # Debug only: `reason` is the result's, and every caller reports it (the runner in its step line and
        # summary). At error level it went to stderr a second time, through logging's last-resort handler,
        # outside the job's log format.
        log.debug("%s: %s before exec (%s)", name, "refused" if refused else "failed", reason)
    elif step.exit_code is None:
        code = 125
        reason = "the step's supervisor vanished (fork server killed?)"
    else:
        code = step.exit_code
    leftover = step.leftover if step.leftover is not None else swept
    applied = (plan.plan.get("limits") if plan is not None else dict(limits.items()) if limits else None) or {}
    limit_hit = _limit_hit(step, applied, plan.cgroup if plan is not None else None)
    if timed_out:
        code, reason = TIMEOUT_EXIT, reason or "timed out"
    elif cancelled:
        code, reason = CANCELLED_EXIT, reason or "cancelled"
    elif limit_hit == "pids":  # a refused fork kills nothing; the step may or may not have coped
        if code != 0:
            reason = f"pids limit {describe_limit('pids', applied['pids'])} reached (a fork was refused)"
    elif limit_hit is not None:
        reason = f"killed: {limit_label(limit_hit)} limit {describe_limit(limit_hit, applied[limit_hit])}"
    elif code != 0 and reason is None:  # an RLIMIT_AS memory limit cannot be told hit from outside: say "may"
        reason = address_space_note(plan.plan.get("rlimits") or {} if plan is not None
                                    else rlimits_for(limits)[0] if limits is not None else {})
    if leftover:
        reason = "; ".join(filter(None, [reason, f"killed leftover processes: {leftover}"]))
        log.info("%s: killed leftover processes: %d", name, leftover)
    return ProcessResult(
        exit_code=code,
        output=b"".join(combined).decode("utf-8", errors="replace"),
        stdout=streams[0].text(),
        stderr=streams[1].text(),
        timed_out=timed_out,
        cancelled=cancelled,
        refused=refused,
        reason=reason,
        duration=time.monotonic() - start,
        leftover_killed=leftover,
        limit_hit=limit_hit,
        resources={**(step.rusage or {}), "output_bytes": sum(getattr(s.masked, "bytes_in", 0) for s in streams)},
    )


class Cancel(threading.Event):
    """A cancel event (pass as run_process's cancel_event) with a second level: after `kill()` a cancelled
    step gets SIGKILL at once instead of waiting out its grace (a second Ctrl-C)."""

    def __init__(self) -> None:
        super().__init__()
        self.kill_now = threading.Event()
        self.reason = "cancelled"  # what the step's log says: "job timed out" when the job's timeout fired

    def kill(self) -> None:
        """Cancel, and skip the grace period of the steps being cancelled."""
        self.kill_now.set()
        self.set()


def _term_escaped(step: SpawnedStep) -> None:
    """SIGTERM to the step's descendants that left its process group (daemons): each process gets the
    signal once (the group's members already had it from signal_group)."""
    if step.supervisor is None or step.pid is None:
        return
    for pid in proctree.descendants(step.supervisor):
        try:
            if os.getpgid(pid) != step.pid:
                os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


# A process killed by one of these signals hit the limit: RLIMIT_CPU's soft limit, RLIMIT_FSIZE.
_LIMIT_SIGNALS = {signal.SIGXCPU: "cpu_seconds", signal.SIGXFSZ: "file_size"}


def _limit_hit(step: SpawnedStep, applied: Mapping[str, int], cgroup: Any = None) -> str | None:
    """The limit that ended the step, if one can be told: its cgroup recorded an OOM kill (memory) or a
    refused fork (pids); the main process (or, in a PID namespace, any process) died of SIGXCPU / SIGXFSZ.
    With RLIMIT_AS an allocation simply fails inside the step: that cannot be told from outside."""
    if cgroup is not None and "memory" in applied and cgroup.memory_killed():
        return "memory"
    signals = set(step.signals)
    if step.wait_status is not None and os.WIFSIGNALED(step.wait_status):
        signals.add(os.WTERMSIG(step.wait_status))
    elif step.wait_status is not None and os.WEXITSTATUS(step.wait_status) > 128:
        signals.add(os.WEXITSTATUS(step.wait_status) - 128)  # a shell passing on its child's death
    for sig, limit in _LIMIT_SIGNALS.items():
        if sig in signals and limit in applied:
            return limit
    if cgroup is not None and "pids" in applied and cgroup.pids_refused():
        return "pids"
    return None


def _pump(step: SpawnedStep, streams: list[_Stream], timeout: float | None, grace: float,
          cancel_event: threading.Event | None, start: float, name: str) -> tuple[bool, bool, int]:
    """Read both pipes and the status pipe until all are closed, enforcing timeout and cancellation.

    Returns (timed out, cancelled, processes killed beyond the main one). In a PID namespace the kernel
    ends the step's processes with its init; without one, the step's process tree is swept again on
    every turn until the supervisor reports it empty (a process forking as fast as it can may outrun one
    /proc walk, not every walk).
    """
    for s in streams:
        os.set_blocking(s.fd, False)
    os.set_blocking(step.status_fd, False)
    poller = select.poll()
    by_fd: dict[int, Any] = {s.fd: s for s in streams}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    poller.register(step.status_fd, select.POLLIN)
    deadline = start + timeout if timeout is not None else None
    timed_out = cancelled = False
    term_at: float | None = None
    killed = False
    swept = 0
    status_open = True
    status_eof_at: float | None = None

    while status_open or any(s.open for s in streams):
        now = time.monotonic()
        running = step.wait_status is None and step.error is None and status_open
        if running and term_at is None:
            if deadline is not None and now >= deadline:
                timed_out = True
            elif cancel_event is not None and cancel_event.is_set():
                cancelled = True
            if timed_out or cancelled:
                log.warning("%s: %s: SIGTERM to the process group, SIGKILL in %.1f s", name,
                            "timed out" if timed_out else getattr(cancel_event, "reason", "cancelled"), grace)
                term_at = now
                step.signal_group(signal.SIGTERM)
                _term_escaped(step)
        hurry = getattr(cancel_event, "kill_now", None)
        if running and term_at is not None and not killed and (now >= term_at + grace
                                                               or (hurry is not None and hurry.is_set())):
            log.warning("%s: still running after %.1f s of grace: SIGKILL", name, grace)
            step.kill_all()
            killed = True
        if not running and status_open and step.leftover is None:
            # The main process is gone and no namespace init killed what it left behind (they would hold
            # the pipes open): sweep, again and again until the supervisor reports its subtree empty (it
            # closes the status pipe then). An init that reported has SIGKILLed the rest already.
            step.kill_all()
            if term_at is None:
                swept = len(step.killed)
        if not status_open and status_eof_at is not None and now - status_eof_at > 5.0:
            # The supervisor is gone and so is its subtree; nobody can still be writing. Stop waiting.
            break

        wait = 1.0 if running or not status_open else 0.05
        if running:
            if deadline is not None and term_at is None:
                wait = min(wait, max(deadline - now, 0.0))
            if cancel_event is not None and term_at is None:
                wait = min(wait, 0.05)
            if term_at is not None and not killed:
                wait = min(wait, max(term_at + grace - now, 0.0), 0.05 if hurry is not None else 1.0)
        events = poller.poll(int(wait * 1000) + 1)
        if not events:
            for s in streams:
                if s.open:
                    s.masked.flush_if_idle(IDLE_FLUSH)
        for fd, _ev in events:
            if fd == step.status_fd:
                step.read_events()
                if step.eof:
                    status_open = False
                    status_eof_at = time.monotonic()
                    poller.unregister(fd)
            else:
                stream = by_fd[fd]
                stream.read()
                if not stream.open:
                    poller.unregister(fd)
    return timed_out, cancelled, swept


# --- for trusted scripts ----------------------------------------------------------------------------------


def registry_from_environment(environ: Mapping[str, str] | None = None) -> Any:
    """A SecretRegistry holding every secret this process's environment names or carries.

    REACTORCIDE_SECRET_ENV_NAMES, variables whose names look secret (*_TOKEN, ...), REACTORCIDE_API_TOKEN,
    REACTORCIDE_SECRET_VALUES_LIST, REACTORCIDE_SECRETS_FILE: what `load_secrets` reads.
    """
    from runnerlib.security.registry import SecretRegistry
    from runnerlib.security.secret_sources import load_secrets

    registry = SecretRegistry()
    for line in load_secrets(registry, environ=dict(os.environ if environ is None else environ)):
        log.debug("secrets: %s", line)
    return registry


def default_policy(environ: Mapping[str, str] | None = None, **overrides: Any) -> SandboxPolicy:
    """The policy for the job's workspace, from REACTORCIDE_SOURCE_DIR / REACTORCIDE_CI_SOURCE_DIR."""
    environ = os.environ if environ is None else environ
    src = os.path.normpath(environ.get("REACTORCIDE_SOURCE_DIR") or "/job/src")
    ci = os.path.normpath(environ.get("REACTORCIDE_CI_SOURCE_DIR") or "/job/ci")
    artifacts = os.path.join(os.path.dirname(src), "artifacts")
    from runnerlib.security.policy import DEFAULT_READ_ONLY

    overrides.setdefault("read_only_paths", DEFAULT_READ_ONLY + (ci,) + extra_read_only_paths(environ))
    overrides.setdefault("read_write_paths", (src, artifacts))
    overrides.setdefault("protected_paths", (ci,))
    return SandboxPolicy.from_env(dict(environ), **overrides)


READ_ONLY_PATHS_ENV = "REACTORCIDE_SANDBOX_READ_ONLY_PATHS"


def extra_read_only_paths(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Read-only grants beyond the system directories: the runner's own virtualenv (so `python` from it, and
    the tools installed in it, start inside the sandbox; a venv holds code, not secrets) and the paths listed
    in REACTORCIDE_SANDBOX_READ_ONLY_PATHS (colon-separated, absolute). Refused, whatever the spelling (`//`,
    `/./`, `/usr/..`, a trailing slash, a symlink): the root, a directory holding the workspace, and the
    homes and /proc: they would expose everything the sandbox hides.

    >>> extra_read_only_paths({"REACTORCIDE_SANDBOX_READ_ONLY_PATHS": "/srv/tools"})[-1]
    '/srv/tools'
    """
    from runnerlib.security.policy import PolicyError

    paths: list[str] = []
    if sys.prefix != sys.base_prefix and os.path.normpath(sys.prefix) != "/":
        paths.append(os.path.normpath(sys.prefix))
    workspace = _workspace_dirs(environ)
    for item in filter(None, environ.get(READ_ONLY_PATHS_ENV, "").split(":")):
        if not item.startswith("/") or "\0" in item:
            raise PolicyError(READ_ONLY_PATHS_ENV, f"{item!r} is not an absolute path")
        path = _canonical(item)
        # Checked on the spelling and on where it leads: a symlink to / is the root.
        for form in {path, _canonical(os.path.realpath(item))}:
            if form in ("/", "/root", "/home", "/proc") or form.startswith("/proc/"):
                raise PolicyError(READ_ONLY_PATHS_ENV, f"{item!r} is {form!r}: it would expose everything the "
                                                       "sandbox hides")
            held = [w for w in workspace if w == form or w.startswith(form.rstrip("/") + "/")]
            if held:
                raise PolicyError(READ_ONLY_PATHS_ENV, f"{item!r} is {form!r}, which holds the workspace "
                                                       f"({held[0]}): grant a directory beside it instead")
        paths.append(path)
    return tuple(paths)


def _canonical(path: str) -> str:
    # normpath keeps POSIX's two leading slashes ("//" is "implementation-defined", and Linux reads it as "/").
    return "/" + os.path.normpath(path).lstrip("/")


def _workspace_dirs(environ: Mapping[str, str]) -> list[str]:
    src = _canonical(environ.get("REACTORCIDE_SOURCE_DIR") or "/job/src")
    ci = _canonical(environ.get("REACTORCIDE_CI_SOURCE_DIR") or "/job/ci")
    dirs = [src, ci, os.path.dirname(src)]
    return dirs + [_canonical(os.path.realpath(d)) for d in dirs]


def run_untrusted(
    command: str | Sequence[str],
    cwd: str = "/job/src",
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    *,
    registry: Any = None,
    policy: SandboxPolicy | None = None,
    on_output: Callable[[str, bytes], object] | None = None,
    cancel_event: threading.Event | None = None,
    grace: float = DEFAULT_GRACE,
    network: Any = None,
) -> ProcessResult:
    """Run untrusted code (PR code) from a trusted script, sandboxed; the returned output is masked.

    `network`: full | none | loopback | [host:port, ...] (default: the policy's, full).

    The registry is built from this process's environment unless given. Because the sandboxed step may
    run under this process's uid, this process is hardened first (non-dumpable, secrets scrubbed from its
    own /proc environ and cmdline, subreaper): see `runnerlib.security.selfprotect.protect_runner`.

    Example::

        result = runnerlib.run_untrusted("make test", cwd="/job/src", timeout=600)
        print(result.exit_code, result.output)
    """
    from runnerlib.security.selfprotect import protect_runner
    from runnerlib.source import handover, pristine

    registry = registry if registry is not None else registry_from_environment()
    protect_runner(registry.secrets())
    tree = None
    if policy is None:
        # The PR code works on an untrusted copy of src, never the pristine tree (source.pristine): in a runner
        # job the job's copy; outside one a fresh copy, as `runnerlib sandbox exec` makes (source.exec_tree).
        policy = default_policy()
        owner = (policy.uid, policy.gid) if os.geteuid() == 0 else None
        tree = pristine.run_untrusted_tree(cwd, os.environ, owner=owner) or _exec_tree(cwd, owner)
        if tree is not None:
            cwd, policy = tree[0], default_policy(read_write_paths=tree[1])
    try:
        return run_process(command, registry=registry, trusted=False, env=env, cwd=cwd, timeout=timeout,
                           policy=policy, on_output=on_output, cancel_event=cancel_event, grace=grace,
                           name="run_untrusted", network=network)
    finally:
        if tree is not None:
            handover.clean_after_run_untrusted(tree[1][1], os.environ.get("REACTORCIDE_WORKSPACE") or _source_root())


def _exec_tree(cwd: str, owner: tuple[int, int] | None) -> tuple[str, tuple[str, str]] | None:
    """Outside a runner job: a fresh untrusted copy of the workspace's src when there is one (else None: the
    caller's plain policy, for a script that sandboxes code in a tree of its own)."""
    from runnerlib.source.exec_tree import prepare_exec_tree

    src = os.path.normpath(os.environ.get("REACTORCIDE_SOURCE_DIR") or "/job/src")
    if os.path.basename(src) != "src" or not os.path.isdir(src):  # not a workspace's layout
        return None
    root = _source_root()
    cwd, copy = prepare_exec_tree(root, cwd, owner=owner, environ=os.environ)
    return cwd, (copy, os.path.join(root, "artifacts"))


def _source_root() -> str:
    """The workspace root that holds src (REACTORCIDE_SOURCE_DIR's parent, default /job)."""
    return os.path.dirname(os.path.normpath(os.environ.get("REACTORCIDE_SOURCE_DIR") or "/job/src"))
