"""Property tests: streamed masking equals the brute-force reference on the whole input, and leaks nothing.

For generated secret sets (prefixes, suffixes, overlaps, repeated prefixes, binary bytes), generated texts
and write splits at any offsets, on every engine.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.security.matcher import available_engines
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.variants import secret_variants
from runnerlib.security.wrapped import JOIN_MIN, quick_candidate
from runnerlib.testing import (
    assert_no_fragment,
    reference_mask,
    secret_sets,
    stream_through,
    texts_with_secrets,
    write_splits,
)

ENGINES = available_engines()
# A line of an encoding's alphabet this long joins the next one (security/wrapped.py), and the joined content
# is scanned for every pattern: the masker may then mask MORE than the line-blind reference (a raw secret cut
# by that line break, too). Where no line can join, the two must agree exactly.
_JOINING_LINE = re.compile(rb"(?m)^[ \t]*[A-Za-z0-9+/_=.-]{%d,}\r?\n" % JOIN_MIN)


def _masks_as_the_whole_buffer(registry: SecretRegistry, data: bytes, out: bytes) -> None:
    """Any split masks as the whole buffer does. Except where a colour code can form (`ESC[`): the colour-code
    view (wrapped.py: `grep --color` inside a secret) reads a whole buffer's line without its codes and may then
    mask more than a stream cut before the code's end, when a secret itself holds `ESC[` and the text after it
    completes a code (hypothesis: secret `m ESC xx ESC [`, then `m ESC x`). The callers' fragment check still
    says nothing of a secret leaked."""
    if b"\x1b[" not in data:
        assert registry.mask(data) == out


def _views_may_mask_more(registry: SecretRegistry, data: bytes) -> bool:
    """Whether a view that reads lines differently from the line-blind reference may mask more in `data`: a line
    that joins the next (wrapped.py), a colour code (the ANSI view), or a value cut by a line break or folded at a
    space that the fold views find (folded.py)."""
    if _JOINING_LINE.search(data) or b"\x1b[" in data:
        return True
    stream = registry.stream(lambda _b: None)
    snap = stream._snapshot()
    stream.close()
    hits = snap.find_raw(data)
    return bool(snap.breaks.occurrences(data, hits) or snap.folds.occurrences(data, hits))


def _agrees_with_reference(registry: SecretRegistry, out: bytes, data: bytes, expected: bytes) -> None:
    """Exactly the reference where no view reads lines differently; elsewhere the callers' fragment check says
    nothing leaked."""
    if not _views_may_mask_more(registry, data):
        assert out == expected


@pytest.mark.parametrize("engine", ENGINES)
@given(data=st.data())
def test_stream_equals_reference_for_any_split(engine: str, data: st.DataObject) -> None:
    secrets = data.draw(secret_sets())
    registry = SecretRegistry(engine=engine, background_merge=False)
    registry.add_many(secrets, source="test")
    planted = data.draw(texts_with_secrets(registry.secrets()))
    chunks = data.draw(write_splits(planted.data))
    expected = reference_mask(planted.data, registry.patterns())
    out = stream_through(registry, chunks)
    _masks_as_the_whole_buffer(registry, planted.data, out)
    _agrees_with_reference(registry, out, planted.data, expected)
    assert_no_fragment(out, planted.secrets, allowed=planted.clear)


@settings(max_examples=min(settings.default.max_examples, 60))  # each example compiles engines
@given(data=st.data())
def test_stream_with_encoded_forms_planted(data: st.DataObject) -> None:
    secrets = data.draw(secret_sets())
    registry = SecretRegistry()
    registry.add_many(secrets, source="test")
    planted = data.draw(texts_with_secrets(registry.secrets(), forms=True, max_pieces=6))
    chunks = data.draw(write_splits(planted.data))
    out = stream_through(registry, chunks)
    _masks_as_the_whole_buffer(registry, planted.data, out)
    _agrees_with_reference(registry, out, planted.data, reference_mask(planted.data, registry.patterns()))
    assert_no_fragment(out, planted.secrets, allowed=planted.clear)


@settings(max_examples=min(settings.default.max_examples, 60))  # each example compiles engines
@given(data=st.data())
def test_secrets_added_one_by_one_with_deltas_match_reference(data: st.DataObject) -> None:
    # Each add goes to a small delta layer while a background merge rebuilds the base: the answer must
    # not depend on which layer holds which pattern, at any moment.
    secrets = data.draw(secret_sets(max_secrets=8))
    registry = SecretRegistry()
    for s in secrets:
        registry.add(s, source="test")
    planted = data.draw(texts_with_secrets(registry.secrets()))
    before = registry.mask(planted.data)
    _agrees_with_reference(registry, before, planted.data, reference_mask(planted.data, registry.patterns()))
    registry.wait_merged()
    assert registry.mask(planted.data) == before  # whichever layer holds which pattern
    # (The reference alone failed here when a secret holds `ESC[` and the text forms a colour code: the ANSI
    # view reads the line without it and masks the secret whole, as it should.)


@settings(max_examples=min(settings.default.max_examples, 60))  # each example compiles engines
@given(data=st.data())
def test_flush_anywhere_never_drops_or_reorders_clear_bytes(data: st.DataObject) -> None:
    secrets = data.draw(secret_sets())
    registry = SecretRegistry()
    registry.add_many(secrets, source="test")
    text = data.draw(texts_with_secrets(registry.secrets())).data
    chunks = data.draw(write_splits(text))
    out = stream_through(registry, chunks, flush_every=data.draw(st.integers(1, 3)))
    # Forced flushes may emit the start of a secret cut by the flush, but never lose or reorder a byte:
    # deleting replacements from the output leaves a subsequence of the input.
    remaining = iter(text)
    assert all(b in remaining for b in out.replace(b"***", b""))
    if not any(p in text for p in registry.patterns()):
        assert out == text


@given(text=st.binary(max_size=300), chunks_seed=st.data())
def test_no_secrets_is_identity(text: bytes, chunks_seed: st.DataObject) -> None:
    registry = SecretRegistry()
    assert stream_through(registry, chunks_seed.draw(write_splits(text))) == text
    registry.add("zzzz-not-in-text", source="test")
    if b"zzzz" not in text:
        assert stream_through(registry, chunks_seed.draw(write_splits(text))) == text


@settings(max_examples=min(settings.default.max_examples, 60))  # each example compiles engines
@given(data=st.data())
def test_secret_added_mid_stream_is_masked_in_everything_emitted_afterwards(data: st.DataObject) -> None:
    secrets = data.draw(secret_sets())
    late = secrets.pop()
    registry = SecretRegistry()
    registry.add_many(secrets, source="test")
    planted = data.draw(texts_with_secrets([*secrets, late]))
    chunks = data.draw(write_splits(planted.data))
    at = data.draw(st.integers(0, len(chunks)))
    out: list[bytes] = []
    stream = registry.stream(out.append)
    for chunk in chunks[:at]:
        stream.write(chunk)
    registry.add(late, source="late")
    mark = len(out)
    for chunk in chunks[at:]:
        stream.write(chunk)
    stream.close()
    after = b"".join(out[mark:])
    # Held-back bytes are rescanned with the new set; nothing emitted after add() shows a whole form of it.
    assert not any(form in after for form in secret_variants(late, min_length=registry.min_length))


def brute_force_held(text: bytes, patterns: list[bytes], triggers: list[bytes] = ()) -> int:
    """How many trailing bytes of `text` are undecided: from the earliest live partial match (of a pattern or
    a trigger) on, the first byte not covered by a complete occurrence of a pattern."""
    searched = [*patterns, *triggers]
    live = next((p for p in range(len(text))
                 if any(len(q) > len(text) - p and q.startswith(text[p:]) for q in searched)), len(text))
    covered = bytearray(len(text))
    for q in patterns:
        i = text.find(q)
        while i >= 0:
            covered[i:i + len(q)] = b"\1" * len(q)
            i = text.find(q, i + 1)
    first_undecided = next((p for p in range(live, len(text)) if not covered[p]), len(text))
    return len(text) - first_undecided


@pytest.mark.parametrize("engine", ENGINES)
def test_a_mask_ending_at_the_held_tail_holds_only_what_follows_it(engine: str) -> None:
    """Found by the property below (hypothesis, as uid 65534): secrets holding a colour code (`ESC[m`), printed
    one after the other. The colour view masks the whole run and holds only the last ESC, where a form starting
    10 bytes back (inside the masked run) could still go on: holding those bytes is not needed, the stream gives
    the whole buffer's answer at every cut."""
    secrets = [b"xxxxxxx\x1b[m", b"xxxxxx\x1b[m", b"xxxxxx\x1b[mxxxxxxx\x1b[m", b"xxxx", b"xxxxx\x1b[mxxxxxxx\x1b[m"]
    text = b"xxxxxxx\x1b[m" * 9 + b"xxxxx\x1b[mxxxxxxx\x1b[m"
    registry = SecretRegistry(engine=engine, background_merge=False)
    registry.add_many(secrets, source="test")
    emitted = bytearray()
    stream = registry.stream(emitted.extend)
    stream.write(text[:-2])
    assert bytes(emitted) == b"***" and stream.held == 1
    assert brute_force_held(text[:-2], registry.patterns(), registry.triggers()) > stream.held
    whole = registry.mask(text)
    assert whole == b"***"
    assert all(stream_through(registry, [text[:cut], text[cut:]]) == whole for cut in range(1, len(text)))


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=min(settings.default.max_examples, 80))
@given(data=st.data())
def test_hold_back_is_exactly_what_could_still_be_a_secret(engine: str, data: st.DataObject) -> None:
    secrets = data.draw(secret_sets())
    registry = SecretRegistry(engine=engine, background_merge=False)
    registry.add_many(secrets, source="test")
    # Triggers (searched to find wrapped forms) are held like patterns while they may still complete.
    patterns, triggers = registry.patterns(), registry.triggers()
    text = data.draw(texts_with_secrets(registry.secrets())).data
    emitted = bytearray()
    stream = registry.stream(emitted.extend)
    written = b""
    for chunk in data.draw(write_splits(text)):
        stream.write(chunk)
        written += chunk
        snap = stream._snapshot()
        folds, breaks = snap.folds, snap.breaks
        if quick_candidate(written) or b"%" in written or b"\x1b" in written[written.rfind(b"\n") + 1:] or \
                (folds and folds.tail_live_start(written) < len(written)) or \
                (breaks and breaks.tail_live_start(written, snap._live_start) < len(written)):
            # The last line may be part of a wrapped encoding (its joined content), or a percent form with
            # mixed-case hex (read with its escapes in uppercase), or a line with colour codes (read without
            # them), or the end may be a multi-word form folded at a space or a value cut by a line break
            # (security/folded.py): each can hold back more. Or a view's mask ended where the held bytes begin
            # (the output ends with it): a form that starts inside the masked run is masked already, and one that
            # goes on past it is masked on with the next write (test_a_mask_ending_at_the_held_tail_...).
            assert stream.held >= brute_force_held(written, patterns, triggers) or emitted.endswith(b"***")
        else:
            assert stream.held == brute_force_held(written, patterns, triggers)
    stream.close()
