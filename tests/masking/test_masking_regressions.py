"""The cases that once leaked in peer CI systems (shared/reference/masking-facts.md), one named test each.

Each test also runs the attack against the naive technique the peer used and asserts that it DOES leak
there, so the test is known to be able to fail.
"""

from __future__ import annotations

import re

import pytest

from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import assert_no_fragment, reference_mask, stream_through


def registry_of(*secrets: bytes) -> SecretRegistry:
    r = SecretRegistry()
    assert r.add_many(secrets, source="test") == len(secrets)
    return r


# --- the naive techniques, for the "protection off" half of each test ---------------------------------------

def per_write_replace(secrets: list[bytes], chunks: list[bytes]) -> bytes:
    """Go strings.Replacer per write: no hold-back at all."""
    out = b""
    for c in chunks:
        for s in secrets:
            c = c.replace(s, b"***")
        out += c
    return out


def restart_on_mismatch(secret: bytes, chunks: list[bytes]) -> bytes:
    """GitLab-style per-phrase writer: on a mismatch the partial match is written out and matching restarts
    at the current byte (no failure function), so a repeated prefix loses the real start."""
    out, partial = b"", b""
    for b in b"".join(chunks):
        c = bytes([b])
        if secret.startswith(partial + c):
            partial += c
            if partial == secret:
                out, partial = out + b"***", b""
        else:
            out += partial
            partial = c if secret.startswith(c) else b""
            if not partial:
                out += c
    return out + partial


def leftmost_first(secrets: list[bytes], text: bytes) -> bytes:
    """One regex alternation / strings.Replacer over the whole text: non-overlapping leftmost matches."""
    return re.sub(b"|".join(re.escape(s) for s in secrets), b"***", text)


def replace_loop(secrets: list[bytes], text: bytes) -> bytes:
    for s in secrets:
        text = text.replace(s, b"***")
    return text


# --- GitLab -------------------------------------------------------------------------------------------------

def test_gitlab_secret_split_at_repeated_prefix_abab_ab1234() -> None:
    secret = b"abab1234"
    chunks = [b"abab", b"ab1234"]  # the whole output is "ababab1234": the secret starts at offset 2
    assert secret in restart_on_mismatch(secret, chunks)  # protection off: the whole secret leaks
    out = stream_through(registry_of(secret), chunks)
    assert out == b"ab***"
    assert_no_fragment(out, [secret], allowed=[b"ab"])


@pytest.mark.parametrize("cut", range(1, 10))
def test_gitlab_repeated_prefix_at_every_cut(cut: int) -> None:
    text = b"ababab1234"
    out = stream_through(registry_of(b"abab1234"), [text[:cut], text[cut:]])
    assert out == b"ab***"


def test_gitlab_overlapping_secrets_keep_output_order() -> None:
    # Two per-secret writers in a chain re-order bytes when secrets overlap; one pass over the union cannot.
    secrets = [b"AAAABB", b"BBBBBB"]
    text = b"1-AAAABBBBBB-2 and 3-BBBBBBAAAABB-4"
    # Protection off: a chain of per-secret maskers (each one correct on its own) sees the second secret only
    # after the first took its overlapping bytes, so "BBBB" of it is left in the clear.
    assert b"***BBBB" in replace_loop(secrets, text)
    out = stream_through(registry_of(*secrets), [text[i:i + 3] for i in range(0, len(text), 3)])
    assert out == b"1-***-2 and 3-***-4"
    assert_no_fragment(out, secrets, min_fragment=4)


# --- Go strings.Replacer maskers ----------------------------------------------------------------------------

def test_replacer_secret_split_across_two_writes_is_masked() -> None:
    secret = b"s3cr3t-t0k3n"
    chunks = [b"token=s3cr3t", b"-t0k3n\n"]
    assert b"s3cr3t" in per_write_replace([secret], chunks)  # protection off: both halves leak
    out = stream_through(registry_of(secret), chunks)
    assert out == b"token=***\n"


def test_replacer_nested_secrets_fully_masked() -> None:
    secrets = [b"xabc", b"abcdefgh"]  # the short one ends inside the long one
    text = b"[xabcdefgh]"
    naive = leftmost_first(secrets, text)
    assert b"defgh" in naive  # protection off: leftmost match "xabc" hides the start, "defgh" leaks
    out = registry_of(*secrets).mask(text)
    assert out == b"[***]"
    assert_no_fragment(out, secrets, min_fragment=3, allowed=[b"[", b"]"])


def test_replacer_secret_inside_another_secret() -> None:
    secrets = [b"outer-SECRET-value", b"SECRET"]
    assert registry_of(*secrets).mask(b"a outer-SECRET-value b SECRET c") == b"a *** b *** c"


# --- Buildkite ----------------------------------------------------------------------------------------------

def test_buildkite_hold_back_is_bounded_while_whitespace_keeps_matching() -> None:
    # Buildkite's "a newline matches any whitespace run" held output back without bound. Here every form is
    # a literal, so a live partial match (the only thing held back) is shorter than the longest pattern.
    registry = registry_of(b"-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----")
    longest = max(len(p) for p in registry.patterns())
    out: list[bytes] = []
    stream = registry.stream(out.append)
    stream.write(b"-----BEGIN KEY-----")
    for _ in range(2000):
        stream.write(b" \r\n \t")
        assert stream.held < longest
    stream.close()
    assert b"".join(out).startswith(b"***")


