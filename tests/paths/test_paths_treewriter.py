"""Attacks on TreeWriter (cached directory fds for extraction), each with both resolvers.

Each attack is shown to work with the plain os call the writer replaces, and to fail through the writer.
"""

from __future__ import annotations

import os
import resource
import stat
from pathlib import Path

import pytest

from runnerlib.security.paths import PathPolicyError, TreeWriter, Workspace


@pytest.fixture
def tree(ws: Workspace, layout: dict[str, Path]) -> Path:
    (layout["root"] / "t").mkdir()
    return layout["root"] / "t"


def _write(out: TreeWriter, rel: str, data: bytes = b"pwned") -> None:
    fd = out.create(rel)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_create_below_a_symlinked_directory_is_refused(ws: Workspace, layout: dict[str, Path], tree: Path) -> None:
    os.symlink(layout["outside"], tree / "logs")
    with ws.tree_writer("t") as out, pytest.raises(PathPolicyError, match="not a symlink"):
        _write(out, "logs/planted")
    assert sorted(os.listdir(layout["outside"])) == ["secret"]
    # Without protection: the same create by path lands outside.
    (tree / "logs" / "planted").write_bytes(b"pwned")
    assert (layout["outside"] / "planted").exists()


def test_create_never_follows_or_replaces_a_final_symlink(ws: Workspace, layout: dict[str, Path],
                                                           tree: Path) -> None:
    os.symlink(layout["secret"], tree / "config")
    os.symlink(layout["outside"] / "new", tree / "dangling")
    with ws.tree_writer("t") as out:
        for rel in ("config", "dangling"):
            with pytest.raises(FileExistsError):
                _write(out, rel)
    assert layout["secret"].read_text() == "TOP-SECRET-CONTENT"
    assert not (layout["outside"] / "new").exists()
    # Without protection: O_CREAT without O_EXCL|O_NOFOLLOW writes through the dangling link.
    fd = os.open(tree / "dangling", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    assert (layout["outside"] / "new").exists()


@pytest.mark.parametrize("rel", ["../escape", "a/../../escape", "/tmp/escape", "a\0b", "", "."])
def test_dotdot_absolute_nul_and_the_tree_itself_are_refused(ws: Workspace, layout: dict[str, Path], tree: Path,
                                                            rel: str) -> None:
    with ws.tree_writer("t") as out:
        for op in (lambda r: _write(out, r), out.makedirs, out.lstat, out.remove, lambda r: out.symlink("x", r),
                   lambda r: out.chmod(r, 0o777), lambda r: out.link("f", r)):
            with pytest.raises(PathPolicyError):
                op(rel)
    assert not (layout["root"] / "escape").exists()
    assert not Path("/tmp/escape").exists()


def test_symlink_targets_must_stay_in_the_tree(ws: Workspace, layout: dict[str, Path], tree: Path) -> None:
    with ws.tree_writer("t") as out:
        for target in ("../../outside/secret", "/etc/passwd", "../x"):
            with pytest.raises(PathPolicyError):
                out.symlink(target, "l")
        out.symlink("../sub/f", "d/l")
    assert os.readlink(tree / "d" / "l") == "../sub/f"
    assert not (tree / "l").exists()


def test_hard_link_to_a_symlink_links_the_symlink_not_its_target(ws: Workspace, layout: dict[str, Path],
                                                                tree: Path) -> None:
    os.symlink(layout["secret"], tree / "evil")
    with ws.tree_writer("t") as out:
        out.link("evil", "h")
        with pytest.raises(FileNotFoundError):
            out.link("missing", "h2")
        out.makedirs("d")
        with pytest.raises(PathPolicyError, match="directory"):
            out.link("d", "h3")
    assert stat.S_ISLNK(os.lstat(tree / "h").st_mode)
    assert os.stat(tree / "h").st_ino == os.stat(layout["secret"]).st_ino  # only by following the link
    assert os.lstat(layout["secret"]).st_nlink == 1
    # Without protection: linkat(AT_SYMLINK_FOLLOW) makes the hard link the outside file itself.
    dfd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link("evil", "plain", src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=True)
    finally:
        os.close(dfd)
    assert os.lstat(layout["secret"]).st_nlink == 2


def test_chmod_refuses_symlinks_and_remove_refuses_directories(ws: Workspace, layout: dict[str, Path],
                                                               tree: Path) -> None:
    os.symlink(layout["secret"], tree / "evil")
    os.chmod(layout["secret"], 0o600)
    with ws.tree_writer("t") as out:
        with pytest.raises(PathPolicyError, match="symlink"):
            out.chmod("evil", 0o777)
        out.makedirs("d/e")
        with pytest.raises(OSError):
            out.remove("d")
        _write(out, "d/e/f")  # the cached fds still name the directories that are there
        out.chmod("d", 0o750)
        out.remove("evil")
    assert stat.S_IMODE(os.stat(layout["secret"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tree / "d").st_mode) == 0o750
    assert (tree / "d" / "e" / "f").read_bytes() == b"pwned"
    assert not os.path.lexists(tree / "evil")


def test_directory_swapped_for_a_symlink_after_caching(ws: Workspace, layout: dict[str, Path], tree: Path) -> None:
    """A cached fd keeps naming the directory it opened; once evicted, the symlink is refused on re-open."""
    with ws.tree_writer("t", max_fds=2) as out:
        out.makedirs("work")
        os.rename(tree / "work", tree / "moved")
        os.symlink(layout["outside"], tree / "work")
        _write(out, "work/a")  # still the cached directory (now called moved), never the link
        for i in range(4):  # evict "work"
            out.makedirs(f"other{i}")
        with pytest.raises(PathPolicyError, match="not a symlink"):
            _write(out, "work/b")
    assert (tree / "moved" / "a").exists()
    assert sorted(os.listdir(layout["outside"])) == ["secret"]


def test_modes_and_parents(ws: Workspace, tree: Path) -> None:
    old = os.umask(0o077)
    try:
        with ws.tree_writer("t", dir_mode=0o750) as out:
            _write(out, "a/b/c/file")
            out.makedirs("a/x")
            out.makedirs("a/x")  # existing: fine
    finally:
        os.umask(old)
    for d in ("a", "a/b", "a/b/c", "a/x"):
        assert stat.S_IMODE(os.stat(tree / d).st_mode) == 0o750  # dir_mode exactly, whatever the umask
    with ws.tree_writer("t") as out, pytest.raises(PathPolicyError, match="not a symlink or file"):
        _write(out, "a/b/c/file/under-a-file")


def test_deep_and_wide_trees_keep_at_most_max_fds_open(ws: Workspace, tree: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        with ws.tree_writer("t", max_fds=8) as out:
            for i in range(300):
                _write(out, f"w{i % 50}/d{i % 7}/f{i}", b"x")
            deep = "/".join(f"n{i}" for i in range(100))
            _write(out, f"{deep}/leaf", b"y")
            assert len(os.listdir("/proc/self/fd")) <= before + 9 + 1  # cache + the tree's own fd
            for i in range(50):
                out.chmod(f"w{i}", 0o755)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(os.listdir("/proc/self/fd")) == before
    assert (tree / "w3" / "d3" / "f3").read_bytes() == b"x"
    assert (tree.joinpath(*deep.split("/")) / "leaf").read_bytes() == b"y"


def test_no_fd_leaks_on_refused_operations(ws: Workspace, layout: dict[str, Path], tree: Path) -> None:
    os.symlink(layout["outside"], tree / "out")
    (tree / "file").write_text("f")
    before = len(os.listdir("/proc/self/fd"))
    out = ws.tree_writer("t")
    for rel in ("out/x", "file/x", "missing/x", "out", "file"):
        for op in (lambda r: _write(out, r), out.makedirs, out.lstat, out.remove, lambda r: out.chmod(r, 0o700),
                   lambda r: out.link("file", r), lambda r: out.link(r, "new"), lambda r: out.symlink("file", r)):
            try:
                op(rel)
            except (PathPolicyError, OSError):
                pass
    out.close()
    out.close()
    assert len(os.listdir("/proc/self/fd")) == before
