"""Property: whatever tree an untrusted step leaves in the hand-over area, Workspace.sanitise leaves only
directories and single-link regular files, keeps every such file's content, and changes nothing outside."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runnerlib.security.paths import Workspace

NAMES = st.sampled_from(["a", "b", "c", "d.txt", "e"])
KINDS = st.sampled_from(["file", "dir", "symlink-out", "symlink-in", "fifo", "hardlink-out", "hardlink-in"])
ENTRIES = st.lists(st.tuples(st.lists(NAMES, min_size=1, max_size=3), KINDS), max_size=25)


def _build(area: Path, outside: Path, entries: list[tuple[list[str], str]]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for parts, kind in entries:
        path = area.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(path):
                continue
            if kind == "file":
                path.write_bytes(b"/".join(p.encode() for p in parts))
                files["/".join(parts)] = path.read_bytes()
            elif kind == "dir":
                path.mkdir()
            elif kind == "symlink-out":
                os.symlink(outside / "target", path)
            elif kind == "symlink-in":
                os.symlink(".", path)
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "hardlink-out":
                os.link(outside / "target", path)
            elif kind == "hardlink-in" and files:
                os.link(area / next(iter(files)), path)
        except (FileExistsError, NotADirectoryError, FileNotFoundError):
            continue
    return files


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ENTRIES)
def test_only_plain_files_and_directories_remain(entries: list[tuple[list[str], str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        area, outside = root / "artifacts", root / "outside"
        area.mkdir()
        outside.mkdir()
        (outside / "target").write_bytes(b"TRUSTED")
        files = _build(area, outside, entries)
        with Workspace(root) as ws:
            ws.sanitise("artifacts")
        for dirpath, dirnames, filenames in os.walk(area):
            for name in dirnames + filenames:
                st_ = os.lstat(os.path.join(dirpath, name))
                assert stat.S_ISDIR(st_.st_mode) or (stat.S_ISREG(st_.st_mode) and st_.st_nlink == 1), name
        for rel, data in files.items():
            path = area / rel
            if path.exists():
                assert path.read_bytes() == data
        assert (outside / "target").read_bytes() == b"TRUSTED" and os.listdir(outside) == ["target"]
