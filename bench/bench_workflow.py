"""Benchmark of the workflow layer: each figure next to a baseline measured in the same run.

Run: .venv/bin/python bench/bench_workflow.py [--quick]

- signing a trigger message vs only serialising it (json.dumps), and verifying it;
- appending one flush to the triggers file (lock, read, temp file, fsync, rename) vs a plain open/write;
- glob matching (compiled, cached) vs fnmatch (whose `*` crosses `/`, so only a speed reference);
- parsing a 50-job workflow file with line marks vs yaml.safe_load alone.

Medians of several repeats; the machine is noisy, so read the ratios.
"""

from __future__ import annotations

import fnmatch
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from runnerlib.workflow import triggers_file
from runnerlib.workflow.globs import glob_match
from runnerlib.workflow.models import parse_workflow_text
from runnerlib.workflow.signing import TriggerSigner, verify_message


def median_per_op(fn: Callable[[], None], ops: int, repeats: int) -> float:
    """Median seconds per operation over `repeats` runs of `ops` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(ops):
            fn()
        times.append((time.perf_counter() - start) / ops)
    return statistics.median(times)


def row(name: str, value: float, baseline: float, baseline_name: str) -> None:
    print(f"{name:<38} {value * 1e6:10.1f} us/op   {baseline_name:<28} {baseline * 1e6:10.1f} us/op   "
          f"ratio {value / baseline:6.1f}x")


def main() -> None:
    quick = "--quick" in sys.argv
    scale = 1 if quick else 5
    repeats = 5
    document = {"type": "trigger_job", "operation_id": "0b7c2a9e-4f0c-4c8e-9d5e-1a2b3c4d5e6f",
                "trigger_type": "runnerlib",
                "jobs": [{"job_name": f"job-{i}", "env": {"TARGET": "staging", "N": str(i)},
                          "depends_on": ["test", "build"]} for i in range(5)]}
    signer = TriggerSigner.generate()
    line = signer.sign_document(document, job_id="42")
    key = signer.public_key_text()

    def serialise() -> None:
        json.dumps(document, separators=(",", ":"), sort_keys=True)

    base = median_per_op(serialise, 200 * scale, repeats)
    row("sign trigger message", median_per_op(lambda: signer.sign_document(document, job_id="42"),
                                                200 * scale, repeats), base, "json.dumps")
    row("verify trigger message", median_per_op(lambda: verify_message(line, key), 200 * scale, repeats),
        base, "json.dumps")

    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.json"
        payload = json.dumps(document).encode()

        def plain_write() -> None:
            with open(plain, "wb") as handle:
                handle.write(payload)

        counter = iter(range(10**9))

        def append() -> None:
            # A fresh file every 20 flushes keeps the read-modify-write size realistic.
            n = next(counter)
            triggers_file.append_operation(Path(tmp) / f"t{n // 20}.json", document["jobs"][:1])

        row("triggers file: append one flush", median_per_op(append, 40 * scale, repeats),
            median_per_op(plain_write, 40 * scale, repeats), "plain open+write")

    paths = [f"src/pkg{i}/mod{j}/file_{k}.py" for i in range(5) for j in range(5) for k in range(8)]

    def ours() -> None:
        for p in paths:
            glob_match("src/**/file_*.py", p)

    def reference() -> None:
        for p in paths:
            fnmatch.fnmatchcase(p, "src/*/file_*.py")

    row(f"glob_match x{len(paths)} paths", median_per_op(ours, 20 * scale, repeats),
        median_per_op(reference, 20 * scale, repeats), "fnmatchcase (cached too)")

    jobs = "\n".join(f"  job{i}:\n    command: make part{i}\n    needs: [{'job' + str(i - 1) if i else ''}]"
                     .replace("needs: []", "environment: {A: '1'}") for i in range(50))
    text = f"id: big\nname: Big\non: {{events: [push], branches: [main]}}\njobs:\n{jobs}\n"
    row("parse 50-job workflow (with lines)", median_per_op(lambda: parse_workflow_text(text, "big.yaml"),
                                                              5 * scale, repeats),
        median_per_op(lambda: yaml.safe_load(text), 5 * scale, repeats), "yaml.safe_load")


if __name__ == "__main__":
    main()
