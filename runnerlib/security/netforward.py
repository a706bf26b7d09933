"""The step-side half of the network policy: the step's own network namespace and the runner-side forwarder.

The step's supervisor forks the forwarder before the step (`start_forwarder`), so it stays in the runner's
namespace. The step process, before it drops privileges (`enter_network(request, channel)`, the request made
by `runnerlib.security.network.plan_network`), moves into a new network namespace (and a user namespace when
the runner is unprivileged), brings lo up, adds the plan's addresses and listeners (and, for `full` without a
host rule, local default routes and an nftables redirect of every TCP connection), and hands the sockets over.
The forwarder only ever connects to the plan's targets, or for a redirected connection to its original
destination when that is not a metadata address; it exits when the step's main process exits. It is two
processes, both named rl-netforward: a watcher and, beneath it, the relay (forked at the step's first
connection or DNS query). If the relay ends first (killed,
out of memory, a bug), the watcher writes one line naming the cause on the step's stderr and stops the step
(SIGTERM, SIGKILL 5 s later): a clear failure instead of a step dying of SIGPIPE (141) on a cut connection.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import json
import os
import select
import selectors
import signal
import socket
import struct
import tempfile
import threading
import time
from typing import Any

from runnerlib.security.lowlevel import nftables, prctl
from runnerlib.security.namespaces import FORWARDER_COMM
from runnerlib.security.network import is_metadata

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNS = 0x00020000
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 1 << 18
_SO_ORIGINAL_DST = 80  # also IP6T_SO_ORIGINAL_DST
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_libc = ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def _lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0)))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def _add_address(address: str) -> None:
    """Add a host address (/32 or /128) to lo over rtnetlink (RTM_NEWADDR); no `ip` program needed."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    raw = ip.packed

    def attr(kind: int, data: bytes) -> bytes:
        body = struct.pack("HH", 4 + len(data), kind) + data
        return body + b"\0" * (-len(body) % 4)

    payload = struct.pack("BBBBI", family, 8 * len(raw), 0, 0, socket.if_nametoindex("lo"))
    payload += attr(2, raw) + attr(1, raw)  # IFA_LOCAL, IFA_ADDRESS
    # RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE
    _netlink(struct.pack("IHHII", 16 + len(payload), 20, 0x1 | 0x4 | 0x200 | 0x400, 1, 0) + payload,
             f"adding {address} to lo")


def _netlink(msg: bytes, what: str) -> None:
    """Send one rtnetlink request and check its acknowledgement (EEXIST counts as done)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as nl:  # NETLINK_ROUTE
        nl.send(msg)
        reply = nl.recv(4096)
    (code,) = struct.unpack_from("i", reply, 16)
    if code not in (0, -errno.EEXIST):
        raise OSError(-code, f"{what}: {os.strerror(-code)}")


def _identity_map(uid: int, gid: int) -> None:
    # A non-dumpable process cannot write its own maps; the step is about to exec anyway, which resets it.
    _libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                       ("/proc/self/gid_map", f"{gid} {gid} 1")):
        with open(path, "w") as f:
            f.write(text)


def _private_hosts(text: str) -> None:
    """A mount namespace of the step's own where /etc/hosts is `text` (bind-mounted from an unlinked file)."""
    _unshare(_CLONE_NEWNS)
    if _libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"making / private: {os.strerror(err)}")
    fd, path = tempfile.mkstemp(prefix="runnerlib-hosts-")
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, 0o644)
        if _libc.mount(path.encode(), b"/etc/hosts", None, _MS_BIND, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mounting the step's /etc/hosts: {os.strerror(err)}")
    finally:
        os.close(fd)
        os.unlink(path)


def open_channel() -> tuple[int, int]:
    """(forwarder's end, step's end) of the socket over which the step hands its network to the forwarder.
    Made by the supervisor before it forks the forwarder (`start_forwarder`) and the step (`enter_network`)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return ours.detach(), theirs.detach()


def start_forwarder(channel: int) -> int:
    """In the supervisor: fork the forwarder (its pid). It stays in the runner's network namespace (and,
    unprivileged, outside the step's PID namespace: the supervisor forks it before making that); it is the
    supervisor's child, never the step's (a step that waits for all its children, an init such as tini, must
    not wait for it). Forked here rather than by the step, the
    forwarder costs the step's start one fork less, and no wait.

    The forwarder waits for the step's hand-over on `channel` (a pidfd of the step's main process, its
    stderr, the listening sockets; nothing if the step failed before: then it exits), and forks the relay
    only when the step first uses the network (a connection or a DNS query waiting on a socket: the kernel
    queues it meanwhile). It exits when the step's main process exits."""
    # Named before the fork, so that it is never seen without its name (a namespace's init counting the
    # step's leftovers would count it); the supervisor takes its own name back at once.
    with open("/proc/thread-self/comm", "rb") as f:
        own = f.read().strip().decode(errors="replace")
    prctl.set_name(FORWARDER_COMM)
    try:
        pid = os.fork()
    except OSError:
        prctl.set_name(own)
        raise
    if pid:
        prctl.set_name(own)
        return pid
    code = 0
    try:
        # Nothing of the supervisor's: the step's output and status pipes must close when it ends.
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        os.closerange(3, channel)
        os.closerange(channel + 1, 1 << 16)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        # A relay writing to a connection the peer closed gets EPIPE, not a fatal SIGPIPE.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        _forward(channel)
    except BaseException:  # noqa: BLE001 - nothing to report to; the step sees refused connections
        code = 1
    finally:
        os._exit(code)


