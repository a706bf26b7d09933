"""Network policy attacks: each blocked connection has a control (same step, another policy, or a trusted
step) that reaches the same server, so the test could fail. Servers only on this machine."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from netlib import metadata_address_on_lo
from sandbox_testlib import IS_ROOT, STEP_PYTHON, caps, needs_landlock

from runnerlib.execution.process import run_process
from runnerlib.security import netforward, network
from runnerlib.security.lowlevel import nftables

pytestmark = needs_landlock

CONNECT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((host, port), timeout=5)
    s.settimeout(5)
    print("OK", s.recv(64).decode())
except OSError as exc:
    print("BLOCKED", type(exc).__name__, exc.errno)
"""
BANNER = "banner-7Hq2"


class Server:
    """A TCP server on this machine that greets every client with BANNER."""

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.host, self.port = host, self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(BANNER.encode())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for s in made:
        s.close()


def serve(made: list[Server], host: str, port: int = 0) -> Server:
    s = Server(host, port)
    made.append(s)
    return s


def connect(ws, registry, host: str, port: int, *, network_policy=None, trusted: bool = False,
            best_effort: bool = False) -> str:
    """Run the connect probe as a step; its verdict line (OK/BLOCKED ...) or REFUSED: reason."""
    argv = [STEP_PYTHON, "-I", "-c", CONNECT, host, str(port)]
    result = run_process(argv, registry=registry, trusted=trusted,
                         policy=None if trusted else ws.policy(best_effort=best_effort),
                         env={"PATH": "/usr/bin:/bin"}, cwd=str(ws.src), timeout=60, grace=1,
                         network=network_policy)
    if result.refused:
        return f"REFUSED: {result.reason}"
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else f"NO OUTPUT exit={result.exit_code} {result.reason} {result.stderr}"


def reaches(verdict: str) -> bool:
    return verdict == f"OK {BANNER}"


