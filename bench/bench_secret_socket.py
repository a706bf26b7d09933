"""Benchmark: 1,000 concurrent clients register a secret each over the registration socket, and each prints
its secret through a live masked stream right after its reply.

Reports registrations per second, p50/p99 reply latency and leaks (must be 0), next to a baseline measured
in the same run: the same number of round-trips to the same server with a registry that does nothing (the
protocol, authentication and socket cost without masking). Medians over ROUNDS rounds.

Clients are threads of this process (1,000 processes would measure fork, not the server); each owns a
MaskedStream created before it registers, so every registration has to reach 1,000+ live streams.

Run: .venv/bin/python bench/bench_secret_socket.py [--clients 1000] [--rounds 3] [--preloaded 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import socket
import statistics
import struct
import sys
import threading
import time

from runnerlib.security.registry import SecretRegistry
from runnerlib.security.secret_socket import SecretSocketServer


class NullRegistry:
    """The baseline: accepts everything, masks nothing."""

    def add(self, value: str | bytes, *, source: str) -> bool:
        return True

    def add_many(self, values, *, source: str) -> int:
        return len(list(values))


def frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body


def run_round(registry, clients: int, *, with_streams: bool) -> dict[str, float]:
    server = SecretSocketServer(registry, timeout=120.0).start()
    values = [f"bench-{i}-{secrets.token_hex(12)}" for i in range(clients)]
    latencies = [0.0] * clients
    outputs: list[list[bytes]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start_gate = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        stream = registry.stream(outputs[i].append) if with_streams else None
        try:
            data = frame({"action": "register", "secrets": [values[i]], "token": server.token})
            start_gate.wait()
            t0 = time.perf_counter()
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(120)
                sock.connect(server.path)
                sock.sendall(data)
                reply = sock.makefile("rb").readline()
            latencies[i] = time.perf_counter() - t0
            if json.loads(reply) != {"status": "ok", "registered": 1}:
                errors.append(reply.decode(errors="replace"))
            if stream is not None:
                stream.write(f"client {i} got {values[i]}\n".encode())  # right after the reply
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(repr(exc))
        finally:
            if stream is not None:
                stream.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server.stop()
    leaks = 0
    if with_streams:
        for i, out in enumerate(outputs):
            text = b"".join(out)
            rand = values[i].rsplit("-", 1)[1].encode()
            # any 8-byte window of the random part counts as a leak, not only the whole value
            if any(rand[j : j + 8] in text for j in range(len(rand) - 7)):
                leaks += 1
    lat = sorted(latencies)
    return {
        "rate": clients / wall,
        "p50": lat[len(lat) // 2] * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "leaks": leaks,
        "errors": len(errors),
    }


def median_of(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preloaded", type=int, default=1000, help="secrets already registered (realistic job)")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * args.clients + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted,
                                                    hard))
    threading.stack_size(256 * 1024)

    scenarios = []
    base = [run_round(NullRegistry(), args.clients, with_streams=False) for _ in range(args.rounds)]
    scenarios.append(("baseline: round-trips, no masking", base))
    fresh = []
    for _ in range(args.rounds):
        fresh.append(run_round(SecretRegistry(), args.clients, with_streams=True))
    scenarios.append(("register + print via live stream", fresh))
    loaded = []
    for _ in range(args.rounds):
        registry = SecretRegistry()
        registry.add_many([f"preloaded-{i}-{secrets.token_hex(8)}" for i in range(args.preloaded)], source="bench")
        registry.wait_merged(60)
        loaded.append(run_round(registry, args.clients, with_streams=True))
    scenarios.append((f"same, {args.preloaded} secrets preloaded", loaded))

    print(f"{args.clients} concurrent clients, median of {args.rounds} rounds (python {sys.version.split()[0]})")
    print(f"{'scenario':40} {'reg/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'leaks':>6} {'errors':>7} {'vs base':>8}")
    base_rate = median_of(base, "rate")
    for name, rounds in scenarios:
        rate = median_of(rounds, "rate")
        print(f"{name:40} {rate:9.0f} {median_of(rounds, 'p50'):9.1f} {median_of(rounds, 'p99'):9.1f} "
              f"{max(r['leaks'] for r in rounds):6d} {max(r['errors'] for r in rounds):7d} "
              f"{rate / base_rate:7.2f}x")
    total_leaks = sum(r["leaks"] for _, rounds in scenarios for r in rounds)
    if total_leaks:
        print(f"LEAKS: {total_leaks}")
        sys.exit(1)


if __name__ == "__main__":
    main()