def _forward(channel: int) -> None:
    ctl = socket.socket(fileno=channel)
    data, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 20, 1024)
    ctl.close()
    if len(data) < 4 or len(fds) < 2:
        return  # the step never got to its network (refused before): nothing to serve
    (size,) = struct.unpack_from("I", data)
    entries = json.loads(data[4:4 + size])
    step_fd, report, socks = fds[0], fds[1], fds[2:]
    if len(socks) != len(entries):
        return
    # Lazy: no relay until a socket has something waiting (most steps never use the network).
    if socks and step_fd not in select.select([step_fd, *socks], [], [])[0]:
        relay = os.fork()
        if relay == 0:
            os.close(report)
            _serve_forwards(list(zip(socks, entries, strict=True)), step_fd)
            os._exit(0)
        for fd in socks:
            os.close(fd)
        _watch(relay, step_fd, report)


def enter_network(request: dict[str, Any], channel: int) -> None:
    """In the step process, before it drops privileges: move into a new network namespace with lo up, the
    plan's addresses on lo and a listener per forward, and hand them to the forwarder over `channel` (with a
    pidfd of this process and its stderr); `channel` is closed either way."""
    ours = socket.socket(fileno=channel)
    forwards = [(str(a), int(p)) for a, p in request.get("forwards", [])]
    try:
        try:
            # Plain first: the step may already hold CAP_SYS_ADMIN in a user namespace of its own.
            _unshare(_CLONE_NEWNET)
        except PermissionError:
            if not request.get("user_ns"):
                raise
            uid, gid = os.getuid(), os.getgid()
            _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
            _identity_map(uid, gid)
        _lo_up()
        for address in request.get("addresses", []):
            _add_address(address)
        entries: list[tuple[socket.socket, dict[str, Any]]] = []
        for address, port in forwards:
            entries.append((_listener(address, port), {"kind": "tcp", "target": [address, port]}))
        if request.get("transparent"):
            entries += _transparent_setup(request)
        if request.get("hosts"):
            _private_hosts(request["hosts"])
        header = json.dumps([meta for _sock, meta in entries]).encode()
        # A pidfd, not PR_SET_PDEATHSIG: the step drops to another uid, and a parent of another uid cannot
        # deliver the death signal to a root forwarder.
        me = os.pidfd_open(os.getpid())
        try:
            socket.send_fds(ours, [struct.pack("I", len(header)) + header],
                            [me, 2, *(sock.fileno() for sock, _ in entries)])
        finally:
            os.close(me)
        for sock, _meta in entries:
            sock.close()
    finally:
        ours.close()