def _non_loopback_ipv4() -> str | None:
    """An IPv4 address of one of this machine's own non-loopback interfaces (never a remote address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            if name == "lo":
                continue
            try:
                raw = fcntl.ioctl(s, 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
            addr = socket.inet_ntoa(raw[20:24])
            if not ipaddress.ip_address(addr).is_link_local:
                return addr
    return None


needs_netns = pytest.mark.skipif(network.netns_available(IS_ROOT, caps.user_namespaces) is not None,
                                 reason="no network namespaces here (needs root or user namespaces)")
full_ok = nftables.library() is not None and (
    IS_ROOT or network.netns_available(IS_ROOT, caps.user_namespaces) is None)


def control_policy() -> str | None:
    """The untrusted policy that reaches everything but metadata here: explicit `full` where it is enforced
    (nftables, and a network namespace when unprivileged), else the implicit default (which is then `none`:
    the test's control fails, as it should where the control cannot be shown)."""
    return "full" if full_ok else None


def test_none_blocks_a_loopback_server_that_full_reaches(workspace, registry, servers):
    srv = serve(servers, "127.0.0.1")
    assert reaches(connect(workspace, registry, "127.0.0.1", srv.port, network_policy=control_policy()))
    verdict = connect(workspace, registry, "127.0.0.1", srv.port, network_policy="none")
    assert verdict.startswith("BLOCKED"), verdict


@needs_netns
def test_trusted_step_none_gets_an_empty_namespace(workspace, registry, servers):
    srv = serve(servers, "127.0.0.1")
    assert reaches(connect(workspace, registry, "127.0.0.1", srv.port, trusted=True))
    verdict = connect(workspace, registry, "127.0.0.1", srv.port, trusted=True, network_policy="none")
    assert verdict.startswith("BLOCKED"), verdict


@needs_netns
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_reaches_a_service_started_before_the_step(workspace, registry, servers, host):
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = serve(servers, host)
    except OSError as exc:
        pytest.skip(f"cannot listen on {host}: {exc}")
    verdict = connect(workspace, registry, host, srv.port, network_policy="loopback")
    assert reaches(verdict), verdict


@needs_netns
def test_loopback_does_not_reach_a_non_loopback_address_of_this_machine(workspace, registry, servers):
    addr = _non_loopback_ipv4()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 interface")
    srv = serve(servers, "0.0.0.0")  # listens on loopback too: the forwarder covers 127.0.0.1 only
    assert reaches(connect(workspace, registry, addr, srv.port, network_policy=control_policy()))
    assert reaches(connect(workspace, registry, "127.0.0.1", srv.port, network_policy="loopback"))
    verdict = connect(workspace, registry, addr, srv.port, network_policy="loopback")
    assert verdict.startswith("BLOCKED"), verdict


@needs_netns
def test_loopback_does_not_reach_a_port_opened_after_the_step_started(workspace, registry, servers):
    # The forwarded listeners are a snapshot: a port nobody listened on at step start stays closed.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    verdict = connect(workspace, registry, "127.0.0.1", port, network_policy="loopback")
    assert verdict.startswith("BLOCKED"), verdict


@needs_netns
def test_list_allows_exactly_its_targets(workspace, registry, servers):
    allowed = serve(servers, "127.0.0.1")
    other = serve(servers, "127.0.0.1")
    policy = [f"127.0.0.1:{allowed.port}"]
    assert reaches(connect(workspace, registry, "127.0.0.1", allowed.port, network_policy=policy))
    assert reaches(connect(workspace, registry, "127.0.0.1", other.port, network_policy=control_policy()))
    verdict = connect(workspace, registry, "127.0.0.1", other.port, network_policy=policy)
    assert verdict.startswith("BLOCKED"), verdict


@needs_netns
def test_list_with_a_non_loopback_target(workspace, registry, servers):
    addr = _non_loopback_ipv4()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 interface")
    allowed = serve(servers, addr)
    other = serve(servers, addr)
    policy = f"{addr}:{allowed.port}"
    assert reaches(connect(workspace, registry, addr, allowed.port, network_policy=policy))
    assert reaches(connect(workspace, registry, addr, other.port, network_policy=control_policy()))
    for host, port in ((addr, other.port), ("127.0.0.1", allowed.port)):
        verdict = connect(workspace, registry, host, port, network_policy=policy)
        assert verdict.startswith("BLOCKED"), (host, port, verdict)


@needs_netns
def test_list_host_name_is_resolved_at_step_start(workspace, registry, servers):
    srv = serve(servers, "127.0.0.1")
    verdict = connect(workspace, registry, "localhost", srv.port, network_policy=f"localhost:{srv.port}")
    assert reaches(verdict), verdict


def test_unresolvable_list_target_refuses_the_step(workspace, registry):
    verdict = connect(workspace, registry, "127.0.0.1", 1, network_policy="no-such-host.invalid:443")
    assert verdict.startswith("REFUSED") and "no-such-host.invalid" in verdict, verdict


def test_explicit_full_fails_closed_without_a_mechanism(workspace, registry, monkeypatch):
    """No nft (neither the host rule nor the namespace's redirect): explicit `full` is refused, naming what is
    missing; the implicit default falls back to `none` (test_sandbox_network_fallback.py has the attack)."""
    monkeypatch.setattr(nftables, "library", lambda: None)
    monkeypatch.setattr(network, "ensure_metadata_blocked", lambda uid: "the `nft` program is not installed")
    verdict = connect(workspace, registry, "127.0.0.1", 1, network_policy="full")
    assert verdict.startswith("REFUSED") and "metadata" in verdict and "nft" in verdict, verdict
    verdict = connect(workspace, registry, "127.0.0.1", 1)
    assert verdict.startswith("BLOCKED PermissionError"), verdict  # no inet socket at all: `none`


def spawn_with_network(ws, argv: list[str], request: dict) -> str:
    """Run argv as an untrusted step whose network set-up is `request` (bypassing the planner's choice)."""
    import select

    from runnerlib.security import spawn as sp

    plan = sp.plan_sandbox(ws.policy())
    plan.plan["net"] = request
    out_r, out_w = os.pipe()
    try:
        step = sp.spawn(argv, env={"PATH": "/usr/bin:/bin"}, cwd=str(ws.src), plan=plan, stdout=out_w,
                        stderr=out_w)
    finally:
        os.close(out_w)
    chunks = []
    while data := os.read(out_r, 65536):
        chunks.append(data)
    os.close(out_r)
    while not step.eof:
        select.select([step.status_fd], [], [], 10)
        step.read_events()
    step.close()
    plan.cleanup()
    assert step.error is None, step.error
    lines = b"".join(chunks).decode().strip().splitlines()
    return lines[-1] if lines else "NO OUTPUT"


@needs_netns
@pytest.mark.skipif(nftables.library() is None, reason="the transparent forwarder's redirect needs libnftables")
def test_full_through_the_transparent_forwarder(workspace, registry, servers):
    """`full` where no host rule can single the step out: its own namespace, every TCP connection redirected
    to the forwarder, which connects to the original destination. This machine's other address and the
    runner's loopback listeners are reached."""
    addr = _non_loopback_ipv4()
    srv = serve(servers, "0.0.0.0")
    plan = network.plan_transparent(network.NetworkPolicy("full"), IS_ROOT, caps.user_namespaces)
    assert isinstance(plan, network.NetworkPlan), plan
    request = plan.request
    for host in ["127.0.0.1"] + ([addr] if addr else []):
        verdict = spawn_with_network(workspace, [STEP_PYTHON, "-I", "-c", CONNECT, host, str(srv.port)], request)
        assert reaches(verdict), (host, verdict)


def test_dns_relay_answers_the_step():
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.bind(("127.0.0.1", 0))

    def answer() -> None:
        query, peer = upstream.recvfrom(512)
        upstream.sendto(b"answer:" + query, peer)

    threading.Thread(target=answer, daemon=True).start()
    step_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    step_side.bind(("127.0.0.1", 0))
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    step_side.settimeout(5)
    netforward._relay_dns(relay, b"q1", step_side.getsockname(), upstream.getsockname())
    assert step_side.recvfrom(512)[0] == b"answer:q1"
    for s in (upstream, step_side, relay):
        s.close()


def test_nameservers_leave_the_metadata_service_out(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.0.0.2\nnameserver 169.254.169.254\nnameserver 169.254.169.253\n"
                    "nameserver fe80::1%eth0\nnameserver bogus\nsearch x\n")
    assert network.nameservers(str(conf)) == ["10.0.0.2", "169.254.169.253", "fe80::1"]


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="adding 169.254.169.254 to lo needs root")
@pytest.mark.skipif(nftables.library() is None, reason="network full cuts metadata off with nftables (not installed)")
def test_metadata_address_unreachable_from_untrusted_steps_under_every_policy(workspace, registry, servers):
    with metadata_address_on_lo("169.254.169.254"):
        srv = serve(servers, "169.254.169.254")
        assert reaches(connect(workspace, registry, "169.254.169.254", srv.port, trusted=True))  # control
        for policy in ("full", None, "loopback", "none", [f"127.0.0.1:{srv.port}"]):
            verdict = connect(workspace, registry, "169.254.169.254", srv.port, network_policy=policy)
            assert verdict.startswith("BLOCKED"), (policy, verdict)
        # `full` through the transparent forwarder (what an unprivileged runner uses): the forwarder refuses.
        plan = network.plan_transparent(network.NetworkPolicy("full"), True, caps.user_namespaces)
        assert isinstance(plan, network.NetworkPlan), plan
        request = plan.request
        for host in ("169.254.169.254", "::ffff:169.254.169.254"):
            verdict = spawn_with_network(workspace, [STEP_PYTHON, "-I", "-c", CONNECT, host, str(srv.port)],
                                         request)
            assert not reaches(verdict), (host, verdict)
        # IPv4-mapped IPv6 is the same address on the wire.
        verdict = connect(workspace, registry, "::ffff:169.254.169.254", srv.port, network_policy="full")
        assert verdict.startswith(("BLOCKED", "NO OUTPUT")) and not reaches(verdict), verdict
        verdict = connect(workspace, registry, "169.254.169.254", srv.port,
                          network_policy=[f"169.254.169.254:{srv.port}"])
        assert verdict.startswith("REFUSED") and "metadata" in verdict, verdict


