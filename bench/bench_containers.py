"""Container mode's cost, each figure next to its baseline measured in the same run (real Podman, as root).

Run: .venv/bin/python bench/bench_containers.py [--quick] [--image IMAGE]

- per job: `runnerlib run --runner-image IMAGE --job-command true` (whole command: runnerlib's start-up,
  workspace, masking, the engine) against `podman run --rm IMAGE true`; the difference is what container
  mode adds on top of the engine's own start (target: under 0.3 s). `runnerlib run --job-command true`
  (no container) is shown too, for runnerlib's own fixed cost, and container mode without the first step's
  early start (execution/container_prestart.py switched off in that process only), for what it saves;
- the five-job example workflow (examples/workflows/ci.yaml) with `--engine podman` against
  `--engine process` (needs the runner image: `make image`).
Runs are interleaved and medians reported; the machine is noisy, so read the differences and ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str], **kw: object) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--image", default="localhost/reactorcide/runner:latest")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("podman") is None:
        sys.exit("bench_containers: needs root and podman")
    if subprocess.run(["podman", "image", "exists", args.image]).returncode != 0:
        sys.exit(f"bench_containers: no image {args.image} (make image)")
    runs = 3 if args.quick else 9
    cli = [sys.executable, "-m", "runnerlib.cli"]
    # The same CLI with the early start off: first_step finds no step to start early.
    no_early = [sys.executable, "-c", "import runnerlib.execution.container_prestart as p; "
                "p.first_step = lambda job: None; from runnerlib.cli import entry; entry()"]
    samples: dict[str, list[float]] = {"podman run --rm IMAGE true": [], "runnerlib run --runner-image": [],
                                       "  without the early start": [], "runnerlib run (no container)": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            ws = Path(tmp) / f"ws{i}"
            samples["podman run --rm IMAGE true"].append(timed(["podman", "run", "--rm", args.image, "true"]))
            samples["runnerlib run --runner-image"].append(timed(
                [*cli, "run", "--workspace-root", str(ws / "c"), "--runner-image", args.image, "--job-command", "true"]))
            samples["  without the early start"].append(timed(
                [*no_early, "run", "--workspace-root", str(ws / "n"), "--runner-image", args.image, "--job-command",
                 "true"]))
            samples["runnerlib run (no container)"].append(timed(
                [*cli, "run", "--workspace-root", str(ws / "p"), "--job-command", "true"]))
    medians = {k: statistics.median(v) for k, v in samples.items()}
    base = medians["podman run --rm IMAGE true"]
    print(f"per job, medians of {runs} interleaved runs")
    for name, value in medians.items():
        print(f"  {name:<32} {value:7.3f} s   {value - base:+7.3f} s over the engine")

    example = ROOT / "examples" / "workflows" / "ci.yaml"
    wf_runs = 1 if args.quick else 3
    flows: dict[str, list[float]] = {"--engine process": [], "--engine podman": []}
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "code"
        code.mkdir()
        for i in range(wf_runs):
            for engine in ("process", "podman"):
                flows[f"--engine {engine}"].append(timed(
                    [*cli, "workflow", "run", str(example), "--engine", engine, "--code-dir", str(code),
                     "--run-dir", str(Path(tmp) / f"run-{engine}-{i}"), "--runner-image", args.image]
                    if engine == "podman" else
                    [*cli, "workflow", "run", str(example), "--code-dir", str(code),
                     "--run-dir", str(Path(tmp) / f"run-{engine}-{i}")]))
    process, podman = (statistics.median(flows[k]) for k in ("--engine process", "--engine podman"))
    print(f"five-job example workflow, medians of {wf_runs}")
    print(f"  --engine process  {process:7.2f} s")
    print(f"  --engine podman   {podman:7.2f} s   ratio {podman / process:5.2f}x")


if __name__ == "__main__":
    main()
