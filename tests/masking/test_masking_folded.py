"""Multi-word secrets folded at a space (security/folded.py): `yaml.dump` of a long passphrase puts a line break and
indentation where a space was. Masked in a whole buffer and in a stream cut anywhere (the line ending with the
secret's first words is held until the next line shows whether it continues)."""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.security import folded
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import stream_through, write_splits

PHRASE = " ".join(["correct horse battery staple"] * 4)


def _registry(*values: str) -> SecretRegistry:
    registry = SecretRegistry()
    registry.add_many(values, source="test")
    return registry


def _leaked(out: bytes, secret: str, k: int = 12) -> list[int]:
    """Offsets of the k-byte pieces of `secret` that `out` shows, its line breaks and indentation read as spaces (and
    yaml's escaped fold, `\\`, line break, indentation, `\\ `, as one space)."""
    flat = re.sub(rb"\\\n[ \t]*\\ |[ \t]*\n[ \t]*", b" ", out)
    raw = secret.encode()
    return [i for i in range(len(raw) - k + 1) if raw[i:i + k] in flat]


def _phrase(data: st.DataObject) -> str:
    """A passphrase of 5-14 random words, MIN_LENGTH bytes or more."""
    words = data.draw(st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=2, max_size=11),
                               min_size=5, max_size=14))
    phrase = " ".join(words)
    return phrase if len(phrase) >= folded.MIN_LENGTH else phrase + " " + phrase


@pytest.fixture
def no_fold_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """The protection off: no folded view, no hold of a line that may continue."""
    monkeypatch.setattr(folded.FoldSet, "occurrences", lambda *args: [])
    monkeypatch.setattr(folded.FoldSet, "tail_live_start", lambda self, buf: len(buf))


@pytest.mark.parametrize("document", [{"p": PHRASE}, {"outer": {"inner": {"p": PHRASE}}}, [PHRASE]])
def test_yaml_dump_of_a_long_passphrase_is_masked(document: object) -> None:
    out = _registry(PHRASE).mask(yaml.dump(document).encode())
    assert b"\n " in yaml.dump(document).encode() and not _leaked(out, PHRASE)


def test_the_attack_leaks_without_the_view(no_fold_view: None) -> None:
    """Control: without the folded view the folded passphrase is printed in clear."""
    assert _leaked(_registry(PHRASE).mask(yaml.dump({"p": PHRASE}).encode()), PHRASE)


def test_indented_text_that_holds_no_secret_is_left_alone() -> None:
    registry = _registry(PHRASE)
    text = b"p: correct horse battery\n  unrelated words follow here\nq: staple correct horse\n"
    assert registry.mask(text) == text
    assert stream_through(registry, [text[:30], text[30:]]) == text


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_folded_passphrase_is_masked_at_any_width_depth_and_split(data: st.DataObject) -> None:
    """Property: words of any length, yaml.dump at any width (20-90) and nesting depth, written in any pieces: no
    12-byte piece of the passphrase shows, and the stream gives what the whole buffer gives."""
    phrase = _phrase(data)
    document: object = {"p": phrase}
    for _ in range(data.draw(st.integers(0, 3))):
        document = {"k": document}
    text = yaml.dump(document, width=data.draw(st.integers(20, 90))).encode()
    registry = _registry(phrase)
    whole = registry.mask(text)
    assert not _leaked(whole, phrase)
    assert stream_through(registry, data.draw(write_splits(text, max_writes=8))) == whole