@needs_netns
def test_forwarder_does_not_outlive_the_step(workspace, registry, servers):
    import time

    from runnerlib.security import proctree, spawn

    srv = serve(servers, "127.0.0.1")
    assert reaches(connect(workspace, registry, "127.0.0.1", srv.port, network_policy="loopback"))
    server = spawn.fork_server_pid()
    assert server is not None
    deadline = time.monotonic() + 10
    while proctree.descendants(server) and time.monotonic() < deadline:
        time.sleep(0.05)  # the supervisor reports the step's exit just before it exits itself
    assert proctree.descendants(server) == []


@needs_netns
def test_list_host_name_resolves_inside_the_namespace_to_its_allowed_address(workspace, registry, servers):
    """A name in the list resolves in the step through its own /etc/hosts (no DNS route in the namespace),
    to the address resolved at step start; a name not in the list does not resolve."""
    srv = serve(servers, "127.0.0.1")
    policy = [f"localhost:{srv.port}"]
    argv = [STEP_PYTHON, "-I", "-c", "import socket; print(sorted({a[4][0] for a in socket.getaddrinfo("
            "'localhost', 1, type=socket.SOCK_STREAM)}), open('/etc/hosts').read().count('runnerlib'))"]
    result = run_process(argv, registry=registry, trusted=False, policy=workspace.policy(),
                         env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.src), timeout=60, grace=1,
                         network=policy)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("1"), result.stdout  # the step's own hosts file
    with open("/etc/hosts") as f:
        assert "runnerlib" not in f.read()  # the runner's is untouched


