"""Benchmark: source preparation against the plain tools, measured in the same run.

* git: a shallow checkout (prepare_source, type git, depth 1) of a generated 10,000-file repository over
  file://, against `git clone --depth 1 file://...`.
* tarball: extracting a ~100 MB archive (plain and gzip) through prepare_source (validation of every
  member, fd-relative writes, staging + rename) against `tar -x`.

Runs are interleaved and the medians compared; the machine is noisy. Default run: well under 2 minutes.

    .venv/bin/python bench/bench_source.py [--runs 5] [--files 10000] [--tar-mb 100]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from runnerlib.security.paths import Workspace
from runnerlib.security.registry import SecretRegistry
from runnerlib.source import SourceSpec, prepare_source

ENV = {"PATH": os.environ.get("PATH", os.defpath), "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
       "GIT_CONFIG_GLOBAL": "/dev/null", "LC_ALL": "C"}


def make_repo(path: Path, files: int) -> None:
    """A repository with `files` files in 100 directories, two commits, via git fast-import (fast)."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=ENV)
    lines: list[bytes] = []
    for commit in (1, 2):
        lines.append(b"commit refs/heads/main\n")
        lines.append(f"committer Bench <b@example.com> {1_700_000_000 + commit} +0000\n".encode())
        msg = f"commit {commit}".encode()
        lines.append(b"data %d\n%s\n" % (len(msg), msg))
        for i in range(files if commit == 1 else files // 10):
            body = (f"# file {i} version {commit}\n" + f"x = {i}\n" * 20).encode()
            lines.append(f"M 100644 inline d{i % 100:02d}/f{i:05d}.py\n".encode())
            lines.append(b"data %d\n" % len(body) + body + b"\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=b"".join(lines), check=True, env=ENV)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=path, check=True, env=ENV)


def make_tar(path: Path, total_mb: int, *, compress: bool, files: int = 1000) -> None:
    """~total_mb MB in `files` files of semi-random, somewhat compressible content."""
    per_file = total_mb * (1 << 20) // files
    mode = "w:gz" if compress else "w"
    seed = os.urandom(4096).hex().encode()
    with tarfile.open(path, mode, compresslevel=1) if compress else tarfile.open(path, mode) as tf:
        for i in range(files):
            data = (seed * (per_file // len(seed) + 1))[:per_file]
            info = tarfile.TarInfo(f"dir{i % 20:02d}/blob{i:04d}.bin")
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(name: str, ours: Callable[[], None], baseline: Callable[[], None], reset: Callable[[], None],
            runs: int) -> tuple[float, float]:
    a, b = [], []
    for _ in range(runs):
        reset()
        b.append(timed(baseline))
        reset()
        a.append(timed(ours))
    reset()
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{name:<34} runnerlib {ma * 1000:8.1f} ms   baseline {mb * 1000:8.1f} ms   ratio {ma / mb:5.2f}x")
    return ma, mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--tar-mb", type=int, default=100)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where to work (default /dev/shm: a VM disk's writeback noise swamps the "
                             "difference being measured; pass a disk path to include it)")
    parser.add_argument("--cases", default="git,tar", help="which comparisons to run: git, tar or both")
    parser.add_argument("--resolver", choices=["auto", "openat2", "walk"], default="auto",
                        help="Workspace resolver (walk = the fallback for kernels without openat2)")
    args = parser.parse_args()
    registry = SecretRegistry()
    with tempfile.TemporaryDirectory(prefix="bench-source-", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        repo = tmp / "repo"
        make_repo(repo, args.files)
        plain_tar, gz_tar, big_tar = tmp / "src.tar", tmp / "src.tar.gz", tmp / "big-members.tar"
        make_tar(plain_tar, args.tar_mb, compress=False)
        make_tar(gz_tar, args.tar_mb, compress=True)
        make_tar(big_tar, args.tar_mb, compress=False, files=100)
        print(f"fixtures: {args.files}-file repository, {plain_tar.stat().st_size >> 20} MB tar, "
              f"{gz_tar.stat().st_size >> 20} MB tar.gz ({time.perf_counter() - t0:.1f} s); median of {args.runs}")
        root = tmp / "job"
        root.mkdir()
        ws = Workspace(root, resolver=args.resolver)
        print(f"resolver: {ws.resolver}; directory: {tmp}")
        baseline_dir = tmp / "baseline"

        def reset() -> None:
            ws.rmtree("src")
            shutil.rmtree(baseline_dir, ignore_errors=True)
            # Flush the deletions (and their discards) now, so neither side pays for the other's writeback.
            os.sync()

        url = f"file://{repo}"

        def ours_git() -> None:
            prepare_source(SourceSpec(type="git", url=url, ref="main"), "src", workspace=ws, registry=registry,
                           env=ENV)

        def plain_git() -> None:
            subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "main", url, str(baseline_dir)],
                           check=True, env=ENV)

        cases = set(args.cases.split(","))
        results = []
        if "git" in cases:
            results.append(compare(f"git shallow checkout ({args.files} files)", ours_git, plain_git, reset,
                                   args.runs))

        for label, archive in (("plain, 1000 files", plain_tar), ("gzip, 1000 files", gz_tar),
                               ("plain, 100 files", big_tar)) if "tar" in cases else ():
            def ours_tar(archive: Path = archive) -> None:
                prepare_source(SourceSpec(type="tarball", url=str(archive)), "src", workspace=ws, registry=registry)

            def plain_tar_x(archive: Path = archive) -> None:
                baseline_dir.mkdir()
                subprocess.run(["tar", "-x", "-f", str(archive), "-C", str(baseline_dir)], check=True)

            results.append(compare(f"tar {args.tar_mb} MB ({label})", ours_tar, plain_tar_x, reset,
                                   args.runs))
        ws.close()
        worst = max(a / b for a, b in results)
        print(f"worst ratio {worst:.2f}x (target: within 1.2x)")


if __name__ == "__main__":
    main()
