"""Path safety: the one module through which runnerlib touches files in a job workspace.

Invariant: no file operation that runnerlib performs inside the workspace (open, create, copy, remove,
extract, chmod) can reach anything outside the workspace root, and none follows a symlink unless the
caller asked for it and the link stays beneath the root. Two mechanisms give this, and both are tested:

* openat2(dirfd, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS [| RESOLVE_NO_SYMLINKS]) where the kernel
  has it (Linux >= 5.6): the kernel refuses the escape during the lookup itself (EXDEV / ELOOP).
* elsewhere, a component-by-component walk from the root's directory fd, each step opened with
  O_NOFOLLOW relative to the previous directory's fd; `..` inside a followed symlink pops our own fd
  stack and can never climb above the root.

Either way the object operated on is the one that was resolved (fds, *at() calls): nothing is checked
by name and then opened by name again, so there is no check-then-open race. Removal never follows a
symlink: it descends through directory fds opened with O_NOFOLLOW and unlinks relative to them.

Configured directories (code_dir, job_dir, work dir, plugin dirs, triggers file) are checked by
`check_config_path`, which refuses anything that is not lexically and physically inside the root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets as _random
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from runnerlib.security.lowlevel import openat2 as _o2

__all__ = [
    "PathPolicyError",
    "ReadOnlyViolation",
    "Workspace",
    "TreeWriter",
    "CopyReport",
    "HandOverReport",
    "check_config_path",
    "check_link_target",
    "split_relative",
    "DEFAULT_ROOT",
]

DEFAULT_ROOT = Path("/job")

# Symlink hops allowed while following in-tree links in the fallback walk (the kernel's own limit is 40).
_MAX_SYMLINK_HOPS = 40
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_STAGE_PREFIX = ".runnerlib-stage-"

Resolver = Literal["auto", "openat2", "walk"]


class PathPolicyError(ValueError):
    """A path (configured or operated on) broke a path rule.

    The message names the field, the rule and (when given) a description of the value:
    ``code_dir: must lie inside the workspace root /job (got '/jobX')``.
    """

    def __init__(self, field: str, rule: str, *, value: str | None = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        suffix = f" (got {value})" if value is not None else ""
        super().__init__(f"{field}: {rule}{suffix}")


class ReadOnlyViolation(PathPolicyError):
    """Something under a directory that must be read-only is writable by the untrusted uid."""

    def __init__(self, field: str, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(field, f"must not be writable by the untrusted uid: {shown}")


def _describe(value: object) -> str:
    # repr() keeps NUL bytes and control characters visible in the message instead of printing them.
    return repr(os.fspath(value)) if isinstance(value, str | os.PathLike) else repr(value)


def split_relative(path: str | os.PathLike[str], *, field: str = "path", allow_dotdot: bool = False) -> list[str]:
    """Split a workspace-relative path into its components, refusing what no workspace path may hold.

    Refused: NUL bytes, absolute paths, and `..` components (unless `allow_dotdot`). `.` and empty
    components are dropped, so "" and "." mean the root.

    >>> split_relative("src/./pkg//mod.py")
    ['src', 'pkg', 'mod.py']
    """
    text = os.fspath(path)
    if "\0" in text:
        raise PathPolicyError(field, "must not contain a NUL byte", value=_describe(text))
    if text.startswith("/"):
        raise PathPolicyError(field, "must be relative to the workspace", value=_describe(text))
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not allow_dotdot and ".." in parts:
        raise PathPolicyError(field, "must not contain '..'", value=_describe(text))
    return parts


def check_link_target(link_parts: list[str], target: str, *, field: str = "symlink") -> None:
    """Refuse a symlink target that could resolve outside the tree that holds the link.

    `link_parts` are the components of the link's own path inside the tree. Accepted targets are
    relative, start with at most as many `..` as the link is deep, and have no `..` after a normal
    component. The last rule matters: `x/..` looks harmless lexically, but if `x` is itself a link to
    `.`, the kernel climbs out of the tree; with `..` only in front, every step lands inside the tree.

    >>> check_link_target(["docs", "link"], "../README")
    >>> check_link_target(["link"], "../etc/passwd")
    Traceback (most recent call last):
    ...
    runnerlib.security.paths.PathPolicyError: symlink: target must stay inside the tree (got 'link' -> '../etc/passwd')
    """
    where = "/".join(link_parts)
    desc = f"{where!r} -> {target!r}"
    if "\0" in target or target == "":
        raise PathPolicyError(field, "target must be a non-empty path without NUL bytes", value=desc)
    if target.startswith("/"):
        raise PathPolicyError(field, "target must be relative, not absolute", value=desc)
    parts = [p for p in target.split("/") if p not in ("", ".")]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ".." in parts[ups:]:
        raise PathPolicyError(field, "target must not contain '..' after a directory name", value=desc)
    if ups > len(link_parts) - 1:
        raise PathPolicyError(field, "target must stay inside the tree", value=desc)


def check_config_path(field: str, value: str | os.PathLike[str] | None, root: str | os.PathLike[str] = DEFAULT_ROOT) -> Path:
    """Normalise a configured directory or file path and require it to lie inside the workspace root.

    Relative values are taken relative to `root`. Refused, each with an error naming `field` and the
    rule: empty values, NUL bytes and other control characters, surrounding whitespace, `~` (no home
    expansion happens here), `..` components (so
    `/job/../tmp/x` is refused before any normalisation could hide it), paths outside `root` (compared by
    component, so `/jobX` is not inside `/job`), and existing components below the root that are
    symlinks (a link could lead anywhere, now or later).

    >>> check_config_path("code_dir", "/job/src/", "/job")
    PosixPath('/job/src')
    """
    if value is None:
        raise PathPolicyError(field, "must be set")
    if not isinstance(value, str | os.PathLike):
        raise PathPolicyError(field, "must be a path string", value=type(value).__name__)
    text = os.fspath(value)
    if not isinstance(text, str):
        raise PathPolicyError(field, "must be a text path", value=_describe(text))
    if text.strip() == "":
        raise PathPolicyError(field, "must not be empty", value=_describe(text))
    if "\0" in text:
        raise PathPolicyError(field, "must not contain a NUL byte", value=_describe(text))
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise PathPolicyError(field, "must not contain control characters (newline, tab, ...)", value=_describe(text))
    if text != text.strip():
        raise PathPolicyError(field, "must not start or end with whitespace", value=_describe(text))
    if text.startswith("~"):
        raise PathPolicyError(field, "must not start with '~' (no home-directory expansion)", value=_describe(text))
    root_text = os.fspath(root)
    if not root_text.startswith("/") or "\0" in root_text:
        raise PathPolicyError("workspace root", "must be an absolute path", value=_describe(root_text))
    root_parts = [p for p in root_text.split("/") if p not in ("", ".")]
    if ".." in root_parts:
        raise PathPolicyError("workspace root", "must not contain '..'", value=_describe(root_text))
    raw_parts = text.split("/")
    if ".." in raw_parts:
        raise PathPolicyError(field, "must not contain '..'", value=_describe(text))
    parts = [p for p in raw_parts if p not in ("", ".")]
    if not text.startswith("/"):
        parts = root_parts + parts
    if parts[: len(root_parts)] != root_parts:
        raise PathPolicyError(field, f"must lie inside the workspace root /{'/'.join(root_parts)}",
                              value=_describe(text))
    # Physical check: every existing component below the root must be a real directory (or, for the
    # last one, a non-symlink). lstat never follows; a missing component ends the check (it will be
    # created through Workspace.makedirs, which refuses symlinks itself).
    current = "/" + "/".join(root_parts)
    for name in parts[len(root_parts):]:
        current = os.path.join(current, name)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            break
        except OSError as exc:
            raise PathPolicyError(field, f"cannot be inspected ({exc.strerror})", value=_describe(text)) from None
        if stat.S_ISLNK(st.st_mode):
            raise PathPolicyError(field, f"must not pass through a symlink ({current!r} is one)", value=_describe(text))
    return Path("/" + "/".join(parts))


@dataclass
class CopyReport:
    """What `Workspace.copy_in` did: counts, and the special files it skipped (never copied)."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    owner: tuple[int, int] | None = None  # (uid, gid) every copied entry was given, if asked
    outward_links: bool = False  # links leading out of the tree were recreated, not refused (asked for)
    left_out: int = 0  # entries the `include` filter left out (a whole directory counts once)


