"""Differential test: hyperscan, ahocorasick-rs and the brute-force reference report the same occurrences,
and the layered masker (base + deltas, merged in the background) masks like one big automaton."""

from __future__ import annotations

import base64
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runnerlib.security import matcher
from runnerlib.security.masker import Masker, one_character_a_line, reference_mask
from runnerlib.security.matcher import available_engines, build_matcher
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.variants import base64_forms, secret_variants
from runnerlib.testing import assert_no_fragment, stream_through

patterns_st = st.lists(st.binary(min_size=1, max_size=6).map(lambda b: bytes(x % 5 for x in b)), min_size=1,
                       max_size=12, unique=True)
text_st = st.binary(max_size=200).map(lambda b: bytes(x % 6 for x in b))  # bytes 0..5: NUL included


def _amid_text(form: bytes) -> bytes:
    """`form` with text around it: on a line of its own for a form one character a line (it counts only there)."""
    return b"x\n" + form + b"\ny" if one_character_a_line(form) else b"x " + form + b" y"


@given(patterns=patterns_st, text=text_st)
def test_engines_report_identical_occurrences(patterns: list[bytes], text: bytes) -> None:
    results = {e: sorted(build_matcher(patterns, e).find(text)) for e in available_engines()}
    expected = results.pop("reference")
    for engine, got in results.items():
        assert got == expected, engine


@given(patterns=patterns_st, text=text_st, split=st.integers(0, 12))
def test_layered_masker_equals_reference(patterns: list[bytes], text: bytes, split: int) -> None:
    for engine in available_engines():
        m = Masker(engine=engine)
        m.add(patterns[:split])
        m.add(patterns[split:])  # usually lands in a delta layer
        assert m.mask(text) == reference_mask(text, patterns), engine
        m.wait_merged()
        assert m.mask(text) == reference_mask(text, patterns), engine


def test_hyperscan_nul_and_overlong_patterns_go_to_the_side_matcher() -> None:
    if "hyperscan" not in available_engines():
        pytest.skip("hyperscan does not import on this machine")
    long = bytes(range(65, 91)) * 700  # 18,200 bytes: over Hyperscan's literal limit
    patterns = [b"a\x00b", long, b"plain"]
    m = build_matcher(patterns, "hyperscan")
    text = b"xa\x00b a plain " + long
    assert sorted(m.find(text)) == sorted(build_matcher(patterns, "reference").find(text))
    # Protection off: cut at the NUL, "a\x00b" would be "a" and match every "a".
    assert len(build_matcher([b"a"], "hyperscan").find(text)) > 1


def test_engine_choice_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(matcher.ENGINE_ENV, "reference")
    assert matcher.default_engine() == "reference"
    monkeypatch.setenv(matcher.ENGINE_ENV, "bogus")
    with pytest.raises(ValueError, match="RUNNERLIB_MASK_ENGINE"):
        matcher.default_engine()
    with pytest.raises(ValueError, match="empty pattern"):
        build_matcher([b""], "reference")


def test_many_adds_stay_in_small_deltas_and_merge() -> None:
    m = Masker()
    secrets = [f"tok-{i:05d}-abcdef".encode() for i in range(3000)]
    m.add(secrets[:2000])
    for s in secrets[2000:2100]:
        m.add([s])
        assert all(layer.stop - layer.start <= 2000 for layer in m.snapshot.layers)
    text = b" ".join(secrets[::37]) + b" tok-99999-abcdef"
    assert m.mask(text) == reference_mask(text, secrets[:2100])
    assert m.wait_merged(timeout=120)
    assert len(m.snapshot.layers) == 1
    assert m.mask(text) == reference_mask(text, secrets[:2100])


