"""Network policy per step: `full | none | loopback | [host:port, ...]`, planned here, set up in the step.

Invariant, whatever the policy: an untrusted step never reaches a cloud metadata address (169.254.0.0/16,
100.100.100.200, fd00:ec2::254, fd20:ce::254, fe80::a9fe:a9fe: metadata_guard.METADATA_NETWORKS). Each policy maps to one mechanism, chosen for what the kernel enforces without trusting the
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
            the sandbox uid (`meta skuid`, output hook), in a table that lives as long as the runner
            (metadata_guard.py). Otherwise (the step shares an unprivileged runner's uid, so no owner match
            can single it out): its own namespace where nftables redirects every TCP connection to the
            forwarder, which connects to the original destination (conntrack) unless it is a metadata
            address; DNS relayed. Neither possible: explicit `full` is refused, and the implicit default
            becomes `none` (fail closed), said once in the job output with what to do.

The step-side half (namespace set-up and the forwarder) is runnerlib.security.netforward.
The namespace is created in the step process before it drops privileges: as root, unshare(CLONE_NEWNET);
unprivileged, unshare(CLONE_NEWUSER | CLONE_NEWNET) with an identity uid/gid map, so the step keeps no
capability after execve (its uid is not 0 in the namespace). The forwarder is forked by the step's supervisor
before the step, so it stays in the runner's namespace; it receives the listening sockets over a socketpair, exits with the
step's main process (a pidfd) and only ever connects to the targets in the plan (or, transparent, to a
connection's original destination that is not a metadata address).

Example::

    policy = parse_network(["db.internal:5432", "[::1]:6379"])
    plan = plan_network(policy, trusted=False, is_root=True, sandbox_uid=65534, user_namespaces=True)
    print(plan.describe())
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from runnerlib.security import metadata_guard
from runnerlib.security.lowlevel import nftables

MODES = ("full", "none", "loopback")
# What an untrusted step gets when neither its job file nor the command line names a policy. `full`, like
# GitHub's and GitLab's runners: `npm install` and `pip install` need the registries. Metadata stays cut off;
# where it cannot be, the default is `none` instead (plan_network).
DEFAULT_POLICY = "full"

METADATA_NETWORKS = metadata_guard.METADATA_NETWORKS
log = logging.getLogger(__name__)
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
    # metadata cut-off under `full` refuses the step or turns it into `none`.
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
    nft = nftables.library() is not None
    return [
        ("network namespace", netns_available(caps.is_root, caps.user_namespaces) is None,
         "loopback and host:port lists (own namespace + forwarder); trusted `none`"
         + ("" if caps.is_root else " (user+net namespaces)")),
        ("seccomp inet denial", bool(caps.seccomp), "network none (no AF_INET/AF_INET6/AF_PACKET sockets)"),
        ("landlock tcp (ABI>=4)", bool(caps.landlock_net), "network none (no TCP bind/connect)"),
        ("nftables owner match", bool(caps.is_root and nft), "network full: metadata addresses rejected for the "
         "sandbox uid" + ("" if caps.is_root else " (needs a root runner)") + ("" if nft else " (no libnftables)")),
        ("transparent forwarder", isinstance(plan_transparent(NetworkPolicy("full"), caps.is_root,
                                                               caps.user_namespaces), NetworkPlan),
         "network full in the step's own namespace, metadata refused by the forwarder (unprivileged runners)"),
    ]


_report_only = threading.local()


@contextlib.contextmanager
def report_only() -> Iterator[None]:
    """Plan without changing the host (`sandbox policy`, `sandbox probe`): the metadata rule is checked with
    an nftables dry run, not installed."""
    before = getattr(_report_only, "on", False)
    _report_only.on = True
    try:
        yield
    finally:
        _report_only.on = before


def ensure_metadata_blocked(uid: int) -> str | None:
    """Reject the uid's packets to metadata addresses for the runner's lifetime (metadata_guard); the reason
    when it cannot be done here. Under `report_only()`: whether it could, installing nothing."""
    return metadata_guard.block(uid, report_only=getattr(_report_only, "on", False))


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
                return NetworkPlan(policy, "the runner's network; metadata addresses rejected by nftables (a "
                                           f"table of the runner's own, meta skuid {sandbox_uid})")
            why = f"no host rule ({why})"
        else:
            why = "no host rule (the step shares the runner's uid: no owner match can single it out)"
        transparent = plan_transparent(policy, is_root, user_namespaces)
        if isinstance(transparent, NetworkPlan):
            return transparent
        gap = f"network full: cloud metadata addresses cannot be blocked: {why}, no own namespace ({transparent})"
        if not policy.explicit:  # fail closed: the implicit default becomes `none`, said once
            return _default_falls_back(gap, is_root, seccomp=seccomp, landlock_net=landlock_net)
        plan = NetworkPlan(policy, "the runner's network; metadata addresses NOT blocked")
        plan.missing.append(f"{gap}; use network: none, or {_remedy(is_root)}")
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


_told: set[str] = set()


def _remedy(is_root: bool) -> str:
    if is_root:
        return "install nftables (libnftables1) or let the runner create network namespaces (CAP_SYS_ADMIN)"
    return ("run the runner as root, or allow unprivileged user namespaces (kernel.unprivileged_userns_clone=1, "
            "user.max_user_namespaces > 0)")


def _default_falls_back(gap: str, is_root: bool, *, seccomp: bool, landlock_net: bool) -> NetworkPlan:
    """The implicit default where neither metadata mechanism works: `none`, enforced as `network: none` is,
    with one notice per runner process saying why and what to do."""
    notice = (f"untrusted steps that name no network get none: the default, full, {gap.split(': ', 1)[1]}; "
              f"to give them a network, {_remedy(is_root)}; set `network: none` on the step (or --network none) "
              "to say so")
    plan = NetworkPlan(NetworkPolicy("none", explicit=False), "no inet sockets (seccomp) and no TCP (Landlock "
                       "ABI>=4), because the default, full, cannot keep cloud metadata addresses out here",
                       deny_sockets=True, notes=[notice])
    if not (seccomp or landlock_net):
        plan.missing.append("network none (the default here) needs seccomp or Landlock ABI 4")
    if not getattr(_report_only, "on", False) and notice not in _told:
        _told.add(notice)
        log.warning("%s", notice)
    return plan


def apply_denial(sandbox_plan: dict[str, Any], net: NetworkPlan, caps: Any) -> None:
    """Deny inet sockets in a sandbox plan (seccomp, Landlock TCP) when the network plan says so although the
    policy did not ask for `none` itself (the implicit default fallen back)."""
    if not net.deny_sockets:
        return
    if sandbox_plan.get("seccomp") is not None:
        sandbox_plan["seccomp"]["deny_network"] = True
    if sandbox_plan.get("landlock"):
        sandbox_plan["landlock"]["deny_tcp"] = bool(caps.landlock_net)


def default_summary(caps: Any, sandbox_uid: int = 65534) -> str:
    """What an untrusted step that names no network gets here, in one line (installs nothing)."""
    with report_only():
        plan = plan_for_sandbox(default_policy(), caps, sandbox_uid)
    if plan.missing:
        return f"refused ({'; '.join(plan.missing)})"
    return f"{plan.policy}: {plan.mechanism}"


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


def plan_transparent(policy: NetworkPolicy, is_root: bool, user_namespaces: bool) -> NetworkPlan | str:
    """`full` through the step's own namespace, when no host rule can single the step out: every TCP
    connection to a non-loopback address is redirected (nftables inside the namespace) to the forwarder,
    which reads the original destination from conntrack and connects there unless it is a metadata address;
    DNS over UDP is relayed to the runner's nameservers; the runner's loopback listeners are forwarded.
    Returns why not, when it cannot be done here."""
    why = netns_available(is_root, user_namespaces)
    if why is not None:
        return why
    if nftables.library() is None:
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
