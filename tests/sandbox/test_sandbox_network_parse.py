"""The network policy parser: property-based tests (hypothesis) and the cases that must be refused."""

from __future__ import annotations

import ipaddress
import os
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runnerlib.jobs import Job, JobDefinitionError
from runnerlib.security.network import (
    NetworkPolicy,
    NetworkSpecError,
    Target,
    is_metadata,
    loopback_listeners,
    parse_network,
)
from runnerlib.security.policy import PolicyError, SandboxPolicy

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(label, min_size=1, max_size=4).map(".".join).filter(lambda h: not h.replace(".", "").isdigit())
public_v4 = st.ip_addresses(v=4).filter(lambda a: not (is_metadata(a) or a.is_unspecified or a.is_multicast))
public_v6 = st.ip_addresses(v=6).filter(lambda a: not (is_metadata(a) or a.is_unspecified or a.is_multicast))
ports = st.integers(1, 65535)


def _written(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


targets = st.one_of(
    st.tuples(hostnames, ports),
    st.tuples(public_v4.map(str), ports),
    st.tuples(public_v6.map(str), ports),
)


@given(st.lists(targets, min_size=1, max_size=8))
def test_list_round_trips(items):
    written = [_written(h, p) for h, p in items]
    policy = parse_network(written)
    assert policy.mode == "allow"
    assert {(t.host, t.port) for t in policy.targets} == {(h.lower(), p) for h, p in items}
    # The one-line forms (--network) and the printed form read back the same.
    assert parse_network(",".join(written)) == policy
    assert parse_network(str(policy)) == policy


@given(st.sampled_from(["full", "none", "loopback", " FULL ", "Loopback"]))
def test_modes(text):
    assert parse_network(text).mode == text.strip().lower()


@given(st.one_of(st.text(max_size=60), st.binary(max_size=20), st.integers(), st.none(), st.floats(),
                 st.lists(st.one_of(st.text(max_size=30), st.integers()), max_size=5)))
@settings(max_examples=300)
def test_anything_else_is_a_clear_error_or_a_policy(value):
    try:
        policy = parse_network(value)
    except NetworkSpecError as exc:
        assert str(exc).startswith("network: ")
        return
    assert isinstance(policy, NetworkPolicy)
    for target in policy.targets:
        assert 1 <= target.port <= 65535
        try:
            assert not is_metadata(target.host)
        except ValueError:
            pass  # a host name


@given(st.integers(0, 65535), ports)
def test_metadata_and_link_local_are_always_refused(low, port):
    v4 = ipaddress.IPv4Address(int(ipaddress.IPv4Address("169.254.0.0")) + low)
    for host in (str(v4), f"::ffff:{v4}", "fd00:ec2::254"):
        with pytest.raises(NetworkSpecError, match="metadata"):
            parse_network([_written(host, port)])


@pytest.mark.parametrize("value,rule", [
    ("", "must be full, none, loopback"),
    ("bogus", "must be full, none, loopback"),
    ([], "write `none`"),
    (["host"], "host:port"),
    (["host:0"], "1-65535"),
    (["host:65536"], "1-65535"),
    (["0.0.0.0:80"], "not a destination"),
    (["224.0.0.1:80"], "not a destination"),
    (["::1:80"], "host:port"),
    (["a b:80"], "host:port"),
    ([5], "'host:port' string"),
    ({"a": 1}, "must be full"),
    (["1.2.3:80"], "neither an IP address nor a host name"),
])
def test_refused_with_the_rule(value, rule):
    with pytest.raises(NetworkSpecError, match="network: .*" + rule.replace("(", r"\(").replace("`", ".")):
        parse_network(value)


def test_too_many_targets():
    with pytest.raises(NetworkSpecError, match="at most"):
        parse_network([f"h{i}:1" for i in range(100)])


def test_job_file_and_policy_carry_the_field():
    job = Job("j")
    step = job.add_step("s", "true", network=["db:5432"])
    assert step.network == ["db:5432"]
    with pytest.raises(JobDefinitionError, match=r"step 's2'.*network.*metadata"):
        job.add_step("s2", "true", network=["169.254.169.254:80"])
    assert SandboxPolicy(network="none").deny_network
    assert SandboxPolicy(deny_network=True).network == NetworkPolicy("none")
    assert SandboxPolicy().network.mode == "full" and not SandboxPolicy().network.explicit
    with pytest.raises(PolicyError, match="network"):
        SandboxPolicy(network="loopback", deny_network=True)
    with pytest.raises(PolicyError, match="network"):
        SandboxPolicy(network="nope")


def test_loopback_listeners_reads_proc_net(tmp_path):
    (tmp_path / "tcp").write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 0100007F:1F90 00000000:0000 0A\n"      # 127.0.0.1:8080 listening
        "   1: 00000000:0050 00000000:0000 0A\n"      # 0.0.0.0:80 listening
        "   2: 0200000A:0016 00000000:0000 0A\n"      # 10.0.0.2:22: not loopback
        "   3: 0100007F:1F91 0100007F:1234 01\n")     # established, not a listener
    (tmp_path / "tcp6").write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A\n")  # ::1:3000
    assert loopback_listeners(str(tmp_path)) == [("127.0.0.1", 80), ("127.0.0.1", 8080), ("::1", 3000)]


def test_target_str():
    assert str(Target("::1", 80)) == "[::1]:80" and str(Target("db", 5432)) == "db:5432"


def test_sock_diag_and_proc_agree_on_a_listener():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        mine = ("127.0.0.1", s.getsockname()[1])
        fast, slow = loopback_listeners(), loopback_listeners("/proc/net")
    assert mine in fast and mine in slow


@given(st.integers(0, 2**32), st.integers(1, 2**22), st.integers(0, 2**40), st.text(max_size=20))
def test_stale_table_names_judge_only_dead_runners_of_this_pid_namespace(pidns, pid, start, junk):
    from runnerlib.security import metadata_guard as mg

    ours = mg._pidns()
    me = f"{mg.TABLE_PREFIX}{ours}_{os.getpid()}_{mg._start_time(os.getpid())}"
    assert not mg._is_dead_runners(me)  # a live runner's table is never stale
    owned = f"{mg.TABLE_PREFIX}{pid}_{junk.encode().hex()[:8] or '0'}"
    assert not mg._is_dead_runners(owned)  # owner tables: the kernel's business
    other_ns = f"{mg.TABLE_PREFIX}{pidns if pidns != ours else ours + 1}_{pid}_{start}"
    assert not mg._is_dead_runners(other_ns)  # another PID namespace's pids mean nothing here
    assume(not re.fullmatch(r"\d+_\d+_\d+", junk))
    assert not mg._is_dead_runners(mg.TABLE_PREFIX + junk)
    dead = f"{mg.TABLE_PREFIX}{ours}_{pid}_{start}"
    assert mg._is_dead_runners(dead) == (mg._start_time(pid) != start)
