"""atheris harness: path safety (check_config_path and every Workspace operation, both resolvers).

Run: .venv/bin/python fuzz/fuzz_paths.py -atheris_runs=1000

Properties: check_config_path returns a normalised path inside the root, or raises PathPolicyError naming
the field. Workspace operations on paths built from hostile components (.., symlinks to outside, absolute
links, links to ".") raise only PathPolicyError or OSError, and never change anything outside the workspace.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from runnerlib.security.lowlevel import openat2
    from runnerlib.security.paths import PathPolicyError, Workspace, check_config_path

BASE = tempfile.mkdtemp(prefix="runnerlib-fuzz-paths-")
ROOT = os.path.join(BASE, "ws")
OUTSIDE = os.path.join(BASE, "outside")
COMPONENTS = ["a", "b", "..", ".", "", "link-out", "link-abs", "link-dot", "link-up", "link-in", "f", "/", "\0"]
RESOLVERS = ["walk"] + (["openat2"] if openat2.available() else [])


def _reset() -> None:
    with Workspace(BASE) as base:
        for top in (ROOT, OUTSIDE):
            if os.path.lexists(top):
                base.rmtree(os.path.basename(top))
    os.makedirs(os.path.join(ROOT, "a", "b"))
    os.makedirs(OUTSIDE)
    with open(os.path.join(OUTSIDE, "secret"), "w") as fh:
        fh.write("SECRET")
    with open(os.path.join(ROOT, "a", "f"), "w") as fh:
        fh.write("f")
    os.symlink(OUTSIDE, os.path.join(ROOT, "link-out"))
    os.symlink("/", os.path.join(ROOT, "a", "link-abs"))
    os.symlink(".", os.path.join(ROOT, "link-dot"))
    os.symlink("link-dot/..", os.path.join(ROOT, "a", "link-up"))
    os.symlink("b", os.path.join(ROOT, "a", "link-in"))


def _outside_state() -> list[tuple[str, bytes]]:
    out = []
    for dirpath, dirs, files in os.walk(OUTSIDE):
        for name in sorted(dirs + files):
            path = os.path.join(dirpath, name)
            data = open(path, "rb").read() if os.path.isfile(path) and not os.path.islink(path) else b""
            out.append((path, data))
    return sorted(out)


_reset()
EXPECTED = _outside_state()


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(30)
    try:
        result = check_config_path("code_dir", text, "/job")
    except PathPolicyError as exc:
        assert str(exc).startswith("code_dir: "), exc
    else:
        assert str(result) == "/job" or str(result).startswith("/job/"), result
        assert ".." not in result.parts and os.path.normpath(str(result)) == str(result)
    rel = "/".join(fdp.PickValueInList(COMPONENTS) for _ in range(fdp.ConsumeIntInRange(0, 5)))
    follow = fdp.ConsumeBool()
    op = fdp.ConsumeIntInRange(0, 6)
    ws = Workspace(ROOT, resolver=fdp.PickValueInList(RESOLVERS))
    try:
        if op == 0:
            ws.read_bytes(rel, follow_symlinks=follow)
        elif op == 1:
            ws.write_bytes(rel, b"pwned")
        elif op == 2:
            ws.makedirs(rel)
        elif op == 3:
            ws.rmtree(rel)
        elif op == 4:
            ws.chmod(rel, 0o777)
        elif op == 5:
            ws.symlink(fdp.ConsumeUnicodeNoSurrogates(12), rel)
        else:
            ws.listdir(rel)
    except (PathPolicyError, OSError, ValueError):
        pass
    finally:
        ws.close()
    assert _outside_state() == EXPECTED, f"outside changed by op {op} on {rel!r}"
    if op in (1, 2, 3, 4, 5):
        _reset()


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
