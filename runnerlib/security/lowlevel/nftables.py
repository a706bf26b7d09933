"""libnftables (Debian package libnftables1, a dependency of nftables) through ctypes: load once, run a transaction.

In-process rather than the `nft` program: a step process holds CAP_NET_ADMIN of its own namespace only as
itself (an exec'd nft would lose it as a non-zero uid of a user namespace), and it saves an exec per step.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
import struct
from typing import Any


@functools.lru_cache(maxsize=1)
def library() -> Any:
    """The loaded library, or None when it is not installed. Loaded once in the fork server (`preload`), so
    forked steps find it mapped."""
    try:
        lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    return lib


def preload() -> None:
    """Load libnftables now (the fork server calls this once; a missing library is not an error here)."""
    library()


class Session:
    """One libnftables context kept open: its netlink socket is what a table with `flags owner` belongs to
    (the kernel removes such a table when the socket closes: at `close()`, or when this process ends however
    it ends, SIGKILL included), and only this socket may change that table."""

    def __init__(self) -> None:
        lib = library()
        if lib is None:
            raise OSError(errno.ENOENT, "libnftables.so.1 is not installed (Debian package nftables)")
        self._lib = lib
        before = _socket_fds()
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise OSError(errno.ENOMEM, "nft_ctx_new failed")
        # libmnl opens its netlink socket inheritable: a program the process execs later (a step started
        # without close_fds) would keep an owned table alive after the process ends.
        for fd in _socket_fds() - before:
            os.set_inheritable(fd, False)
        lib.nft_ctx_buffer_error(self._ctx)
        lib.nft_ctx_buffer_output(self._ctx)

    def run(self, text: str, *, dry_run: bool = False) -> str:
        """Apply a transaction (nft syntax); its output (for `list` commands). `dry_run`: the kernel checks it
        (rights included) and nothing is changed. OSError naming the first error line if refused."""
        if not self._ctx:
            raise OSError(errno.EBADF, "nftables session closed")
        lib = self._lib
        lib.nft_ctx_set_dry_run(self._ctx, dry_run)
        try:
            if lib.nft_run_cmd_from_buffer(self._ctx, text.encode()) != 0:
                first = ((lib.nft_ctx_get_error_buffer(self._ctx) or b"?").decode(errors="replace").strip()
                         .splitlines() or ["?"])[0]
                raise OSError(errno.EPERM, first)
            return (lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
        finally:
            lib.nft_ctx_set_dry_run(self._ctx, False)

    def close(self) -> None:
        """Free the context (and with it the tables this session owns)."""
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


def _socket_fds() -> set[int]:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                found.add(int(name))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, another thread's)
    return found


def run(text: str, *, dry_run: bool = False) -> str:
    """Apply an nftables transaction (nft syntax) in this process's network namespace, in a context of its own
    (tables it makes with `flags owner` vanish at once: use a Session for those); its output; OSError if
    refused."""
    session = Session()
    try:
        return session.run(text, dry_run=dry_run)
    finally:
        session.close()


# --- a prepared transaction, sent as raw nfnetlink (no libnftables in the step) -----------------------------
#
# Why by hand: an unprivileged runner's untrusted step with `full` network sets up one fixed ruleset in its
# own network namespace, per step. Through libnftables that costs a context (config files read, a cache of
# five netlink dumps), a parse and an evaluation: about 1.8 ms of the step's start, and a heap twice the size
# in the fork server (so more to copy at every fork). The kernel reads the same few messages whatever wrote
# them; these are byte for byte what libnftables 1.0.6 sends for `redirect_ruleset`'s text (checked against
# it in tests/sandbox/test_sandbox_network_forwarder.py), with an acknowledgement asked for each.

_NLA_F_NESTED = 0x8000
_NFNL_SUBSYS_NFTABLES = 10
_NFT_NEWTABLE, _NFT_NEWCHAIN, _NFT_NEWRULE = 0, 3, 6
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_CREATE, _NLM_F_APPEND = 0x1, 0x4, 0x400, 0x800
_NFPROTO = {"ip": 2, "ip6": 10}


def _attr(kind: int, data: bytes) -> bytes:
    body = struct.pack("HH", 4 + len(data), kind) + data
    return body + b"\0" * (-len(body) % 4)


def _nested(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | _NLA_F_NESTED, b"".join(attrs))


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack(">i" if value < 0 else ">I", value))


def _str(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _expr(name: str, *attrs: bytes) -> bytes:
    return _nested(1, _str(1, name), _nested(2, *attrs))  # NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA }


def _message(kind: int, flags: int, seq: int, family: int, payload: bytes) -> bytes:
    # nlmsghdr, then nfgenmsg: family, version 0, res_id (big-endian)
    body = struct.pack("BBH", family, 0, socket.htons(_NFNL_SUBSYS_NFTABLES if kind >= 0x10 and kind < 0x20
                                                      else 0)) + payload
    return struct.pack("IHHII", 16 + len(body), kind, flags, seq, 0) + body


TABLE = "runnerlib"
_PORT_PLACEHOLDER = 0xFFFF


def redirect_ruleset(family: str, port: int) -> str:
    """The same ruleset in nft syntax (what `redirect_batch` encodes; for reading and for the test)."""
    lo_net = "127.0.0.0/8" if family == "ip" else "::1"
    return (f"add table {family} {TABLE}\n"
            f"add chain {family} {TABLE} out {{ type nat hook output priority -100; policy accept; }}\n"
            f"add rule {family} {TABLE} out {family} daddr != {lo_net} meta l4proto tcp redirect to :{port}\n")


@functools.lru_cache(maxsize=2)
def _family_messages(family: str) -> tuple[bytes, int]:
    """Table, chain and rule for one family, with the port as a placeholder; and the placeholder's offset.
    Made once (the fork server makes them before forking steps: `prepare`)."""
    nfproto = _NFPROTO[family]
    table = _message(0xA00 | _NFT_NEWTABLE, _NLM_F_REQUEST | _NLM_F_ACK, 1, nfproto,
                     _str(1, TABLE) + _u32(2, 0))  # NFTA_TABLE_NAME, NFTA_TABLE_FLAGS
    chain = _message(0xA00 | _NFT_NEWCHAIN, _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE, 2, nfproto,
                     _str(1, TABLE) + _str(3, "out")  # NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME
                     + _str(7, "nat") + _u32(5, 1)  # NFTA_CHAIN_TYPE, NFTA_CHAIN_POLICY: NF_ACCEPT
                     + _nested(4, _u32(1, 3), _u32(2, -100)))  # NFTA_CHAIN_HOOK: NF_INET_LOCAL_OUT, priority
    if family == "ip":  # ip daddr != 127.0.0.0/8: the first byte of the destination (offset 16) is not 127
        offset, length, value = 16, 1, b"\x7f"
    else:  # ip6 daddr != ::1 (offset 24)
        offset, length, value = 24, 16, socket.inet_pton(socket.AF_INET6, "::1")
    reg1 = _u32(1, 1)  # NFT_REG_1, as a destination (DREG) and as a source (SREG) alike: attribute 1
    exprs = _nested(4,  # NFTA_RULE_EXPRESSIONS
                    # payload: DREG, BASE network header, OFFSET, LEN
                    _expr("payload", reg1, _u32(2, 1), _u32(3, offset), _u32(4, length)),
                    _expr("cmp", reg1, _u32(2, 1), _nested(3, _attr(1, value))),  # SREG, OP neq, DATA
                    _expr("meta", _u32(2, 16), reg1),  # KEY l4proto, DREG
                    _expr("cmp", reg1, _u32(2, 0), _nested(3, _attr(1, b"\x06"))),  # eq IPPROTO_TCP
                    _expr("immediate", reg1, _nested(2, _attr(1, struct.pack(">H", _PORT_PLACEHOLDER)))),
                    _expr("redir", reg1, _u32(3, 2)))  # REG_PROTO_MIN, FLAGS: NF_NAT_RANGE_PROTO_SPECIFIED
    rule = _message(0xA00 | _NFT_NEWRULE, _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_APPEND, 3, nfproto,
                    _str(1, TABLE) + _str(2, "out") + exprs)  # NFTA_RULE_TABLE, NFTA_RULE_CHAIN
    messages = table + chain + rule
    # The placeholder is the immediate's value: the only 0xffff (big-endian) after a 6-byte NFTA_DATA_VALUE.
    marker = struct.pack("HH", 6, 1) + struct.pack(">H", _PORT_PLACEHOLDER)
    at = messages.index(marker) + 4
    return messages, at


def prepare() -> None:
    """Make the messages now (the fork server calls this once, so that a forked step only copies bytes)."""
    for family in _NFPROTO:
        _family_messages(family)


def redirect_batch(ports: dict[str, int]) -> bytes:
    """One nfnetlink batch: for each family ("ip", "ip6") a table `runnerlib` with a nat output chain that
    redirects every TCP connection not to loopback to `ports[family]` (see `redirect_ruleset`)."""
    parts = [_message(0x10, _NLM_F_REQUEST, 0, 0, b"")]  # NFNL_MSG_BATCH_BEGIN
    for family, port in ports.items():
        messages, at = _family_messages(family)
        buf = bytearray(messages)
        struct.pack_into(">H", buf, at, port)
        parts.append(bytes(buf))
    parts.append(_message(0x11, _NLM_F_REQUEST, 0, 0, b""))  # NFNL_MSG_BATCH_END
    return b"".join(parts)


def send_batch(batch: bytes) -> None:
    """Apply a prepared batch in this process's network namespace (needs CAP_NET_ADMIN there); every message
    asks for an acknowledgement, and the first error is raised as OSError."""
    expected = sum(1 for kind, flags in _kinds(batch) if flags & _NLM_F_ACK)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12) as nl:  # NETLINK_NETFILTER
        nl.send(batch)
        while expected:
            reply = nl.recv(65536)
            offset = 0
            while offset + 20 <= len(reply):
                length, kind = struct.unpack_from("IH", reply, offset)
                if kind == 2:  # NLMSG_ERROR: an acknowledgement when the code is 0
                    (code,) = struct.unpack_from("i", reply, offset + 16)
                    if code:
                        raise OSError(-code, f"nftables refused the redirect: {os.strerror(-code)}")
                    expected -= 1
                if length < 16:
                    raise OSError(errno.EPROTO, "malformed nfnetlink reply")
                offset += (length + 3) & ~3


def _kinds(batch: bytes) -> list[tuple[int, int]]:
    out, offset = [], 0
    while offset + 16 <= len(batch):
        length, kind, flags = struct.unpack_from("IHH", batch, offset)
        out.append((kind, flags))
        offset += (length + 3) & ~3
    return out
