"""Benchmark: what the pristine-source rule costs a job, next to baselines measured in the same run.

* the untrusted copy of a 10,000-file repository (runnerlib.source.pristine.untrusted_copy: fd-based copy with
  the sandbox uid set in the same pass) against `cp -a` of the same tree, and (root only) against mounting an
  overlay (the alternative design: no copy, but a mount per step namespace);
* the hand-over clean-up after an untrusted step (Workspace.sanitise) of an artifacts tree of 1,000 files;
* the /job/ci lock of a root trusted step (security/cilock.py trampoline) against a plain `/bin/true` spawn.

Runs are interleaved and the medians compared; the machine is noisy. Default run: well under a minute.

    .venv/bin/python bench/bench_pristine.py [--runs 5] [--files 10000]
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_source import make_repo  # noqa: E402

from runnerlib.security import cilock  # noqa: E402
from runnerlib.security.paths import Workspace  # noqa: E402
from runnerlib.source.pristine import UNTRUSTED_DIR, untrusted_copy  # noqa: E402

IS_ROOT = os.geteuid() == 0
OWNER = (65534, 65534) if IS_ROOT else None


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return (time.perf_counter() - started) * 1000


def median_row(name: str, values: list[float], base: list[float] | None = None) -> str:
    m = statistics.median(values)
    ratio = f"{m / statistics.median(base):5.2f}x" if base else "  base"
    return f"  {name:<44} {m:9.1f} ms  {ratio}"


def bench_copy(root: Path, runs: int) -> None:
    ws = Workspace(root)
    src = root / "src"
    results: dict[str, list[float]] = {"cp": [], "copy": [], "overlay": []}
    for _ in range(runs):
        shutil.rmtree(root / "cp", ignore_errors=True)
        results["cp"].append(timed(lambda: subprocess.run(["cp", "-a", str(src), str(root / "cp")], check=True)))
        ws.rmtree(UNTRUSTED_DIR)
        results["copy"].append(timed(lambda: untrusted_copy(ws, str(src), owner=OWNER)))
        if IS_ROOT:
            results["overlay"].append(timed(lambda: _overlay(root)))
    files = sum(len(f) for _, _, f in os.walk(src))
    print(f"untrusted copy of a {files}-file repository ({runs} runs, medians):")
    print(median_row("cp -a (baseline)", results["cp"]))
    print(median_row("untrusted_copy (with chown to the sandbox uid)" if IS_ROOT else "untrusted_copy",
                     results["copy"], results["cp"]))
    if results["overlay"]:
        print(median_row("overlay mount + umount (root; alternative)", results["overlay"], results["cp"]))
    ws.close()


def _overlay(root: Path) -> None:
    for d in ("upper", "work", "merged"):
        (root / "ovl" / d).mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={root / 'src'},upperdir={root / 'ovl/upper'},workdir={root / 'ovl/work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(root / "ovl" / "merged")], check=True)
    subprocess.run(["umount", str(root / "ovl" / "merged")], check=True)


def bench_sanitise(root: Path, runs: int) -> None:
    area = root / "artifacts"
    values: list[float] = []
    walk: list[float] = []
    for _ in range(runs):
        shutil.rmtree(area, ignore_errors=True)
        for i in range(1000):
            d = area / f"d{i % 20}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i}.txt").write_text("x" * 100)
        walk.append(timed(lambda: sum(1 for _ in os.walk(area))))
        with Workspace(root) as ws:
            values.append(timed(lambda: ws.sanitise("artifacts", owner=(os.geteuid(), os.getegid()) if IS_ROOT else None)))
    print(f"hand-over clean-up of 1000 files in 20 directories ({runs} runs, medians):")
    print(median_row("os.walk of the same tree (baseline)", walk))
    print(median_row("Workspace.sanitise", values, walk))


def bench_cilock(root: Path, runs: int) -> None:
    ci = root / "ci"
    ci.mkdir(exist_ok=True)
    plain: list[float] = []
    locked: list[float] = []
    for _ in range(runs * 4):
        plain.append(timed(lambda: subprocess.run(["/bin/true"], check=True)))
        locked.append(timed(lambda: subprocess.run(cilock.wrap(["/bin/true"], [str(ci)]), check=True, env={})))
    print(f"trusted step with /job/ci read-only (root: mount namespace; {runs * 4} runs, medians):")
    print(median_row("spawn /bin/true (baseline)", plain))
    print(median_row("through the cilock trampoline", locked, plain))
    print(f"  extra per trusted step: {statistics.median(locked) - statistics.median(plain):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-pristine-"))
    try:
        make_repo(base / "src", args.files)
        bench_copy(base, args.runs)
        bench_sanitise(base, args.runs)
        if IS_ROOT:
            bench_cilock(base, args.runs)
        else:
            print("cilock: not measured (a root runner's mechanism; unprivileged runners rely on 0444/0555 modes)")
    finally:
        subprocess.run(["umount", "-q", str(base / "ovl" / "merged")], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
