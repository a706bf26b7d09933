"""Secrets cut short by the tool that prints them (security/truncated.py): `strace -s 32`'s `"Xk9f..."...`, an
HTTP debug log's `Bearer eyJhbGciOi…`. A beginning of at least truncated.HEAD bytes followed by a marker is masked,
in a whole buffer and in a stream cut anywhere (the held beginning is not released while a marker may come)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.security import registry as registry_module
from runnerlib.security import truncated
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import assert_no_fragment, stream_through, write_splits

TOKEN = b"tk_9fQ2mZr7LbX4vN8pWc3sHd6yJg1KeA5u"  # 36 bytes


def _registry(*values: bytes) -> SecretRegistry:
    registry = SecretRegistry()
    registry.add_many(values, source="test")
    return registry


@pytest.fixture
def no_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The protection off: no head triggers."""
    forms = registry_module.secret_forms

    def without(value: bytes, *, min_length: int = 4) -> tuple[list[bytes], list[bytes], list[bytes]]:
        masked, found_by, line_starts = forms(value, min_length=min_length)
        return masked, [t for t in found_by if t not in truncated.heads(value)], line_starts

    monkeypatch.setattr(registry_module, "secret_forms", without)


@pytest.mark.parametrize("marker", truncated.MARKERS)
def test_a_beginning_followed_by_a_marker_is_masked(marker: bytes) -> None:
    registry = _registry(TOKEN)
    line = b'write(1, "' + TOKEN[:32] + marker + b", 47) = 47\n"
    assert registry.mask(line) == b'write(1, "***' + marker + b", 47) = 47\n"


def test_the_attack_leaks_without_the_heads(no_heads: None) -> None:
    """Control: without the head triggers the beginning is printed in clear."""
    line = b'write(1, "' + TOKEN[:32] + b'"..., 47) = 47\n'
    assert TOKEN[:32] in _registry(TOKEN).mask(line)


def test_what_is_not_a_cut_secret_is_left_alone() -> None:
    """No marker after the beginning, a beginning shorter than HEAD, and ellipses in ordinary text: unchanged."""
    registry = _registry(TOKEN)
    for text in (TOKEN[:20] + b" and more\n", TOKEN[: truncated.HEAD - 1] + b"...\n",
                 b"Downloading...\nBuilding\xe2\x80\xa6 done\n", TOKEN[:20] + b"x...\n"):
        assert registry.mask(text) == text


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_cut_secret_is_masked_at_any_write_split(data: st.DataObject) -> None:
    """Any cut of at least HEAD bytes, any marker, anywhere in a line, written in any pieces: no HEAD-byte piece of
    the secret gets out, and the stream gives what the whole buffer gives."""
    secret = data.draw(st.binary(min_size=truncated.HEAD + 1, max_size=60).filter(lambda b: b"\n" not in b
                                                                                  and b"." not in b))
    registry = _registry(secret)
    cut = data.draw(st.integers(truncated.HEAD, len(secret) - 1))
    marker = data.draw(st.sampled_from(truncated.MARKERS))
    text = data.draw(st.binary(max_size=20)) + secret[:cut] + marker + data.draw(st.binary(max_size=20)) + b"\n"
    whole = registry.mask(text)
    assert_no_fragment(whole, [secret[:cut]], min_fragment=truncated.HEAD)
    chunks = data.draw(write_splits(text, max_writes=8))
    assert stream_through(registry, chunks) == whole


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=20).map(lambda b: bytes(b"ab."[c % 3] for c in b)), min_size=1,
                max_size=15, unique=True),
       st.lists(st.binary(min_size=1, max_size=20).map(lambda b: bytes(b"ab."[c % 3] for c in b)), max_size=6),
       st.binary(max_size=40).map(lambda b: bytes(b"ab."[c % 3] for c in b)))
def test_longest_beginning_from_two_neighbours_covers_what_every_pattern_gives(
        patterns: list[bytes], triggers: list[bytes], data: bytes) -> None:
    """Property: the two sorted neighbours of the text give the longest beginning of any pattern there, except where
    a masked pattern held whole covers it anyway (brute force over every pattern and trigger as the reference)."""
    from runnerlib.security.masker import Masker

    masker = Masker(engine="reference")
    masker.add(patterns, triggers=triggers)
    snap = masker.current()
    masked = set(masker.patterns)
    every = [*masker.patterns, *masker.triggers]
    for a in range(len(data) + 1):
        probe = data[a:]
        full = max((len(p) for p in masked if probe.startswith(p)), default=0)
        brute = max((truncated.common_length(probe, p) for p in every
                     if not probe.startswith(p) or p not in masked), default=0)
        assert max(snap.longest_beginning(data, a), full) == max(brute, full)


def test_a_cut_piece_is_masked_when_a_view_finds_something_too() -> None:
    """Found by the atheris harness (stop 29): the masker looked for pieces cut short only when it had fewer masks
    than hits, counted after the wrapped view had added its runs. Here the view's runs outnumbered the trigger hits,
    so the whole output left `b\\\\n\\\\n\\\\nbb1aa11...` before `'…` in clear, while a stream cut elsewhere (with fewer
    view runs in its buffer) masked it. The trigger hits are counted before the view now."""
    registry = SecretRegistry(background_merge=False)
    registry.add_many([b"b\n\n\nbb1aa11\n\n\n\n\n\n\n\nab111", b"bbbbbb", b"b\nbbbb"], source="test")
    text = (b"bbbbbbbbbbbbbbab\n1\nb\n\n\nab\n\n\nbb1aa11\n\n\n\n\n\n\n\na'\xe2\x80\xa6b\naaa1" + b"\n" * 13
            + b"aa\nab1")
    whole = registry.mask(text)
    assert b"bb1aa11" not in whole and b"***'\xe2\x80\xa6" in whole, whole
    for cut in range(1, len(text)):
        assert stream_through(registry, [text[:cut], text[cut:]]) == whole, cut
