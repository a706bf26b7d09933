"""A seccomp deny-list for untrusted steps, built by hand as classic BPF and loaded with prctl(PR_SET_SECCOMP).

Hand-written because libseccomp's Python binding is not on PyPI (it ships with the C library's sources) and
the filter is small: an architecture check, a list of denied syscalls, and three argument checks.

The filter, in order:
  1. the architecture must be the one the table was built for; anything else (a 32-bit `int 0x80` on
     x86_64, for instance) hits the default action KILL_PROCESS. It is never ALLOW: a bad-architecture
     action of ALLOW let a 32-bit unshare through.
  2. on x86_64, syscall numbers with the x32 bit set are refused (they would bypass the table).
  3. ptrace, process_vm_readv/writev, mount and the new mount API, umount2, unshare, setns, keyctl, add_key,
     request_key, bpf, perf_event_open, io_uring_*, and module/kexec calls -> EPERM.
  4. clone with any namespace flag -> EPERM; clone3 -> ENOSYS (its flags live in memory the filter cannot
     read; libc falls back to clone on ENOSYS).
  5. ioctl TIOCSTI / TIOCLINUX (typing into the controlling terminal) -> EPERM.
  6. optionally socket(AF_INET / AF_INET6 / AF_PACKET) -> EPERM (network denial that also covers UDP).
Everything else is allowed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

# BPF opcodes (linux/filter.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JSET_K = 0x45
_RET_K = 0x06

RET_KILL_PROCESS = 0x80000000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000

# struct seccomp_data offsets: nr, arch, instruction_pointer, args[6] (little-endian: low word first)
_OFF_NR = 0
_OFF_ARCH = 4


def _arg_low(index: int) -> int:
    return 16 + 8 * index


# Namespace flags accepted by clone(); CLONE_NEWTIME (0x80) is left out because in clone() the low byte
# is the exit signal.
CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
AF_INET, AF_INET6, AF_PACKET = 2, 10, 17

# Checked against the kernel's uapi headers (asm/unistd_64.h and asm-generic/unistd.h).
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165, "umount2": 166,
        "unshare": 272, "setns": 308, "clone": 56, "clone3": 435, "keyctl": 250, "add_key": 248,
        "request_key": 249, "bpf": 321, "perf_event_open": 298, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "ioctl": 16, "socket": 41, "pivot_root": 155,
        "chroot": 161, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442, "pidfd_getfd": 438, "process_madvise": 440, "userfaultfd": 323,
        "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
        "delete_module": 176,
    },
    "aarch64": {
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "mount": 40, "umount2": 39,
        "unshare": 97, "setns": 268, "clone": 220, "clone3": 435, "keyctl": 219, "add_key": 217,
        "request_key": 218, "bpf": 280, "perf_event_open": 241, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "ioctl": 29, "socket": 198, "pivot_root": 41,
        "chroot": 51, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442, "pidfd_getfd": 438, "process_madvise": 440, "userfaultfd": 282,
        "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
        "delete_module": 106,
    },
}
AUDIT_ARCH = {"x86_64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64}

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "unshare", "setns", "keyctl",
    "add_key", "request_key", "bpf", "perf_event_open", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount",
    "fspick", "mount_setattr", "pidfd_getfd", "process_madvise", "userfaultfd", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module",
)


def native_arch() -> str:
    """'x86_64' or 'aarch64'; raises OSError for an architecture without a table here."""
    machine = platform.machine()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if machine not in SYSCALLS:
        raise OSError(errno.ENOTSUP, f"no seccomp syscall table for architecture {machine!r}")
    return machine


def _stmt(code: int, k: int) -> tuple[int, int, int, int]:
    return (code, 0, 0, k)


def _jump(code: int, k: int, jt: int, jf: int) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


def build_filter(arch: str | None = None, *, deny_network: bool = False) -> bytes:
    """The deny-list program as packed `struct sock_filter` entries, ready for `load_filter`."""
    arch = arch or native_arch()
    table = SYSCALLS[arch]
    eperm = RET_ERRNO | errno.EPERM
    prog: list[tuple[int, int, int, int]] = [
        _stmt(_LD_W_ABS, _OFF_ARCH),
        _jump(_JEQ_K, AUDIT_ARCH[arch], 1, 0),
        _stmt(_RET_K, RET_KILL_PROCESS),
        _stmt(_LD_W_ABS, _OFF_NR),
    ]
    if arch == "x86_64":
        prog += [_jump(_JSET_K, X32_SYSCALL_BIT, 0, 1), _stmt(_RET_K, eperm)]
    for name in DENIED:
        prog += [_jump(_JEQ_K, table[name], 0, 1), _stmt(_RET_K, eperm)]
    prog += [_jump(_JEQ_K, table["clone3"], 0, 1), _stmt(_RET_K, RET_ERRNO | errno.ENOSYS)]

    def arg_block(nr: int, arg: int, *, mask: int = 0, values: tuple[int, ...] = ()) -> list:
        # [JEQ nr] [LD arg] ([JSET mask] | [JEQ v]...) [RET EPERM] [RET ALLOW] -- A holds nr again after.
        tests = [_jump(_JSET_K, mask, 0, 0)] if mask else [_jump(_JEQ_K, v, 0, 0) for v in values]
        n = len(tests)
        block = [_jump(_JEQ_K, nr, 0, n + 3), _stmt(_LD_W_ABS, _arg_low(arg))]
        for i, (code, _jt, _jf, k) in enumerate(tests):
            # match -> jump to RET EPERM (just after the tests); no match -> next test, last one to RET ALLOW
            to_eperm = n - 1 - i
            block.append((code, to_eperm, 0 if i < n - 1 else 1, k))
        block += [_stmt(_RET_K, eperm), _stmt(_RET_K, RET_ALLOW)]
        return block

    prog += arg_block(table["clone"], 0, mask=CLONE_NS_FLAGS)
    prog += arg_block(table["ioctl"], 1, values=(TIOCSTI, TIOCLINUX))
    if deny_network:
        prog += arg_block(table["socket"], 0, values=(AF_INET, AF_INET6, AF_PACKET))
    prog.append(_stmt(_RET_K, RET_ALLOW))
    if len(prog) > 4096:
        raise ValueError("seccomp program too long")
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _prctl(option: int, arg2: int, arg3: int = 0) -> None:
    if _libc.prctl(option, arg2, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: execve never grants privileges again (setuid bits, file capabilities)."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


class Filter:
    """A program ready to load: its sock_fprog made once (the fork server makes it before forking, so that
    a step makes no ctypes objects between fork and exec: each costs copy-on-write faults there)."""

    def __init__(self, program: bytes) -> None:
        self._buf = ctypes.create_string_buffer(program, len(program))
        self._fprog = _SockFprog(len(program) // 8, ctypes.cast(self._buf, ctypes.c_void_p))
        self._address = ctypes.addressof(self._fprog)

    def load(self) -> None:
        """Install the program on the calling thread (needs no_new_privs or CAP_SYS_ADMIN). Irreversible."""
        _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._address)


def load_filter(program: bytes) -> None:
    """Install `program` on the calling thread (needs no_new_privs or CAP_SYS_ADMIN). Irreversible."""
    Filter(program).load()
