"""/job/ci read-only for a trusted step, root included: `python -I -S cilock.py PATH... -- ARGV...`.

A root trusted step ignores file modes, so a read-only /job/ci (Workspace.make_readonly) does not stop it from
rewriting a CI script, on purpose or by following a link an untrusted step left (`> artifacts/coverage.txt`
pointing at /job/ci/deploy.sh). This trampoline enters a new mount namespace, makes the mounts it inherited
slaves (nothing it does propagates back), bind-mounts each PATH onto itself read-only, re-enters its working
directory through the new mount, and execs ARGV: every write under PATH by the step or anything it starts,
through whatever path or link, gets EROFS. The namespace ends with the step's processes.

It needs CAP_SYS_ADMIN (a root runner; not root inside a container without it): the runner probes once per job
and, where it is missing, says so in the job log (runnerlib.runner). An unprivileged runner's trusted steps do
not need it: the CI tree is theirs and 0444/0555, and file modes bind its owner (only a deliberate chmod would
change it). Standard library only: it runs under `python -I -S` (no site-packages), like the fork server.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 32, 4096, 16384, 1 << 19
# statvfs f_flag bits that a read-only remount must keep (the kernel refuses to drop locked ones).
_KEEP = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC))
REFUSED = 126


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def lock_read_only(paths: list[str]) -> None:
    """In this (single-threaded) process: a new mount namespace where every path in `paths` is read-only."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")
    for path in paths:
        target = os.fsencode(path)
        _check(libc.mount(target, target, None, MS_BIND | MS_REC, None), f"bind {path}")
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        current = os.statvfs(path).f_flag
        flags |= sum(ms for st, ms in _KEEP if current & st)
        _check(libc.mount(None, target, None, flags, None), f"remount {path} read-only")
    # A working directory inside a locked path still points at the writable mount underneath: re-enter it.
    os.chdir(os.getcwd())


def _initial_environment() -> dict[bytes, bytes] | os._Environ[str]:
    """The environment this process was started with: Python's start-up may have added LC_CTYPE (PEP 538 locale
    coercion, which -I does not turn off), and the step must get exactly what the runner gave it."""
    try:
        with open("/proc/self/environ", "rb") as fh:
            block = fh.read()
    except OSError:
        return os.environ
    return dict(item.split(b"=", 1) for item in block.split(b"\0") if b"=" in item)


def main(argv: list[str]) -> None:
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        sys.stderr.write("usage: cilock.py PATH... -- ARGV...\n")
        os._exit(2)
    split = argv.index("--")
    paths, command = argv[:split], argv[split + 1:]
    try:
        lock_read_only(paths)
    except OSError as exc:
        sys.stderr.write(f"runnerlib: refused: could not make {', '.join(paths)} read-only for this step ({exc})\n")
        os._exit(REFUSED)
    try:
        os.execvpe(command[0], command, _initial_environment())
    except OSError as exc:
        sys.stderr.write(f"runnerlib: {command[0]}: {exc.strerror}\n")
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


def wrap(command: list[str], paths: list[str]) -> list[str]:
    """`command` run through this trampoline with `paths` read-only."""
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), *paths, "--", *command]


if __name__ == "__main__":
    main(sys.argv[1:])
