"""Network policy per step: `full | none | loopback | [host:port, ...]`, planned here, set up in the step.

Invariant, whatever the policy: an untrusted step never reaches a cloud metadata address (169.254.0.0/16,
fd00:ec2::254). Each policy maps to one mechanism, chosen for what the kernel enforces without trusting the
step (`plan_network` refuses, naming what is missing, when the mechanism is not available here):

  none      seccomp refuses socket(AF_INET/AF_INET6/AF_PACKET) and Landlock (ABI >= 4) denies TCP bind and
            connect: the same kernel-side denial as `deny_network`, no namespace needed, no per-spawn cost.
  loopback  a new, empty network namespace (lo up: 127.0.0.1 and ::1 are the step's own), plus a forwarder
            in the runner's namespace: for each TCP listener on the runner's 127.0.0.1 / ::1 when the step
            starts (sock_diag, /proc/net/tcp{,6} as fallback), a socket listens on the same address and port inside the
            namespace and each connection is relayed to the runner-side one. Nothing else has a route.
  [h:p,..]  the same namespace; each target's addresses (resolved when the step starts) are added to the
            namespace's lo with a listener on the port, relayed to the real host:port. Other ports and
            addresses: connection refused / no route.
  full      root runner: the runner's own network; metadata addresses are cut off by an nftables rule on
            the sandbox uid (`meta skuid`, output hook), installed once per runner. Otherwise (the step
            shares an unprivileged runner's uid, so no owner match can single it out): its own namespace
            where nftables redirects every TCP connection to the forwarder, which connects to the original
            destination (conntrack) unless it is a metadata address; DNS relayed. Neither possible: explicit
            `full` is refused, the implicit default runs with the gap logged (see DEFAULT_POLICY).

The namespace is created in the step process before it drops privileges: as root, unshare(CLONE_NEWNET);
unprivileged, unshare(CLONE_NEWUSER | CLONE_NEWNET) with an identity uid/gid map, so the step keeps no
capability after execve (its uid is not 0 in the namespace). The forwarder is forked before the unshare, so
it stays in the runner's namespace; it receives the listening sockets over a socketpair, exits with the
step's main process (a pidfd) and only ever connects to the targets in the plan (or, transparent, to a
connection's original destination that is not a metadata address).

Example::

    policy = parse_network(["db.internal:5432", "[::1]:6379"])
    plan = plan_network(policy, trusted=False, is_root=True, sandbox_uid=65534, user_namespaces=True)
    print(plan.describe())
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import ipaddress
import json
import os
import re
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

MODES = ("full", "none", "loopback")
# What an untrusted step gets when neither its job file nor the command line names a policy. `full`, like
# GitHub's and GitLab's runners: `npm install` and `pip install` need the registries. Metadata stays cut off.
DEFAULT_POLICY = "full"

METADATA_NETWORKS = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fd00:ec2::254/128"))
NFT_TABLE = "runnerlib_metadata"
MAX_TARGETS = 64

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$")


class NetworkSpecError(ValueError):
    """A network policy that cannot be read; the message names the field and the rule."""

    def __init__(self, rule: str, field_name: str = "network") -> None:
        super().__init__(f"{field_name}: {rule}")
        self.rule = rule


@dataclass(frozen=True, order=True)
class Target:
    """One allowed TCP destination: a host name or an IP literal, and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class NetworkPolicy:
    """A step's network policy. `mode` is full, none, loopback or allow (with `targets`)."""

    mode: str = DEFAULT_POLICY
    targets: tuple[Target, ...] = ()
    # False when nobody asked for it (the default for untrusted steps): decides only whether an unenforceable
    # metadata cut-off under `full` refuses the step or is logged as a gap.
    explicit: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES + ("allow",):
            raise NetworkSpecError(f"unknown policy {self.mode!r} (full, none, loopback or a list of host:port)")
        if (self.mode == "allow") != bool(self.targets):
            raise NetworkSpecError("a list of host:port targets goes with mode 'allow', and only there")

    def __str__(self) -> str:
        return self.mode if self.mode != "allow" else "[" + ", ".join(map(str, self.targets)) + "]"


