"""The raw openat2 binding: return values checked, errno kept, and the RESOLVE_* flags doing their job."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from runnerlib.security.lowlevel import openat2 as o2

pytestmark = pytest.mark.skipif(not o2.available(), reason="openat2 is not available on this kernel")


@pytest.fixture
def rootfd(tmp_path: Path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    os.symlink("/etc/passwd", tmp_path / "d" / "abs")
    os.symlink("f", tmp_path / "d" / "rel")
    fd = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_plain_open_beneath(rootfd: int) -> None:
    fd = o2.openat2(rootfd, "f", os.O_RDONLY, resolve=o2.RESOLVE_BENEATH)
    try:
        assert os.read(fd, 10) == b"x"
        assert os.get_inheritable(fd) is False  # O_CLOEXEC always added
    finally:
        os.close(fd)


@pytest.mark.parametrize(("path", "resolve", "err"), [
    ("../d/f", o2.RESOLVE_BENEATH, errno.EXDEV),
    ("/etc/passwd", o2.RESOLVE_BENEATH, errno.EXDEV),
    ("abs", o2.RESOLVE_BENEATH, errno.EXDEV),
    ("rel", o2.RESOLVE_BENEATH | o2.RESOLVE_NO_SYMLINKS, errno.ELOOP),
    ("missing", o2.RESOLVE_BENEATH, errno.ENOENT),
])
def test_errors_keep_errno(rootfd: int, path: str, resolve: int, err: int) -> None:
    with pytest.raises(OSError) as info:
        o2.openat2(rootfd, path, os.O_RDONLY, resolve=resolve)
    assert info.value.errno == err


def test_without_beneath_the_same_lookups_succeed(rootfd: int) -> None:
    """Shows the flags are what refuses: without RESOLVE_BENEATH the escape works."""
    fd = o2.openat2(rootfd, "abs", os.O_RDONLY)
    os.close(fd)
    fd = o2.openat2(rootfd, "../d/f", os.O_RDONLY)
    os.close(fd)


def test_magic_links_refused(rootfd: int) -> None:
    with pytest.raises(OSError) as info:
        o2.openat2(os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY), "fd/0", os.O_RDONLY,
                   resolve=o2.RESOLVE_NO_MAGICLINKS)
    assert info.value.errno in (errno.ELOOP, errno.EXDEV)


def test_nul_refused(rootfd: int) -> None:
    with pytest.raises(ValueError):
        o2.openat2(rootfd, "f\0x", os.O_RDONLY)


def test_syscall_number_known_for_common_arches() -> None:
    assert o2._SYSCALL_NUMBERS["x86_64"] == 437
    assert o2._SYSCALL_NUMBERS["aarch64"] == 437


def test_auto_falls_back_to_the_walk_when_openat2_is_missing(tmp_path: Path, monkeypatch) -> None:
    from runnerlib.security import paths

    monkeypatch.setattr(paths._o2, "available", lambda: False)
    ws = paths.Workspace(tmp_path)
    assert ws.resolver == "walk"
    ws.close()
    with pytest.raises(paths.PathPolicyError, match="openat2 is not available"):
        paths.Workspace(tmp_path, resolver="openat2")


def test_enosys_from_a_seccomp_profile_counts_as_unavailable(monkeypatch) -> None:
    def enosys(*args, **kwargs):
        raise OSError(errno.ENOSYS, "blocked")

    monkeypatch.setattr(o2, "openat2", enosys)
    assert o2._probe() is False
