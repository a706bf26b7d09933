"""Uppercase hex and URL-safe base64 wrapped across lines (docs/masking.md listed both as uncovered).

`xxd -p -u`, `%02X` loops and `basenc --base64url` (76 columns) print a secret's encoding cut by line breaks at
any offset of the document. The wrapped view (security/wrapped.py) finds them once their fragments are
triggers; the property at random offsets, widths and line ends is test_masking_wrapped.py's (all four wrapped
forms), and the controls here show the leak with the triggers of the previous version (standard base64 and
lowercase hex only).
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runnerlib.security import variants, wrapped
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.variants import base64_forms


def _url(form: bytes) -> bytes:
    return form.replace(b"+", b"-").replace(b"/", b"_")


def _before(value: bytes, b64: list[bytes], b32: bytes | None = None) -> list[bytes]:
    """wrappable_forms as it was: no URL-safe base64, no uppercase hex."""
    return list(dict.fromkeys([*b64, value.hex().encode(), b32 or base64.b32encode(value).rstrip(b"=")]))


# kind -> (encoder of the whole document, the secret's form inside it for a prefix of n bytes)
ENCODERS = {
    "upper hex": (lambda b: b.hex().upper().encode(), lambda secret, n: secret.hex().upper().encode()),
    "base64url": (base64.urlsafe_b64encode, lambda secret, n: _url(base64_forms(secret)[1 + n % 3])),
}


def _wrap(encoded: bytes, width: int, eol: bytes, indent: bytes = b"") -> bytes:
    return b"".join(indent + encoded[i:i + width] + eol for i in range(0, len(encoded), width))


def _leaked(masked: bytes, core: bytes, k: int = 12) -> list[bytes]:
    joined = masked.replace(b"\r", b"").replace(b"\n", b"").replace(b" ", b"")
    return [core[i:i + k] for i in range(0, max(1, len(core) - k + 1)) if core[i:i + k] in joined]


def _registry(secret: bytes) -> SecretRegistry:
    registry = SecretRegistry(background_merge=False)
    registry.add(secret, source="test")
    return registry


@settings(max_examples=40, deadline=None)
@given(secret=st.binary(min_size=8, max_size=11).filter(lambda s: s.strip() == s and s.strip()),
       prefix=st.binary(max_size=60), width=st.integers(60, 90))
def test_uppercase_hex_from_eight_bytes(secret: bytes, prefix: bytes, width: int) -> None:
    # Hex is guaranteed from 8 bytes (16 digits, fragments of 8), as the lowercase form (docs/masking.md).
    assume(secret not in prefix)
    out = _wrap((prefix + secret + b"|" * 20).hex().upper().encode(), width, b"\n")
    assert not _leaked(_registry(secret).mask(out), secret.hex().upper().encode(), k=10)


# A 45-byte key whose base64 has `+` and `/` (so its URL-safe form differs), wrapped by `basenc --base64url`.
KEY = bytes(range(250, 256)) + b"\xfb\xef\xbe" * 13


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_leaks_with_the_triggers_of_the_previous_version(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the same documents masked with the fragments of standard base64 and lowercase hex only."""
    encode, form = ENCODERS[kind]
    assert _url(base64.b64encode(KEY)) != base64.b64encode(KEY)

    def leaks() -> int:
        count = 0
        for offset in range(0, 80, 7):
            out = _wrap(encode(b"#" * offset + KEY + b"|" * 30), 76, b"\n")
            count += bool(_leaked(_registry(KEY).mask(out), form(KEY, offset)))
        return count

    assert leaks() == 0
    monkeypatch.setattr(variants, "wrappable_forms", _before)
    assert leaks() > 0


def test_url_safe_fragments_only_where_they_differ() -> None:
    # A value whose base64 has no `+` or `/`: the URL-safe form adds no trigger.
    plain = b"abcdefghijklmnopqrstuvwxyz012345"
    b64 = base64_forms(plain)
    assert all(_url(f) == f for f in b64)
    forms = wrapped.wrappable_forms(plain, b64)
    assert len(forms) == len(dict.fromkeys([*b64, plain.hex().encode(), plain.hex().upper().encode(),
                                             base64.b32encode(plain).rstrip(b"=")]))
