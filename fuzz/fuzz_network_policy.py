"""atheris harness: the network policy parser (job-file `network:` and `runnerlib run --network`).

Run: .venv/bin/python fuzz/fuzz_network_policy.py -atheris_runs=1000

Properties: any string or list either raises NetworkSpecError (its message naming the field) or gives a policy
whose targets have ports 1-65535 and are never a metadata/link-local address; a parsed policy prints a form
that reads back to the same policy.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.security.network import NetworkSpecError, is_metadata, parse_network

PIECES = ["full", "none", "loopback", "[", "]", ":", ",", " ", "::1", "127.0.0.1", "169.254.169.254", "::ffff:",
          "fd00:ec2::254", "db", ".", "-", "80", "65535", "0", "99999", "localhost", "x" * 70, "\0", "é"]


def _text(fdp: atheris.FuzzedDataProvider) -> str:
    if fdp.ConsumeBool():
        return fdp.ConsumeUnicodeNoSurrogates(40)
    return "".join(fdp.PickValueInList(PIECES) for _ in range(fdp.ConsumeIntInRange(0, 8)))


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    value: object = _text(fdp) if fdp.ConsumeBool() else [_text(fdp) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    try:
        policy = parse_network(value)
    except NetworkSpecError as exc:
        assert str(exc).startswith("network: "), exc
        return
    for target in policy.targets:
        assert 1 <= target.port <= 65535
        try:
            assert not is_metadata(target.host), target
        except ValueError:
            pass  # a host name, checked again when it is resolved
    assert parse_network(str(policy)) == policy, (value, str(policy))


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
