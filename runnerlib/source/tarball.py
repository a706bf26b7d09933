"""Source type `tarball`: a local archive or an https URL, gzip / bzip2 / xz / plain tar.

Every member is validated before a byte of it is written (validate_member), and written only through
the Workspace's TreeWriter (fd-relative below cached O_NOFOLLOW directory fds, never following a
symlink), into a staging directory that replaces the destination only when the whole archive was
accepted. Refused: absolute names, `..`, symlinks whose
target could leave the tree, hard links to anything not earlier in the archive, device nodes, FIFOs,
other special members, setuid/setgid bits, and archives over the entry, byte or download limits. Members in a
`.git` or `.hg` directory are left out (counted in the log): the archive is untrusted content, and a trusted
step's git or hg in src would obey that repository's config and hooks.

Python's tarfile does the parsing (a well-kept stdlib parser, including pax and GNU long names; plain
header blocks take the equivalent fast path of tarheader.FastTarInfo); its
own extraction filters (3.12+, and backported) are not used because extraction here goes through the
Workspace rather than through paths, which is what closes the symlink-race class of bugs.
"""

from __future__ import annotations

import base64
import errno
import io
import os
import ssl
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO, TypeVar

from runnerlib.security.paths import (
    PathPolicyError,
    Staged,
    TreeWriter,
    Workspace,
    check_link_target,
    split_relative,
)
from runnerlib.source.base import (
    PrepareContext,
    PreparedSource,
    SourceError,
    SourceLimits,
    SourceSpec,
    strip_credentials,
    url_credentials,
)
from runnerlib.source.tarheader import FastTarInfo

_CHUNK = 1 << 20
DEFAULT_LIMITS = SourceLimits()
_DEFAULT_TIMEOUT = 60.0


class ArchiveRefused(SourceError):
    """The archive (or one member of it) broke an extraction rule; nothing was extracted."""


@dataclass(frozen=True)
class Member:
    """The parts of a tar header that the rules look at (tests build these directly)."""

    name: str
    kind: str  # file, dir, symlink, hardlink, chardev, blockdev, fifo, other
    linkname: str = ""
    mode: int = 0o644
    size: int = 0


# TarInfo.type -> Member.kind, the same classes as TarInfo.isreg() / isdir() / issym() / islnk() / ...
_KINDS: dict[bytes, str] = {
    **dict.fromkeys(tarfile.REGULAR_TYPES, "file"),
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "chardev",
    tarfile.BLKTYPE: "blockdev",
    tarfile.FIFOTYPE: "fifo",
}


def member_of(info: tarfile.TarInfo) -> Member:
    """The Member view of a TarInfo."""
    return Member(info.name, _KINDS.get(info.type, "other"), info.linkname, info.mode, info.size)


def validate_member(member: Member, limits: SourceLimits = DEFAULT_LIMITS) -> list[str]:
    """Check one member against the extraction rules; return its path components (empty = the root).

    Raises ArchiveRefused naming the member and the rule.

    >>> validate_member(Member("pkg/./mod.py", "file"))
    ['pkg', 'mod.py']
    >>> validate_member(Member("../evil", "file"))
    Traceback (most recent call last):
    ...
    runnerlib.source.tarball.ArchiveRefused: archive member '../evil' refused: must not contain '..'
    """
    name = member.name

    def refuse(rule: str) -> ArchiveRefused:
        return ArchiveRefused(f"archive member {shown_name(name)} refused: {rule}")

    if len(name) > limits.max_name_length:
        raise refuse(f"name longer than {limits.max_name_length} characters")
    if "\0" in name:
        raise refuse("name contains a NUL byte")
    if name.startswith("/"):
        raise refuse("absolute name")
    try:
        parts = split_relative(name)
    except PathPolicyError as exc:
        raise refuse(exc.rule) from None
    kind = member.kind
    if kind in ("chardev", "blockdev"):
        raise refuse("device node")
    if kind == "fifo":
        raise refuse("FIFO")
    if kind not in ("file", "dir", "symlink", "hardlink"):
        raise refuse("unsupported member type")
    if member.mode & (stat.S_ISUID | stat.S_ISGID):
        raise refuse("setuid/setgid bit")
    if not parts and kind != "dir":
        raise refuse("empty name")
    if member.size < 0:
        raise refuse("negative size")
    if kind == "symlink":
        try:
            check_link_target(parts, member.linkname, field="symlink")
        except PathPolicyError as exc:
            raise refuse(f"symlink {exc.rule} (-> {member.linkname!r})") from None
    if kind == "hardlink":
        target = member.linkname
        if target.startswith("/"):
            raise refuse(f"hard link to an absolute path ({target!r})")
        try:
            target_parts = split_relative(target)
        except PathPolicyError as exc:
            raise refuse(f"hard link target {exc.rule} ({target!r})") from None
        if not target_parts:
            raise refuse("hard link to the archive root")
    return parts


