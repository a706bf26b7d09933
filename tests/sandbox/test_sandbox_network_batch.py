"""The transparent redirect of `full` in a step's own namespace is sent as a prepared nfnetlink batch
(nftables.redirect_batch), not through libnftables. It must be the same ruleset libnftables makes from the
nft text (nftables.redirect_ruleset): both are applied in fresh network namespaces and listed back by
libnftables, and the listings must match. The redirect itself, and the forwarder's refusal of metadata
addresses behind it, are tested end to end in test_sandbox_network.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sandbox_testlib import IS_ROOT, caps

from runnerlib.security import network
from runnerlib.security.lowlevel import nftables

pytestmark = [
    pytest.mark.skipif(nftables.library() is None, reason="listing the ruleset back needs libnftables"),
    pytest.mark.skipif(network.netns_available(IS_ROOT, caps.user_namespaces) is not None,
                       reason="no network namespaces here"),
]

APPLY = """
import ctypes, os, sys
from runnerlib.security.lowlevel import nftables
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET; unprivileged: with a user namespace
    assert libc.unshare(0x50000000) == 0, os.strerror(ctypes.get_errno())
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                       ("/proc/self/gid_map", f"{gid} {gid} 1")):
        with open(path, "w") as f:
            f.write(text)
ports = {"ip": 40001, "ip6": 40002}
if sys.argv[1] == "batch":
    nftables.send_batch(nftables.redirect_batch(ports))
else:
    nftables.run("".join(nftables.redirect_ruleset(family, port) for family, port in ports.items()))
print(nftables.run("list ruleset"))
"""


def _listing(how: str) -> str:
    proc = subprocess.run([sys.executable, "-c", APPLY, how], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_prepared_batch_is_the_ruleset_libnftables_makes():
    batch, text = _listing("batch"), _listing("text")
    assert "redirect to :40001" in text and "redirect to :40002" in text, text  # control: the text did apply
    assert batch == text


def test_a_refused_batch_is_an_error_not_silence():
    # Control of the acknowledgement handling: outside a namespace of its own an unprivileged process lacks
    # CAP_NET_ADMIN, and a batch sent there must raise, not pass as applied.
    if IS_ROOT:
        pytest.skip("root may change the runner's own ruleset")
    with pytest.raises(OSError):
        nftables.send_batch(nftables.redirect_batch({"ip": 40001}))
