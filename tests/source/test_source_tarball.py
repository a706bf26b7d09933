"""tarball strategy: real archives (gz, bz2, xz, plain), hostile archives built here, local HTTPS/HTTP servers.

HOSTILE is the table of docs/sources.md: every row is an archive that must be refused, leaving the
destination exactly as it was and nothing outside the workspace.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from srchelpers import fragments

from runnerlib.security.paths import Workspace
from runnerlib.source import SourceError, SourceLimits, SourceSpec, prepare_source
from runnerlib.source.tarball import ArchiveRefused, Member, member_of, validate_member


def _add(tf: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", mode: int = 0o644,
         linkname: str = "", pax: dict[str, str] | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.mtime = 1_700_000_000
    if pax:
        info.pax_headers = pax
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        tf.addfile(info)


def build(path: Path, members: Callable[[tarfile.TarFile], None], *, mode: str = "w",
          fmt: int = tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(path, mode, format=fmt) as tf:
        members(tf)
    return path


# (id, builder, rule fragment expected in the error)
HOSTILE: list[tuple[str, Callable[[tarfile.TarFile], None], str]] = [
    ("absolute name", lambda t: _add(t, "/tmp/runnerlib-evil"), "absolute name"),
    ("dot-dot name", lambda t: _add(t, "../evil"), "'..'"),
    ("dot-dot inside name", lambda t: _add(t, "a/../../evil"), "'..'"),
    ("pax path override with ..", lambda t: _add(t, "innocent", pax={"path": "../pax-evil"}), "'..'"),
    ("GNU long name with ..", lambda t: _add(t, "d" * 150 + "/../../../evil"), "'..'"),
    ("absolute symlink", lambda t: _add(t, "link", tarfile.SYMTYPE, linkname="/etc/passwd"), "absolute"),
    ("symlink climbing out", lambda t: _add(t, "a/link", tarfile.SYMTYPE, linkname="../../outside"), "stay inside"),
    ("symlink to . then x/..", lambda t: (_add(t, "x", tarfile.SYMTYPE, linkname="."),
                                          _add(t, "l", tarfile.SYMTYPE, linkname="x/..")), "after a directory"),
    ("write through an inner symlink", lambda t: (_add(t, "sub", tarfile.DIRTYPE, mode=0o755),
                                                  _add(t, "link", tarfile.SYMTYPE, linkname="sub"),
                                                  _add(t, "link/file")), "symlink"),
    ("hard link to an absolute path", lambda t: _add(t, "h", tarfile.LNKTYPE, linkname="/etc/passwd"), "absolute"),
    ("hard link with ..", lambda t: _add(t, "h", tarfile.LNKTYPE, linkname="../outside/secret"), "'..'"),
    ("hard link to a later member", lambda t: (_add(t, "h", tarfile.LNKTYPE, linkname="later"),
                                               _add(t, "later")), "not earlier"),
    ("character device", lambda t: _add(t, "null", tarfile.CHRTYPE), "device node"),
    ("block device", lambda t: _add(t, "sda", tarfile.BLKTYPE), "device node"),
    ("FIFO", lambda t: _add(t, "pipe", tarfile.FIFOTYPE), "FIFO"),
    ("setuid file", lambda t: _add(t, "su", mode=0o4755), "setuid/setgid"),
    ("setgid directory", lambda t: _add(t, "shared", tarfile.DIRTYPE, mode=0o2775), "setuid/setgid"),
    ("file replacing a directory", lambda t: (_add(t, "d", tarfile.DIRTYPE, mode=0o755), _add(t, "d/f"),
                                              _add(t, "d")), "replaces a directory"),
    ("name longer than the limit", lambda t: _add(t, "n" * 5000), "longer than"),
]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret").write_text("SECRET")
    return out


def _prepare(workspace: Workspace, registry, url: str, *, limits: SourceLimits | None = None,
             insecure: bool = False, env: dict[str, str] | None = None, lines: list[str] | None = None):
    spec = SourceSpec(type="tarball", url=url, limits=limits or SourceLimits())
    return prepare_source(spec, "src", workspace=workspace, registry=registry, allow_insecure_transport=insecure,
                          env=env or dict(os.environ), log_line=lines.append if lines is not None else None)


def _snapshot(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize(("label", "builder", "rule"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_archive_is_refused_and_leaves_nothing(tmp_path, workspace, registry, outside, label, builder,
                                                       rule) -> None:
    archive = build(tmp_path / "hostile.tar", builder)
    workspace.makedirs("src")
    workspace.write_text("src/previous", "kept")
    before_root, before_out = _snapshot(Path(workspace.root)), _snapshot(outside)
    with pytest.raises(ArchiveRefused) as info:
        _prepare(workspace, registry, str(archive))
    assert rule in str(info.value)
    assert str(info.value).startswith("source_url")
    assert _snapshot(Path(workspace.root)) == before_root
    assert _snapshot(outside) == before_out
    assert not Path("/tmp/runnerlib-evil").exists()


def test_without_protection_the_same_archives_escape(tmp_path, outside) -> None:
    """Python 3.11's tarfile.extractall (no filter) writes outside the target for two of the rows above."""
    target = tmp_path / "naive" / "dest"
    target.mkdir(parents=True)
    archive = build(tmp_path / "a.tar", lambda t: _add(t, "../escaped", data=b"pwned"))
    with tarfile.open(archive) as tf:
        tf.extractall(target, **({"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}))
    assert (tmp_path / "naive" / "escaped").read_bytes() == b"pwned"
    archive2 = build(tmp_path / "b.tar", lambda t: (_add(t, "link", tarfile.SYMTYPE, linkname=str(outside)),
                                                    _add(t, "link/planted", data=b"pwned")))
    with tarfile.open(archive2) as tf:
        tf.extractall(target, **({"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}))
    assert (outside / "planted").read_bytes() == b"pwned"


@pytest.mark.parametrize(("limits", "builder", "rule"), [
    (SourceLimits(max_entries=10), lambda t: [_add(t, f"f{i}") for i in range(11)], "more than 10 entries"),
    (SourceLimits(max_total_bytes=1000), lambda t: _add(t, "big", data=b"a" * 2000), "beyond the limit"),
], ids=["too many entries", "too many bytes"])
def test_limits(tmp_path, workspace, registry, limits, builder, rule) -> None:
    archive = build(tmp_path / "big.tar", builder)
    with pytest.raises(ArchiveRefused, match=rule):
        _prepare(workspace, registry, str(archive), limits=limits)
    assert not (Path(workspace.root) / "src").exists()


def test_gzip_bomb_stops_at_the_byte_limit(tmp_path, workspace, registry) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info = tarfile.TarInfo("zeros")
        info.size = 64 << 20
        tf.addfile(info, io.BytesIO(bytes(64 << 20)))
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip.compress(raw.getvalue(), 9))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ArchiveRefused, match="beyond the limit"):
        _prepare(workspace, registry, str(bomb), limits=SourceLimits(max_total_bytes=1 << 20))


@pytest.mark.parametrize(("label", "content", "rule"), [
    ("not a tar", b"this is not an archive at all" * 40, "not a readable tar"),
    ("one garbage byte", b"\xfb", "not a readable tar|empty or not a tar"),
    ("truncated gzip", None, "truncated"),
])
def test_corrupt_archives(tmp_path, workspace, registry, label, content, rule) -> None:
    if content is None:
        good = build(tmp_path / "g.tar.gz", lambda t: _add(t, "f", data=os.urandom(50_000)), mode="w:gz")
        content = good.read_bytes()[:-2000]
    path = tmp_path / "bad.tar"
    path.write_bytes(content)
    with pytest.raises(ArchiveRefused, match=rule):
        _prepare(workspace, registry, str(path))


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_compressions_modes_links_mtime(tmp_path, workspace, registry, mode) -> None:
    def members(t: tarfile.TarFile) -> None:
        _add(t, "./", tarfile.DIRTYPE, mode=0o755)
        _add(t, "./bin", tarfile.DIRTYPE, mode=0o750)
        _add(t, "./bin/tool", data=b"#!/bin/sh\n", mode=0o755)
        _add(t, "./ro", tarfile.DIRTYPE, mode=0o555)
        _add(t, "./ro/data", data=b"data", mode=0o444)
        _add(t, "./docs/readme", data=b"readme")  # parent directory implied
        _add(t, "./docs/alias", tarfile.SYMTYPE, linkname="readme")
        _add(t, "./docs/up", tarfile.SYMTYPE, linkname="../bin/tool")
        _add(t, "./hard", tarfile.LNKTYPE, linkname="bin/tool")

    archive = build(tmp_path / "ok.tar", members, mode=mode)
    result = _prepare(workspace, registry, f"file://{archive}")
    root = result.path
    assert (root / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE(os.stat(root / "bin" / "tool").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "bin").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o755  # owner keeps write on directories
    assert stat.S_IMODE(os.stat(root / "ro" / "data").st_mode) == 0o444
    assert os.readlink(root / "docs" / "alias") == "readme"
    assert os.readlink(root / "docs" / "up") == "../bin/tool"
    assert os.stat(root / "hard").st_ino == os.stat(root / "bin" / "tool").st_ino
    assert os.stat(root / "bin" / "tool").st_mtime == 1_700_000_000
    assert result.details["files"] == 3


def test_later_member_replaces_a_symlink_without_following_it(tmp_path, workspace, registry) -> None:
    archive = build(tmp_path / "r.tar", lambda t: (_add(t, "sub", tarfile.DIRTYPE, mode=0o755),
                                                   _add(t, "f", tarfile.SYMTYPE, linkname="sub/target"),
                                                   _add(t, "f", data=b"regular")))
    result = _prepare(workspace, registry, str(archive))
    assert not (result.path / "f").is_symlink()
    assert (result.path / "f").read_bytes() == b"regular"
    assert not (result.path / "sub" / "target").exists()


def test_replaces_previous_content_atomically(tmp_path, workspace, registry) -> None:
    workspace.makedirs("src")
    workspace.write_text("src/old", "old")
    archive = build(tmp_path / "n.tar", lambda t: _add(t, "new"))
    _prepare(workspace, registry, str(archive))
    assert sorted(os.listdir(Path(workspace.root) / "src")) == ["new"]


def test_https_download_with_credentials_and_token_masked(tmp_path, workspace, registry, file_servers) -> None:
    build(file_servers["www"] / "src.tar.gz", lambda t: _add(t, "hello.txt", data=b"hi"), mode="w:gz")
    token = "qTok-8f3Kx92LmZp0vQ"
    env = dict(os.environ, SSL_CERT_FILE=str(file_servers["cert"]))
    lines: list[str] = []
    url = f"{file_servers['https_url']}/src.tar.gz?token={token}"
    result = _prepare(workspace, registry, url, env=env, lines=lines)
    assert (result.path / "hello.txt").read_bytes() == b"hi"
    assert all(piece not in "\n".join(lines) for piece in fragments(token))
    # Basic credentials from the URL are sent, but never replayed after a redirect.
    file_servers["https"].redirects["/moved.tar.gz"] = f"{file_servers['https_url']}/src.tar.gz"
    _prepare(workspace, registry, f"https://user:pa55-w0rd-xyz@127.0.0.1:{file_servers['https'].server_address[1]}"
             "/moved.tar.gz", env=env)
    reqs = file_servers["https"].requests[-2:]
    assert reqs[0][0] == "/moved.tar.gz" and reqs[0][1] and reqs[0][1].startswith("Basic ")
    assert reqs[1][0] == "/src.tar.gz" and reqs[1][1] is None


def test_https_with_an_untrusted_certificate_fails(tmp_path, workspace, registry, file_servers) -> None:
    build(file_servers["www"] / "src.tar", lambda t: _add(t, "a"))
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    with pytest.raises(SourceError, match="CERTIFICATE|certificate"):
        _prepare(workspace, registry, f"{file_servers['https_url']}/src.tar", env=env)


def test_plain_http_needs_the_insecure_flag(tmp_path, workspace, registry, file_servers) -> None:
    build(file_servers["www"] / "src.tar", lambda t: _add(t, "a"))
    url = f"{file_servers['http_url']}/src.tar"
    with pytest.raises(SourceError, match="allow-insecure-transport"):
        _prepare(workspace, registry, url)
    assert not file_servers["http"].requests  # refused before any connection
    result = _prepare(workspace, registry, url, insecure=True)
    assert (result.path / "a").exists()


def test_redirect_from_https_to_http_is_refused(tmp_path, workspace, registry, file_servers) -> None:
    build(file_servers["www"] / "src.tar", lambda t: _add(t, "a"))
    file_servers["https"].redirects["/down"] = f"{file_servers['http_url']}/src.tar"
    env = dict(os.environ, SSL_CERT_FILE=str(file_servers["cert"]))
    with pytest.raises(SourceError, match="redirect"):
        _prepare(workspace, registry, f"{file_servers['https_url']}/down", env=env)
    assert not file_servers["http"].requests


def test_download_limit(tmp_path, workspace, registry, file_servers) -> None:
    build(file_servers["www"] / "big.tar", lambda t: _add(t, "a", data=os.urandom(200_000)))
    env = dict(os.environ, SSL_CERT_FILE=str(file_servers["cert"]))
    with pytest.raises(SourceError, match="download limit"):
        _prepare(workspace, registry, f"{file_servers['https_url']}/big.tar", env=env,
                 limits=SourceLimits(max_download_bytes=50_000))


def test_other_schemes_and_relative_paths_refused(workspace, registry) -> None:
    with pytest.raises(SourceError, match="scheme"):
        _prepare(workspace, registry, "ftp://127.0.0.1/x.tar")
    with pytest.raises(SourceError, match="absolute path"):
        _prepare(workspace, registry, "relative.tar")


# -- property tests of the member rules -----------------------------------------------------------

_names = st.lists(st.sampled_from(["a", "b", "..", ".", "", "/"]), min_size=1, max_size=6).map("/".join)


@given(_names, st.sampled_from(["file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo", "other"]),
       _names, st.integers(min_value=0, max_value=0o7777))
def test_property_accepted_members_stay_inside(name: str, kind: str, linkname: str, mode: int) -> None:
    try:
        parts = validate_member(Member(name, kind, linkname, mode, 1))
    except ArchiveRefused as exc:
        assert repr(name) in str(exc)
        return
    assert not name.startswith("/")
    assert ".." not in parts
    assert kind in ("file", "dir", "symlink", "hardlink")
    assert not mode & (stat.S_ISUID | stat.S_ISGID)
    if kind == "symlink":
        depth = len(parts) - 1
        target = [p for p in linkname.split("/") if p not in ("", ".")]
        ups = 0
        while ups < len(target) and target[ups] == "..":
            ups += 1
        assert not linkname.startswith("/") and ups <= depth and ".." not in target[ups:]
    if kind == "hardlink":
        assert not linkname.startswith("/") and ".." not in linkname.split("/")


@pytest.mark.parametrize("kind", [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE,
                                  tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                                  tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.GNUTYPE_LONGNAME, b"V", b"x"])
def test_member_kind_follows_tarinfo_predicates(kind: bytes) -> None:
    """member_of's type table classifies exactly as TarInfo.isreg()/isdir()/issym()/... do."""
    info = tarfile.TarInfo("m")
    info.type = kind
    expected = next((label for test, label in ((info.isreg, "file"), (info.isdir, "dir"), (info.issym, "symlink"),
                                                (info.islnk, "hardlink"), (info.ischr, "chardev"),
                                                (info.isblk, "blockdev"), (info.isfifo, "fifo")) if test()), "other")
    assert member_of(info).kind == expected