@dataclass
class HandOverReport:
    """What `Workspace.sanitise` did: entries kept, entries taken over from another owner, and the entries it
    removed with what they were (``("cov.txt", "symlink")``)."""

    kept: int = 0
    taken_over: int = 0
    removed: list[tuple[str, str]] = field(default_factory=list)


class Workspace:
    """A job workspace anchored on a directory fd; every workspace file operation goes through it.

    Paths given to its methods are relative to the root (an absolute path inside the root is also
    accepted and made relative). Symlinks are never followed unless `follow_symlinks=True`, and then
    only while they stay beneath the root.

    >>> with Workspace("/job") as ws:                        # doctest: +SKIP
    ...     ws.makedirs("src")
    ...     ws.write_bytes("src/hello.txt", b"hi")
    ...     ws.rmtree("src")

    `resolver` picks openat2 ("openat2"), the O_NOFOLLOW walk ("walk"), or the best available ("auto").
    """

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_ROOT, *, resolver: Resolver = "auto",
                 create: bool = False) -> None:
        root_text = os.fspath(root)
        if not root_text.startswith("/") or "\0" in root_text:
            raise PathPolicyError("workspace root", "must be an absolute path", value=_describe(root_text))
        if create:
            os.makedirs(root_text, mode=0o755, exist_ok=True)
        if resolver == "auto":
            resolver = "openat2" if _o2.available() else "walk"
        elif resolver == "openat2" and not _o2.available():
            raise PathPolicyError("resolver", "openat2 is not available on this kernel")
        elif resolver not in ("openat2", "walk"):
            raise PathPolicyError("resolver", "must be one of auto, openat2, walk", value=_describe(resolver))
        self.resolver: str = resolver
        self.root = Path(os.path.normpath(root_text))
        # The root itself is trusted configuration; from here on everything is relative to this fd.
        self.fd = os.open(root_text, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the root fd (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Workspace:
        return self

    def __del__(self) -> None:
        # A Workspace dropped without close() must not leak its root fd (found by fuzz_paths).
        fd = getattr(self, "fd", -1)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
            self.fd = -1

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r}, resolver={self.resolver!r})"

    # -- path handling --------------------------------------------------------------------------
    def rel(self, path: str | os.PathLike[str], *, field: str = "path") -> str:
        """The root-relative form of `path` (absolute paths must lie inside the root)."""
        text = os.fspath(path)
        if "\0" in text:
            raise PathPolicyError(field, "must not contain a NUL byte", value=_describe(text))
        if text.startswith("/"):
            try:
                rel = PurePosixPath(text).relative_to(self.root)
            except ValueError:
                raise PathPolicyError(field, f"must lie inside the workspace root {self.root}",
                                      value=_describe(text)) from None
            text = str(rel)
        return "/".join(split_relative(text, field=field))

    def path(self, rel: str | os.PathLike[str] = "") -> Path:
        """The absolute path of `rel` (for messages and for handing to external programs)."""
        parts = split_relative(self.rel(rel))
        return self.root.joinpath(*parts) if parts else self.root

    def _parts(self, rel: str | os.PathLike[str], field: str = "path") -> list[str]:
        return split_relative(self.rel(rel, field=field), field=field)

    # -- resolution -----------------------------------------------------------------------------
    def _escape(self, parts: list[str], exc: OSError) -> Exception:
        where = "/".join(parts) or "."
        if exc.errno == errno.EXDEV:
            return PathPolicyError("path", "must not resolve outside the workspace", value=_describe(where))
        if exc.errno == errno.ELOOP:
            return PathPolicyError("path", "must not pass through a symlink", value=_describe(where))
        return exc

    def _open_parts(self, parts: list[str], flags: int, mode: int = 0o644, *, follow: bool = False) -> int:
        """Open the object named by `parts` beneath the root; raises PathPolicyError on an escape."""
        try:
            if self.resolver == "openat2":
                resolve = _o2.RESOLVE_BENEATH | _o2.RESOLVE_NO_MAGICLINKS
                if not follow:
                    resolve |= _o2.RESOLVE_NO_SYMLINKS
                    flags |= os.O_NOFOLLOW
                try:
                    return _o2.openat2(self.fd, "/".join(parts) or ".", flags, mode, resolve)
                except NotADirectoryError:
                    # O_DIRECTORY|O_NOFOLLOW on a final symlink answers ENOTDIR: say it was a symlink.
                    probe = _o2.openat2(self.fd, "/".join(parts), os.O_PATH | os.O_NOFOLLOW, 0, resolve)
                    is_link = stat.S_ISLNK(os.fstat(probe).st_mode)
                    os.close(probe)
                    if is_link:
                        raise OSError(errno.ELOOP, "symlink") from None
                    raise
            return self._walk(parts, flags, mode, follow=follow)
        except OSError as exc:
            raise self._escape(parts, exc) from None

    def _walk(self, parts: list[str], flags: int, mode: int, *, follow: bool) -> int:
        """The portable resolver: one O_NOFOLLOW step at a time from the root fd (see module doc)."""
        stack = [os.dup(self.fd)]
        queue = list(parts)
        hops = 0
        try:
            if not queue:
                return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=stack[-1])
            while queue:
                name = queue.pop(0)
                if name in ("", "."):
                    if not queue:
                        return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=stack[-1])
                    continue
                if name == "..":
                    if len(stack) == 1:
                        raise OSError(errno.EXDEV, "resolution would leave the workspace")
                    os.close(stack.pop())
                    if not queue:
                        return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=stack[-1])
                    continue
                last = not queue
                want = (flags | os.O_NOFOLLOW) if last else _O_DIR
                try:
                    fd = os.open(name, want | os.O_CLOEXEC, mode, dir_fd=stack[-1])
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                        raise
                    target = self._link_target(stack[-1], name)
                    if target is None:
                        raise
                    fd = -1
                else:
                    target = None
                    if last and flags & os.O_PATH:
                        # O_PATH|O_NOFOLLOW opens a symlink itself instead of failing with ELOOP.
                        if stat.S_ISLNK(os.fstat(fd).st_mode):
                            target = self._link_target(stack[-1], name)
                            os.close(fd)
                            fd = -1
                if target is not None:
                    if not follow:
                        raise OSError(errno.ELOOP, "symlink in path")
                    hops += 1
                    if hops > _MAX_SYMLINK_HOPS:
                        raise OSError(errno.ELOOP, "too many symlinks")
                    if target.startswith("/"):
                        raise OSError(errno.EXDEV, "absolute symlink leaves the workspace")
                    queue[:0] = [p for p in target.split("/") if p not in ("", ".")] or ["."]
                    continue
                if last:
                    return fd
                stack.append(fd)
            raise OSError(errno.ENOENT, "empty path")  # not reached: the loop returns on the last part
        finally:
            for d in stack:
                os.close(d)

    @staticmethod
    def _link_target(dir_fd: int, name: str) -> str | None:
        try:
            return os.readlink(name, dir_fd=dir_fd)
        except OSError:
            return None

    @contextlib.contextmanager
    def _parent(self, rel: str | os.PathLike[str], *, field: str = "path") -> Iterator[tuple[int, str, list[str]]]:
        """Yield (fd of the parent directory, final name, parts); the parent is resolved without symlinks."""
        parts = self._parts(rel, field)
        if not parts:
            raise PathPolicyError(field, "must name something below the workspace root, not the root itself")
        dfd = self._open_parts(parts[:-1], os.O_RDONLY | os.O_DIRECTORY)
        try:
            yield dfd, parts[-1], parts
        finally:
            os.close(dfd)

    # -- opening --------------------------------------------------------------------------------
    def open(self, rel: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o644, *,
             follow_symlinks: bool = False) -> int:
        """Open `rel` with os.open-style `flags` and return the fd (O_CLOEXEC always set).

        Raises PathPolicyError when the path would leave the root or pass through a symlink.
        """
        return self._open_parts(self._parts(rel), flags | os.O_CLOEXEC, mode, follow=follow_symlinks)

    def open_dir(self, rel: str | os.PathLike[str] = "") -> int:
        """An fd for the directory `rel` (no symlinks on the way)."""
        return self.open(rel, os.O_RDONLY | os.O_DIRECTORY)

    def open_file(self, rel: str | os.PathLike[str], mode: str = "rb", *, perms: int = 0o644,
                  follow_symlinks: bool = False) -> IO:
        """A Python file object for `rel`; `mode` is one of r, w, a, x with an optional b."""
        base = mode.replace("b", "")
        flags = {
            "r": os.O_RDONLY,
            "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
            "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
            "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
        }.get(base)
        if flags is None:
            raise ValueError(f"open_file: unsupported mode {mode!r}")
        # O_NONBLOCK so that a FIFO planted where a file was expected cannot block us in open().
        try:
            fd = self.open(rel, flags | os.O_NONBLOCK, perms, follow_symlinks=follow_symlinks)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
                raise PathPolicyError("path", "must be a regular file", value=_describe(rel)) from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PathPolicyError("path", "must be a regular file", value=_describe(rel))
            os.set_blocking(fd, True)
            return os.fdopen(fd, mode)
        except BaseException:
            os.close(fd)
            raise

    def read_bytes(self, rel: str | os.PathLike[str], *, follow_symlinks: bool = False) -> bytes:
        """The content of the regular file `rel`."""
        with self.open_file(rel, "rb", follow_symlinks=follow_symlinks) as fh:
            return fh.read()

    def read_text(self, rel: str | os.PathLike[str], *, follow_symlinks: bool = False) -> str:
        """The content of `rel` decoded as UTF-8."""
        return self.read_bytes(rel, follow_symlinks=follow_symlinks).decode("utf-8")

    def write_bytes(self, rel: str | os.PathLike[str], data: bytes, *, perms: int = 0o644) -> None:
        """Create or truncate the regular file `rel` and write `data` (never through a symlink)."""
        with self.open_file(rel, "wb", perms=perms) as fh:
            fh.write(data)

    def write_text(self, rel: str | os.PathLike[str], text: str, *, perms: int = 0o644) -> None:
        """Write `text` as UTF-8 to `rel`."""
        self.write_bytes(rel, text.encode("utf-8"), perms=perms)

    # -- inspection -----------------------------------------------------------------------------
    def lstat(self, rel: str | os.PathLike[str] = "") -> os.stat_result:
        """stat of `rel` itself (a final symlink is reported, not followed)."""
        parts = self._parts(rel)
        if not parts:
            return os.fstat(self.fd)
        with self._parent(rel) as (dfd, name, _):
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)

    def exists(self, rel: str | os.PathLike[str]) -> bool:
        """True if `rel` exists (a symlink counts as existing; it is not followed)."""
        try:
            self.lstat(rel)
        except FileNotFoundError:
            return False
        except PathPolicyError:
            return False
        return True

    def is_dir(self, rel: str | os.PathLike[str]) -> bool:
        """True if `rel` is a directory (not a symlink to one)."""
        try:
            return stat.S_ISDIR(self.lstat(rel).st_mode)
        except (FileNotFoundError, NotADirectoryError, PathPolicyError):
            return False

    def listdir(self, rel: str | os.PathLike[str] = "") -> list[str]:
        """Names in the directory `rel`, sorted."""
        fd = self.open_dir(rel)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    # -- creation -------------------------------------------------------------------------------
    def makedirs(self, rel: str | os.PathLike[str], mode: int = 0o755, *, exist_ok: bool = True) -> None:
        """Create `rel` and missing parents, one mkdirat at a time; a symlink on the way is refused."""
        parts = self._parts(rel)
        dfd = os.dup(self.fd)
        try:
            for i, name in enumerate(parts):
                nfd = _subdir(dfd, name, parts[: i + 1], mode, exist_ok=exist_ok or i < len(parts) - 1)
                os.close(dfd)
                dfd = nfd
        finally:
            os.close(dfd)

    def symlink(self, target: str, rel: str | os.PathLike[str]) -> None:
        """Create the symlink `rel` -> `target`; the target must stay inside the tree (check_link_target)."""
        with self._parent(rel) as (dfd, name, parts):
            check_link_target(parts, target)
            os.symlink(target, name, dir_fd=dfd)

    def link(self, existing_rel: str | os.PathLike[str], rel: str | os.PathLike[str]) -> None:
        """Create the hard link `rel` to `existing_rel` (both inside the workspace; nothing followed)."""
        with self._parent(existing_rel) as (sfd, sname, _), self._parent(rel) as (dfd, dname, _):
            st = os.stat(sname, dir_fd=sfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise PathPolicyError("hardlink", "must not point at a directory", value=_describe(existing_rel))
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)

    def rename(self, old_rel: str | os.PathLike[str], new_rel: str | os.PathLike[str]) -> None:
        """Rename inside the workspace (both parents resolved without symlinks)."""
        with self._parent(old_rel) as (sfd, sname, _), self._parent(new_rel) as (dfd, dname, _):
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)

    # -- permissions ----------------------------------------------------------------------------
    def chmod(self, rel: str | os.PathLike[str], mode: int) -> None:
        """chmod `rel` itself; a symlink is refused rather than followed."""
        fd = self.open(rel, os.O_PATH)
        try:
            _fchmod_any(fd, mode)
        finally:
            os.close(fd)

    def make_readonly(self, rel: str | os.PathLike[str]) -> int:
        """Make the tree at `rel` read-only for everyone but root, owned by this process's uid.

        Every directory and file (never following symlinks) is chowned to the current euid/egid when we
        are root, and loses its write bits and any setuid/setgid bit. Returns the number of entries.
        """
        uid, gid = os.geteuid(), os.getegid()
        count = 0

        def fix(fd: int, st: os.stat_result) -> None:
            nonlocal count
            count += 1
            if (st.st_uid, st.st_gid) != (uid, gid):
                if uid != 0 and st.st_uid != uid:
                    raise PathPolicyError("make_readonly", "cannot take ownership without root",
                                          value=f"uid {st.st_uid}")
                _fchown_any(fd, uid, gid)
            wanted = stat.S_IMODE(st.st_mode) & ~0o222 & ~(stat.S_ISUID | stat.S_ISGID)
            if wanted != stat.S_IMODE(st.st_mode):
                _fchmod_any(fd, wanted)

        self._walk_tree(rel, fix, dirs_last=True)
        return count

    def chown_tree(self, rel: str | os.PathLike[str], uid: int, gid: int) -> int:
        """Give the tree at `rel` to uid:gid (e.g. /job/src to the uid untrusted steps build as).

        Walks through fds without following symlinks (the links themselves keep their owner; their
        ownership grants nothing). Returns the number of entries changed.
        """
        count = 0

        def give(fd: int, st: os.stat_result) -> None:
            nonlocal count
            if (st.st_uid, st.st_gid) != (uid, gid):
                _fchown_any(fd, uid, gid)
                count += 1

        self._walk_tree(rel, give)
        return count

    def verify_readonly(self, rel: str | os.PathLike[str], untrusted_uid: int,
                        untrusted_gids: tuple[int, ...] = ()) -> int:
        """Raise ReadOnlyViolation if `untrusted_uid` could change anything at or under `rel`.

        Checked: the owner of every entry (an owner can chmod), group and other write bits, and every
        directory from the root down to `rel` (a writable parent lets `rel` be renamed away and
        replaced, unless the sticky bit protects entries the uid does not own), and every symlink, which
        must stay inside the tree (check_link_target). Returns entries checked.
        ACLs and capabilities are not evaluated; uid 0 is refused outright (root ignores modes).
        """
        field = f"read-only tree {self.path(rel)}"
        if untrusted_uid == 0:
            raise ReadOnlyViolation(field, ["the untrusted uid is 0 (root bypasses file modes)"])
        problems: list[str] = []
        gids = set(untrusted_gids)

        def writable(st: os.stat_result) -> bool:
            mode = st.st_mode
            if st.st_uid == untrusted_uid:
                return True
            if mode & stat.S_IWGRP and st.st_gid in gids:
                return True
            return bool(mode & stat.S_IWOTH)

        parts = self._parts(rel)
        for i in range(len(parts)):
            st = self.lstat("/".join(parts[:i]))
            child = self.lstat("/".join(parts[: i + 1]))
            if writable(st) and not (st.st_mode & stat.S_ISVTX and child.st_uid != untrusted_uid):
                problems.append(f"parent {self.path('/'.join(parts[:i]))} is writable (could swap the tree)")
        count = 0

        top = str(self.path(rel))
        top_parts = top.split("/")

        def check_link(where: str, target: str, st: os.stat_result) -> None:
            nonlocal count
            count += 1
            # A link out of the tree (into /job/src, /tmp, ...) would let trusted code run or read what
            # the untrusted uid controls, however read-only the link itself is.
            try:
                check_link_target(where.split("/")[len(top_parts):], target)
            except PathPolicyError:
                problems.append(f"{where} is a symlink leading out of the tree (-> {target!r})")

        def check(fd: int, st: os.stat_result, where: str) -> None:
            nonlocal count
            count += 1
            if st.st_uid == untrusted_uid:
                problems.append(f"{where} is owned by the untrusted uid")
            elif writable(st):
                problems.append(f"{where} is writable (mode {stat.S_IMODE(st.st_mode):04o})")

        self._walk_tree(rel, check, with_path=True, on_link=check_link)
        if problems:
            raise ReadOnlyViolation(field, problems)
        return count

    def sanitise(self, rel: str | os.PathLike[str], *, owner: tuple[int, int] | None = None,
                 drop_names: frozenset[str] | tuple[str, ...] = ()) -> HandOverReport:
        """Leave only regular files with one link and directories under the directory `rel`.

        Symlinks, hard-linked files (st_nlink > 1: another name, possibly outside the tree, shares the inode),
        FIFOs, sockets and device nodes are removed, never followed or opened, and listed in the report.
        An entry named in `drop_names` (whatever it is; a directory with its content) is removed too, listed as
        ``(path, "name:" + name)``.
        `owner` (uid, gid), as root: every kept entry owned by someone else is given to it and keeps no
        write bit for others (files 0644, or 0755 when executable; directories 0755), so the uid that wrote
        it can no longer change it. `rel` itself keeps its owner and mode. setuid/setgid bits are dropped.
        Everything goes through fds opened without following links, so what is changed is what was checked.
        """
        report = HandOverReport()
        stack: list[tuple[int, str, Iterator[str]]] = []

        def enter(fd: int, where: str) -> None:
            try:
                names = iter(sorted(os.listdir(fd)))
            except BaseException:
                os.close(fd)
                raise
            stack.append((fd, where, names))

        def settle(fd: int, st: os.stat_result, directory: bool) -> None:
            mode = stat.S_IMODE(st.st_mode)
            take = owner is not None and (st.st_uid, st.st_gid) != owner
            if take:
                mode = 0o755 if directory or mode & 0o111 else 0o644
            else:
                mode &= ~(0o022 | stat.S_ISUID | stat.S_ISGID)
            # The mode first: a setuid file of the step's must never be the runner's, even for an instant.
            if mode != stat.S_IMODE(st.st_mode):
                _fchmod_any(fd, mode)
            if take and owner is not None:
                _fchown_any(fd, *owner)
                report.taken_over += 1
            report.kept += 1

        enter(self.open(rel, os.O_RDONLY | os.O_DIRECTORY), "")
        try:
            while stack:
                dfd, where, names = stack[-1]
                name = next(names, None)
                if name is None:
                    stack.pop()
                    try:
                        if where:
                            settle(dfd, os.fstat(dfd), True)
                    finally:
                        os.close(dfd)
                    continue
                here = f"{where}/{name}" if where else name
                if name in drop_names:
                    _remove_entry(dfd, name)
                    report.removed.append((here, f"name:{name}"))
                    continue
                try:
                    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                except FileNotFoundError:
                    continue
                try:
                    st = os.fstat(fd)
                    if stat.S_ISDIR(st.st_mode):
                        if st.st_mode & 0o700 != 0o700 and st.st_uid == os.geteuid() != 0:
                            # Ours but closed (chmod 000 by a step sharing our uid): open it up to clean it.
                            _fchmod_any(fd, stat.S_IMODE(st.st_mode) | 0o700)
                            st = os.fstat(fd)
                        sub = os.open(".", _O_DIR, dir_fd=fd)  # the very directory checked, not the name again
                        enter(sub, here)
                        continue
                    kind = _hand_over_refusal(st)
                    if kind is None:
                        settle(fd, st, False)
                        continue
                finally:
                    os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dfd)
                report.removed.append((here, kind))
        finally:
            for dfd, _, _ in stack:
                os.close(dfd)
        return report

    def links_leaving(self, rel: str | os.PathLike[str] = "") -> list[str]:
        """The symlinks at or under `rel` whose target could lead out of `rel` (absolute, or climbing above it
        with `..`), as paths relative to the workspace root. Nothing is followed."""
        top = str(self.path(rel))
        depth = len(top.split("/"))
        found: list[str] = []

        def check_link(where: str, target: str, st: os.stat_result) -> None:
            try:
                check_link_target(where.split("/")[depth:], target)
            except PathPolicyError:
                found.append(os.path.relpath(where, self.root))

        self._walk_tree(rel, lambda fd, st: None, on_link=check_link)
        return found

    def walk(self, rel: str | os.PathLike[str], visit: Callable[[int, os.stat_result, str], None]) -> None:
        """visit(fd, stat, absolute path) for `rel` and every entry under it, through fds, following no symlink
        (an O_PATH fd for non-directories; a symlink is not visited)."""
        self._walk_tree(rel, visit, with_path=True)

    def _walk_tree(self, rel: str | os.PathLike[str], visit: Callable[..., None], *, dirs_last: bool = False,
                   with_path: bool = False,
                   on_link: Callable[[str, str, os.stat_result], None] | None = None) -> None:
        """Visit every entry under `rel` (and `rel` itself) through fds, never following symlinks.

        visit(fd, stat[, path]) gets an fd of the entry (O_PATH for non-directories); with `dirs_last`
        a directory is visited after its content. on_link(path, target, lstat) gets each symlink. Only
        one fd per directory level is open at a time (wide trees do not exhaust the fd limit).
        """
        base = str(self.path(rel))
        if not self.is_dir(rel):
            fd = self.open(rel, os.O_PATH)
            try:
                st = os.fstat(fd)
                if stat.S_ISLNK(st.st_mode):
                    if on_link is not None:
                        with self._parent(rel) as (dfd, name, _):
                            on_link(base, os.readlink(name, dir_fd=dfd), st)
                    return
                _call(visit, fd, st, base, with_path)
            finally:
                os.close(fd)
            return
        stack: list[tuple[int, os.stat_result, str, Iterator[os.DirEntry[str]]]] = []

        def enter(fd: int, where: str) -> None:
            try:
                st = os.fstat(fd)
                entries = iter(list(os.scandir(fd)))  # materialised: scandir(fd) would hold a dup'd fd
            except BaseException:
                os.close(fd)
                raise
            stack.append((fd, st, where, entries))
            if not dirs_last:
                _call(visit, fd, st, where, with_path)

        enter(self.open(rel, os.O_RDONLY | os.O_DIRECTORY), base)
        try:
            while stack:
                fd, st, where, entries = stack[-1]
                entry = next(entries, None)
                if entry is None:
                    stack.pop()
                    try:
                        if dirs_last:
                            _call(visit, fd, st, where, with_path)
                    finally:
                        os.close(fd)
                    continue
                child = f"{where}/{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    try:
                        cfd = os.open(entry.name, _O_DIR, dir_fd=fd)
                    except OSError as exc:
                        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                            raise
                        raise PathPolicyError("path", "changed while being walked", value=_describe(child)) from None
                    enter(cfd, child)
                    continue
                cfd = os.open(entry.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    cst = os.fstat(cfd)
                    if stat.S_ISLNK(cst.st_mode):
                        if on_link is not None:
                            on_link(child, os.readlink(entry.name, dir_fd=fd), cst)
                        continue
                    _call(visit, cfd, cst, child, with_path)
                finally:
                    os.close(cfd)
        finally:
            for fd, _, _, _ in stack:
                os.close(fd)

    # -- removal --------------------------------------------------------------------------------
    def remove(self, rel: str | os.PathLike[str], *, missing_ok: bool = False) -> None:
        """Unlink the file or symlink `rel` (a symlink itself is removed, never its target)."""
        with self._parent(rel) as (dfd, name, _):
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                if not missing_ok:
                    raise

    def rmtree(self, rel: str | os.PathLike[str], *, missing_ok: bool = True) -> None:
        """Remove `rel` and everything under it, through directory fds, never following a symlink.

        A symlink at `rel` (or anywhere below) is unlinked, not followed. Read-only directories (from
        make_readonly) are made writable by their owner first. The root itself cannot be removed: use
        clear().
        """
        try:
            with self._parent(rel) as (dfd, name, _):
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    if missing_ok:
                        return
                    raise
                if not stat.S_ISDIR(st.st_mode):
                    _unlink_in(dfd, name)
                    return
                try:
                    sub = os.open(name, _O_DIR, dir_fd=dfd)
                except PermissionError:
                    _make_searchable(dfd, name)
                    sub = os.open(name, _O_DIR, dir_fd=dfd)
                try:
                    _clear_dir_fd(sub)
                finally:
                    os.close(sub)
                _rmdir_in(dfd, name)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def clear(self, rel: str | os.PathLike[str] = "", *, keep: tuple[str, ...] = ()) -> None:
        """Remove everything inside the directory `rel` (but not `rel` itself), except names in `keep`."""
        fd = self.open_dir(rel)
        try:
            _clear_dir_fd(fd, keep=keep)
        finally:
            os.close(fd)

    # -- copying --------------------------------------------------------------------------------
    def copy_in(self, source: str | os.PathLike[str], dest_rel: str | os.PathLike[str], *,
                into_existing: bool = False, owner: tuple[int, int] | None = None,
                outward_links: bool = False,
                include: Callable[[tuple[str, ...]], bool] | None = None) -> CopyReport:
        """Copy the directory `source` (outside the workspace) into the new directory `dest_rel`.

        Never follows a symlink out of `source`: links are recreated as links, and a link whose target
        could leave the source tree is refused (check_link_target). Regular files keep their permission
        bits (setuid/setgid dropped); FIFOs, sockets and device nodes are skipped and listed in the
        report. `dest_rel` must not exist yet unless `into_existing` (then it must be an empty
        directory); use staging() to replace a directory atomically. `owner` (uid, gid): every entry
        created (the top directory included) is given to it as it is made, in the same pass (root only).
        `outward_links`: recreate links leading out of the tree as they are instead of refusing them, for a copy
        that only sandboxed code uses (the untrusted steps' copy of /job/src: the sandbox, not the link, decides
        what they reach; runnerlib never follows links there).
        `include`: given the path parts of an entry (relative to `source`), whether to copy it; a directory left
        out is not entered (the files git knows of: runnerlib.source.git_files).
        """
        report = CopyReport(owner=owner, outward_links=outward_links)
        src_fd = os.open(os.fspath(source), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(src_fd)
            dest_parts = self._parts(dest_rel)
            self.makedirs("/".join(dest_parts[:-1]))
            with self._parent(dest_rel) as (pfd, name, _):
                if not into_existing:
                    os.mkdir(name, 0o700, dir_fd=pfd)
                dst_fd = os.open(name, _O_DIR, dir_fd=pfd)
        except BaseException:
            os.close(src_fd)
            raise
        if into_existing and os.listdir(dst_fd):
            os.close(dst_fd)
            os.close(src_fd)
            raise PathPolicyError("copy destination", "must be an empty directory", value=_describe(dest_rel))
        # Depth-first with one (source, destination) fd pair per level; a directory gets its own mode
        # after its content is written (a read-only directory would refuse its own content otherwise).
        stack: list[tuple[int, int, list[str], int, Iterator[str]]] = []

        def enter(sfd: int, dfd: int, where: list[str], mode: int) -> None:
            try:
                names = iter(sorted(os.listdir(sfd)))
            except BaseException:
                os.close(sfd)
                os.close(dfd)
                raise
            stack.append((sfd, dfd, where, mode, names))

        enter(src_fd, dst_fd, [], stat.S_IMODE(st.st_mode))
        try:
            while stack:
                sfd, dfd, where, mode, names = stack[-1]
                entry_name = next(names, None)
                if entry_name is None:
                    stack.pop()
                    try:
                        if owner is not None:
                            os.fchown(dfd, *owner)
                        os.fchmod(dfd, mode & 0o1777)
                    finally:
                        os.close(sfd)
                        os.close(dfd)
                    continue
                if include is not None and not include((*where, entry_name)):
                    report.left_out += 1
                    continue
                child = self._copy_entry(sfd, dfd, entry_name, where, report)
                if child is not None:
                    enter(*child)
        finally:
            for sfd, dfd, _, _, _ in stack:
                os.close(sfd)
                os.close(dfd)
        return report

    def _copy_entry(self, sfd: int, dfd: int, name: str, where: list[str],
                    report: CopyReport) -> tuple[int, int, list[str], int] | None:
        """Copy one entry; for a directory, create it and return the fd pair to descend into."""
        st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
        here = [*where, name]
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dfd)
            try:
                csfd = os.open(name, _O_DIR, dir_fd=sfd)
            except OSError as exc:
                raise PathPolicyError("copy source", f"changed while copying ({exc.strerror})",
                                      value=_describe("/".join(here))) from None
            try:
                cdfd = os.open(name, _O_DIR, dir_fd=dfd)
            except BaseException:
                os.close(csfd)
                raise
            report.dirs += 1
            return csfd, cdfd, here, stat.S_IMODE(mode)
        if stat.S_ISREG(mode):
            try:
                rfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=sfd)
            except OSError as exc:
                raise PathPolicyError("copy source", f"cannot be read ({exc.strerror})",
                                      value=_describe("/".join(here))) from None
            try:
                if not stat.S_ISREG(os.fstat(rfd).st_mode):
                    raise PathPolicyError("copy source", "changed type while copying", value=_describe("/".join(here)))
                wfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=dfd)
                try:
                    report.bytes += copy_fd(rfd, wfd)
                    if report.owner is not None:
                        os.fchown(wfd, *report.owner)
                    os.fchmod(wfd, stat.S_IMODE(mode) & 0o777)
                finally:
                    os.close(wfd)
            finally:
                os.close(rfd)
            report.files += 1
        elif stat.S_ISLNK(mode):
            target = os.readlink(name, dir_fd=sfd)
            if not report.outward_links:
                check_link_target(here, target, field="copy source symlink")
            os.symlink(target, name, dir_fd=dfd)
            if report.owner is not None:
                os.chown(name, *report.owner, dir_fd=dfd, follow_symlinks=False)
            report.symlinks += 1
        else:
            report.skipped.append("/".join(here))
        return None

    def tree_writer(self, rel: str | os.PathLike[str], *, dir_mode: int = 0o700, max_fds: int = 64) -> TreeWriter:
        """A TreeWriter for the existing directory `rel` (many writes below it without re-resolving)."""
        return TreeWriter(self, rel, dir_mode=dir_mode, max_fds=max_fds)

    # -- staging: replace a directory with nothing half-done ------------------------------------
    @contextlib.contextmanager
    def staging(self, dest_rel: str | os.PathLike[str]) -> Iterator[Staged]:
        """Prepare new content for the directory `dest_rel` in a private staging directory.

        The staging directory is created inside `dest_rel` (so the final move is a rename on the same
        filesystem even when `dest_rel` is a mount point). On success the old content of `dest_rel` is
        removed and the staged entries are renamed into place; on any exception the staging directory
        is removed and `dest_rel` is left exactly as it was (removed again if this call created it).

        >>> with ws.staging("src") as st:            # doctest: +SKIP
        ...     ws.write_bytes(f"{st.rel}/a.txt", b"x")
        """
        dest = self.rel(dest_rel, field="destination")
        if not dest:
            raise PathPolicyError("destination", "must be a directory below the workspace root, not the root")
        created = not self.exists(dest)
        self.makedirs(dest)
        name = _STAGE_PREFIX + _random.token_hex(8)
        rel = f"{dest}/{name}"
        self.makedirs(rel, 0o700, exist_ok=False)
        staged = Staged(workspace=self, rel=rel, dest=dest)
        try:
            yield staged
        except BaseException:
            with contextlib.suppress(OSError, PathPolicyError):
                self.rmtree(rel)
                if created:
                    self.rmtree(dest)  # we made it (empty) for this attempt: leave no trace
            raise
        staged.commit()


