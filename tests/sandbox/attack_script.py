"""Attacks run INSIDE a step (copied into the workspace's ci/ by the tests; run by /usr/bin/python3 -I).

Usage: attack_script.py NAME [ARGS...]. Prints one line "SUCCEEDED ..." (exit 0) or "BLOCKED <why>"
(exit 3). Standard library only: the step may not reach the project's virtual environment.
"""

import ctypes
import os
import signal
import socket
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def sys_call(nr, *args):
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if ret == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return ret


X86 = os.uname().machine == "x86_64"
NR = {"ptrace": 101 if X86 else 117, "clone": 56 if X86 else 220, "clone3": 435,
      "unshare": 272 if X86 else 97, "mount": 165 if X86 else 40}
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000


def write_file(path):
    with open(path, "w") as f:
        f.write("owned")


def run(name, args):
    if name == "write":
        write_file(args[0])
    elif name == "append":
        with open(args[0], "a") as f:
            f.write("owned")
    elif name == "create":
        write_file(args[0])
    elif name == "unlink":
        os.unlink(args[0])
    elif name == "rename":
        os.rename(args[0], args[1])
    elif name == "truncate":
        os.truncate(args[0], 0)
    elif name == "mkdir":
        os.mkdir(args[0])
    elif name == "hardlink_write":
        os.link(args[0], args[1])
        write_file(args[1])
    elif name == "symlink_write":
        if os.path.lexists(args[1]):
            os.unlink(args[1])
        os.symlink(args[0], args[1])
        write_file(args[1])
    elif name == "chmod":
        os.chmod(args[0], 0o777)
    elif name == "read_proc":
        pid, what, needle = args
        with open(f"/proc/{pid}/{what}", "rb") as f:
            data = f.read()
        if needle.encode() not in data:
            return "BLOCKED readable but the secret is not there"
    elif name == "read_mem":
        pid = int(args[0])
        with open(f"/proc/{pid}/maps") as f:
            start = int(f.readline().split("-")[0], 16)
        with open(f"/proc/{pid}/mem", "rb") as f:
            f.seek(start)
            f.read(16)
    elif name == "signal":
        os.kill(int(args[0]), signal.SIGCONT)
    elif name == "ptrace_attach":
        sys_call(NR["ptrace"], 16, int(args[0]), 0, 0)  # PTRACE_ATTACH
    elif name == "ptrace_child":
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        try:
            sys_call(NR["ptrace"], 16, pid, 0, 0)
        finally:
            os.kill(pid, signal.SIGKILL)
    elif name == "setuid_binary":
        import subprocess
        out = subprocess.run([args[0], "-u"], capture_output=True, text=True).stdout.strip()
        if out != "0":
            return f"BLOCKED euid stayed {out}"
    elif name == "unshare_user":
        sys_call(NR["unshare"], CLONE_NEWUSER)
    elif name == "mount_in_userns":
        sys_call(NR["unshare"], CLONE_NEWUSER | CLONE_NEWNS)
        libc.mount.argtypes = [ctypes.c_char_p] * 4 + [ctypes.c_ulong, ctypes.c_void_p]
        if libc.mount(b"none", args[0].encode(), b"tmpfs", None, 0, None) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    elif name == "clone_newuser":
        pid = sys_call(NR["clone"], CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    elif name == "clone3":
        try:
            sys_call(NR["clone3"], 0, 0)
        except OSError as exc:
            return f"ERRNO {exc.errno}"
    elif name == "tiocsti":
        import fcntl
        import termios
        master, slave_fd = os.openpty()
        slave = os.ttyname(slave_fd)
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                fd = os.open(slave, os.O_RDWR)  # becomes the controlling terminal
                fcntl.ioctl(fd, termios.TIOCSTI, b"x")
                os._exit(0)
            except OSError as exc:
                os._exit(10 + (exc.errno or 0) % 100)
        _, status = os.waitpid(pid, 0)
        code = os.WEXITSTATUS(status)
        if code:
            raise OSError(code - 10, "TIOCSTI failed")
    elif name == "connect_unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = args[0]
        s.connect("\0" + addr[1:] if addr.startswith("@") else addr)
    elif name == "connect_tcp":
        socket.create_connection(("127.0.0.1", int(args[0])), timeout=5).close()
    elif name == "udp_socket":
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", int(args[0])))
    elif name == "dump_env":
        with open(args[0], "wb") as f:
            with open("/proc/self/environ", "rb") as e:
                f.write(e.read())
    else:
        raise SystemExit(f"unknown attack {name}")
    return "SUCCEEDED"


if __name__ == "__main__":
    try:
        verdict = run(sys.argv[1], sys.argv[2:])
    except OSError as exc:
        verdict = f"BLOCKED errno {exc.errno} {exc.strerror}"
    print(verdict)
    sys.exit(0 if verdict.startswith(("SUCCEEDED", "ERRNO")) else 3)