def test_hold_back_cap_bounds_a_secret_longer_than_the_cap() -> None:
    big = bytes(range(33, 127)) * 200  # an 18,800-byte secret (a certificate bundle, say)
    registry = registry_of(big)
    uncapped = registry.stream(lambda b: None, hold_cap=1 << 30)
    uncapped.write(big[:-1])
    assert uncapped.held == len(big) - 1  # protection off: everything is held
    out: list[bytes] = []
    capped = registry.stream(out.append, hold_cap=1024)
    for i in range(0, len(big) - 1, 100):
        capped.write(big[i:min(i + 100, len(big) - 1)])
        assert capped.held <= 1024
    capped.write(big[-1:])
    capped.close()
    # The part pushed out by the cap is out; the rest of the secret is still masked when it completes.
    assert b"".join(out).endswith(b"***")


# --- leftmost-longest and replace loops ---------------------------------------------------------------------

def test_leftmost_longest_overlap_leaks_nothing() -> None:
    secrets = [b"AAAABB", b"BBBBBB"]
    text = b"..AAAABBBBBB.."
    naive = leftmost_first(secrets, text)
    assert naive == b"..***BBBB.."  # protection off: 4 bytes of the second secret in the clear
    assert registry_of(*secrets).mask(text) == b"..***.."


def test_sequential_replace_loop_leaks_the_other_part() -> None:
    secrets = [b"BBBBBB", b"AAAABB"]
    text = b"..AAAABBBBBB.."
    assert replace_loop(secrets, text) == b"..AAAA***.."  # protection off
    assert registry_of(*secrets).mask(text) == b"..***.."


def test_adjacent_occurrences_merge_into_one_replacement() -> None:
    registry = registry_of(b"AAAA", b"BBBB")
    assert registry.mask(b"xAAAABBBBy") == b"x***y"
    assert stream_through(registry, [b"xAAAA", b"BBBBy"]) == b"x***y"
    assert registry.mask(b"xAAAA-BBBBy") == b"x***-***y"


# --- checking fragments, not only whole secrets -------------------------------------------------------------

def test_fragment_check_catches_partial_leaks_a_whole_secret_check_misses() -> None:
    secrets = [b"AAAABB", b"BBBBBB"]
    naive = leftmost_first(secrets, b"..AAAABBBBBB..")
    assert all(s not in naive for s in secrets)  # a whole-secret check passes the leaking output
    with pytest.raises(AssertionError, match="secret #1"):
        assert_no_fragment(naive, secrets, allowed=[b".."])


def test_reference_is_union_of_all_occurrences() -> None:
    assert reference_mask(b"ababab1234", [b"abab1234", b"abab"]) == b"***"
    assert reference_mask(b"xaaay", [b"aa"]) == b"x***y"


# --- the same peer bugs, met through encoded forms ----------------------------------------------------------

def test_overlapping_secrets_in_a_hex_dump_leak_nothing() -> None:
    # Leftmost-first over the hex forms hides the first secret's digits and prints the second one's tail.
    secrets = [b"AAAABB", b"BBBBBB"]
    text = b"dump " + b"..AAAABBBBBB..".hex().encode()
    registry = registry_of(*secrets)
    naive = leftmost_first([s.hex().encode() for s in secrets], text)
    assert b"42424242" in naive  # protection off: BBBB of the second secret, in hex
    assert registry.mask(text) == b"dump 2e2e***2e2e"


def test_percent_form_split_at_a_repeated_prefix_is_masked() -> None:
    # GitLab's `abab` + `ab1234` case where the repeated prefix is an escape: "%2F%2F" + "%2Fx1234".
    secret = b"//x1234"
    chunks = [b"path=%2F%2F", b"%2Fx1234&"]
    encoded = b"%2F%2Fx1234"
    assert encoded in restart_on_mismatch(encoded, chunks)  # protection off: the encoded secret leaks
    out = stream_through(registry_of(secret), chunks)
    assert out == b"path=%2F***&"


@pytest.mark.parametrize("join", [b"\n  ", b"\n\n", b"\r\n\t", b"  "])
def test_buildkite_any_whitespace_between_lines_of_a_key(join: bytes) -> None:
    # Buildkite lets a newline in a secret match any whitespace run (a key indented in YAML, blank lines
    # between lines). Literal forms cannot do that; the line-by-line forms cover each line instead.
    key = (b"-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUA\n"
           b"-----END KEY-----")
    lines = key.split(b"\n")
    text = b"key: |" + join + join.join(lines) + b"\n"
    whole_only = [key] + [j.join(lines) for j in (b"\r\n", b"\r\r\n", b" ", b"")]
    assert lines[1] in reference_mask(text, whole_only)  # protection off: whole-key forms miss it
    out = registry_of(key).mask(text)
    assert_no_fragment(out, lines, min_fragment=6, allowed=[b"key: |", b"-----"])
