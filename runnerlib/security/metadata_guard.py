"""The host rule that cuts an untrusted uid off cloud metadata addresses, for exactly the runner's lifetime.

A root runner's untrusted steps under `network: full` run as the sandbox uid in the runner's own network;
an nftables rule matching that uid (`meta skuid`, output hook) rejects their packets to the metadata
addresses (METADATA_NETWORKS below), IPv4-mapped forms included. The rule lives in a table of the runner's own:

  owned    `inet runnerlib_metadata_<pid>_<random>` with `flags owner` (Linux >= 5.12): the table belongs to
           the netlink socket of a libnftables context the runner keeps open. The kernel removes it when that
           socket closes, however the runner ends (normal exit, error, SIGTERM, SIGKILL, OOM), and refuses
           any other socket that tries to change or delete it, so concurrent runners on one host cannot
           remove each other's rule (each has its own table; the same uid matched twice is harmless).
  fallback (older kernels) `inet runnerlib_metadata_<pidns>_<pid>_<starttime>`: removed when the runner
           exits (atexit; the runner turns SIGTERM into a normal exit); a runner killed outright leaves it
           behind, and the next runner in the same PID namespace removes it (the pid and its start time name
           the runner, so a live runner's table is never taken for a dead one's).

The shared table `inet runnerlib_metadata` that earlier versions installed for good is left alone: a runner
of such a version may still be running on the host and rely on it (`nft delete table inet
runnerlib_metadata` removes it once none is). `report_only` (for `sandbox policy` and `sandbox probe`) asks the kernel whether
the rule could be installed (an nftables dry run: rights are checked) and leaves nothing behind.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import secrets
import threading

from runnerlib.security.lowlevel import nftables

TABLE_PREFIX = "runnerlib_metadata_"

# Cloud metadata addresses (network.is_metadata, this rule and the forwarder all use this list): the IPv4
# link-local range (AWS, GCP, Azure IMDS, OpenStack, Oracle, DigitalOcean, ECS task metadata 169.254.170.2),
# Alibaba Cloud's 100.100.100.200, AWS's IPv6 fd00:ec2::254, GCP's IPv6 fd20:ce::254 and OpenStack's IPv6
# fe80::a9fe:a9fe. (Azure's WireServer, 168.63.129.16, is also its DNS server: not listed, see docs/sandbox.md.)
METADATA_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "100.100.100.200/32", "fd00:ec2::254/128", "fd20:ce::254/128", "fe80::a9fe:a9fe/128"))

_lock = threading.Lock()
_state: dict = {"pid": None, "session": None, "table": None, "owned": False, "uids": {}}


def uid_rules(table: str, uid: int) -> str:
    """The chain of `table` that rejects `uid`'s packets to metadata addresses (idempotent, atomic)."""
    chain = f"uid_{uid}"
    return "\n".join([
        f"add chain inet {table} {chain} {{ type filter hook output priority -10; policy accept; }}",
        f"flush chain inet {table} {chain}",
        *(f"add rule inet {table} {chain} meta skuid {uid} {daddr} reject" for daddr in _daddrs()),
    ]) + "\n"


def _daddrs() -> list[str]:
    """nftables matches for every metadata network, IPv4 ones also in their IPv4-mapped IPv6 form."""
    out = []
    for net in METADATA_NETWORKS:
        if net.version == 4:
            out += [f"ip daddr {net}", f"ip6 daddr ::ffff:{net.network_address}/{96 + net.prefixlen}"]
        else:
            out.append(f"ip6 daddr {net}")
    return out


def block(uid: int, *, report_only: bool = False) -> str | None:
    """Reject `uid`'s packets to metadata addresses for as long as this process lives; None when done (or,
    with `report_only`, when it could be done: nothing is installed), else the reason. The outcome of a real
    install is remembered per process (a container without CAP_NET_ADMIN would otherwise retry every step)."""
    with _lock:
        if _state["pid"] != os.getpid():  # a forked child: the parent's table is the parent's
            _state.update(pid=os.getpid(), session=None, table=None, owned=False, uids={})
        if uid in _state["uids"]:
            return _state["uids"][uid]
        if report_only:
            return _check(uid)
        _state["uids"][uid] = why = _install(uid)
        return why


def current_table() -> str | None:
    """This process's table (None before the first install)."""
    return _state["table"] if _state["pid"] == os.getpid() else None


def _check(uid: int) -> str | None:
    if nftables.library() is None:
        return "libnftables (Debian package nftables) is not installed"
    table = f"{TABLE_PREFIX}check"
    try:
        nftables.run(f"add table inet {table}\n" + uid_rules(table, uid), dry_run=True)
    except OSError as exc:
        return f"nftables refused the rule: {exc.strerror or exc}"
    return None


def _install(uid: int) -> str | None:
    if nftables.library() is None:
        return "libnftables (Debian package nftables) is not installed"
    try:
        if _state["session"] is None:
            _make_table()
        _state["session"].run(uid_rules(_state["table"], uid))
    except OSError as exc:
        return f"nftables refused the rule: {exc.strerror or exc}"
    return None


def _make_table() -> None:
    session = nftables.Session()
    try:
        remove_stale(session)
        table = f"{TABLE_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        try:
            session.run(f"add table inet {table} {{ flags owner; }}\n")
            owned = True
        except OSError:  # a kernel before 5.12 knows no owner tables
            table = f"{TABLE_PREFIX}{_pidns()}_{os.getpid()}_{_start_time(os.getpid())}"
            session.run(f"add table inet {table}\n")
            owned = False
            atexit.register(release)
    except OSError:
        session.close()
        raise
    _state.update(session=session, table=table, owned=owned)


def release() -> None:
    """Remove this process's table now (at exit for the fallback; tests). Later installs make a new one."""
    with _lock:
        session, table = _state["session"], _state["table"]
        if session is None or _state["pid"] != os.getpid():
            return
        try:
            if not _state["owned"]:
                session.run(f"delete table inet {table}\n")
        except OSError:
            pass  # already gone (removed by hand): nothing of ours is left either way
        finally:
            session.close()  # an owned table goes with the socket
            _state.update(session=None, table=None, owned=False, uids={})


def remove_stale(session: nftables.Session) -> list[str]:
    """Delete the fallback tables of runners of this PID namespace that no longer run; the names removed.
    Owned tables are never stale (the kernel removes them)."""
    removed = []
    for table in re.findall(r"^table inet (\S+)", session.run("list tables inet\n"), re.M):
        if not _is_dead_runners(table):
            continue
        try:
            session.run(f"delete table inet {table}\n")
            removed.append(table)
        except OSError:
            pass  # removed meanwhile by another runner's clean-up
    return removed


def _is_dead_runners(table: str) -> bool:
    m = re.fullmatch(re.escape(TABLE_PREFIX) + r"(\d+)_(\d+)_(\d+)", table)
    if not m or int(m.group(1)) != _pidns():
        return False  # owned, not ours to judge, or another PID namespace's (its pids mean nothing here)
    pid, start = int(m.group(2)), int(m.group(3))
    return _start_time(pid) != start


def _pidns() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid, a name
    that a later process reusing the pid does not share. None when no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