def test_recent_deltas_fold_into_one_main_engine_layer() -> None:
    if "hyperscan" not in available_engines():
        pytest.skip("hyperscan does not import on this machine")
    m = Masker(engine="hyperscan")
    base = [f"base-secret-{i:04d}".encode() for i in range(200)]
    m.add(base)
    assert m.wait_merged(timeout=120)
    recent = [f"recent-{i:03d}-value".encode() for i in range(40)]
    for p in recent:
        m.add([p])  # each add: an ahocorasick-rs delta, built in about a millisecond
    m._fold_deltas()  # what the merge thread does first (it may already have done it)
    names = [layer.matcher.name for layer in m.snapshot.layers]
    assert names[0] == "hyperscan" and len(names) <= 3  # exact layout depends on the merge thread
    text = b" ".join(base[::17] + recent[::3]) + b" recent-999-value"
    assert m.mask(text) == reference_mask(text, base + recent)
    assert m.wait_merged(timeout=120) and len(m.snapshot.layers) == 1
    assert m.mask(text) == reference_mask(text, base + recent)


def test_first_patterns_become_a_main_engine_base_without_the_quiet_period() -> None:
    """A job's first secrets (the socket token) must not be scanned by the delta engine for the quiet period:
    ahocorasick-rs crawls at ~450 MB/s when a pattern starts with a byte common in the output."""
    if "hyperscan" not in available_engines():
        pytest.skip("hyperscan does not import on this machine")
    m = Masker(engine="hyperscan")
    token = b"xK3-first-token-value"  # starts with "x", like the log lines below
    m.add([token])  # returns with a quick ahocorasick-rs delta
    m._fold_deltas()  # what the merge thread does first, before waiting for a quiet period (may have done)
    layers = m.snapshot.layers
    assert len(layers) == 1 and layers[0].base and layers[0].matcher.name == "hyperscan"
    text = b"x" * 50 + token + b"\n"
    assert m.mask(text) == b"x" * 50 + b"***\n"
    assert m.wait_merged(timeout=120) and len(m.snapshot.layers) == 1


@given(
    secrets=st.lists(st.binary(min_size=4, max_size=10).map(lambda b: bytes(b"a/ %:\x00\n\xff"[x % 8] for x in b)),
                     min_size=1, max_size=3, unique=True).filter(lambda ss: all(s.strip() for s in ss)),
    picks=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.integers(0, 60)), max_size=8),
)
def test_engines_agree_on_real_variant_sets(secrets: list[bytes], picks: list[tuple[int, int, int]]) -> None:
    # The variant sets hold many forms sharing prefixes (percent forms differing in one escape, hex in upper
    # and lower case, base64 at three alignments): the engines must still report the same occurrences.
    patterns = sorted({v for s in secrets for v in secret_variants(s)})
    text = b"".join(patterns[i % len(patterns)][a:a + b + 4] + b"%" for i, a, b in picks)
    results = {e: sorted(build_matcher(patterns, e).find(text)) for e in available_engines()}
    expected = results.pop("reference")
    for engine, got in results.items():
        assert got == expected, engine
        m = Masker(engine=engine)
        m.add(patterns)
        assert m.mask(text) == reference_mask(text, patterns), engine


long_patterns_st = st.lists(st.binary(min_size=1, max_size=14).map(lambda b: bytes(97 + x % 3 for x in b)),
                            min_size=1, max_size=30, unique=True)
long_text_st = st.binary(max_size=300).map(lambda b: bytes(97 + x % 3 for x in b))


@given(patterns=long_patterns_st, text=long_text_st, key_min=st.integers(1, 6), group_max=st.integers(1, 4))
def test_hyperscan_keys_confirmed_report_exactly_the_patterns(patterns: list[bytes], text: bytes, key_min: int,
                                                              group_max: int) -> None:
    """Keys standing for several patterns (shared heads, lengthened past group_max) give the reference answer."""
    if "hyperscan" not in available_engines():
        pytest.skip("hyperscan does not import on this machine")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matcher, "KEY_MIN", key_min)
        mp.setattr(matcher, "KEY_GROUP_MAX", group_max)
        got = sorted(matcher.HyperscanMatcher(patterns, keyed=True).find(text))
    assert got == sorted(build_matcher(patterns, "reference").find(text))


