"""atheris harness: SandboxPolicy validation and the seccomp program builder.

Run: .venv/bin/python fuzz/fuzz_sandbox_policy.py -atheris_runs=1000

Properties: a SandboxPolicy built from hostile paths either raises PolicyError (naming a field) or holds only
normalised absolute paths, with no writable grant overlapping a protected path; describe() never fails.
The seccomp builder gives a whole number of 8-byte instructions whose first checks the architecture.
"""

from __future__ import annotations

import os
import struct
import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.security.lowlevel import seccomp
    from runnerlib.security.policy import PolicyError, SandboxPolicy

PIECES = ["job", "ci", "src", "..", ".", "", "/", "artifacts", "tmp", "\0", "ci2", "ci/"]


def _path(fdp: atheris.FuzzedDataProvider) -> str:
    parts = [fdp.PickValueInList(PIECES) for _ in range(fdp.ConsumeIntInRange(0, 5))]
    text = "/".join(parts)
    return ("/" if fdp.ConsumeBool() else "") + text


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    rw = tuple(_path(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3)))
    protected = tuple(_path(fdp) for _ in range(fdp.ConsumeIntInRange(0, 2)))
    try:
        policy = SandboxPolicy(read_write_paths=rw, protected_paths=protected, private_tmp=fdp.ConsumeBool(),
                               uid=fdp.ConsumeIntInRange(0, 70000), gid=fdp.ConsumeIntInRange(1, 70000))
    except PolicyError as exc:
        assert exc.field in ("uid", "gid", "read_write_paths", "protected_paths"), exc.field
        return
    for p in policy.read_write_paths + policy.protected_paths:
        assert p.startswith("/") and os.path.normpath(p) == p
    for w in policy.read_write_paths:
        for p in policy.protected_paths:
            assert not _overlaps(w, p), (w, p)
    policy.describe()
    prog = seccomp.build_filter(fdp.PickValueInList(["x86_64", "aarch64"]), deny_network=fdp.ConsumeBool())
    assert len(prog) % 8 == 0 and struct.unpack("=HBBI", prog[:8])[3] == 4  # load seccomp_data.arch


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
