"""Attacks on Workspace, each run with both resolvers (openat2 and the O_NOFOLLOW walk).

Each attack is shown to succeed with the plain os/shutil call that the Workspace replaces, and to fail
through the Workspace.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from runnerlib.security.paths import PathPolicyError, ReadOnlyViolation, Workspace

# The uid untrusted steps would use: any uid but ours (the suite also runs as 65534).
OTHER_UID = 65533 if os.geteuid() == 65534 else 65534

def test_read_through_symlink_to_outside_is_refused(ws: Workspace, layout: dict[str, Path]) -> None:
    (layout["root"] / "artifacts").mkdir()
    os.symlink(layout["secret"], layout["root"] / "artifacts" / "evil")
    # Without protection: a plain open follows the link and reads the secret.
    assert (layout["root"] / "artifacts" / "evil").read_text() == "TOP-SECRET-CONTENT"
    with pytest.raises(PathPolicyError, match="symlink"):
        ws.read_bytes("artifacts/evil")
    with pytest.raises(PathPolicyError, match="outside the workspace"):
        ws.read_bytes("artifacts/evil", follow_symlinks=True)


def test_dotdot_and_absolute_outside_are_refused(ws: Workspace, layout: dict[str, Path]) -> None:
    with pytest.raises(PathPolicyError, match=r"'\.\.'"):
        ws.read_bytes("../outside/secret")
    with pytest.raises(PathPolicyError, match="inside the workspace root"):
        ws.read_bytes(str(layout["secret"]))
    with pytest.raises(PathPolicyError, match="NUL"):
        ws.read_bytes("a\0b")


def test_symlinked_directory_component_is_refused(ws: Workspace, layout: dict[str, Path]) -> None:
    os.symlink(layout["outside"], layout["root"] / "link")
    assert (layout["root"] / "link" / "secret").exists()  # plain path resolution goes outside
    with pytest.raises(PathPolicyError):
        ws.read_bytes("link/secret")
    with pytest.raises(PathPolicyError, match="outside"):
        ws.read_bytes("link/secret", follow_symlinks=True)


def test_inner_symlinks_followed_only_on_request(ws: Workspace, layout: dict[str, Path]) -> None:
    (layout["root"] / "sub").mkdir()
    (layout["root"] / "sub" / "f").write_text("inside")
    os.symlink("sub", layout["root"] / "inner")
    os.symlink("../sub/f", layout["root"] / "sub" / "up")
    with pytest.raises(PathPolicyError, match="symlink"):
        ws.read_text("inner/f")
    assert ws.read_text("inner/f", follow_symlinks=True) == "inside"
    assert ws.read_text("sub/up", follow_symlinks=True) == "inside"


def test_dotdot_after_a_link_to_dot_cannot_climb_out(ws: Workspace, layout: dict[str, Path]) -> None:
    # x -> "." makes "x/.." look lexically harmless, but it is the root's parent.
    os.symlink(".", layout["root"] / "x")
    os.symlink("x/..", layout["root"] / "l")
    assert (layout["root"] / "l" / "outside" / "secret").read_text() == "TOP-SECRET-CONTENT"
    with pytest.raises(PathPolicyError, match="outside"):
        ws.read_bytes("l/outside/secret", follow_symlinks=True)


def test_absolute_symlink_is_refused_even_when_following(ws: Workspace, layout: dict[str, Path]) -> None:
    os.symlink(str(layout["root"]), layout["root"] / "abs")  # absolute, even if it points inside
    with pytest.raises(PathPolicyError):
        ws.listdir("abs")
    with pytest.raises(PathPolicyError):
        ws.open("abs", os.O_RDONLY | os.O_DIRECTORY, follow_symlinks=True)


def test_write_through_symlink_is_refused(ws: Workspace, layout: dict[str, Path]) -> None:
    os.symlink(layout["secret"], layout["root"] / "triggers.json")
    with pytest.raises(PathPolicyError):
        ws.write_text("triggers.json", "overwritten")
    assert layout["secret"].read_text() == "TOP-SECRET-CONTENT"
    # Without protection the same write lands outside.
    (layout["root"] / "triggers.json").write_text("overwritten")
    assert layout["secret"].read_text() == "overwritten"


def test_makedirs_through_symlink_is_refused(ws: Workspace, layout: dict[str, Path]) -> None:
    os.symlink(layout["outside"], layout["root"] / "logs")
    with pytest.raises(PathPolicyError):
        ws.makedirs("logs/step1")
    assert not (layout["outside"] / "step1").exists()
    ws.makedirs("real/a/b", 0o750)
    assert stat.S_IMODE(os.stat(layout["root"] / "real" / "a" / "b").st_mode) == 0o750


def test_rmtree_never_follows_symlinks(ws: Workspace, layout: dict[str, Path]) -> None:
    tree = layout["root"] / "src"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_text("x")
    os.symlink(layout["outside"], tree / "link-dir")
    os.symlink(layout["secret"], tree / "d" / "link-file")
    ws.rmtree("src")
    assert not tree.exists()
    assert layout["secret"].read_text() == "TOP-SECRET-CONTENT"


def test_rmtree_below_a_symlink_is_refused(ws: Workspace, layout: dict[str, Path]) -> None:
    (layout["outside"] / "sub").mkdir()
    (layout["outside"] / "sub" / "keep").write_text("keep")
    os.symlink(layout["outside"], layout["root"] / "link")
    with pytest.raises(PathPolicyError):
        ws.rmtree("link/sub")
    assert (layout["outside"] / "sub" / "keep").exists()
    # Without protection, a path-based rmtree deletes outside the workspace.
    shutil.rmtree(layout["root"] / "link" / "sub")
    assert not (layout["outside"] / "sub").exists()


def test_rmtree_of_a_symlink_removes_only_the_link(ws: Workspace, layout: dict[str, Path]) -> None:
    os.symlink(layout["outside"], layout["root"] / "src")
    ws.rmtree("src")
    assert not os.path.lexists(layout["root"] / "src")
    assert layout["secret"].exists()


def test_root_cannot_be_removed_but_can_be_cleared(ws: Workspace, layout: dict[str, Path]) -> None:
    (layout["root"] / "a").mkdir()
    os.symlink(layout["outside"], layout["root"] / "b")
    with pytest.raises(PathPolicyError):
        ws.rmtree("")
    ws.clear()
    assert os.listdir(layout["root"]) == []
    assert layout["secret"].exists()


def test_rmtree_handles_readonly_trees_and_deep_nesting(ws: Workspace, layout: dict[str, Path]) -> None:
    ws.makedirs("/".join(["d"] * 60))
    ws.write_text("/".join(["d"] * 60) + "/f", "x")
    ws.make_readonly("d")
    ws.rmtree("d")
    assert not (layout["root"] / "d").exists()


def test_chmod_refuses_symlinks(ws: Workspace, layout: dict[str, Path]) -> None:
    os.chmod(layout["secret"], 0o600)
    os.symlink(layout["secret"], layout["root"] / "link")
    with pytest.raises(PathPolicyError):
        ws.chmod("link", 0o666)
    assert stat.S_IMODE(os.stat(layout["secret"]).st_mode) == 0o600
    (layout["root"] / "f").write_text("x")
    ws.chmod("f", 0o640)
    assert stat.S_IMODE(os.stat(layout["root"] / "f").st_mode) == 0o640


def test_create_exclusive_does_not_follow_dangling_symlink(ws: Workspace, layout: dict[str, Path]) -> None:
    target = layout["outside"] / "created-by-attack"
    os.symlink(target, layout["root"] / "out.log")
    with pytest.raises((PathPolicyError, FileExistsError)):
        fd = ws.open("out.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        os.close(fd)
    assert not target.exists()


def test_copy_in_keeps_modes_and_inner_links_skips_specials(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "copysrc"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(src / "bin" / "tool", 0o755)
    (src / "private").write_text("p")
    os.chmod(src / "private", 0o600)
    (src / "suid").write_text("s")
    os.chmod(src / "suid", 0o4755)
    os.symlink("bin/tool", src / "tool-link")
    os.mkfifo(src / "fifo")
    report = ws.copy_in(src, "copy")
    root = Path(ws.root)
    assert stat.S_IMODE(os.stat(root / "copy" / "bin" / "tool").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "copy" / "private").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(root / "copy" / "suid").st_mode) == 0o755  # setuid dropped
    assert os.readlink(root / "copy" / "tool-link") == "bin/tool"
    assert not os.path.lexists(root / "copy" / "fifo")
    assert report.skipped == ["fifo"]


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside/secret", "..", "x/../.."])
def test_copy_in_refuses_links_leaving_the_source(ws: Workspace, tmp_path: Path, target: str) -> None:
    src = tmp_path / "copysrc"
    src.mkdir()
    (src / "ok").write_text("ok")
    os.symlink(target, src / "escape")
    with pytest.raises(PathPolicyError, match="symlink"):
        ws.copy_in(src, "copy")


def test_staging_failure_leaves_destination_untouched(ws: Workspace, layout: dict[str, Path]) -> None:
    ws.makedirs("src")
    ws.write_text("src/old", "old")
    with pytest.raises(RuntimeError):
        with ws.staging("src") as staged:
            ws.write_text(f"{staged.rel}/new", "new")
            raise RuntimeError("strategy failed")
    assert os.listdir(layout["root"] / "src") == ["old"]
    with ws.staging("src") as staged:
        ws.write_text(f"{staged.rel}/new", "new")
    assert os.listdir(layout["root"] / "src") == ["new"]


def test_staging_failure_removes_a_destination_it_created(ws: Workspace, layout: dict[str, Path]) -> None:
    with pytest.raises(RuntimeError):
        with ws.staging("fresh"):
            raise RuntimeError("boom")
    assert not (layout["root"] / "fresh").exists()


def test_make_readonly_then_verify(ws: Workspace, layout: dict[str, Path]) -> None:
    ws.makedirs("ci/scripts")
    ws.write_text("ci/scripts/run.sh", "echo hi")
    ws.chmod("ci/scripts/run.sh", 0o777)
    with pytest.raises(ReadOnlyViolation, match="writable"):
        ws.verify_readonly("ci", OTHER_UID)
    ws.make_readonly("ci")
    assert ws.verify_readonly("ci", OTHER_UID) == 3
    mode = stat.S_IMODE(os.stat(layout["root"] / "ci" / "scripts" / "run.sh").st_mode)
    assert mode == 0o555


def test_verify_readonly_sees_a_writable_parent(ws: Workspace, layout: dict[str, Path]) -> None:
    ws.makedirs("ci")
    ws.make_readonly("ci")
    os.chmod(layout["root"], 0o777)  # anyone could rename ci away and put their own in its place
    try:
        with pytest.raises(ReadOnlyViolation, match="parent"):
            ws.verify_readonly("ci", OTHER_UID)
        os.chmod(layout["root"], 0o1777)  # the sticky bit protects entries the uid does not own
        ws.verify_readonly("ci", OTHER_UID)
    finally:
        os.chmod(layout["root"], 0o755)


def test_verify_readonly_refuses_uid_zero(ws: Workspace) -> None:
    ws.makedirs("ci")
    with pytest.raises(ReadOnlyViolation, match="uid is 0"):
        ws.verify_readonly("ci", 0)


def test_verify_readonly_sees_files_owned_by_the_untrusted_uid(ws: Workspace, layout: dict[str, Path]) -> None:
    ws.makedirs("ci")
    ws.write_text("ci/f", "x")
    ws.make_readonly("ci")
    untrusted = os.geteuid()
    if untrusted == 0:  # as root, hand the file to another uid (the owner could chmod it back)
        untrusted = 1
        os.chown(layout["root"] / "ci" / "f", untrusted, untrusted)
    with pytest.raises(ReadOnlyViolation, match="owned by the untrusted uid"):
        ws.verify_readonly("ci", untrusted)


def test_swapping_a_directory_for_a_symlink_never_lets_writes_escape(ws: Workspace, layout: dict[str, Path]) -> None:
    """A racer flips work/ between a real directory and a symlink to outside while we write into it."""
    root = layout["root"]
    real = root / "real"
    real.mkdir()
    stop = threading.Event()

    def racer() -> None:
        link = root / "work"
        while not stop.is_set():
            try:
                os.symlink(layout["outside"], root / "tmp-link")
                os.replace(root / "tmp-link", link)
                os.unlink(link)
                os.symlink("real", root / "tmp-link")
                os.replace(root / "tmp-link", link)
                os.unlink(link)
                os.mkdir(link)
                os.rmdir(link)
            except OSError:
                pass

    thread = threading.Thread(target=racer)
    thread.start()
    try:
        for i in range(1500):
            try:
                ws.write_text(f"work/f{i}", "x")
            except (PathPolicyError, OSError):
                pass
    finally:
        stop.set()
        thread.join()
    assert sorted(os.listdir(layout["outside"])) == ["secret"]


def test_open_errors_keep_their_errno(ws: Workspace) -> None:
    with pytest.raises(FileNotFoundError):
        ws.read_bytes("missing")
    ws.makedirs("d")
    with pytest.raises(OSError) as info:
        ws.open_file("d", "wb")
    assert info.value.errno in (errno.EISDIR, errno.EINVAL)


def test_workspace_root_must_be_absolute() -> None:
    with pytest.raises(PathPolicyError, match="absolute"):
        Workspace("relative/root")


def test_no_fd_leaks_on_refused_or_failed_operations(ws: Workspace, layout: dict[str, Path]) -> None:
    os.symlink(layout["outside"], layout["root"] / "out")
    (layout["root"] / "dir").mkdir()
    before = len(os.listdir("/proc/self/fd"))
    for rel in ("dir", "out", "out/secret", "missing/x", "dir/../x", "dir/missing"):
        for op in (ws.read_bytes, ws.listdir, ws.lstat, lambda r: ws.chmod(r, 0o700),
                   lambda r: ws.read_bytes(r, follow_symlinks=True), lambda r: ws.write_bytes(r, b"")):
            try:
                op(rel)
            except (PathPolicyError, OSError):
                pass
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_planted_fifo_is_refused_not_blocking(ws: Workspace, layout: dict[str, Path]) -> None:
    os.mkfifo(layout["root"] / "triggers.json")
    with pytest.raises(PathPolicyError, match="regular file"):
        ws.read_text("triggers.json")
    with pytest.raises(PathPolicyError, match="regular file"):
        ws.write_text("triggers.json", "{}")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_chown_tree_never_follows_links(ws: Workspace, layout: dict[str, Path]) -> None:
    ws.makedirs("src/d")
    ws.write_text("src/d/f", "x")
    os.symlink(layout["secret"], layout["root"] / "src" / "d" / "link")
    os.symlink(layout["outside"], layout["root"] / "src" / "dirlink")
    # Without protection, a following chown hands the outside file over.
    shutil.chown(layout["root"] / "src" / "d" / "link", 1, 1)
    assert os.stat(layout["secret"]).st_uid == 1
    os.chown(layout["secret"], 0, 0)
    assert ws.chown_tree("src", 65534, 65534) == 3
    assert os.stat(layout["root"] / "src" / "d" / "f").st_uid == 65534
    assert os.stat(layout["secret"]).st_uid == 0
    assert os.stat(layout["outside"]).st_uid == 0


@pytest.mark.parametrize("target", ["../src/run.sh", "/tmp/run.sh", "x/../../src"])
def test_verify_readonly_refuses_links_out_of_the_tree(ws: Workspace, layout: dict[str, Path], target: str) -> None:
    """ci/run -> ../src/run.sh: read-only link, but trusted code following it runs what src controls."""
    ws.makedirs("ci/x")
    os.symlink(target, layout["root"] / "ci" / "run")
    os.symlink("x", layout["root"] / "ci" / "inner")  # a link that stays inside is fine
    ws.make_readonly("ci")
    with pytest.raises(ReadOnlyViolation, match="symlink leading out of the tree"):
        ws.verify_readonly("ci", OTHER_UID)
    ws.rmtree("ci/run")
    ws.verify_readonly("ci", OTHER_UID)


def test_wide_trees_do_not_exhaust_file_descriptors(ws: Workspace, tmp_path: Path) -> None:
    """2,000 files and 600 directories in one directory, with the fd limit lowered to 128."""
    import resource

    src = tmp_path / "wide"
    src.mkdir()
    for i in range(2000):
        (src / f"f{i}").write_text("x")
    for i in range(600):
        (src / f"d{i}").mkdir()
        (src / f"d{i}" / "g").write_text("y")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    try:
        report = ws.copy_in(src, "copy")
        ws.make_readonly("copy")
        ws.verify_readonly("copy", OTHER_UID)
        ws.chmod("copy", 0o755)
        ws.rmtree("copy")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert report.files == 2600 and report.dirs == 600


def test_a_dropped_workspace_closes_its_root_fd(layout: dict[str, Path]) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        Workspace(layout["root"]).listdir("")
    assert len(os.listdir("/proc/self/fd")) == before
