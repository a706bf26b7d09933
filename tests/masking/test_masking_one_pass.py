"""One Hyperscan pass per write: the masker's base database also finds the known-format prefixes.

MaskSnapshot.find_with_known gives the masked runs and the known-format prefix hits of a buffer from one
scan (matcher.HyperscanMatcher's `extra` literals); the known-formats stage then skips its own prefilter
scan. These tests hold the one-pass answer to the two-pass one: the same runs, the same prefix hits as the
prefilter's `find`, and the same bytes and notices out of a step's stream at any split of the writes.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runnerlib.security.known_formats as kf
from runnerlib.security.matcher import available_engines
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import known_stage_through, write_splits

pytestmark = pytest.mark.skipif("hyperscan" not in available_engines(), reason="the one pass is Hyperscan's")

_rnd = random.Random(7)
SECRETS = ["s3cr3tValue" + "".join(_rnd.choice("abcdef0123456789") for _ in range(12)) for _ in range(3)]
# A registered secret that holds a known-format prefix, and one that is a token itself.
SECRETS += ["pw-ghp_" + "Q" * 12, "AKIA" + "ABCDEFGHIJKLMNOP"]
TOKENS = [b"ghp_" + b"a1B2" * 9, b"glpat-" + b"x" * 20, b"AKIA" + b"Z" * 16, b"sk_live_" + b"k" * 16,
          b"Authorization: Bearer abcdefgh12345", b"?X-Amz-Signature=0123456789abcdef&",
          b"-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"]
PIECES = [*kf.PREFIXES, *TOKENS, *(s.encode() for s in SECRETS), *(s.encode()[:9] for s in SECRETS),
          b"the quick brown fox ", b"\n", b" ", b"A", b"7", b"_", b"-", b"=", b"?", b"&", b":"]


def _registry() -> SecretRegistry:
    registry = SecretRegistry()
    registry.add_many(SECRETS, source="test")
    return registry


_REGISTRY = _registry()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=120), st.booleans())
def test_one_pass_finds_what_the_two_passes_find(pieces: list[bytes], line_start: bool) -> None:
    buf = b"".join(pieces)
    snap = _REGISTRY._masker.current()
    masks, known = snap.find_with_known(buf, line_start)
    assert sorted(masks) == sorted(snap.find(buf, line_start))
    finder = kf._get_finder()
    literal = sorted(finder.find_literal(buf))
    if len(literal) <= kf.DENSE_HITS:
        assert known is not None
    if known is not None:  # what the known-formats stage would have found with its own scan
        assert sorted(known) == literal == sorted(finder.find(buf))


def _stream(registry: SecretRegistry, chunks: list[bytes], *, one_pass: bool, idle: bool) -> tuple[bytes, list[str]]:
    return known_stage_through(registry, chunks, one_pass=one_pass, idle=idle)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_step_stream_is_the_same_with_one_pass(data: st.DataObject) -> None:
    text = b"".join(data.draw(st.lists(st.sampled_from(PIECES), max_size=100)))
    chunks = data.draw(write_splits(text, max_writes=12))
    idle = data.draw(st.booleans())
    assert _stream(_REGISTRY, chunks, one_pass=True, idle=idle) == _stream(_REGISTRY, chunks, one_pass=False,
                                                                           idle=idle)


def test_bulk_output_is_scanned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A piece with no secret and no token: the known-formats stage takes the masker's answer, no scan of its
    own. Control: with the one pass off, it scans every piece."""
    finder = kf._get_finder()
    calls: list[int] = []
    real = finder.find
    monkeypatch.setattr(finder, "find", lambda data: calls.append(len(data)) or real(data))
    text = b"the quick brown fox jumps over the lazy dog 0123456789a\n" * 4000
    # Pieces as a pipe gives them: cut inside lines, so the masker holds a tail that may begin a secret.
    pieces = [text[i:i + 65521] for i in range(0, len(text), 65521)]
    out, names = _stream(_REGISTRY, pieces, one_pass=True, idle=False)
    assert out == text and names == [] and calls == []
    out, names = _stream(_REGISTRY, pieces, one_pass=False, idle=False)
    assert out == text and len(calls) >= len(pieces)


@pytest.mark.parametrize("unit", [b"ghp_", b"AKIA", b"sig=", b"Authorization: "])
def test_dense_prefixes_fall_back_to_the_prefilter(unit: bytes) -> None:
    """Output made of prefixes: the one pass gives up on them past DENSE_HITS (a Python call per hit otherwise)
    and the known-formats stage's own prefilter (its viable scan) decides; the secrets are found all the same."""
    secret = SECRETS[0].encode()
    buf = unit * 2000 + secret + unit * 10
    snap = _REGISTRY._masker.current()
    masks, known = snap.find_with_known(buf)
    assert known is None
    assert sorted(masks) == sorted(snap.find(buf)) != []
    chunks = [buf[:30000], buf[30000:]]
    assert _stream(_REGISTRY, chunks, one_pass=True, idle=False) == _stream(_REGISTRY, chunks, one_pass=False,
                                                                            idle=False)
    # Below the threshold the same prefixes come from the one pass.
    assert snap.find_with_known(unit * 5)[1] is not None


def test_masked_writes_take_the_prefixes_of_the_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write with a registered secret in it: the known-formats stage takes the one pass's prefixes, moved to
    where they are in the masked bytes, and scans nothing itself (the mask command's 1 MiB reads of a log with
    a secret in most of them scanned twice). Control: with the one pass off, it scans every write."""
    finder = kf._get_finder()
    calls: list[int] = []
    real = finder.find
    monkeypatch.setattr(finder, "find", lambda data: calls.append(len(data)) or real(data))
    token = TOKENS[0].decode()
    text = "".join(f"line {i} {SECRETS[i % 3]} then {token if i % 50 == 0 else 'plain'} words\n"
                   for i in range(3000)).encode()
    pieces = [text[i:i + 65521] for i in range(0, len(text), 65521)]
    out, names = _stream(_REGISTRY, pieces, one_pass=True, idle=False)
    assert calls == []
    assert SECRETS[0].encode() not in out and TOKENS[0] not in out and names
    assert (out, names) == _stream(_REGISTRY, pieces, one_pass=False, idle=False)
    assert len(calls) >= len(pieces)


def test_a_replacement_that_can_start_a_prefix_makes_the_stage_scan_for_itself() -> None:
    """The masker's replacement `gh` before `p_` and 36 letters forms a GitHub token no byte of the input held as
    one: no prefix hit of the one pass can be moved there, so the stage scans such writes itself and masks it, as
    the two passes do. (With `***`, which no prefix holds, the moved hits are all there are.)"""
    registry = SecretRegistry(replacement="gh")
    registry.add_many(SECRETS, source="test")
    text = ("x " + SECRETS[1] + "p_" + "A1b2" * 9 + " y\n").encode()
    one, names = known_stage_through(registry, [text], one_pass=True)
    assert (one, names) == known_stage_through(registry, [text], one_pass=False)
    assert b"A1b2" * 9 not in one and names