def is_metadata(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an IP address is a cloud metadata (or any IPv4 link-local) address, IPv4-mapped ones too."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in METADATA_NETWORKS if net.version == ip.version)


def _parse_target(item: Any) -> Target:
    if not isinstance(item, str):
        raise NetworkSpecError(f"{item!r}: each target is a 'host:port' string")
    text = item.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})", text) or re.fullmatch(r"([^:\[\]\s]+):([0-9]{1,5})", text)
    if not m:
        raise NetworkSpecError(f"{item!r}: a target is host:port (IPv6 as [addr]:port)")
    host, port = m.group(1), int(m.group(2))
    if not 1 <= port <= 65535:
        raise NetworkSpecError(f"{item!r}: port must be 1-65535")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME_RE.fullmatch(host) or host.replace(".", "").isdigit():
            raise NetworkSpecError(f"{item!r}: {host!r} is neither an IP address nor a host name") from None
        return Target(host.lower().rstrip("."), port)
    if is_metadata(ip):
        raise NetworkSpecError(f"{item!r}: cloud metadata and link-local addresses are never reachable")
    if ip.is_unspecified or ip.is_multicast:
        raise NetworkSpecError(f"{item!r}: not a destination address")
    return Target(str(ip), port)


def parse_network(value: Any, *, field_name: str = "network") -> NetworkPolicy:
    """Read a policy from a job file or the command line.

    Accepted: "full", "none", "loopback", a list of "host:port" strings, or the list written on one line
    ("a:1,b:2" or "[a:1, b:2]", for --network). Raises NetworkSpecError naming `field_name` and the rule.
    """
    try:
        if isinstance(value, NetworkPolicy):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in MODES:
                return NetworkPolicy(text.lower())
            if text.startswith("[") and text.endswith("]") and not re.fullmatch(r"\[[0-9A-Fa-f:.]+\]:\d+", text):
                text = text[1:-1]
            items: list[Any] = [p for p in (s.strip() for s in text.split(",")) if p]
            if not items or (len(items) == 1 and ":" not in items[0]):
                raise NetworkSpecError(f"{value!r}: must be full, none, loopback or a list of host:port")
        elif isinstance(value, list | tuple):
            items = list(value)
            if not items:
                raise NetworkSpecError("an empty list allows nothing: write `none`")
        else:
            raise NetworkSpecError("must be full, none, loopback or a list of host:port")
        if len(items) > MAX_TARGETS:
            raise NetworkSpecError(f"at most {MAX_TARGETS} targets")
        targets = tuple(sorted(set(_parse_target(i) for i in items)))
        return NetworkPolicy("allow", targets)
    except NetworkSpecError as exc:
        raise NetworkSpecError(exc.rule, field_name) from None


def check_spec(value: Any) -> Any:
    """`value` unchanged when it is a readable policy (or None); else ValueError with the rule (for pydantic)."""
    if value is not None:
        try:
            parse_network(value)
        except NetworkSpecError as exc:
            raise ValueError(exc.rule) from None
    return value


def default_policy() -> NetworkPolicy:
    """The policy of an untrusted step that names none (see DEFAULT_POLICY)."""
    return NetworkPolicy(DEFAULT_POLICY, explicit=False)


# --- planning (in the runner) -------------------------------------------------------------------------------


@dataclass
class NetworkPlan:
    """A policy made concrete: what the step process sets up (`request`) and the mechanism, in words."""

    policy: NetworkPolicy
    mechanism: str
    request: dict[str, Any] | None = None  # for the fork server; None: nothing to do in the step
    deny_sockets: bool = False  # `none`: seccomp + Landlock denial, applied by the sandbox plan
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"network {self.policy}: {self.mechanism}"


