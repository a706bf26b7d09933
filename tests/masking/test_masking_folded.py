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
    """Offsets of the k-byte pieces of `secret` that `out` shows, its line breaks and indentation read as spaces."""
    flat = re.sub(rb"\n[ \t]+", b" ", out)
    raw = secret.encode()
    return [i for i in range(len(raw) - k + 1) if raw[i:i + k] in flat]


@pytest.fixture
def no_fold_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """The protection off: no folded view, no hold of a line that may continue."""
    monkeypatch.setattr(folded, "occurrences", lambda *args: [])
    monkeypatch.setattr(folded, "tail_live_start", lambda buf, *args: len(buf))


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
    words = data.draw(st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=2, max_size=11),
                               min_size=5, max_size=14))
    phrase = " ".join(words)
    if len(phrase) < folded.MIN_LENGTH:
        phrase = phrase + " " + phrase
    document: object = {"p": phrase}
    for _ in range(data.draw(st.integers(0, 3))):
        document = {"k": document}
    text = yaml.dump(document, width=data.draw(st.integers(20, 90))).encode()
    registry = _registry(phrase)
    whole = registry.mask(text)
    assert not _leaked(whole, phrase)
    assert stream_through(registry, data.draw(write_splits(text, max_writes=8))) == whole
