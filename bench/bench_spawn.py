"""Sandboxed spawn overhead against a plain subprocess, measured in the same run (medians, ms).

Each sample starts `/bin/true` and waits for its exit and for EOF on its stdout/stderr pipes:
  plain         subprocess.Popen (own session, two pipes), the baseline
  trampoline    `python -I -S -c pass` (what a per-step exec trampoline would cost at least)
  server        through the fork server, no sandbox (trusted steps)
  sandboxed     through the fork server with the full plan (uid switch as root, no_new_privs, Landlock,
                seccomp, rlimits, pdeathsig, private tmp creation + removal) and the step's own world: PID, IPC
                and mount namespaces (a user namespace too when not root) with a fresh /proc, private /dev/shm
                and /tmp, and the untrusted default limits (rlimits)
  sandboxed-cg  the same with limits set by the job (pids 256, memory 512M, cpu 600 s): as root a cgroup of
                its own for memory and pids (v1: the step moves itself in through `tasks`)
  sandboxed-nons  the same without the namespaces (namespaces="off"): what the step's own world costs
  sandboxed-nonet the same with `network: none`: like for like with bwrap, whose --unshare-all leaves no
                network (the default `full` costs nothing extra as root, an nftables rule; an unprivileged
                runner gives the step a network namespace and a forwarder, forked per step)
  run_process   the whole wrapper for an untrusted step (plan, env, masking, reaping), for reference
  bwrap         `bwrap --unshare-all --uid 65534 --ro-bind / / --proc /proc --dev /dev /bin/true`, the peer
                (Debian's bubblewrap; skipped with a note when it is not installed or cannot run here)
Samples are interleaved so that machine noise hits every method alike. Target: sandboxed within 1.0x of bwrap.

    .venv/bin/python bench/bench_spawn.py [--samples 200]
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from runnerlib.execution.process import run_process
from runnerlib.security import spawn as sp
from runnerlib.security.limits import StepLimits
from runnerlib.security.policy import SandboxPolicy
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.selfprotect import protect_runner

ENV = {"PATH": "/usr/bin:/bin"}


def _drain(*fds: int) -> None:
    for fd in fds:
        while os.read(fd, 65536):
            pass
        os.close(fd)


def plain() -> None:
    p = subprocess.Popen(["/bin/true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                         start_new_session=True)
    p.communicate()


BWRAP = ["bwrap", "--unshare-all", "--uid", "65534", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
         "/bin/true"]


def bwrap() -> None:
    p = subprocess.Popen(BWRAP, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, start_new_session=True)
    out, err = p.communicate()
    if p.returncode != 0:
        raise RuntimeError(err.decode(errors="replace").strip())


def trampoline() -> None:
    subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], env=ENV, check=True)


def through_server(plan: sp.SandboxPlan | None, argv: list[str] | None = None) -> None:
    """One step through the fork server, its output drained, reaped (bench_network.py uses it too)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        step = sp.spawn(argv or ["/bin/true"], env=ENV, cwd="/", plan=plan, stdout=out_w, stderr=err_w)
    finally:
        os.close(out_w)
        os.close(err_w)
    _drain(out_r, err_r)
    while not step.eof:
        select.select([step.status_fd], [], [])
        step.read_events()
    step.close()
    assert step.exit_code == 0, step.error


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    protect_runner([])
    root = tempfile.mkdtemp(prefix="bench-spawn-")
    os.chmod(root, 0o755)
    for d in ("ci", "src", "artifacts"):
        os.mkdir(os.path.join(root, d))
        os.chmod(os.path.join(root, d), 0o755)
    policy = SandboxPolicy.for_workspace(root, namespaces="required")
    job_limits = StepLimits(pids=256, memory=512 << 20, cpu_seconds=600)
    policy_cg = policy.with_(limits=job_limits.merged_over(policy.limits))
    registry = SecretRegistry()
    registry.add("bench-secret-value", source="bench")

    def sandboxed(pol: SandboxPolicy = policy) -> None:
        plan = sp.plan_sandbox(pol)
        try:
            through_server(plan)
        finally:
            plan.cleanup()

    def wrapper() -> None:
        r = run_process(["/bin/true"], registry=registry, trusted=False, policy=policy, cwd="/")
        assert r.exit_code == 0, r.reason

    methods = {"plain": plain, "trampoline": trampoline, "server": lambda: through_server(None),
               "sandboxed": sandboxed, "sandboxed-nons": lambda: sandboxed(policy.with_(namespaces="off")),
               "sandboxed-cg": lambda: sandboxed(policy_cg),
               "sandboxed-nonet": lambda: sandboxed(policy.with_(network="none")),
               "run_process": wrapper, "bwrap": bwrap}
    try:
        bwrap()
    except (OSError, RuntimeError) as exc:
        print(f"bwrap not measured: {exc}")
        del methods["bwrap"]
    sp.start_fork_server()
    print("sandboxed plan:", sp.plan_sandbox(policy, make_tmp=False).describe())
    for fn in methods.values():  # warm-up
        for _ in range(5):
            fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.samples):
        for name, fn in methods.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000)
    shutil.rmtree(root, ignore_errors=True)
    base = statistics.median(times["plain"])
    print(f"spawn /bin/true, {args.samples} interleaved samples, uid {os.geteuid()}, median ms "
          "(extra over plain; target: sandboxed under 5 ms extra)")
    for name, samples in times.items():
        med = statistics.median(samples)
        q = statistics.quantiles(samples, n=10)
        print(f"  {name:<15} {med:7.2f} ms  (+{med - base:5.2f} ms, x{med / base:4.1f})  p10 {q[0]:6.2f}  p90 {q[-1]:6.2f}")
    extra = statistics.median(times["sandboxed"]) - base
    print(f"sandboxed spawn overhead: {extra:.2f} ms extra median -> {'OK' if extra < 5 else 'OVER'} target 5 ms")
    if "bwrap" in times:
        peer = statistics.median(times["bwrap"])
        for name in ("sandboxed", "sandboxed-cg", "sandboxed-nonet", "run_process"):
            ratio = statistics.median(times[name]) / peer
            # Per round (one sample of each method, back to back): robust to load that comes in bursts.
            rounds = statistics.median(a / b for a, b in zip(times[name], times["bwrap"], strict=True))
            print(f"{name} / bwrap: x{ratio:.2f} (median of per-round ratios x{rounds:.2f}) -> "
                  f"{'OK' if ratio <= 1.0 else 'OVER'} target x1.0")


if __name__ == "__main__":
    main()