@given(patterns=long_patterns_st, picks=st.lists(st.tuples(st.integers(0, 29), long_text_st), max_size=8),
       key_min=st.integers(1, 6), group_max=st.integers(1, 4))
def test_hyperscan_whole_literals_under_shorter_ones_report_exactly_the_patterns(
        patterns: list[bytes], picks: list[tuple[int, bytes]], key_min: int, group_max: int) -> None:
    """The whole database folds a literal into a shorter one it begins with (matcher._under_prefixes): a hit of the
    shorter one confirms the longer one, and the answer is the reference's."""
    if "hyperscan" not in available_engines():
        pytest.skip("hyperscan does not import on this machine")
    text = b"".join(patterns[i % len(patterns)] + filler[:5] for i, filler in picks)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matcher, "KEY_MIN", key_min)
        mp.setattr(matcher, "KEY_GROUP_MAX", group_max)
        m = matcher.HyperscanMatcher(patterns, keyed=False)
    assert sorted(m.find(text)) == sorted(build_matcher(patterns, "reference").find(text))
    assert all(len(group) <= group_max for group in m._tables.members if group is not None)


def test_a_literal_beginning_with_another_is_no_literal_of_its_own() -> None:
    """A secret's wrapped forms begin with their first trigger fragment, its `...` head with its first raw fragment:
    the longer literals are confirmed at the shorter one's hit (one literal fewer for Hyperscan's filter each), but
    not under a head shorter than KEY_MIN bytes, nor past KEY_GROUP_MAX patterns under one."""
    patterns = [b"4c03dfbe", b"4c03dfbe74fa", b"4c03dfbe74faaa9e06ab", b"4c03", b"4c03zzzz"]
    patterns += [b"abcdefgh" + bytes([c]) for c in b"0123456789"]  # 7 under `abcdefgh` with it, 3 on their own
    m = matcher.HyperscanMatcher([*patterns, b"abcdefgh"], keyed=False)
    assert sorted(m._tables.key_len) == [4, 8, 8, 8, 9, 9, 9]
    text = b"x 4c03dfbe74faaa9e06ab 4c03zzzz abcdefgh7 abcdefgh0 4c03dfbe74f"
    assert sorted(m.find(text)) == sorted(build_matcher([*patterns, b"abcdefgh"], "reference").find(text))


@given(patterns=long_patterns_st)
def test_literal_keys_cover_every_pattern_once_in_small_groups(patterns: list[bytes]) -> None:
    keys = matcher.literal_keys(patterns, 3, 2)
    seen = sorted(i for members in keys.values() for i in members)
    assert seen == list(range(len(patterns)))
    for key, members in keys.items():
        assert len(members) <= 2
        assert all(patterns[i].startswith(key) for i in members)
        assert len(key) >= min(3, min(len(patterns[i]) for i in members))


def test_many_patterns_sharing_a_public_head_get_keys_with_secret_bytes() -> None:
    """A DoS control: 200 forms behind one public head would make every `postgres://app:` in the output cost 200
    comparisons. The keys are lengthened until each stands for at most KEY_GROUP_MAX patterns."""
    patterns = [b"postgres://app:%08d@db" % i for i in range(200)]
    keys = matcher.literal_keys(patterns)
    assert max(len(m) for m in keys.values()) <= matcher.KEY_GROUP_MAX
    assert not any(b"postgres://app:".startswith(k) for k in keys)
    # Without the bound (a key per head), one key stands for all of them.
    assert len(matcher.literal_keys(patterns, group_max=len(patterns))) == 1


