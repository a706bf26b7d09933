"""atheris harness: tarball extraction from raw bytes and from structured hostile member lists.

Run: .venv/bin/python fuzz/fuzz_tar.py -atheris_runs=1000

Properties: preparing a tarball source either succeeds with every extracted path inside the destination,
or raises SourceError / PathPolicyError and leaves the destination exactly as it was; nothing outside the
workspace is ever written; validate_member never raises anything but ArchiveRefused.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import tempfile

import atheris

with atheris.instrument_imports():
    from runnerlib.security.paths import PathPolicyError, Workspace
    from runnerlib.security.registry import SecretRegistry
    from runnerlib.source import SourceError, SourceLimits, SourceSpec, prepare_source
    from runnerlib.source.tarball import ArchiveRefused, Member, validate_member

BASE = tempfile.mkdtemp(prefix="runnerlib-fuzz-tar-")
ROOT = os.path.join(BASE, "ws")
OUTSIDE = os.path.join(BASE, "outside")
ARCHIVE = os.path.join(BASE, "in.tar")
os.makedirs(os.path.join(ROOT, "src"))
os.makedirs(OUTSIDE)
with open(os.path.join(ROOT, "src", "previous"), "w") as fh:
    fh.write("kept")
REGISTRY = SecretRegistry()
LIMITS = SourceLimits(max_entries=50, max_total_bytes=1 << 20)
PARTS = ["a", "b", "..", ".", "", "/", "x" * 3]
KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE]


def _tree(top: str) -> list[str]:
    return sorted(os.path.join(d, n) for d, ds, fs in os.walk(top) for n in ds + fs)


BEFORE = _tree(ROOT)


def _structured(fdp: atheris.FuzzedDataProvider) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for _ in range(fdp.ConsumeIntInRange(1, 6)):
            name = "/".join(fdp.PickValueInList(PARTS) for _ in range(fdp.ConsumeIntInRange(1, 4))) or "x"
            info = tarfile.TarInfo(name)
            info.type = fdp.PickValueInList(KINDS)
            info.mode = fdp.ConsumeIntInRange(0, 0o7777)
            info.linkname = "/".join(fdp.PickValueInList(PARTS) for _ in range(fdp.ConsumeIntInRange(1, 4)))
            data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)) if info.type == tarfile.REGTYPE else b""
            info.size = len(data)
            validate_check(info)
            tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def validate_check(info: tarfile.TarInfo) -> None:
    kind = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
            tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "chardev", tarfile.FIFOTYPE: "fifo"}[info.type]
    try:
        parts = validate_member(Member(info.name, kind, info.linkname, info.mode, info.size))
    except ArchiveRefused:
        return
    assert ".." not in parts and not info.name.startswith("/")


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    raw = _structured(fdp) if fdp.ConsumeBool() else fdp.ConsumeBytes(4096)
    with open(ARCHIVE, "wb") as fh:
        fh.write(raw)
    ws = Workspace(ROOT)
    try:
        prepare_source(SourceSpec(type="tarball", url=ARCHIVE, limits=LIMITS), "src", workspace=ws,
                       registry=REGISTRY)
    except (SourceError, PathPolicyError):
        assert _tree(ROOT) == BEFORE, "a refused archive changed the workspace"
    else:
        dest = os.path.join(ROOT, "src")
        for path in _tree(ROOT):
            assert path == dest or path.startswith(dest + os.sep), path
        ws.clear("src")
        ws.write_text("src/previous", "kept")
    finally:
        ws.close()
    assert os.listdir(OUTSIDE) == [], "something was written outside the workspace"


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