@dataclass
class Staged:
    """A staging directory inside `dest`; `commit()` moves its entries into `dest` (see staging())."""

    workspace: Workspace
    rel: str
    dest: str
    committed: bool = False

    @property
    def path(self) -> Path:
        """Absolute path of the staging directory (for external programs; prefer fd_path())."""
        return self.workspace.path(self.rel)

    def open_fd(self) -> int:
        """A directory fd of the staging directory (the caller closes it)."""
        return self.workspace.open_dir(self.rel)

    def commit(self) -> None:
        if self.committed:
            return
        ws = self.workspace
        name = self.rel.rsplit("/", 1)[1]
        ws.clear(self.dest, keep=(name,))
        dest_fd = ws.open_dir(self.dest)
        try:
            stage_fd = os.open(name, _O_DIR, dir_fd=dest_fd)
            try:
                for entry in os.listdir(stage_fd):
                    os.rename(entry, entry, src_dir_fd=stage_fd, dst_dir_fd=dest_fd)
            finally:
                os.close(stage_fd)
            os.rmdir(name, dir_fd=dest_fd)
        finally:
            os.close(dest_fd)
        self.committed = True


class TreeWriter:
    """Builds a tree below one workspace directory through directory fds it keeps open (for extraction).

    The directory `rel` is resolved once through the Workspace (openat2 or the walk). Below it, every
    operation is a single-component *at() call on a directory fd taken from a cache keyed by the
    directory's path inside the tree, so writing N entries costs N creates, not N resolutions from the
    root. Each cached fd was opened one component at a time with O_NOFOLLOW | O_DIRECTORY from its
    parent's fd (a symlink or a file where a directory is expected is refused, as in
    Workspace.makedirs); a final component is never followed (O_EXCL | O_NOFOLLOW creates, unlinkat,
    lstat); paths are checked by split_relative (no `..`, no absolute names, no NUL). At most `max_fds`
    directory fds stay open (least recently used closed first; a closed one is re-opened the same way).

    A cached fd keeps naming the directory it opened, as any fd held during one operation does: use it on
    a tree nothing else writes meanwhile (a private staging directory). Directories are never removed
    through it, so no cached fd goes stale.

    >>> with ws.tree_writer("src/.runnerlib-stage-x") as out:    # doctest: +SKIP
    ...     fd = out.create("pkg/mod.py", 0o600)
    """

    def __init__(self, workspace: Workspace, rel: str | os.PathLike[str], *, dir_mode: int = 0o700,
                 max_fds: int = 64) -> None:
        if max_fds < 2:
            raise ValueError("max_fds must be at least 2")
        self.rel = workspace.rel(rel)
        self.dir_mode = dir_mode
        self.max_fds = max_fds
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._root = workspace.open_dir(self.rel)

    def close(self) -> None:
        """Close every cached directory fd and the tree's own fd (idempotent)."""
        while self._fds:
            os.close(self._fds.popitem()[1])
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    def __enter__(self) -> TreeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_root", -1) >= 0:
            self.close()

    def _split(self, rel: str | os.PathLike[str]) -> list[str]:
        parts = split_relative(rel)
        if not parts:
            raise PathPolicyError("path", "must name something below the tree, not the tree itself")
        return parts

    def _dir(self, parts: list[str], *, create: bool) -> int:
        """A borrowed fd of the directory `parts` (valid until the next _dir call may evict it)."""
        if not parts:
            return self._root
        key = "/".join(parts)
        fd = self._fds.get(key)
        if fd is not None:
            self._fds.move_to_end(key)
            return fd
        start, fd = 0, self._root
        for i in range(len(parts) - 1, 0, -1):  # the deepest ancestor already open
            cached = self._fds.get("/".join(parts[:i]))
            if cached is not None:
                start, fd = i, cached
                break
        for i in range(start, len(parts)):
            nfd = _subdir(fd, parts[i], parts[: i + 1], self.dir_mode if create else None)
            # Evicting the least recently used never closes nfd (just inserted), and fd is not used again.
            self._fds["/".join(parts[: i + 1])] = nfd
            if len(self._fds) > self.max_fds:
                os.close(self._fds.popitem(last=False)[1])
            fd = nfd
        return fd

    def makedirs(self, rel: str | os.PathLike[str]) -> None:
        """Create the directory `rel` and missing parents (mode dir_mode); an existing directory is fine."""
        self._dir(self._split(rel), create=True)

    def create(self, rel: str | os.PathLike[str], mode: int = 0o600) -> int:
        """Create the new regular file `rel` (missing parents made) and return a write fd (caller closes).

        FileExistsError if anything, a symlink included, is already there (O_EXCL | O_NOFOLLOW).
        """
        parts = self._split(rel)
        return os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                       dir_fd=self._dir(parts[:-1], create=True))

    def lstat(self, rel: str | os.PathLike[str]) -> os.stat_result:
        """stat of `rel` itself (never followed); FileNotFoundError when it or a parent is missing."""
        parts = self._split(rel)
        return os.stat(parts[-1], dir_fd=self._dir(parts[:-1], create=False), follow_symlinks=False)

    def remove(self, rel: str | os.PathLike[str]) -> None:
        """Unlink the file or symlink `rel` (unlinkat refuses a directory, so no cached fd goes stale)."""
        parts = self._split(rel)
        os.unlink(parts[-1], dir_fd=self._dir(parts[:-1], create=False))

    def symlink(self, target: str, rel: str | os.PathLike[str]) -> None:
        """Create the symlink `rel` -> `target`; the target must stay inside this tree (check_link_target)."""
        parts = self._split(rel)
        check_link_target(parts, target)
        os.symlink(target, parts[-1], dir_fd=self._dir(parts[:-1], create=True))

    def link(self, existing_rel: str | os.PathLike[str], rel: str | os.PathLike[str]) -> None:
        """Hard-link `rel` to the existing non-directory `existing_rel` (neither end followed).

        FileNotFoundError when `existing_rel` (or its parent) does not exist.
        """
        src, dst = self._split(existing_rel), self._split(rel)
        # A duplicate: resolving the destination's parent may evict (close) the source's cached fd.
        sfd = os.dup(self._dir(src[:-1], create=False))
        try:
            st = os.stat(src[-1], dir_fd=sfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise PathPolicyError("hardlink", "must not point at a directory", value=_describe(existing_rel))
            os.link(src[-1], dst[-1], src_dir_fd=sfd, dst_dir_fd=self._dir(dst[:-1], create=True),
                    follow_symlinks=False)
        finally:
            os.close(sfd)

    def chmod(self, rel: str | os.PathLike[str], mode: int) -> None:
        """chmod `rel` itself (a symlink is refused rather than followed)."""
        parts = self._split(rel)
        fd = self._fds.get("/".join(parts))
        if fd is not None:  # a directory this writer opened
            os.fchmod(fd, mode)
            return
        fd = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir(parts[:-1], create=False))
        try:
            _fchmod_any(fd, mode)
        finally:
            os.close(fd)


