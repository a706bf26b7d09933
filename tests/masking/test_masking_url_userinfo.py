"""A URL's `user:password` is masked through its password's forms (variants.password_covers).

URL credentials register the URL's `user:password` and its password. Every encoding of `user:password` holds the
password's at the same place, so the registry gives `user:password` its plain forms only (11% fewer keys for
`runnerlib mask` at N=1,000). These tests encode documents holding `user:password` at random places with every
encoder the masker knows and check, character by character, that every character that depends on the password is
masked but the one or two at each end that mix its edge bits with the neighbouring bytes (as for any secret inside
an encoded document). The same check fails when the password is not registered beside it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shlex
import string
import urllib.parse
from collections.abc import Callable
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runnerlib.security import registry as registry_module
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.secret_sources import url_credentials
from runnerlib.security.variants import PASSWORD_COVERS_MIN, base64_forms, password_covers
from runnerlib.testing import stream_through, write_splits
from tests.masking.test_masking_wrapped import hexdump_c, od_an, xxd


def _wrap(text: bytes, width: int) -> bytes:
    return b"".join(text[i:i + width] + b"\n" for i in range(0, len(text), width))


def _printf_q(data: bytes) -> bytes:
    """bash's `printf %q` of a word without control characters: a backslash before each special character, and
    before a leading `~` or `#`."""
    out = re.sub(rb"([ \t'\"\\|&;()<>!{}*\[?\]^$`,])", rb"\\\1", data)
    return b"\\" + out if data[:1] in (b"~", b"#") else out


def _go_json(data: bytes) -> bytes:
    out = json.dumps(data.decode(), ensure_ascii=False)[1:-1].encode()
    return out.replace(b"&", b"\\u0026").replace(b"<", b"\\u003c").replace(b">", b"\\u003e")


def _sed_spaced(data: bytes) -> bytes:
    """`sed 's/./& /g'` in a UTF-8 locale: a space after each character of each line."""
    return "\n".join("".join(c + " " for c in line) for line in data.decode().split("\n")).encode()


def _rev(data: bytes) -> bytes:
    """`rev` in a UTF-8 locale: the characters of each line reversed."""
    return "\n".join(line[::-1] for line in data.decode().split("\n")).encode()


def _dotnet_json(data: bytes) -> bytes:
    """System.Text.Json's default escaping, written from its AllowList (JsonWriterHelper.Escaping.cs): printable
    ASCII but `" ' & + < > `` ` `` as `\\u00XX` in uppercase hex, the short escapes, the rest as UTF-16 `\\uXXXX`."""
    out = json.dumps(data.decode())[1:-1].replace('\\"', "\\u0022")
    out = re.sub(r"\\u[0-9a-f]{4}", lambda m: "\\u" + m.group()[2:].upper(), out)
    for ch in "'&+<>`":
        out = out.replace(ch, f"\\u{ord(ch):04X}")
    return out.encode()


# What tools print of a document (printable ASCII): each encoding family the masker registers forms of.
ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "base64": base64.b64encode,
    "base64url": base64.urlsafe_b64encode,
    "base64 in PHP JSON": lambda d: base64.b64encode(d).replace(b"/", b"\\/"),
    "base32": base64.b32encode,
    "base64 of base64": lambda d: base64.b64encode(base64.b64encode(d)),
    "PowerShell -EncodedCommand": lambda d: base64.b64encode(d.decode().encode("utf-16-le")),
    "UTF-16LE": lambda d: d.decode().encode("utf-16-le"),
    "hex": lambda d: d.hex().encode(),
    "HEX": lambda d: d.hex().upper().encode(),
    "bytes.hex(' ')": lambda d: d.hex(" ").encode(),
    "openssl hex": lambda d: d.hex(":").encode(),
    "\\xNN": lambda d: b"".join(b"\\x%02x" % c for c in d),
    "0xNN list": lambda d: b", ".join(b"0x%02x" % c for c in d),
    "decimal list": lambda d: b", ".join(b"%d" % c for c in d),
    "Go decimal list": lambda d: b" ".join(b"%d" % c for c in d),
    "\\uXXXX": lambda d: b"".join(b"\\u%04x" % c for c in d),
    "percent (quote safe='')": lambda d: urllib.parse.quote(d, safe="").encode(),
    "percent (quote_plus)": lambda d: urllib.parse.quote_plus(d).encode(),
    "percent, lowercase hex": lambda d: re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(),
                                               urllib.parse.quote(d, safe="")).encode(),
    "JSON": lambda d: json.dumps(d.decode())[1:-1].encode(),
    "PHP JSON": lambda d: json.dumps(d.decode())[1:-1].replace("/", "\\/").encode(),
    "Go JSON": _go_json,
    ".NET JSON": _dotnet_json,
    "shlex.quote": lambda d: shlex.quote(d.decode()).encode(),
    "printf %q": _printf_q,
    "set -x": lambda d: b"'" + d.replace(b"'", b"'\\''") + b"'",
    "repr(bytes)": lambda d: repr(d).encode(),
    "XML": lambda d: d.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;"),
    "base64 -w 76": lambda d: _wrap(base64.b64encode(d), 76),
    "openssl base64": lambda d: _wrap(base64.b64encode(d), 64),
    "xxd -p": lambda d: _wrap(d.hex().encode(), 60),
    "xxd -p -u": lambda d: _wrap(d.hex().upper().encode(), 60),
    "base32 (76 columns)": lambda d: _wrap(base64.b32encode(d), 76),
    "basenc --base64url": lambda d: _wrap(base64.urlsafe_b64encode(d), 76),
    "UTF-16BE": lambda d: d.decode().encode("utf-16-be"),
    "od -An -tx1": od_an,
    "xxd -i": lambda d: b"".join(b"  " + b", ".join(b"0x%02x" % c for c in d[i:i + 12]) + b",\n"
                                 for i in range(0, len(d), 12)),
    "hexdump -C": hexdump_c,
    "xxd": xxd,
    "sed 's/./& /g'": _sed_spaced,
    "rev": _rev,
}

# The characters at each end of the password's encoding that also carry bits of the bytes around it: one in base64
# and base32, two in base64 of base64 (the outer characters of the inner one that straddles).
EDGE = 2

_USER = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)
# What a URL holds unescaped in its password and password_covers takes (`%` escapes decode to other values).
_PASSWORD_CHARS = "".join(c for c in map(chr, range(33, 127)) if c not in "'\"\\`%"
                          and url_credentials(f"s://u:a{c}b@h") == [f"u:a{c}b", f"a{c}b"])
_PASSWORD = st.text(_PASSWORD_CHARS, min_size=PASSWORD_COVERS_MIN, max_size=40).filter(lambda p: p[0] not in "~#")
_AROUND = st.text(string.printable.strip(), max_size=40)


def _rotated(text: str) -> str:
    """`text` with each letter and digit replaced by another of its kind: the same length in every encoding (`a`
    to `c` are the lowercase letters with two decimal digits)."""
    low, rest = string.ascii_lowercase[:3], string.ascii_lowercase[3:]
    upper, digits = string.ascii_uppercase, string.digits
    table = str.maketrans(low + rest + upper + digits,
                          low[1:] + low[:1] + rest[7:] + rest[:7] + upper[11:] + upper[:11] + digits[3:] + digits[:3])
    return text.translate(table)


def registry_of(user: str, password: str, *, one_batch: bool, covers: bool = True) -> SecretRegistry:
    """Registered as URL credentials are: `runnerlib mask` and load_secrets add the userinfo then the password in
    one batch; source.base.register_url_credentials adds the password first, one add each. `covers=False`: the
    reference, `user:password` with all its own forms as before."""
    with contextlib.ExitStack() as stack:
        if not covers:
            stack.enter_context(mock.patch.object(registry_module, "password_covers", lambda value, registered: False))
        registry = SecretRegistry(background_merge=False)
        if one_batch:
            with registry.batch():
                registry.add_many(url_credentials(f"postgres://{user}:{password}@db.internal:5432/app"),
                                  source="test")
        else:
            registry.add(password, source="test")
            registry.add(f"{user}:{password}", source="test")
    return registry


def shown_characters(registry: SecretRegistry, encode: Callable[[bytes], bytes], before: str, secret: str,
                     after: str) -> tuple[set[int], set[int]]:
    """Offsets in the encoded document of the characters that depend on `secret` (they change when its letters
    and digits do) and that the registry leaves visible; and the EDGE first and last of those that depend on it."""
    out = encode(f"{before}{secret}{after}".encode())
    depends: set[int] = set()
    for other in (_rotated(secret), _rotated(_rotated(secret))):
        alt = encode(f"{before}{other}{after}".encode())
        assert len(alt) == len(out)
        depends.update(i for i, (a, b) in enumerate(zip(out, alt, strict=True)) if a != b)
    masked = [False] * len(out)
    for s, e in registry._masker.current().find(out):
        masked[s:e] = [True] * (e - s)
    ordered = sorted(depends)
    return {i for i in ordered if not masked[i]}, {*ordered[:EDGE], *ordered[-EDGE:]}


def shown_password_characters(registry: SecretRegistry, encode: Callable[[bytes], bytes], before: str, user: str,
                              password: str, after: str) -> tuple[set[int], set[int]]:
    """shown_characters of the password of `user:password` written between `before` and `after`."""
    return shown_characters(registry, encode, f"{before}{user}:", password, after)


@settings(max_examples=80, deadline=None)
@given(user=_USER, password=_PASSWORD, before=_AROUND, after=_AROUND, one_batch=st.booleans())
@example(user="app", password="Xk9fQ2mLp0RtZ7vW", before="Authorization: Basic ", after="", one_batch=True)
@example(user="app", password="Xk9f/Q2m@Lp0%RtZ7vW", before="{", after="}", one_batch=False)  # decoded `%2F`, `%40`
@example(user="app", password="X~k9f$Q2m&Lp0*RtZ7vW#", before="", after="", one_batch=False)  # `printf %q`: `\$`
@example(user="deploy-bot", password="Xk9fQ2mLp0RtZ7vWXk9fQ2mLp0RtZ7vWXk9fQ2mL", before="", after="", one_batch=True)
def test_every_encoding_of_user_and_password_hides_what_its_own_forms_hid(user: str, password: str, before: str,
                                                                          after: str, one_batch: bool) -> None:
    """Nothing of the password that `user:password`'s own forms masked is visible, but the edge characters. (Both
    leave visible what no form reaches: base32 wrapped across lines inside a longer document, docs/masking.md.)"""
    registry = registry_of(user, password, one_batch=one_batch)
    reference = registry_of(user, password, one_batch=one_batch, covers=False)
    # The point of the change: `user:password` has no encoded form of its own.
    userinfo = f"{user}:{password}".encode()
    assert base64.b64encode(userinfo) not in registry.patterns()
    assert base64.b64encode(userinfo) in reference.patterns()
    for name, encode in ENCODERS.items():
        shown, edges = shown_password_characters(registry, encode, before, user, password, after)
        before_shown, _ = shown_password_characters(reference, encode, before, user, password, after)
        assert shown - before_shown <= edges, name


@settings(max_examples=20, deadline=None)
@given(user=_USER, password=_PASSWORD, before=_AROUND, encoder=st.sampled_from(sorted(ENCODERS)), data=st.data())
def test_a_stream_masks_them_as_the_whole_output(user: str, password: str, before: str, encoder: str,
                                                 data: st.DataObject) -> None:
    registry = registry_of(user, password, one_batch=True)
    out = ENCODERS[encoder](f"{before}{user}:{password}\n".encode())
    assert stream_through(registry, data.draw(write_splits(out))) == registry.mask(out)


def test_without_the_password_registered_the_check_sees_the_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """The protection off: `user:password` keeps only its plain forms although its password is not registered.
    Every encoder that does not print the document as it is then shows the password."""
    monkeypatch.setattr(registry_module, "password_covers", lambda value, registered: b":" in value)
    registry = SecretRegistry(background_merge=False)
    password = "Xk9f&Q2m<Lp0>RtZ7vW"
    registry.add(f"app:{password}", source="test")
    encoding = {name for name, encode in ENCODERS.items()
                if f"app:{password}".encode() not in encode(f"Basic app:{password}".encode())}
    leaking = set()
    for name in encoding:
        shown, edges = shown_password_characters(registry, ENCODERS[name], "Basic ", "app", password, "")
        if shown - edges:
            leaking.add(name)
    assert len(encoding) >= 25 and leaking == encoding, sorted(encoding - leaking)


def test_full_forms_where_the_password_does_not_cover_them() -> None:
    """Too short for every family's trigger fragments, with a character some family escapes in context (a quote,
    a backslash, a space, a leading `~`), not registered, or no user: `user:password` keeps its own encodings."""
    registered = {b"Xk9fQ2mLp0RtZ7v", b"Xk9f'Q2mLp0RtZ7vW", b"Xk9f\\Q2mLp0RtZ7vW", b"Xk9f Q2mLp0RtZ7vW",
                  b"Xk9fQ2mLp0RtZ7vW", b"~Xk9fQ2mLp0RtZ7vW"}.__contains__
    for value in (b"app:Xk9fQ2mLp0RtZ7v", b"app:Xk9f'Q2mLp0RtZ7vW", b"app:Xk9f\\Q2mLp0RtZ7vW", b"app:Xk9f Q2mLp0RtZ7vW",
                  b"app:~Xk9fQ2mLp0RtZ7vW", b"app:Zk9fQ2mLp0RtZ7vW", b":Xk9fQ2mLp0RtZ7vW"):
        assert not password_covers(value, registered), value
    assert password_covers(b"app:Xk9fQ2mLp0RtZ7vW", registered)
    registry = SecretRegistry(background_merge=False)
    registry.add("app:Xk9f'Q2mLp0RtZ7vW", source="test")
    registry.add("Xk9f'Q2mLp0RtZ7vW", source="test")
    assert set(base64_forms(b"app:Xk9f'Q2mLp0RtZ7vW")) <= set(registry.patterns())


def test_a_leading_tilde_would_leak_through_printf_q(monkeypatch: pytest.MonkeyPatch) -> None:
    """Why a password beginning with `~` keeps `user:password`'s forms: `printf %q` escapes the `~` of the password
    alone (`\\~`) but not inside `app:~...`, where its `$` is escaped all the same, so neither the password's
    escaped form nor its raw one is in the output. Forced to count as covered, it shows."""
    password = "~Xk9f$Q2m&Lp0*RtZ7vW"
    monkeypatch.setattr(registry_module, "password_covers", lambda value, registered: value.startswith(b"app:"))
    forced = registry_of("app", password, one_batch=False)
    shown, edges = shown_password_characters(forced, _printf_q, "", "app", password, "")
    assert shown - edges
    monkeypatch.undo()
    shown, edges = shown_password_characters(registry_of("app", password, one_batch=False), _printf_q, "", "app",
                                             password, "")
    assert not shown