@pytest.mark.parametrize("style", ["'", '"'], ids=["single", "double"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_quoted_passphrase_folded_after_any_word_streams_as_the_whole(style: str, data: st.DataObject) -> None:
    """Property: yaml.dump in quotes after a key of any length folds after any word, the first one included:
    `'p': 'correct` then the rest on the next lines. A stream held such a line only when the word before the fold was
    a whole word of the form, and `'correct` is not (the whole passphrase went out in clear at any cut after the
    fold). In double quotes the fold is an escaped line break: `\\` at the end of the line, then the indentation and
    the space escaped (`\\ correct ...`), read as one space like the plain fold (not masked at all before). No 12-byte
    piece shows, and a stream cut anywhere (after either `\\`, the break or inside the indentation) gives the
    whole's answer."""
    phrase = _phrase(data)
    key = "k" * data.draw(st.integers(1, 70))
    text = yaml.dump({key: phrase}, width=data.draw(st.integers(20, 90)), default_style=style).encode()
    registry = _registry(phrase)
    whole = registry.mask(text)
    assert not _leaked(whole, phrase)
    assert stream_through(registry, data.draw(write_splits(text, max_writes=8))) == whole


def test_a_passphrase_folded_after_its_first_word_is_held_at_every_cut() -> None:
    """The case the property above found, as yaml prints it; every cut after the fold leaked without the fix."""
    registry = _registry(PHRASE)
    text = yaml.dump({"password_of_the_database_for_x": PHRASE}, width=40, default_style="'").encode()
    assert b"'correct\n  horse" in text
    whole = registry.mask(text)
    assert not _leaked(whole, PHRASE)
    assert all(stream_through(registry, [text[:c], text[c:]]) == whole for c in range(1, len(text)))


@pytest.mark.parametrize(("key", "width", "line_break"), [("p", 30, "\n"), ("password_of_the_database_for_x", 40, "\n"),
                                                          ("p", 30, "\r\n")])
def test_a_double_quoted_passphrase_is_masked_and_held_at_every_cut(key: str, width: int, line_break: str) -> None:
    """yaml's double-quoted fold as it prints it (after the first word too, `"correct\\`; CRLF too): masked whole, from
    the opening quote's first word to the last, and a stream cut at any byte gives the same."""
    phrase = " ".join(["correct horse battery staple"] * 3)
    text = yaml.dump({key: phrase}, width=width, default_style='"', line_break=line_break).encode()
    assert f"\\{line_break}  \\ ".encode() in text
    registry = _registry(phrase)
    whole = registry.mask(text)
    assert whole == f'"{key}": "***"{line_break}'.encode()
    assert all(stream_through(registry, [text[:c], text[c:]]) == whole for c in range(1, len(text)))


def test_a_shell_continuation_and_other_backslashes_are_left_alone() -> None:
    """A shell continuation (`\\` at the end of the line, the next one indented without `\\ `) is no fold: read as one
    it would give the passphrase here. A `\\` line break then `\\ ` holding no secret, Windows paths: unchanged."""
    registry = _registry(PHRASE)
    rest = PHRASE.split(" ", 3)[3].encode()
    text = (b"$ ./deploy --user correct horse battery\\\n    " + rest + b" \\\n    --dry-run\n"
            b"C:\\Users\\correct\\horse battery\\\n  \\ staple done\n")
    assert registry.mask(text) == text
    assert all(stream_through(registry, [text[:c], text[c:]]) == text for c in range(1, len(text)))


def test_a_form_with_tabs_cut_after_a_tab_is_held() -> None:
    """Found by fuzz_masker.py: words holding tabs (`N\\t\\t&`). A write ending in a tab was read only as a fold
    coming (the tab a blank before a line break), which no form continues; the tab as it is, the end of the buffer
    is the beginning of the form. Blanks at the end are now read both ways."""
    secret = b"N\t\t& \x00 N\t\t& \x00 N\t\t& \x00 N\t\t& \x00"
    text = b"N\t\nk: N\t\t& \x00 N\t\t& \x00\n      N\t\t& \x00 N\t\t& \x00\n\x00\x00\x00"
    registry = SecretRegistry()
    registry.add_many([secret], source="test")
    whole = registry.mask(text)
    assert whole == b"N\t\nk: ***\n\x00\x00\x00"
    assert all(stream_through(registry, [text[:c], text[c:]]) == whole for c in range(1, len(text)))


def test_fold_s_and_textwrap_are_masked_too() -> None:
    """`fold -s` leaves the space at the end of the line; textwrap puts no indentation."""
    import textwrap

    registry = _registry(PHRASE)
    for text in (textwrap.fill("password is " + PHRASE, 40).encode() + b"\n",
                 b"\n".join(w.encode() + b" " for w in textwrap.wrap("x: " + PHRASE, 30)) + b"\n"):
        whole = registry.mask(text)
        assert not _leaked(whole, PHRASE)
        assert all(stream_through(registry, [text[:c], text[c:]]) == whole for c in range(1, len(text)))


def test_other_secrets_crossing_a_line_break_are_not_read_folded() -> None:
    """Only a foldable form's own occurrence, at the place its head says, is masked in the view: a multi-line
    secret's lines and other patterns around a fold are left to their own rules (the view that scanned every
    pattern unfolded masked `alpha beta` here in the whole output, and a stream holding only the tail did not)."""
    registry = _registry(PHRASE, "alpha\nbeta gamma delta epsilon")
    text = b"p: correct horse battery\n  staple x\nalpha\n  beta gamma delta epsilon zeta eta\n"
    whole = registry.mask(text)
    assert all(stream_through(registry, [text[:c], text[c:]]) == whole for c in range(1, len(text)))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_multi_line_secret_beside_a_foldable_one_streams_as_the_whole(data: st.DataObject) -> None:
    """Property (the case the reverted view failed): a foldable secret and a long multi-line one, text made of
    their pieces with line breaks and indentation, written in any pieces: the stream gives the whole's answer."""
    words = ["correct", "horse", "battery", "staple", "alpha", "beta", "x", "\n", "\n  ", " "]
    registry = _registry(PHRASE, "alpha beta\ncorrect horse battery staple\nomega")
    text = "".join(data.draw(st.lists(st.sampled_from(words), max_size=60))).encode()
    whole = registry.mask(text)
    assert stream_through(registry, data.draw(write_splits(text, max_writes=8))) == whole


@pytest.mark.parametrize("eol", [b"\r\n", b" \r\n", b"\n"])
def test_a_write_ending_inside_a_fold_is_held(eol: bytes) -> None:
    """CRLF output cut between `\\r` and `\\n`, `fold -s`'s blank before the break: every cut streams as the whole."""
    registry = _registry(PHRASE)
    text = b"p: correct horse battery" + eol + b"  staple " + PHRASE.split(" ", 4)[4].encode() + eol
    whole = registry.mask(text)
    assert not _leaked(whole.replace(b"\r", b""), PHRASE)
    assert all(stream_through(registry, [text[:c], text[c:]]) == whole for c in range(1, len(text)))


# --- values cut by a line break anywhere (folded.BreakSet) --------------------------------------------------------

def _hard_fold(text: bytes, width: int) -> bytes:
    """`fold -w width` of ASCII text: every line cut into pieces of `width` bytes."""
    return b"\n".join(line[i:i + width] for line in text.split(b"\n") for i in range(0, max(len(line), 1), width))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_value_folded_after_any_text_at_any_width_and_split(data: st.DataObject) -> None:
    """Property: a registered single-line value (any printable characters) after any text on its line, folded at
    any width from 16, CRLF or LF, written in any pieces: the stream gives the whole's answer, and when the fold
    leaves MIN_PIECE bytes or more of it on its first line, no 8-byte piece of it shows."""
    value = data.draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=15, max_size=80)).encode()
    before = data.draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=50)).encode()
    width = data.draw(st.integers(16, 80))
    text = _hard_fold(before + value + b"\n(the next line)\n", width)
    if data.draw(st.booleans()):
        text = text.replace(b"\n", b"\r\n")
    registry = _registry(value.decode())
    whole = registry.mask(text)
    assert stream_through(registry, data.draw(write_splits(text, max_writes=8))) == whole
    first_piece = width - len(before) % width
    if first_piece >= folded.MIN_PIECE or first_piece >= len(value):
        flat = whole.replace(b"\r\n", b"").replace(b"\n", b"")
        raw = value
        assert not [i for i in range(len(raw) - 7) if raw[i:i + 8] in flat and raw[i:i + 8] not in before]


def test_break_tails_hold_only_where_a_value_may_continue() -> None:
    """The stream holds a line ending in a value's first bytes (the next line may continue it), not ordinary
    lines: a write of log lines is passed on whole."""
    registry = _registry("Xk9fQ2mZ7pLw4RtY8vNb3HcQ2mZ7")
    out: list[bytes] = []
    with registry.stream(out.append) as stream:
        stream.write(b"building...\nstep 2 of 3 done\n")
        assert stream.held == 0
        stream.write(b"token: Xk9fQ2mZ7pL\n")
        assert stream.held == len(b"Xk9fQ2mZ7pL\n")
        stream.write(b"w4RtY8vNb3HcQ2mZ7\n")
    assert b"".join(out) == b"building...\nstep 2 of 3 done\ntoken: ***\n"