def _call(visit: Callable[..., None], fd: int, st: os.stat_result, where: str, with_path: bool) -> None:
    if with_path:
        visit(fd, st, where)
    else:
        visit(fd, st)


def _hand_over_refusal(st: os.stat_result) -> str | None:
    """What a non-directory entry is when it may not stay in a hand-over tree, or None for a plain file."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return f"hard link ({st.st_nlink} names)" if st.st_nlink > 1 else None
    for test, kind in ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def _fchmod_any(fd: int, mode: int) -> None:
    """chmod the object behind `fd`, which may be an O_PATH fd (fchmod refuses those with EBADF)."""
    try:
        os.fchmod(fd, mode)
        return
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise
    if stat.S_ISLNK(os.fstat(fd).st_mode):
        raise PathPolicyError("chmod", "refusing to chmod a symlink")
    # The documented way to chmod an O_PATH fd (glibc's fchmodat(AT_SYMLINK_NOFOLLOW) does the same):
    # the magic link names our own fd, which already refers to the resolved object.
    os.chmod(f"/proc/self/fd/{fd}", mode)


def _fchown_any(fd: int, uid: int, gid: int) -> None:
    """fchown that also works on O_PATH fds (through our own /proc/self/fd link, like _fchmod_any)."""
    try:
        os.fchown(fd, uid, gid)
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise
        os.chown(f"/proc/self/fd/{fd}", uid, gid)


def _remove_entry(dir_fd: int, name: str) -> None:
    """Remove `name` in `dir_fd` whatever it is, a directory with its content; nothing is followed."""
    try:
        sub = os.open(name, _O_DIR, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except PermissionError:
        _make_searchable(dir_fd, name)  # closed by a step sharing our uid (chmod 000)
        sub = os.open(name, _O_DIR, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        return
    try:
        _clear_dir_fd(sub)
    finally:
        os.close(sub)
    with contextlib.suppress(FileNotFoundError):
        _rmdir_in(dir_fd, name)


def _clear_dir_fd(top: int, *, keep: tuple[str, ...] = ()) -> None:
    """Remove the content of the directory `top` iteratively, unlinking relative to directory fds."""
    stack: list[tuple[int, Iterator[os.DirEntry[str]] | None]] = [(os.dup(top), None)]
    names_to_rmdir: list[str] = []
    try:
        while stack:
            fd, it = stack[-1]
            if it is None:
                entries = [e for e in os.scandir(fd) if not (len(stack) == 1 and e.name in keep)]
                it = iter(entries)
                stack[-1] = (fd, it)
            entry = next(it, None)
            if entry is None:
                os.close(fd)
                stack.pop()
                if stack:
                    _rmdir_in(stack[-1][0], names_to_rmdir.pop())
                continue
            if entry.is_dir(follow_symlinks=False):
                try:
                    sub = os.open(entry.name, _O_DIR, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        _unlink_in(fd, entry.name)  # replaced by a symlink/file since scandir: unlink it
                        continue
                    if exc.errno != errno.EACCES:
                        raise
                    _make_searchable(fd, entry.name)
                    sub = os.open(entry.name, _O_DIR, dir_fd=fd)
                stack.append((sub, None))
                names_to_rmdir.append(entry.name)
            else:
                _unlink_in(fd, entry.name)
    finally:
        for fd, _ in stack:
            os.close(fd)


def _subdir(dir_fd: int, name: str, where: list[str], mode: int | None, *, exist_ok: bool = True) -> int:
    """An fd (the caller's) of the directory `name` in `dir_fd`, never through a symlink or onto a file.

    With `mode`, the directory is created first if missing, and gets exactly `mode` (mkdir is subject to
    the umask). `where` (its path) is for the error message.
    """
    made = False
    if mode is not None:
        try:
            os.mkdir(name, mode, dir_fd=dir_fd)
            made = True
        except FileExistsError:
            if not exist_ok:
                raise
    try:
        fd = os.open(name, _O_DIR, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PathPolicyError("path", "must be a directory, not a symlink or file",
                                  value=_describe("/".join(where))) from None
        raise
    if made:
        try:
            os.fchmod(fd, mode)  # type: ignore[arg-type]  # made implies mode is not None
        except BaseException:
            os.close(fd)
            raise
    return fd


def _make_searchable(dir_fd: int, name: str) -> None:
    pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISDIR(os.fstat(pfd).st_mode):
            raise PathPolicyError("rmtree", "entry changed type during removal", value=_describe(name))
        _fchmod_any(pfd, 0o700)
    finally:
        os.close(pfd)


def _in_writable_dir(remove: Callable[..., None], dir_fd: int, name: str) -> None:
    """remove(name, dir_fd=dir_fd); if the directory is read-only (make_readonly), make it writable by
    its owner and try once more."""
    try:
        remove(name, dir_fd=dir_fd)
    except PermissionError:
        _fchmod_any(dir_fd, stat.S_IMODE(os.fstat(dir_fd).st_mode) | stat.S_IRWXU)
        remove(name, dir_fd=dir_fd)


def _unlink_in(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # already gone: that is what we wanted
        _in_writable_dir(os.unlink, dir_fd, name)


def _rmdir_in(dir_fd: int, name: str) -> None:
    _in_writable_dir(os.rmdir, dir_fd, name)


def copy_fd(src: int, dst: int, *, limit: int | None = None) -> int:
    """Copy everything from fd `src` to fd `dst` (copy_file_range/sendfile, then read/write); bytes copied.

    With `limit`, raises PathPolicyError once more than `limit` bytes would be copied.
    """
    total = 0
    chunk = 1 << 20
    use_cfr = hasattr(os, "copy_file_range")
    while True:
        want = chunk if limit is None else min(chunk, limit - total + 1)
        n = 0
        if use_cfr:
            try:
                n = os.copy_file_range(src, dst, want)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                    raise
                use_cfr = False
                continue
        else:
            data = os.read(src, want)
            n = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view):]
        if n == 0:
            return total
        total += n
        if limit is not None and total > limit:
            raise PathPolicyError("copy", f"exceeds the size limit of {limit} bytes")
