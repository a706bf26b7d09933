"""`cat -v`, `cat -A`, `cat -t`, `cat -e`: what one types to see a file's invisible characters (a token that will not
work: a trailing CR? a tab?). Control bytes print as `^A`, DEL as `^?`, bytes from 0x80 as `M-` and the same for
the low seven bits (`ä` is `M-CM-$`), and with `-A` / `-t` a tab as `^I`. A value holding such a byte was printed
in the clear before (escape_forms.caret_forms). The check: no 6-byte piece of what the tool prints for the value
survives, through the real tools, whole and streamed at every cut; the control takes the forms away.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.security import variants
from runnerlib.security.escape_forms import caret_forms
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import stream_through, write_splits

FLAGS = ["-v", "-A", "-t", "-e"]
VALUES = [b"Tab\there-and-space", "Pässwörd-Grüße-2024".encode(), b"crlf-token-1234\r", b"ctl\x01\x02\x7fbytes-xyz",
          bytes(range(0x80, 0x94))]
FRAGMENT = 6


def _cat(flag: str, data: bytes) -> bytes:
    if shutil.which("cat") is None:  # pragma: no cover - coreutils
        pytest.skip("cat is not installed")
    return subprocess.run(["cat", flag], input=data, capture_output=True, check=True).stdout


def _registry(value: bytes) -> SecretRegistry:
    registry = SecretRegistry(background_merge=False)
    registry.add(value, source="test")
    return registry


def _shown(value: bytes, flag: str) -> bytes:
    """What `cat FLAG` prints for the value alone, without the line's end (`$` with -A / -e)."""
    out = _cat(flag, value + b"\n")[:-1]
    return out[:-1] if flag in ("-A", "-e") else out


def _pieces_left(masked: bytes, shown: bytes) -> list[bytes]:
    return [shown[i:i + FRAGMENT] for i in range(len(shown) - FRAGMENT + 1) if shown[i:i + FRAGMENT] in masked]


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("value", VALUES, ids=lambda v: v[:6].hex())
def test_cat_shows_no_piece_of_the_value(flag: str, value: bytes) -> None:
    registry = _registry(value)
    out = _cat(flag, b"token: " + value + b"\nnext line\n")
    # The tool changed the value (`-v` and `-e` leave a tab as it is).
    assert _shown(value, flag) != value or flag in ("-v", "-e") and value.isascii()
    masked = registry.mask(out)
    assert _pieces_left(masked, _shown(value, flag)) == []
    assert all(stream_through(registry, [out[:cut], out[cut:]]) == masked for cut in range(1, len(out)))


@pytest.mark.parametrize("flag", FLAGS)
def test_without_the_caret_forms_they_leak(flag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(variants, "caret_forms", lambda _value: [])
    value = VALUES[1]
    out = _cat(flag, b"token: " + value + b"\n")
    assert _pieces_left(_registry(value).mask(out), _shown(value, flag))


def test_the_forms_are_what_cat_prints() -> None:
    value = bytes(range(256)).replace(b"\n", b"")
    assert set(caret_forms(value)) == {_shown(value, "-v"), _shown(value, "-A"), _shown(value, "-t")}


def test_a_printable_value_has_none() -> None:
    assert caret_forms(b"plain-ascii-token~!") == []


_INVISIBLE = st.sampled_from([b"\t", b"\r", b"\x01", b"\x1b", b"\x7f", b"\xc3\xa4", b"\xe2\x82\xac", b"\xff", b"\x80"])


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.one_of(st.binary(min_size=1, max_size=4).filter(lambda b: b"\n" not in b), _INVISIBLE),
                      min_size=4, max_size=12),
       flag=st.sampled_from(FLAGS), data=st.data())
def test_any_value_with_invisible_bytes_at_any_write_split(parts: list[bytes], flag: str, data: st.DataObject
                                                           ) -> None:
    value = b"k3y-" + b"".join(parts) + b"-end"
    registry = _registry(value)
    out = _cat(flag, b"before " + value + b" after\n")
    masked = registry.mask(out)
    assert _pieces_left(masked, _shown(value, flag)) == []
    assert stream_through(registry, data.draw(write_splits(out))) == masked
