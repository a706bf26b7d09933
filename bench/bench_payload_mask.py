"""Benchmark: what masking a trigger through the runner's secrets socket adds to trigger_job.

Measures, in one run, medians over ROUNDS calls:
- mask_payload of a typical trigger (one job, 10 env values) with the local registry only (the baseline:
  what the API did before; same environment minus the socket path) and with the socket's "mask" action too;
- the same for a large payload (100 jobs x 10 env values, about 1,000 distinct strings: still one request);
- trigger_job end to end (validation, masking, triggers-file append with its fsyncs), with and without socket.
The runner's registry holds PRELOADED secrets (as a job with many registered values would).

Run: .venv/bin/python bench/bench_payload_mask.py [--rounds 200] [--preloaded 1000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable

from runnerlib.security.registry import SecretRegistry
from runnerlib.security.secret_socket import SecretSocketServer
from runnerlib.workflow.api import mask_payload, trigger_job


def median_ms(func: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--preloaded", type=int, default=1000)
    args = parser.parse_args()
    registry = SecretRegistry()
    registry.add_many([f"preloaded-{secrets.token_hex(10)}" for _ in range(args.preloaded)], source="bench")
    value = f"runtime-{secrets.token_hex(10)}"
    registry.add(value, source="bench")
    small = [{"job_name": "deploy", "env": {f"K{i}": f"value-{i}-{value if i == 3 else 'plain'}"
                                            for i in range(10)}}]
    large = [{"job_name": f"job-{j}", "env": {f"K{i}": f"value-{j}-{i}" for i in range(10)}} for j in range(100)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    with SecretSocketServer(registry) as server, tempfile.TemporaryDirectory() as tmp:
        with_socket = {**base, **server.env()}
        # The baseline keeps the token variable (a secret the local registry loads, as in a real step) and
        # drops only the socket path, so the difference is the round trip to the runner.
        base = {k: v for k, v in with_socket.items() if k != "REACTORCIDE_SECRETS_SOCKET"}
        assert mask_payload(small, with_socket)[0]["env"]["K3"] == "value-3-***"
        assert value in mask_payload(small, base)[0]["env"]["K3"]  # the baseline cannot know the value
        rows = []
        for name, payload in (("small trigger (10 strings)", small), ("large (100 jobs, ~1,100 strings)", large)):
            local = median_ms(lambda p=payload: mask_payload(p, base), args.rounds)
            remote = median_ms(lambda p=payload: mask_payload(p, with_socket), args.rounds)
            rows.append((f"mask_payload, {name}", local, remote))
        files = iter(range(10**9))

        def trigger(env: dict[str, str]) -> None:
            trigger_job("deploy", env=small[0]["env"], environ={**env, "REACTORCIDE_TRIGGERS_FILE":
                                                                f"{tmp}/t{next(files) % 20}.json"})

        rows.append(("trigger_job end to end", median_ms(lambda: trigger(base), args.rounds // 4),
                     median_ms(lambda: trigger(with_socket), args.rounds // 4)))
    print(f"runner registry: {args.preloaded + 2} secrets; medians over {args.rounds} rounds "
          f"({args.rounds // 4} for trigger_job)")
    print(f"{'case':48} {'local only ms':>14} {'+ socket ms':>12} {'ratio':>6}")
    for name, local, remote in rows:
        print(f"{name:48} {local:14.3f} {remote:12.3f} {remote / local:6.2f}")


if __name__ == "__main__":
    main()