def _hex_addr(text: str, family: int) -> str:
    raw = bytes.fromhex(text)
    if family == socket.AF_INET:
        return socket.inet_ntop(family, raw[::-1])
    # /proc/net/tcp6 prints four host-order 32-bit words
    return socket.inet_ntop(family, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def _tcp_listeners_diag() -> list[tuple[str, int]]:
    """Every listening TCP socket (address, port) of this namespace, over NETLINK_SOCK_DIAG.

    Why not /proc/net/tcp alone: reading it walks the whole established-connection table (7 ms on a busy
    machine, per step); a sock_diag dump asked for LISTEN sockets only walks the listening table.
    """
    found: list[tuple[str, int]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4) as nl:  # NETLINK_SOCK_DIAG
        for family in (socket.AF_INET, socket.AF_INET6):
            # inet_diag_req_v2: family, protocol, ext, pad, states (1 << TCP_LISTEN), an empty sockid
            req = struct.pack("BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << 10) + b"\0" * 48
            # SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP
            nl.send(struct.pack("IHHII", 16 + len(req), 20, 0x1 | 0x300, family, 0) + req)
            done = False
            while not done:
                data = nl.recv(65536)
                offset = 0
                while offset + 16 <= len(data):
                    length, kind = struct.unpack_from("IH", data, offset)
                    if kind == 3:  # NLMSG_DONE
                        done = True
                        break
                    if kind == 2:  # NLMSG_ERROR
                        (code,) = struct.unpack_from("i", data, offset + 16)
                        raise OSError(-code, "sock_diag dump refused")
                    body = offset + 16  # inet_diag_msg: 4 bytes, then the sockid: sport, dport, src[16]
                    (port,) = struct.unpack_from(">H", data, body + 4)
                    raw = data[body + 8: body + 8 + (4 if family == socket.AF_INET else 16)]
                    found.append((socket.inet_ntop(family, raw), port))
                    offset += (length + 3) & ~3
                    if length < 16:
                        raise OSError(errno.EPROTO, "malformed sock_diag reply")
    return found


def _tcp_listeners_proc(proc_net: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(os.path.join(proc_net, name)) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 4 or cols[3] != "0A":  # TCP_LISTEN
                continue
            addr_hex, port_hex = cols[1].split(":")
            found.append((_hex_addr(addr_hex, family), int(port_hex, 16)))
    return found


def loopback_listeners(proc_net: str | None = None) -> list[tuple[str, int]]:
    """(address, port) of every TCP listener on this namespace's loopback (wildcard ones as 127.0.0.1/::1).

    Read over sock_diag, or from `proc_net`/tcp{,6} when given or when sock_diag is unavailable.
    """
    raw: list[tuple[str, int]] | None = None
    if proc_net is None:
        try:
            raw = _tcp_listeners_diag()
        except OSError:
            proc_net = "/proc/net"
    if raw is None:
        raw = _tcp_listeners_proc(proc_net or "/proc/net")
    found: set[tuple[str, int]] = set()
    for text, port in raw:
        ip = ipaddress.ip_address(text)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_unspecified:
            found.add(("127.0.0.1" if ip.version == 4 else "::1", port))
            if ip.version == 6:
                found.add(("127.0.0.1", port))  # a dual-stack listener takes IPv4 too
        elif ip.is_loopback:
            found.add((str(ip), port))
    return sorted(found)


def _resolve(target: Target) -> list[str]:
    try:
        ipaddress.ip_address(target.host)
        return [target.host]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NetworkSpecError(f"{target}: cannot resolve {target.host!r} ({exc.strerror})") from None
    addrs = sorted({str(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos})
    bad = [a for a in addrs if is_metadata(a) or ipaddress.ip_address(a).is_unspecified]
    if bad:
        raise NetworkSpecError(f"{target}: resolves to {bad[0]}, a metadata/link-local address: never reachable")
    return addrs


_NETNS_PROBE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x40000000) != 0 and (os.geteuid() == 0 or libc.unshare(0x50000000) != 0):
    sys.exit(os.strerror(ctypes.get_errno()))
"""


@functools.lru_cache(maxsize=1)
def _netns_probe() -> str | None:
    # Tried for real, once per process, in a child: a container may deny unshare to root (no CAP_SYS_ADMIN,
    # Docker's seccomp profile), and /proc/sys does not say so.
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _NETNS_PROBE], capture_output=True, timeout=30,
                              env={})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot probe network namespaces: {exc}"
    if proc.returncode == 0:
        return None
    return f"creating a network namespace failed here: {proc.stderr.decode(errors='replace').strip()[-200:]}"


def netns_available(is_root: bool, user_namespaces: bool) -> str | None:
    """Why a step cannot get its own network namespace here (None when it can)."""
    if not (is_root or user_namespaces):
        return "a network namespace needs a root runner or unprivileged user namespaces (both unavailable)"
    return _netns_probe()


def mechanisms(caps: Any) -> list[tuple[str, bool, str]]:
    """(mechanism, available, what it enforces) rows for `runnerlib sandbox probe`."""
    nft = _nft()
    return [
        ("network namespace", netns_available(caps.is_root, caps.user_namespaces) is None,
         "loopback and host:port lists (own namespace + forwarder); trusted `none`"
         + ("" if caps.is_root else " (user+net namespaces)")),
        ("seccomp inet denial", bool(caps.seccomp), "network none (no AF_INET/AF_INET6/AF_PACKET sockets)"),
        ("landlock tcp (ABI>=4)", bool(caps.landlock_net), "network none (no TCP bind/connect)"),
        ("nftables owner match", bool(caps.is_root and nft), "network full: metadata addresses rejected for the "
         "sandbox uid" + ("" if caps.is_root else " (needs a root runner)") + ("" if nft else " (no `nft`)")),
        ("transparent forwarder", isinstance(_plan_transparent(NetworkPolicy("full"), caps.is_root,
                                                               caps.user_namespaces), NetworkPlan),
         "network full in the step's own namespace, metadata refused by the forwarder (unprivileged runners)"),
    ]


_nft_done: dict[int, str | None] = {}
_nft_lock = threading.Lock()


def metadata_rule(uid: int) -> str:
    """The nftables transaction that rejects the uid's packets to metadata addresses (idempotent, atomic)."""
    chain = f"uid_{uid}"
    return "\n".join([
        f"add table inet {NFT_TABLE}",
        f"add chain inet {NFT_TABLE} {chain} {{ type filter hook output priority -10; policy accept; }}",
        f"flush chain inet {NFT_TABLE} {chain}",
        f"add rule inet {NFT_TABLE} {chain} meta skuid {uid} ip daddr 169.254.0.0/16 reject",
        f"add rule inet {NFT_TABLE} {chain} meta skuid {uid} ip6 daddr fd00:ec2::254 reject",
        f"add rule inet {NFT_TABLE} {chain} meta skuid {uid} ip6 daddr ::ffff:169.254.0.0/112 reject",
    ]) + "\n"


def _nft() -> str | None:
    return shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None)


def ensure_metadata_blocked(uid: int) -> str | None:
    """Install the nftables metadata rule for `uid` once per process; the reason when it cannot be done
    (remembered too: a container without CAP_NET_ADMIN would otherwise pay an nft run per step)."""
    with _nft_lock:
        if uid not in _nft_done:
            _nft_done[uid] = _install_rule(uid)
        return _nft_done[uid]


def _install_rule(uid: int) -> str | None:
    nft = _nft()
    if nft is None:
        return "the `nft` program (Debian package nftables) is not installed"
    try:
        proc = subprocess.run([nft, "-f", "-"], input=metadata_rule(uid).encode(), capture_output=True,
                              timeout=30, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nft failed: {exc}"
    if proc.returncode != 0:
        first = (proc.stderr.decode(errors="replace").strip().splitlines() or ["?"])[0]
        return f"nft refused the rule: {first}"
    return None


def plan_network(policy: NetworkPolicy, *, trusted: bool, is_root: bool, sandbox_uid: int | None,
                 user_namespaces: bool, landlock_net: bool = False, seccomp: bool = True) -> NetworkPlan:
    """Decide how to enforce `policy` for one step here; `missing` lists what cannot be enforced.

    sandbox_uid: the uid an untrusted step runs as when the runner is root (None: the runner's own).
    """
    mode = policy.mode
    if mode == "full":
        if trusted:
            return NetworkPlan(policy, "the runner's network (trusted step)")
        if is_root and sandbox_uid not in (None, 0):
            why = ensure_metadata_blocked(sandbox_uid)
            if why is None:
                return NetworkPlan(policy, f"the runner's network; metadata addresses rejected by nftables "
                                           f"(table inet {NFT_TABLE}, meta skuid {sandbox_uid})")
            why = f"no host rule ({why})"
        else:
            why = "no host rule (the step shares the runner's uid: no owner match can single it out)"
        transparent = _plan_transparent(policy, is_root, user_namespaces)
        if isinstance(transparent, NetworkPlan):
            return transparent
        gap = f"network full: cloud metadata addresses cannot be blocked: {why}, no own namespace ({transparent})"
        plan = NetworkPlan(policy, "the runner's network; metadata addresses NOT blocked")
        if policy.explicit:
            plan.missing.append(gap + "; use network: loopback, none or a list of host:port")
        else:
            plan.notes.append(gap)
        return plan
    if mode == "none" and not trusted:
        plan = NetworkPlan(policy, "no inet sockets (seccomp) and no TCP (Landlock ABI>=4)", deny_sockets=True)
        if not (seccomp or landlock_net):
            plan.missing.append("network none needs seccomp or Landlock ABI 4")
        return plan
    why_not = netns_available(is_root, user_namespaces)
    forwards: list[tuple[str, int]]
    extra: list[str] = []
    unresolved: list[str] = []
    resolved: dict[Target, list[str]] = {}
    if mode == "none":
        forwards, mech = [], "own, empty network namespace (lo only)"
    elif mode == "loopback":
        forwards = loopback_listeners()
        mech = (f"own network namespace; {len(forwards)} loopback listener(s) of the runner forwarded "
                "(snapshot at step start)")
    else:
        forwards = []
        for target in policy.targets:
            try:
                resolved[target] = _resolve(target)
            except NetworkSpecError as exc:
                unresolved.append(f"network: {exc.rule}")
            forwards += [(addr, target.port) for addr in resolved.get(target, [])]
        forwards = sorted(set(forwards))
        extra = sorted({a for a, _ in forwards if not ipaddress.ip_address(a).is_loopback})
        mech = f"own network namespace; forwarder to {', '.join(map(str, policy.targets))} only"
    plan = NetworkPlan(policy, mech, request={"user_ns": not is_root, "addresses": extra, "forwards": forwards,
                                              "hosts": _hosts_file(resolved)})
    if why_not:
        plan.missing.append(f"network {mode}: {why_not}")
    plan.missing += unresolved
    return plan


def nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The runner's DNS servers (IP literals from resolv.conf), metadata service addresses left out."""
    found: list[str] = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        ip = ipaddress.ip_address(parts[1].split("%")[0])
                    except ValueError:
                        continue
                    # A link-local resolver (AWS's 169.254.169.253) is relayed for DNS only, on port 53; the
                    # metadata service's own addresses never.
                    if str(ip) not in ("169.254.169.254", "fd00:ec2::254") and str(ip) not in found:
                        found.append(str(ip))
    except OSError:
        pass
    return found


def _plan_transparent(policy: NetworkPolicy, is_root: bool, user_namespaces: bool) -> NetworkPlan | str:
    """`full` through the step's own namespace, when no host rule can single the step out: every TCP
    connection to a non-loopback address is redirected (nftables inside the namespace) to the forwarder,
    which reads the original destination from conntrack and connects there unless it is a metadata address;
    DNS over UDP is relayed to the runner's nameservers; the runner's loopback listeners are forwarded.
    Returns why not, when it cannot be done here."""
    why = netns_available(is_root, user_namespaces)
    if why is not None:
        return why
    if _nftables() is None:
        return "its redirect needs libnftables (Debian package nftables)"
    dns = nameservers()
    request = {"user_ns": not is_root, "addresses": [], "forwards": loopback_listeners(), "transparent": True,
               "dns": dns}
    return NetworkPlan(policy, "own network namespace; TCP to any address through the runner's transparent "
                               "forwarder, which refuses metadata addresses; UDP only for DNS (relayed to "
                               f"{', '.join(dns) or 'no nameserver'}); the runner's loopback listeners forwarded",
                       request=request)


def _hosts_file(resolved: dict[Target, list[str]]) -> str | None:
    """/etc/hosts for a step whose list names hosts: the runner's, plus each name's addresses resolved now
    (the namespace has no route to a DNS server, and must not: DNS would be a channel out)."""
    lines = [f"{addr} {t.host}" for t, addrs in sorted(resolved.items()) for addr in addrs if addr != t.host]
    if not lines:
        return None
    try:
        with open("/etc/hosts") as f:
            base = f.read()
    except OSError:
        base = "127.0.0.1 localhost\n::1 localhost\n"
    return base.rstrip("\n") + "\n# runnerlib network policy\n" + "\n".join(lines) + "\n"


def plan_for_sandbox(policy: NetworkPolicy, caps: Any, sandbox_uid: int) -> NetworkPlan:
    """`plan_network` for an untrusted step, from a `probe.Capabilities`."""
    return plan_network(policy, trusted=False, is_root=caps.is_root, sandbox_uid=sandbox_uid if caps.is_root else None,
                        user_namespaces=caps.user_namespaces, landlock_net=caps.landlock_net, seccomp=caps.seccomp)


def plan_for_trusted(policy: NetworkPolicy, caps: Any) -> NetworkPlan:
    """`plan_network` for a trusted step (no seccomp there: `none` is an empty network namespace)."""
    return plan_network(policy, trusted=True, is_root=caps.is_root, sandbox_uid=None,
                        user_namespaces=caps.user_namespaces)


# --- in the step process (fork server child, before the identity switch) ------------------------------------

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


def enter_network(request: dict[str, Any]) -> None:
    """In the step process, before it drops privileges: fork the forwarder, then move into a new network
    namespace with lo up, the plan's addresses on lo and a listener per forward, handed to the forwarder."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    forwards = [(str(a), int(p)) for a, p in request.get("forwards", [])]
    step_pid = os.getpid()
    pid = os.fork()
    if pid == 0:  # the forwarder: stays in the runner's namespace
        code = 0
        try:
            ours.close()
            # Hold none of the step's descriptors: its output pipes and status pipe must close when it ends.
            null = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            keep = theirs.fileno()
            os.closerange(3, keep)
            os.closerange(keep + 1, 1 << 16)
            # A pidfd, not PR_SET_PDEATHSIG: the step drops to another uid, and a parent of another uid
            # cannot deliver the death signal to a root forwarder.
            step_fd = os.pidfd_open(step_pid)
            _serve_forwards(theirs, step_fd)
        except BaseException:  # noqa: BLE001 - nothing to report to; the step sees refused connections
            code = 1
        finally:
            os._exit(code)
    theirs.close()
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
        socket.send_fds(ours, [struct.pack("I", len(header)) + header], [sock.fileno() for sock, _ in entries])
        for sock, _meta in entries:
            sock.close()
    finally:
        ours.close()


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


@functools.lru_cache(maxsize=1)
def _nftables() -> Any:
    """libnftables (Debian package libnftables1, a dependency of nftables) through ctypes, or None.

    In-process rather than the `nft` program: the step process holds CAP_NET_ADMIN of its namespace only as
    itself (an exec'd nft would lose it as a non-zero uid of a user namespace), and it saves an exec per step.
    Loaded once in the fork server (`preload`), so forked steps find it mapped.
    """
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
    return lib


def preload() -> None:
    """Load libnftables now (the fork server calls this once; a missing library is not an error here)."""
    _nftables()


def _nft_run(text: str) -> None:
    """Apply an nftables transaction in this process's network namespace."""
    lib = _nftables()
    if lib is None:
        raise OSError(errno.ENOENT, "libnftables.so.1 is not installed (Debian package nftables)")
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise OSError(errno.ENOMEM, "nft_ctx_new failed")
    try:
        lib.nft_ctx_buffer_error(ctx)
        if lib.nft_run_cmd_from_buffer(ctx, text.encode()) != 0:
            first = ((lib.nft_ctx_get_error_buffer(ctx) or b"?").decode(errors="replace").strip().splitlines()
                     or ["?"])[0]
            raise OSError(errno.EPERM, f"nftables in the step's namespace: {first}")
    finally:
        lib.nft_ctx_free(ctx)


def _transparent_setup(request: dict[str, Any]) -> list[tuple[socket.socket, dict[str, Any]]]:
    """Inside the new namespace: local default routes, the redirecting nftables rules, and the sockets the
    forwarder serves (one transparent listener per family, one UDP socket per nameserver)."""
    entries: list[tuple[socket.socket, dict[str, Any]]] = []
    rules = []
    for family, loop, nat in ((socket.AF_INET, "127.0.0.1", "ip"), (socket.AF_INET6, "::1", "ip6")):
        try:
            _add_local_default(family)
            sock = _listener(loop, 0)
        except OSError:
            if family == socket.AF_INET:
                raise
            continue  # no IPv6 in this kernel: IPv4 only
        port = sock.getsockname()[1]
        entries.append((sock, {"kind": "transparent"}))
        lo_net = "127.0.0.0/8" if nat == "ip" else "::1"
        rules += [f"add table {nat} runnerlib",
                  f"add chain {nat} runnerlib out {{ type nat hook output priority -100; policy accept; }}",
                  f"add rule {nat} runnerlib out {nat} daddr != {lo_net} meta l4proto tcp redirect to :{port}"]
    _nft_run("\n".join(rules) + "\n")
    for server in request.get("dns", []):
        entries.append((_listener(server, 53, socket.SOCK_DGRAM), {"kind": "dns", "target": [server, 53]}))
    return entries


def _serve_forwards(ctl: socket.socket, step_fd: int) -> None:
    """The forwarder: accept on each in-namespace socket and relay out here (to the entry's fixed target, or
    for a transparent listener to the connection's original destination unless it is a metadata address);
    exit when the step's main process exits (its pidfd becomes readable)."""
    data, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 20, 1024)
    ctl.close()
    if len(data) < 4:
        return
    (size,) = struct.unpack_from("I", data)
    entries = json.loads(data[4:4 + size])
    if len(fds) != len(entries):
        return
    sel = selectors.DefaultSelector()
    sel.register(step_fd, selectors.EVENT_READ, None)
    for fd, meta in zip(fds, entries, strict=True):
        sel.register(socket.socket(fileno=fd), selectors.EVENT_READ, meta)
    while True:
        for key, _ev in sel.select():
            meta = key.data
            if meta is None:
                return
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if meta["kind"] == "dns":
                try:
                    query, peer = sock.recvfrom(65535)
                except OSError:
                    continue
                threading.Thread(target=_relay_dns, args=(sock, query, peer, tuple(meta["target"])),
                                 daemon=True).start()
                continue
            try:
                conn, _peer = sock.accept()
            except OSError:
                continue
            target = tuple(meta["target"]) if meta["kind"] == "tcp" else None
            threading.Thread(target=_relay, args=(conn, target), daemon=True).start()


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