def shown_name(name: str, limit: int = 120) -> str:
    """repr() of a member name for messages, cut short (hostile names can be megabytes long)."""
    return repr(name) if len(name) <= limit else repr(name[:limit]) + f"... ({len(name)} characters)"


class _Counted(io.RawIOBase):
    """A read-only stream that refuses to deliver more than `limit` bytes (download size limit)."""

    def __init__(self, raw: IO[bytes], limit: int, what: str) -> None:
        self.raw, self.limit, self.what, self.count = raw, limit, what, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        n = len(data)
        self.count += n
        if self.count > self.limit:
            raise ArchiveRefused(f"{self.what}: archive larger than the download limit of {self.limit} bytes")
        buffer[:n] = data
        return n


# Version-control metadata never extracted (with everything below it): see extract().
VCS_NAMES = frozenset({".git", ".hg"})


def extract(stream: BinaryIO, workspace: Workspace, dest_rel: str, *, limits: SourceLimits = DEFAULT_LIMITS,
            field: str = "source_url") -> dict[str, int]:
    """Extract the tar stream (any of the supported compressions) into the directory `dest_rel`.

    `dest_rel` should be a staging directory: on ArchiveRefused part of the archive may be there.
    Returns counts {"entries", "files", "dirs", "symlinks", "hardlinks", "bytes", "vcs_left_out"}: members
    named `.git` or `.hg`, or below one, are left out (VCS_NAMES).
    """
    counts = {"entries": 0, "files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "bytes": 0, "vcs_left_out": 0}
    dir_modes: list[tuple[str, int]] = []
    # A local, uncompressed archive is read in seekable mode so member data can be copied in the kernel
    # (copy_file_range from the archive's fd); everything else is streamed once, never seeking.
    fast_fd = _plain_local_fd(stream)
    try:
        tf = tarfile.open(fileobj=stream, mode="r:" if fast_fd is not None else "r|*", tarinfo=FastTarInfo)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveRefused(f"{field}: not a readable tar archive ({exc})") from None
    # One TreeWriter for the whole archive: directory fds stay open, so a member costs one checked
    # create below its (cached) parent instead of a resolution from the workspace root.
    with tf, workspace.tree_writer(dest_rel) as out:
        for info in _members(tf, field):
            counts["entries"] += 1
            if counts["entries"] > limits.max_entries:
                raise ArchiveRefused(f"{field}: archive has more than {limits.max_entries} entries")
            member = member_of(info)
            parts = validate_member(member, limits)
            if not parts:
                continue  # the "./" entry: the destination itself
            if VCS_NAMES.intersection(parts):
                # An archive is a tree, not a repository: a .git or .hg in it would be obeyed by a trusted
                # step's git or hg in src (core.fsmonitor, hooks), and as root's files git would not refuse it.
                counts["vcs_left_out"] += 1
                continue
            try:
                _extract_member(out, tf, info, member, "/".join(parts), dir_modes, counts, limits, field, fast_fd)
            except PathPolicyError as exc:
                raise ArchiveRefused(f"archive member {shown_name(member.name)} refused: {exc.rule}") from None
        if counts["entries"] == 0:
            # tarfile reads a few garbage bytes as an empty archive; GNU tar calls that "not a tar archive".
            raise ArchiveRefused(f"{field}: archive is empty or not a tar archive")
        # Directory modes last (deepest first), so a read-only directory did not block its own content.
        for target, mode in reversed(dir_modes):
            out.chmod(target, mode)
    return counts


def _extract_member(out: TreeWriter, tf: tarfile.TarFile, info: tarfile.TarInfo, member: Member, rel: str,
                    dir_modes: list[tuple[str, int]], counts: dict[str, int], limits: SourceLimits, field: str,
                    fast_fd: int | None) -> None:
    """Write one validated member at `rel` (inside the tree), through the TreeWriter only.

    A later member replaces an earlier one of the same name (as tar does), except a directory; a
    directory member over an existing directory just sets its mode.
    """
    if member.kind == "dir":
        _clear_non_dir(out, rel, member.name, keep_dir=True)
        out.makedirs(rel)
        dir_modes.append((rel, stat.S_IMODE(member.mode) | stat.S_IRWXU))
        counts["dirs"] += 1
    elif member.kind == "file":
        counts["bytes"] += member.size
        if counts["bytes"] > limits.max_total_bytes:
            raise ArchiveRefused(f"{field}: archive expands beyond the limit of {limits.max_total_bytes} bytes")
        fd = _replacing(out, rel, member.name, lambda: out.create(rel, 0o600))
        _write_file(fd, tf, info, fast_fd)
        counts["files"] += 1
    elif member.kind == "symlink":
        _replacing(out, rel, member.name, lambda: out.symlink(member.linkname, rel))
        counts["symlinks"] += 1
    else:  # hardlink, validated: a relative path to an earlier member
        source = "/".join(split_relative(member.linkname))
        try:
            _replacing(out, rel, member.name, lambda: out.link(source, rel))
        except FileNotFoundError:
            raise ArchiveRefused(f"archive member {shown_name(member.name)} refused: hard link to a member "
                                 f"that is not earlier in the archive ({member.linkname!r})") from None
        counts["hardlinks"] += 1


_T = TypeVar("_T")


def _replacing(out: TreeWriter, rel: str, name: str, make: Callable[[], _T]) -> _T:
    """make() the entry at `rel`; if something is there already, replace it (never a directory)."""
    try:
        return make()
    except FileExistsError:
        _clear_non_dir(out, rel, name)
        return make()


def _members(tf: tarfile.TarFile, field: str) -> Iterator[tarfile.TarInfo]:
    it = iter(tf)
    while True:
        try:
            info = next(it)
        except StopIteration:
            return
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            if isinstance(exc, ArchiveRefused):
                raise
            raise ArchiveRefused(f"{field}: corrupt or truncated archive ({exc})") from None
        yield info


def _clear_non_dir(out: TreeWriter, rel: str, name: str, *, keep_dir: bool = False) -> None:
    """Remove what is at `rel` unless it is a directory: then refuse it, or leave it with `keep_dir`."""
    try:
        st = out.lstat(rel)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return
        raise ArchiveRefused(f"archive member {shown_name(name)} refused: replaces a directory")
    out.remove(rel)


def _plain_local_fd(stream: BinaryIO) -> int | None:
    """The fd of `stream` when it is a seekable regular file holding an uncompressed tar, else None."""
    try:
        if not stream.seekable():
            return None
        fd = stream.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.pread(fd, 512, 0)
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None
    # ustar/gnu magic at offset 257 (an old v7 archive just takes the streaming path).
    return fd if len(head) == 512 and head[257:262] == b"ustar" else None


def _copy_range(src_fd: int, dst_fd: int, offset: int, size: int) -> None:
    done = 0
    while done < size:
        try:
            n = os.copy_file_range(src_fd, dst_fd, size - done, offset + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            n = 0
        if n == 0:  # not supported here, or end of a truncated archive: fall back to pread
            data = os.pread(src_fd, min(_CHUNK, size - done), offset + done)
            if not data:
                raise ArchiveRefused("archive truncated inside a member's data")
            n = os.write(dst_fd, data)
        done += n


def _write_file(fd: int, tf: tarfile.TarFile, info: tarfile.TarInfo, fast_fd: int | None) -> None:
    """Write the member's data, mode and mtime to the new file `fd`, and close it."""
    try:
        if fast_fd is not None and info.sparse is None:
            _copy_range(fast_fd, fd, info.offset_data, info.size)
            src = None
        else:
            src = tf.extractfile(info)
        if src is not None:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        os.fchmod(fd, stat.S_IMODE(info.mode) & 0o777)
        if info.mtime:
            os.utime(fd, (info.mtime, info.mtime))
    except (tarfile.TarError, EOFError) as exc:
        raise ArchiveRefused(f"archive member {shown_name(info.name)} refused: truncated data ({exc})") from None
    finally:
        os.close(fd)


# -- fetching ------------------------------------------------------------------------------------

class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to https (or http when insecure transport is allowed)."""

    def __init__(self, allow_http: bool) -> None:
        self.allow_http = allow_http

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        scheme = urllib.parse.urlsplit(newurl).scheme
        if scheme != "https" and not (scheme == "http" and self.allow_http):
            raise ArchiveRefused(f"redirect to a {scheme or 'relative'}:// URL refused "
                                 f"(https is required; --allow-insecure-transport permits http)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def open_source(spec: SourceSpec, ctx: PrepareContext) -> BinaryIO:
    """Open the archive named by spec.url: a local path, file://, https://, or http:// when allowed."""
    assert spec.url is not None
    field = f"{spec.field_prefix}_url"
    url = spec.url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("", "file"):
        path = urllib.parse.unquote(parts.path) if parts.scheme == "file" else url
        if not os.path.isabs(path):
            raise SourceError(f"{field}: a local archive must be an absolute path (got {path!r})")
        try:
            fh = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
        except OSError as exc:
            raise SourceError(f"{field}: cannot open archive {path!r}: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            fh.close()
            raise SourceError(f"{field}: archive {path!r} is not a regular file")
        return fh
    if parts.scheme == "http" and not ctx.allow_insecure_transport:
        raise SourceError(f"{field}: http:// is refused (credentials and content travel unencrypted); use "
                          f"https:// or pass --allow-insecure-transport on an isolated network")
    if parts.scheme not in ("http", "https"):
        raise SourceError(f"{field}: unsupported URL scheme {parts.scheme!r} for a tarball "
                          f"(a local path, file://, or https://)")
    clean = strip_credentials(url)
    request = urllib.request.Request(clean, headers={"User-Agent": "runnerlib"})
    user, password = url_credentials(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        ctx.registry.add(token, source=f"{field} basic auth")
        # Unredirected: the credential is never replayed to whatever host a redirect names.
        request.add_unredirected_header("Authorization", f"Basic {token}")
    cafile = ctx.env.get("SSL_CERT_FILE")
    context = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                         _NoDowngrade(ctx.allow_insecure_transport))
    try:
        response = opener.open(request, timeout=ctx.timeout or _DEFAULT_TIMEOUT)
    except urllib.error.HTTPError as exc:
        raise ctx.fail(f"{field}: download of {clean} failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ctx.fail(f"{field}: download of {clean} failed: {exc.reason}") from None
    except OSError as exc:
        raise ctx.fail(f"{field}: download of {clean} failed: {exc}") from None
    length = response.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > spec.limits.max_download_bytes:
        response.close()
        raise SourceError(f"{field}: archive of {length} bytes exceeds the download limit of "
                          f"{spec.limits.max_download_bytes} bytes")
    return io.BufferedReader(_Counted(response, spec.limits.max_download_bytes, field), _CHUNK)  # type: ignore[arg-type]


def prepare(spec: SourceSpec, staged: Staged, ctx: PrepareContext) -> PreparedSource:
    """Fetch (if remote) and extract the archive into the staging directory."""
    field = f"{spec.field_prefix}_url"
    ctx.say(f"extracting {strip_credentials(spec.url or '')} into {ctx.workspace.path(staged.dest)}")
    stream = open_source(spec, ctx)
    try:
        counts = extract(stream, ctx.workspace, staged.rel, limits=spec.limits, field=field)
    except ArchiveRefused as exc:
        message = str(exc) if str(exc).startswith(field) else f"{field}: {exc}"
        raise ArchiveRefused(ctx.registry.mask_text(message)) from None
    except PathPolicyError as exc:
        raise ArchiveRefused(ctx.registry.mask_text(f"{field}: archive refused: {exc}")) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SourceError(f"{field}: no space left while extracting") from None
        raise
    finally:
        stream.close()
    left_out = (f"; left out {counts['vcs_left_out']} entries of .git/.hg (a repository's config and hooks would "
                "run in trusted git or hg)" if counts["vcs_left_out"] else "")
    ctx.say(f"extracted {counts['files']} files, {counts['dirs']} directories, {counts['symlinks']} symlinks, "
            f"{counts['hardlinks']} hard links ({counts['bytes']} bytes){left_out}")
    return PreparedSource(type="tarball", path=ctx.workspace.path(staged.dest), details=dict(counts))
