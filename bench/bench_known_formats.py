"""Throughput of the known-credential-formats stage (security/known_formats.py), next to a memory copy.

    .venv/bin/python bench/bench_known_formats.py [--mib 64] [--repeat 3] [--write 65536]

Streams a generated 64 MiB CI-like log (bench_masking.make_log, no planted secrets: the common case of bulk
output with no credential in it) through KnownFormatsFilter in 64 KiB writes, with each prefilter engine
(Hyperscan if it imports, and the ahocorasick-rs fallback), and prints MB/s (median of --repeat, interleaved
with the baselines) next to copying the same chunks and to the bare prefilter scan in the same run. A second
line does the same on a log with a credential every ~64 KiB (matches resolved by the Python regex). Then the
adversarial case, output made only of token prefixes (`ghp_ghp_...`, `AKIA` repeated, `xoxb-` chains that are
real tokens...), --spam-mib MiB of each, through the stage with each prefilter (ahocorasick-rs reports every
prefix: the slow reference).

    --executor MIB   also time one step printing MIB MiB of 56-byte lines (`yes "the quick brown fox ..."`)
                     through `runnerlib run` with the stage on and with --no-known-formats, next to
                     `cmd | tee f > file` (interleaved, medians): what the stage costs on a step's bulk path.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_masking import chunks_of, make_log, run_copy  # noqa: E402

import runnerlib.security.known_formats as kf  # noqa: E402


def run_stage(chunks: list[bytes]) -> float:
    out = 0

    def sink(b: bytes) -> None:
        nonlocal out
        out += len(b)

    t = time.perf_counter()
    stage = kf.KnownFormatsFilter(sink)
    write = stage.write
    for c in chunks:
        write(c)
    stage.close()
    return time.perf_counter() - t


def run_scan(chunks: list[bytes]) -> float:
    find = kf._get_finder().find
    t = time.perf_counter()
    for c in chunks:
        find(c)
    return time.perf_counter() - t


def with_tokens(data: bytes, every: int) -> bytes:
    rnd = random.Random(7)
    parts = []
    for i in range(0, len(data), every):
        token = b"ghp_" + bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(36))
        parts.append(data[i:i + every] + b" Authorization: Bearer " + token + b"\n")
    return b"".join(parts)


def bench_executor(mib: int, repeat: int) -> None:
    top = tempfile.mkdtemp(prefix="bench-kf-")
    cmd = f"yes 'the quick brown fox jumps over the lazy dog 0123456' | head -c {mib * 2**20}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run(argv: list[str]) -> float:
        ws = os.path.join(top, "ws")
        shutil.rmtree(ws, ignore_errors=True)
        os.makedirs(ws)
        t = time.perf_counter()
        with open(os.path.join(top, "out"), "wb") as out:
            subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=True, cwd=repo)
        return time.perf_counter() - t

    runner = [sys.executable, "-m", "runnerlib.cli", "run", "--workspace-root", os.path.join(top, "ws")]
    cases = {"tee": ["/bin/sh", "-c", f"{cmd} | tee {top}/tee.out > {top}/plain.out"],
             "runnerlib run": runner + ["--job-command", cmd],
             "--no-known-formats": runner + ["--no-known-formats", "--job-command", cmd]}
    times: dict[str, list[float]] = {k: [] for k in cases}
    try:
        for _ in range(repeat):
            for name, argv in cases.items():
                times[name].append(run(argv))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    tee = statistics.median(times["tee"])
    print(f"one step printing {mib} MiB of 56-byte lines (median of {repeat}, interleaved)")
    for name in cases:
        t = statistics.median(times[name])
        print(f"  {name:20s} {t:6.2f} s  {mib / t:6.0f} MiB/s  ratio to tee {t / tee:.2f}x  "
              f"runs {' '.join(f'{x:.2f}' for x in times[name])}")
    # The same step through run_process in this process, output dropped: no disk, so the stage's own cost shows.
    from runnerlib.execution.process import run_process
    from runnerlib.security.registry import SecretRegistry

    inproc: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeat):
        for on in (True, False):
            t0 = time.perf_counter()
            run_process(["/bin/sh", "-c", cmd], registry=SecretRegistry(), on_output=lambda _s, _d: None,
                        keep_output=False, known_formats=on)
            inproc[on].append(time.perf_counter() - t0)
    on_t, off_t = statistics.median(inproc[True]), statistics.median(inproc[False])
    print(f"  run_process in-process, output dropped: known formats on {on_t:.2f} s, off {off_t:.2f} s "
          f"({on_t / off_t:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", type=int, default=65536)
    ap.add_argument("--executor", type=int, default=0, metavar="MIB")
    ap.add_argument("--spam-mib", type=float, default=2)
    args = ap.parse_args()
    if args.executor:
        bench_executor(args.executor, args.repeat)
        return
    data = make_log(random.Random(1), args.mib, [])
    logs = {"no match": data, "token/64KiB": with_tokens(data, 65536)}
    print(f"{args.mib} MiB CI-like log, {args.write}-byte writes, MB/s (median of {args.repeat}); "
          "copy = bytearray() of the same chunks")
    for engine in ("hyperscan", "ahocorasick"):
        os.environ[kf.ENGINE_ENV] = engine
        kf._finder = None
        used = kf.engine()
        if used != engine:
            print(f"{engine:12s} not available (got {used})")
            continue
        for label, log in logs.items():
            chunks = chunks_of(log, args.write)
            stage_t, copy_t, scan_t = [], [], []
            for _ in range(args.repeat):
                copy_t.append(run_copy(chunks))
                scan_t.append(run_scan(chunks))
                stage_t.append(run_stage(chunks))
            mb = len(log) / 1e6
            s, c, b = (mb / statistics.median(t) for t in (stage_t, copy_t, scan_t))
            print(f"{engine:12s} {label:12s} stage {s:7,.0f} MB/s   bare prefilter scan {b:7,.0f} MB/s   "
                  f"copy {c:7,.0f} MB/s   stage/copy {s / c:.2f}")
        if args.spam_mib:
            bench_spam(engine, args.spam_mib, args.write)


# Output made of prefixes only (or of prefixes that chain into real tokens), newline-free unless stated.
SPAM = {"ghp_": b"ghp_", "AKIA": b"AKIA", "github_pat_": b"github_pat_", "-----BEGIN ": b"-----BEGIN ",
        "Authorization: ": b"Authorization: ", "ghp_ lines": b"ghp_ghp_ghp_ghp_\n", "xoxb- (chain)": b"xoxb-",
        "glpat- (chain)": b"glpat-", "?sig= (chain)": b"?sig=", "Bearer (tokens)": b"Authorization: Bearer "}


def bench_spam(engine: str, mib: float, write: int) -> None:
    """MB/s of the stage on each kind of prefix spam (one run each: the slow cases take seconds)."""
    cells = []
    run_stage([b"ghp_" * 1024])  # warm-up: the dense-write databases are compiled at the first dense write
    for label, unit in SPAM.items():
        data = unit * int(mib * 2**20 / len(unit))
        t = run_stage(chunks_of(data, write))
        cells.append(f"{label} {len(data) / 1e6 / t:,.1f}")
    print(f"{engine:12s} prefix spam, {mib:g} MiB each, MB/s: " + "; ".join(cells))


if __name__ == "__main__":
    main()