@needs_netns
@pytest.mark.skipif(shutil.which("ip") is None, reason="needs the `ip` program")
def test_untrusted_step_cannot_reconfigure_its_namespace(workspace, registry):
    """Adding an address or a route would let a step widen its own namespace: it holds no capability there.
    Control (root): a trusted step in the same kind of namespace, as root, can."""
    ip = shutil.which("ip")
    script = f"{ip} addr add 10.99.99.1/32 dev lo && {ip} route add 10.98.0.0/16 dev lo && echo CHANGED || echo DENIED"
    result = run_process(["/bin/sh", "-c", script], registry=registry, trusted=False, policy=workspace.policy(),
                         env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.src), timeout=60, grace=1,
                         network="loopback")
    assert result.stdout.strip().endswith("DENIED"), result.output
    if IS_ROOT:
        control = run_process(["/bin/sh", "-c", script], registry=registry, trusted=True,
                              env={"PATH": "/usr/bin:/bin:/usr/sbin"}, cwd=str(workspace.src), timeout=60,
                              grace=1, network="loopback")
        assert control.stdout.strip().endswith("CHANGED"), control.output


@needs_netns
def test_list_with_an_ipv6_target(workspace, registry, servers):
    try:
        allowed = serve(servers, "::1")
        other = serve(servers, "::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    policy = [f"[::1]:{allowed.port}"]
    assert reaches(connect(workspace, registry, "::1", allowed.port, network_policy=policy))
    verdict = connect(workspace, registry, "::1", other.port, network_policy=policy)
    assert verdict.startswith("BLOCKED"), verdict


@needs_netns
def test_a_step_that_waits_for_all_its_children_is_not_held_by_the_forwarder(workspace, registry, servers):
    """An init-like step (wait until no child is left) must not find the forwarder among its children."""
    serve(servers, "127.0.0.1")
    script = "import os\ntry:\n    os.wait()\n    print('HAD A CHILD')\nexcept ChildProcessError:\n    print('NO CHILD')\n"
    result = run_process([STEP_PYTHON, "-I", "-c", script], registry=registry, trusted=False,
                         policy=workspace.policy(), env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.src),
                         timeout=30, grace=1, network="loopback")
    assert result.stdout.strip() == "NO CHILD", (result.exit_code, result.output)
