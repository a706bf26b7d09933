"""Property test: random Workspace (and TreeWriter) operations on hostile paths never touch anything outside.

The same idea as fuzz/fuzz_paths.py, with hypothesis, for both resolvers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.security.lowlevel import openat2
from runnerlib.security.paths import PathPolicyError, Workspace

COMPONENTS = ["a", "b", "..", ".", "", "out", "abs", "dot", "up", "in", "f"]
OPS = ["read", "read-follow", "write", "makedirs", "rmtree", "remove", "chmod", "symlink", "list", "copy_in",
       "make_readonly", "clear", "tw-create", "tw-makedirs", "tw-symlink", "tw-link", "tw-link-from", "tw-chmod",
       "tw-remove"]
RESOLVERS = ["walk"] + (["openat2"] if openat2.available() else [])


def _build(base: Path) -> None:
    root, outside = base / "ws", base / "outside"
    if base.exists():
        with Workspace(base.parent) as parent:
            parent.rmtree(base.name)
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("SECRET")
    (outside / "dir").mkdir()
    (root / "a" / "f").write_text("f")
    os.symlink(outside, root / "out")
    os.symlink("/", root / "a" / "abs")
    os.symlink(".", root / "dot")
    os.symlink("dot/..", root / "a" / "up")
    os.symlink("b", root / "a" / "in")


def _state(outside: Path) -> list[tuple[str, bytes, int, int]]:
    out = []
    for dirpath, dirs, files in os.walk(outside):
        for name in dirs + files:
            p = Path(dirpath) / name
            data = p.read_bytes() if p.is_file() else b""
            st = os.lstat(p)
            out.append((str(p), data, st.st_mode, st.st_nlink))  # nlink: a hard link made to it
    return sorted(out)


@pytest.fixture(scope="module")
def base():
    tmp = Path(tempfile.mkdtemp(prefix="runnerlib-prop-"))
    yield tmp / "t"
    shutil.rmtree(tmp, ignore_errors=True)


def _apply_tree_writer(ws: Workspace, op: str, rel: str) -> None:
    # The writer for the whole workspace and for the directory "a" (links planted in both).
    with ws.tree_writer("a" if rel.startswith("a/") else "") as out:
        sub = rel[2:] if rel.startswith("a/") else rel
        if op == "tw-create":
            fd = out.create(sub)
            try:
                os.write(fd, b"pwned")
            finally:
                os.close(fd)
        elif op == "tw-makedirs":
            out.makedirs(sub)
        elif op == "tw-symlink":
            out.symlink("../../outside/secret", sub)
        elif op == "tw-link":
            out.link(sub, "hard")
        elif op == "tw-link-from":
            out.link("f" if rel.startswith("a/") else "a/f", sub)
        elif op == "tw-chmod":
            out.chmod(sub, 0o777)
        else:
            out.remove(sub)


def _apply(ws: Workspace, op: str, rel: str, base: Path) -> None:
    if op.startswith("tw-"):
        _apply_tree_writer(ws, op, rel)
    elif op == "read":
        ws.read_bytes(rel)
    elif op == "read-follow":
        ws.read_bytes(rel, follow_symlinks=True)
    elif op == "write":
        ws.write_bytes(rel, b"pwned")
    elif op == "makedirs":
        ws.makedirs(rel)
    elif op == "rmtree":
        ws.rmtree(rel)
    elif op == "remove":
        ws.remove(rel)
    elif op == "chmod":
        ws.chmod(rel, 0o777)
    elif op == "symlink":
        ws.symlink("../../outside/secret", rel)
    elif op == "list":
        ws.listdir(rel)
    elif op == "copy_in":
        ws.copy_in(base / "outside", rel)
    elif op == "make_readonly":
        ws.make_readonly(rel)
    else:
        ws.clear(rel)


@settings(max_examples=300)
@given(ops=st.lists(st.tuples(st.sampled_from(OPS), st.lists(st.sampled_from(COMPONENTS), max_size=4),
                              st.sampled_from(RESOLVERS)), min_size=1, max_size=6))
def test_random_operations_never_escape(base: Path, ops) -> None:
    _build(base)
    before = _state(base / "outside")
    for op, parts, resolver in ops:
        rel = "/".join(parts)
        with Workspace(base / "ws", resolver=resolver) as ws:
            try:
                _apply(ws, op, rel, base)
            except (PathPolicyError, OSError):
                pass
        assert _state(base / "outside") == before, f"{op} on {rel!r} ({resolver}) changed the outside"