def _watch(relay: int, step_fd: int, report: int) -> None:
    """The watcher, parent of the relay: when the relay ends before the step's main process (killed, out of
    memory, a bug), every connection through it is cut and the step would fail obscurely (exit 141: SIGPIPE
    on its next write). Say so on the step's stderr and stop the step: SIGTERM, SIGKILL 5 s later."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # the step's stderr may be gone already
    relay_fd = os.pidfd_open(relay)
    while True:
        try:
            select.select([step_fd, relay_fd], [], [])
            pid, status = os.waitpid(relay, os.WNOHANG)
            break
        except InterruptedError:
            continue
    # The relay still running: the step ended first, normally; go at once (this holds the step's stderr).
    # Ended with status 0: it ended with the step, or the step never got its network (refused before exec).
    # A relay cut off first is already dead here, even when the step ended of the cut meanwhile.
    if pid == 0 or status == 0:
        return
    how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
           else f"exit {os.waitstatus_to_exitcode(status)}")
    message = (f"runnerlib: this step's network forwarder ended early ({how}): its connections through it are "
               "cut; stopping the step\n")
    try:
        os.write(report, message.encode())
    except OSError:
        pass
    if select.select([step_fd], [], [], 0)[0]:
        return  # the step has ended already
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            signal.pidfd_send_signal(step_fd, sig)
        except ProcessLookupError:
            return
        if wait and select.select([step_fd], [], [], wait)[0]:
            return


def _listener(address: str, port: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    return sock


def _add_local_default(family: int) -> None:
    """`ip route add local default dev lo` (table local) over rtnetlink: every address is local here, so a
    connection to any of them is routed to lo, where nftables redirects it to the forwarder."""
    table_local, rtprot_boot, scope_host, rtn_local = 255, 3, 254, 2
    payload = struct.pack("BBBBBBBBI", family, 0, 0, 0, table_local, rtprot_boot, scope_host, rtn_local, 0)
    payload += struct.pack("HHI", 8, 4, socket.if_nametoindex("lo"))  # RTA_OIF
    # RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
    _netlink(struct.pack("IHHII", 16 + len(payload), 24, 0x1 | 0x4 | 0x400, 1, 0) + payload, "a local route")


def _transparent_setup(request: dict[str, Any]) -> list[tuple[socket.socket, dict[str, Any]]]:
    """Inside the new namespace: local default routes, the redirecting nftables rules, and the sockets the
    forwarder serves (one transparent listener per family, one UDP socket per nameserver)."""
    entries: list[tuple[socket.socket, dict[str, Any]]] = []
    ports: dict[str, int] = {}
    for family, loop, nat in ((socket.AF_INET, "127.0.0.1", "ip"), (socket.AF_INET6, "::1", "ip6")):
        try:
            _add_local_default(family)
            sock = _listener(loop, 0)
        except OSError:
            if family == socket.AF_INET:
                raise
            continue  # no IPv6 in this kernel: IPv4 only
        ports[nat] = sock.getsockname()[1]
        entries.append((sock, {"kind": "transparent"}))
    # A prepared nfnetlink batch (nftables.redirect_ruleset's rules), not libnftables: 1.8 ms less per step.
    nftables.send_batch(nftables.redirect_batch(ports))
    for server in request.get("dns", []):
        entries.append((_listener(server, 53, socket.SOCK_DGRAM), {"kind": "dns", "target": [server, 53]}))
    return entries


def _serve_forwards(served: list[tuple[int, dict[str, Any]]], step_fd: int) -> None:
    """The relay: accept on each in-namespace socket and relay out here (to the entry's fixed target, or
    for a transparent listener to the connection's original destination unless it is a metadata address);
    exit when the step's main process exits (its pidfd becomes readable)."""
    sel = selectors.DefaultSelector()
    sel.register(step_fd, selectors.EVENT_READ, None)
    for fd, meta in served:
        sel.register(socket.socket(fileno=fd), selectors.EVENT_READ, meta)
    while True:
        for key, _ev in sel.select():
            meta = key.data
            if meta is None:
                return
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                if meta["kind"] == "dns":
                    query, peer = sock.recvfrom(65535)
                    work: tuple[Any, ...] = (_relay_dns, sock, query, peer, tuple(meta["target"]))
                else:
                    conn, _peer = sock.accept()
                    work = (_relay, conn, tuple(meta["target"]) if meta["kind"] == "tcp" else None)
            except OSError:
                time.sleep(0.05)  # out of descriptors (EMFILE): do not spin on a listener that stays readable
                continue
            if not _slots.acquire(blocking=False):
                if meta["kind"] != "dns":
                    work[1].close()  # over the cap: refused, as by a full backlog
                continue
            threading.Thread(target=_in_slot, args=work, daemon=True).start()


# At most this many connections (and DNS queries) in flight per step: each costs the runner-side forwarder a
# thread and two descriptors, and a step opening thousands must not exhaust the runner's process.
MAX_IN_FLIGHT = 256
_slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)


def _in_slot(func: Any, *args: Any) -> None:
    try:
        func(*args)
    finally:
        _slots.release()


def original_destination(conn: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was going (conntrack's SO_ORIGINAL_DST)."""
    if conn.family == socket.AF_INET:
        raw = conn.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack_from(">H", raw, 2)[0]
    raw = conn.getsockopt(socket.IPPROTO_IPV6, _SO_ORIGINAL_DST, 28)
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack_from(">H", raw, 2)[0]


def _relay_dns(sock: socket.socket, query: bytes, peer: Any, server: tuple[str, int]) -> None:
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as up:
            up.settimeout(5)
            up.sendto(query, server)
            reply, _ = up.recvfrom(65535)
        sock.sendto(reply, peer)
    except OSError:
        pass  # the step's resolver times out and retries, as with a lost datagram


def _relay(conn: socket.socket, target: tuple[str, int] | None) -> None:
    try:
        if target is None:  # transparent: the metadata check is made on the forwarder's own copy
            target = original_destination(conn)
            if is_metadata(target[0]):
                raise OSError(errno.EACCES, "metadata address")
        upstream = socket.create_connection(target, timeout=30)
    except OSError:
        conn.close()  # the step sees the connection closed, as if refused
        return
    upstream.settimeout(None)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
    back.start()
    pump(conn, upstream)
    back.join()
    conn.close()
    upstream.close()
