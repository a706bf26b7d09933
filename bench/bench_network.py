"""Cost per spawn of each network policy, against `full` measured in the same run (medians, ms).

Each sample plans the sandbox (the network part included: /proc/net/tcp read for loopback, resolution for
a list) and runs `/bin/true` as an untrusted step through the fork server until it has exited:
  full        the runner's network (root: nftables metadata rule, installed once per runner) -- baseline
  none        seccomp inet denial + Landlock TCP denial
  loopback    own network namespace + forwarder (one listener forwarded: a server the bench starts)
  list        own network namespace + one address added to lo + forwarder (127.0.0.2:PORT)
  loop+conn   loopback, and the step opens one connection through the forwarder (Python step: its start-up
              counts too, so compare with full+conn)
  full+conn   the same Python step connecting directly under `full`
  full-ns     `full` through the step's own namespace and the transparent forwarder (what an unprivileged
              runner uses; as root forced here for comparison), and full-ns+conn connecting through it
Samples are interleaved so that machine noise hits every policy alike. The last column is each policy's cost
over `none` (no namespace, no forwarder): what its network set-up adds to a step, the median of per-round
differences (robust to load that comes in bursts on a shared machine).

    .venv/bin/python bench/bench_network.py [--samples 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time

# Run from the repository root as `python bench/bench_network.py`: bench/ is on sys.path.
from bench_spawn import through_server  # noqa: E402

from runnerlib.security import network
from runnerlib.security import spawn as sp
from runnerlib.security.policy import SandboxPolicy
from runnerlib.security.probe import probe
from runnerlib.security.selfprotect import protect_runner

ENV = {"PATH": "/usr/bin:/bin"}
PY = "/usr/bin/python3"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    protect_runner([])
    root = tempfile.mkdtemp(prefix="bench-net-")
    os.chmod(root, 0o755)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            conn.sendall(b"x")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    connect = [PY, "-I", "-S", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port})).recv(1)"]
    is_root = os.geteuid() == 0
    full = "full"
    cases = {
        "full": (full, ["/bin/true"]),
        "none": ("none", ["/bin/true"]),
        "loopback": ("loopback", ["/bin/true"]),
        "list": ([f"127.0.0.2:{port}"], ["/bin/true"]),
        "full+conn": (full, connect),
        "loop+conn": ("loopback", connect),
        "full-ns": ("full", ["/bin/true"]),
        "full-ns+conn": ("full", connect),
    }
    transparent = network.plan_transparent(network.NetworkPolicy("full"), is_root, probe().user_namespaces)
    if not isinstance(transparent, network.NetworkPlan):
        print(f"(full-ns skipped: {transparent})")
        del cases["full-ns"], cases["full-ns+conn"]
    policies = {name: SandboxPolicy.for_workspace(root, read_write_paths=(), private_tmp=False, network=net)
                for name, (net, _argv) in cases.items()}

    def sample(name: str) -> None:
        plan = sp.plan_sandbox(policies[name])
        if name.startswith("full-ns"):
            assert isinstance(transparent, network.NetworkPlan)
            plan.plan["net"] = transparent.request
        try:
            through_server(plan, cases[name][1])
        finally:
            plan.cleanup()

    sp.start_fork_server()
    for name in cases:  # warm-up (and the nftables rule, installed once)
        for _ in range(3):
            sample(name)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.samples):
        for name in cases:
            t = time.perf_counter()
            sample(name)
            times[name].append((time.perf_counter() - t) * 1000)
    shutil.rmtree(root, ignore_errors=True)
    print(f"untrusted step per network policy, {args.samples} interleaved samples, uid {os.geteuid()}, median ms")
    for name, samples in times.items():
        base = statistics.median(times["full+conn" if name.endswith("+conn") else "full"])
        med = statistics.median(samples)
        q = statistics.quantiles(samples, n=10)
        over_none = statistics.median(a - b for a, b in zip(samples, times["none"], strict=True))
        print(f"  {name:<12} {med:7.2f} ms  (+{med - base:5.2f} ms, x{med / base:4.2f} of its full baseline)"
              f"  p10 {q[0]:6.2f}  p90 {q[-1]:6.2f}  over none {over_none:+6.2f} ms")


if __name__ == "__main__":
    main()