@pytest.fixture
def go(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Hyperscan compiling split (keys in two databases) from 4 keys; the whole database waits for the event."""
    if "hyperscan" not in available_engines():
        pytest.skip("hyperscan does not import on this machine")
    monkeypatch.setattr(matcher, "SPLIT_MIN_KEYS", 4)
    monkeypatch.setattr(matcher, "_cpu_count", lambda: 2)
    event = threading.Event()
    whole = matcher._compile_whole
    monkeypatch.setattr(matcher, "_compile_whole", lambda ref, keys: (event.wait(60), whole(ref, keys)))
    return event


def test_hyperscan_split_compile_then_whole_gives_the_same_answer(go: threading.Event) -> None:
    patterns = [v for s in (b"s3cr3t-value-%d!" % i for i in range(8)) for v in secret_variants(s)]
    text = b" ".join(patterns[::3]) + b" and plain text"
    expected = sorted(build_matcher(patterns, "reference").find(text))
    m = build_matcher(patterns, "hyperscan")
    assert len(m._tables.dbs) == 2 and not m.whole.is_set()
    assert sorted(m.find(text)) == expected
    go.set()
    assert m.whole.wait(60)
    # Every pattern as it is, but those ending in a space or a line break and one byte (the forms spaced out and one
    # character a line) and those beginning with another literal, confirmed at a hit.
    assert len(m._tables.dbs) == 1
    groups = [(n, g) for n, g in zip(m._tables.key_len, m._tables.members, strict=True) if g is not None]
    assert groups and all(len({p[:n] for p in g}) == 1 and len(g) <= matcher.KEY_GROUP_MAX for n, g in groups)
    assert sorted(m.find(text)) == expected


def test_hyperscan_two_databases_scanned_in_two_threads_give_the_same_answer(go: threading.Event,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A large write scans the second keyed database in a helper thread: every occurrence of both halves is
    reported once, as a scan of each database in turn reports them (and as the reference does)."""
    patterns = [v for s in (b"s3cr3t-value-%d!" % i for i in range(8)) for v in secret_variants(s)]
    filler = b"plain log text 0123456789abcdef\n" * 4096
    text = b"".join(p + filler[: 997 * (i % 7)] for i, p in enumerate(patterns)) + filler * 2
    assert len(text) >= matcher.PARALLEL_SCAN_MIN
    m = build_matcher(patterns, "hyperscan")
    assert len(m._tables.dbs) == 2
    expected = sorted(build_matcher(patterns, "reference").find(text))
    got = m.find(text)
    assert sorted(got) == expected and len(got) == len(set(got))
    # Control: the same write below the threshold (one thread, each database in turn) gives the same answer.
    monkeypatch.setattr(matcher, "PARALLEL_SCAN_MIN", len(text) + 1)
    assert sorted(m.find(text)) == expected
    go.set()


def test_every_form_masked_by_a_split_keyed_base_before_and_after_the_swap(go: threading.Event) -> None:
    """The registry of a large set (keys in two databases, then the whole database): every encoded form of a
    secret, and its base64 wrapped at 76 columns inside a document, are masked in both states."""
    secrets = [b"s3cr3t&value/%d+x=y" % i for i in range(6)]
    registry = SecretRegistry()
    registry.add_many(secrets, source="test")
    prefix = b"header " * 7 + b"xyz"  # its encoding ends near column 70: the secret's crosses the first break
    doc = base64.b64encode(prefix + secrets[2] + b" trailer" * 9)
    wrapped_doc = b"\n".join(doc[i:i + 76] for i in range(0, len(doc), 76)) + b"\n"
    base = registry._masker.snapshot.layers[0].matcher
    for state in ("keys", "whole"):
        assert len(base._tables.dbs) == (2 if state == "keys" else 1)
        for secret in secrets:
            for form in secret_variants(secret):
                assert form not in registry.mask(_amid_text(form)), (state, form)
        masked = registry.mask(wrapped_doc)
        core = base64_forms(secrets[2])[1 + len(prefix) % 3]
        assert_no_fragment(masked.replace(b"\n", b""), [core], min_fragment=12)
        go.set()
        assert registry.wait_merged(60)
    # Control: the encoding is in the document, cut by a line break (no literal pattern can match it).
    core = base64_forms(secrets[2])[1 + len(prefix) % 3]
    assert core in wrapped_doc.replace(b"\n", b"") and core not in wrapped_doc


@pytest.fixture
def in_parts(go: threading.Event, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """A batch's first set compiled in parts (matcher.KeyedParts) from a few dozen literals: four parts for the
    secrets below (the whole database waits for `go`, as above)."""
    from runnerlib.security import masker

    monkeypatch.setattr(masker, "PART_LITERALS", 60)
    monkeypatch.setattr(masker, "MAX_PARTS", 4)
    return go


PART_SECRETS = [b"s3cr3t&value/%d+x=y" % i for i in range(8)] + [b"nul\0inside-secret", b"\xc3\xa4-utf8-secret"]


def _parted_registry(background: bool) -> SecretRegistry:
    registry = SecretRegistry()
    with registry.batch(background=background):
        registry.add_many(PART_SECRETS, source="test")
    registry._masker.current()
    return registry


@pytest.mark.parametrize("background", [False, True])
def test_a_large_batch_compiles_in_parts_and_masks_every_form(in_parts: threading.Event, background: bool) -> None:
    """The first set of a batch, compiled part by part as its forms are computed (four databases, then the whole
    one): every form of every secret is masked in both states, and every occurrence the reference finds in a
    document of all of them (1 MiB: the parts scanned in two threads) is found, once."""
    registry = _parted_registry(background)
    base = registry._masker.snapshot.layers[0].matcher
    assert len(base._tables.dbs) == 4 and not base.whole.is_set()
    patterns = registry._masker._patterns
    filler = b"plain log text 0123456789abcdef\n" * 1024
    text = b"".join(p + filler[: 997 * (i % 7)] for i, p in enumerate(patterns)) + filler * 8
    assert len(text) >= matcher.PARALLEL_SCAN_MIN
    expected = sorted(build_matcher(patterns, "reference").find(text))
    for state in ("parts", "whole"):
        got = base.find(text)
        assert sorted(got) == expected and len(got) == len(set(got)), state
        for secret in PART_SECRETS:
            for form in secret_variants(secret):
                assert form not in registry.mask(_amid_text(form)), (state, form)
        in_parts.set()
        assert registry.wait_merged(60)
        assert len(base._tables.dbs) == 1


def test_a_large_batch_registers_the_line_break_view_of_its_values(in_parts: threading.Event) -> None:
    """The plain forms a line break may cut (folded.BreakSet) are registered after the first part started
    compiling: they are there once the batch is ready. A value cut by a line break after other text is masked."""
    registry = _parted_registry(True)
    assert len(registry._masker.snapshot.layers[0].matcher._tables.dbs) == 4
    secret = PART_SECRETS[3]
    cut = b"config: " + secret[:9] + b"\n" + secret[9:] + b"\n"
    out = registry.mask(cut)
    assert secret[:9] not in out and secret[9:] not in out, out
    in_parts.set()


@pytest.mark.parametrize("background", [False, True])
def test_a_large_batch_holds_back_a_secret_split_across_writes(in_parts: threading.Event, background: bool) -> None:
    """What the hold-back needs of each part's patterns (their heads, the longest length) is noted after the part
    started compiling, and all of it before the batch is ready: a secret of the last part, and one of the first,
    written in two pieces at every cut, are masked whole."""
    registry = _parted_registry(background)
    assert len(registry._masker.snapshot.layers[0].matcher._tables.dbs) == 4
    for secret in (PART_SECRETS[0], PART_SECRETS[-1]):
        text = b"log: " + secret + b" end\n"
        for cut in range(1, len(text)):
            out = stream_through(registry, [text[:cut], text[cut:]])
            assert secret[:4] not in out and secret[-4:] not in out, (secret, cut, out)
    in_parts.set()


def test_known_formats_at_the_middle_of_a_parallel_scan_are_masked(in_parts: threading.Event) -> None:
    """A large write to a parted matcher scans its halves with the known-format prefilter in two threads (each
    after its databases). A token whose prefix starts just before the middle is found by the first half, which
    reads on past the middle by the longest prefix: no token is lost at the seam, and the answer is the one
    scanning the whole write gives."""
    from runnerlib.security import known_formats

    registry = _parted_registry(False)
    snap = registry._masker.snapshot
    assert len(snap.layers[0].matcher._tables.dbs) == 4
    token = b"ghp_" + b"A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    size = 2 * matcher.PARALLEL_SCAN_MIN
    for shift in range(-len(token) - 1, 4):
        data = bytearray(b"plain text line\n" * (size // 16))
        at = size // 2 + shift
        data[at:at + len(token) + 2] = b" " + token + b" "
        data = bytes(data)
        _, known = snap.find_with_known(data)
        assert known == sorted(known_formats.literal_hits(data)), shift
        out: list[bytes] = []
        stage = known_formats.MaskedThenKnown(registry, out.append)
        stage.write(data)
        stage.close()
        assert token[4:] not in b"".join(out) and token[-8:] not in b"".join(out), shift
    in_parts.set()


def test_a_small_batch_is_not_compiled_in_parts(in_parts: threading.Event, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: below two parts' worth of literals, the batch compiles as before (one add, split or whole)."""
    from runnerlib.security import masker

    monkeypatch.setattr(masker, "PART_LITERALS", 10 ** 6)
    registry = _parted_registry(False)
    assert len(registry._masker.snapshot.layers[0].matcher._tables.dbs) == 2  # split (SPLIT_MIN_KEYS is 4 here)
    in_parts.set()


def test_a_part_that_fails_to_compile_leaves_masking_correct(in_parts: threading.Event,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A part's compilation raising (out of memory, say): the background batch falls back to the delta engine and
    every secret is still masked; the error names the exception, never a pattern."""
    real = matcher._compile

    def failing(keys: list[bytes], ids: object, first_id: int = 0) -> object:
        if first_id:
            raise MemoryError("hs_compile_lit_multi: out of memory")
        return real(keys, ids, first_id)  # type: ignore[arg-type]

    monkeypatch.setattr(matcher, "_compile", failing)
    registry = _parted_registry(True)
    assert registry._masker.snapshot.layers[0].matcher.name == "ahocorasick"
    for secret in PART_SECRETS:
        assert secret not in registry.mask(b"x " + secret + b" y")
    in_parts.set()


def test_a_pattern_ending_in_a_space_and_a_byte_is_confirmed_at_a_hit() -> None:
    """matcher._whole_tables compiles `a b c` as `a b ` (such literals slowed Hyperscan's filter) and confirms the last
    byte: the answer is the reference's, a pattern that is another's key included."""
    patterns = [b"Z q 8 v", b"Z q 8 ", b"Z q 8 w", b"x   y   z", b"plain"]
    text = b"Z q 8 v Z q 8 x Z q 8 w x   y   z plain Z q 8"
    m = build_matcher(patterns, "hyperscan")
    assert sorted(m.find(text)) == sorted(build_matcher(patterns, "reference").find(text))
    # One key for the three (`x   y   z` ends in spaces and a byte: as it is, like `plain`). Without the rule: 5.
    assert sorted(m._tables.key_len) == [5, 6, 9]


@pytest.mark.parametrize("late", ["pattern", "line start"])
def test_a_trigger_added_again_to_be_masked_is_masked_at_once(late: str) -> None:
    """A byte string first added as a trigger (searched, not masked), then as a pattern (or a line start) is masked;
    `add` returned having added nothing new, and published nothing: the live snapshot still took it for a trigger
    until some later add (a value equal to another secret's trigger fragment, registered after it, stayed readable)."""
    masker = Masker()
    masker.add([b"zzzz"], triggers=[b"abcdefgh", b"a\nb\nc"])
    assert masker.snapshot.mask(b"x abcdefgh x\na\nb\nc\n") == b"x abcdefgh x\na\nb\nc\n"
    if late == "pattern":
        masker.add([b"abcdefgh"])
        assert masker.snapshot.mask(b"x abcdefgh x") == b"x *** x"
    else:
        masker.add([], line_starts=[b"a\nb\nc"])
        assert masker.snapshot.mask(b"x\na\nb\nc\n") == b"x\n***\n"
