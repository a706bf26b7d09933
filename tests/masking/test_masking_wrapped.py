"""Issue 12: encoded forms that leaked — wrapped base64/hex/base32 at any width and offset, hex dumps with
offsets and separators (od, hexdump -C, xxd, xxd -i), Go's JSON escapes, \\uXXXX, \\xNN, 0xNN lists, base32 and
base64 of base64.

Each leak is shown twice: masked with the protection on, and leaking with it off (the wrapped view's triggers
disabled, or only the forms of the previous version registered), so every test can fail.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import string
import subprocess
import urllib.parse
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runnerlib.security import registry as registry_module
from runnerlib.security import wrapped
from runnerlib.security.masker import reference_mask
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.variants import (
    base64_forms,
    double_base64_forms,
    mixed_case_triggers,
    percent_forms,
    u_escaped_forms,
)
from runnerlib.testing import assert_no_fragment, stream_through, write_splits

TOKEN = b"ghp_" + b"k3Xq9TzR2mW8vLp5NcJ7bYd4FhG6sA1uE0oQiKwZyxV3nMtBjD" + b"8rU2cPl5"  # 62 bytes: > 57


def registry_of(*secrets: bytes) -> SecretRegistry:
    r = SecretRegistry()
    assert r.add_many(secrets, source="test") == len(secrets)
    return r


@pytest.fixture
def no_wrapped_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """The protection off: no trigger fragments, so the wrapped view never looks."""
    forms = registry_module.secret_forms
    monkeypatch.setattr(registry_module, "secret_forms",
                        lambda value, min_length=4: (forms(value, min_length=min_length)[0], []))


def wrap(encoded: bytes, width: int, eol: bytes = b"\n") -> bytes:
    return b"".join(encoded[i:i + width] + eol for i in range(0, len(encoded), width))


def core_pieces(core: bytes, k: int = 10) -> list[bytes]:
    return [core[i:i + k] for i in range(0, max(1, len(core) - k + 1))]


def assert_no_piece(masked: bytes, core: bytes, k: int = 10) -> None:
    joined = masked.replace(b"\r", b"").replace(b"\n", b"").replace(b" ", b"")
    leaked = [p for p in core_pieces(core, k) if p in joined]
    assert not leaked, f"{len(leaked)} pieces of the encoding survived"


def run(cmd: list[str], data: bytes) -> bytes:
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} is not installed")
    return subprocess.run(cmd, input=data, capture_output=True, check=True).stdout


# --- regressions: each leak of the issue, with the protection off as control ----------------------------------

@pytest.mark.parametrize("cmd", [["base64"], ["openssl", "base64"], ["base64", "-w", "64"], ["xxd", "-p"],
                                 ["base32"]])
def test_wrapped_encoding_of_a_long_secret(cmd: list[str]) -> None:
    out = run(cmd, TOKEN)
    assert b"\n" in out.rstrip(b"\n")  # it really wraps
    core = base64.b32encode(TOKEN).rstrip(b"=") if cmd[0] == "base32" else (
        TOKEN.hex().encode() if cmd[0] == "xxd" else base64.b64encode(TOKEN).rstrip(b"="))
    masked = registry_of(TOKEN).mask(out)
    assert_no_piece(masked, core)
    assert stream_through(registry_of(TOKEN), [out[i:i + 7] for i in range(0, len(out), 7)]) == masked


@pytest.mark.parametrize("cmd", [["base64"], ["openssl", "base64"], ["xxd", "-p"]])
def test_wrapped_encoding_leaks_without_the_view(cmd: list[str], no_wrapped_view: None) -> None:
    out = run(cmd, TOKEN)
    masked = registry_of(TOKEN).mask(out)
    core = TOKEN.hex().encode() if cmd[0] == "xxd" else base64.b64encode(TOKEN).rstrip(b"=")
    joined = masked.replace(b"\n", b"")
    assert any(p in joined for p in core_pieces(core))


@pytest.mark.parametrize("width", [64, 76])
def test_short_token_inside_a_base64_document_at_every_offset(width: int) -> None:
    token = b"xoxb-2871-Hq8ZtP"  # 16 bytes: 24 characters of base64, cut by a break at some offsets
    registry = registry_of(token)
    for offset in range(0, 3 * width // 4 + 3):
        doc = b"#" * offset + token + b"|" * 40
        out = wrap(base64.b64encode(doc), width)
        core = base64_forms(token)[1 + offset % 3]
        assert_no_piece(registry.mask(out), core, k=8)


def test_short_token_crossing_a_break_leaks_without_the_view(no_wrapped_view: None) -> None:
    token = b"xoxb-2871-Hq8ZtP"
    registry = registry_of(token)
    leaked = 0
    for offset in range(0, 60):
        doc = b"#" * offset + token + b"|" * 40
        masked = registry.mask(wrap(base64.b64encode(doc), 76))
        core = base64_forms(token)[1 + offset % 3]
        leaked += any(p in masked.replace(b"\n", b"") for p in core_pieces(core, 8))
    assert leaked


PEM = (b"-----BEGIN PRIVATE KEY-----\n" + b"\n".join(
    base64.b64encode(bytes((i * 7 + j) % 256 for j in range(48))) for i in range(6)) +
    b"\n-----END PRIVATE KEY-----\n")


def test_base64_of_a_key_file_hides_its_lines() -> None:
    out = run(["base64"], PEM)
    masked = registry_of(PEM).mask(out)
    assert_no_piece(masked, base64.b64encode(PEM.strip()).rstrip(b"="), k=12)


def test_base64_of_a_key_file_leaks_without_the_view(no_wrapped_view: None) -> None:
    out = run(["base64"], PEM)
    masked = registry_of(PEM).mask(out)
    joined = masked.replace(b"\n", b"")
    assert any(p in joined for p in core_pieces(base64.b64encode(PEM.strip()).rstrip(b"="), 12))


SECRET = b"Pa55&<word>-Xq9Tz"  # printable, with the characters Go escapes


@pytest.mark.parametrize("cmd", [["od", "-An", "-tx1"], ["od", "-tx1"], ["hexdump", "-C"], ["xxd"],
                                 ["xxd", "-i"], ["xxd", "-g1"]])
def test_hex_dumps_with_offsets_and_separators(cmd: list[str]) -> None:
    for doc in (SECRET, b"." * 13 + SECRET + b"." * 20):
        out = run(cmd, doc)
        masked = registry_of(SECRET).mask(out)
        assert masked != out
        # Neither the hex of 4 secret bytes on one line nor 4 characters of it in an ASCII column survive.
        for j in range(len(SECRET) - 3):
            four = SECRET[j:j + 4]
            for spelled in (four.hex(" ").encode(), b", ".join(b"0x%02x" % c for c in four)):
                assert spelled not in masked
        assert_no_fragment(masked, [SECRET])
        assert stream_through(registry_of(SECRET), [out[i:i + 5] for i in range(0, len(out), 5)]) == masked


@pytest.mark.parametrize("cmd", [["xxd"], ["hexdump", "-C"], ["xxd", "-g4"]])
def test_short_secret_inside_one_dump_line(cmd: list[str]) -> None:
    secret = b"Hu&ter-2"  # 8 bytes: no trigger of its own; its ASCII column finds it
    out = run(cmd, b"ab" + secret + b"cd")
    masked = registry_of(secret).mask(out)
    assert secret not in masked and secret[:4].hex().encode() not in masked.replace(b" ", b"")
    assert stream_through(registry_of(secret), [out[i:i + 3] for i in range(0, len(out), 3)]) == masked


@pytest.mark.parametrize("cmd", [["od", "-An", "-tx1"], ["hexdump", "-C"], ["xxd"]])
def test_hex_dumps_leak_without_the_view(cmd: list[str], no_wrapped_view: None) -> None:
    out = run(cmd, b"." * 13 + SECRET + b"." * 20)
    masked = registry_of(SECRET).mask(out)
    assert any(SECRET[j:j + 4].hex(" ").encode() in masked or SECRET[j:j + 4] in masked
               for j in range(len(SECRET) - 3))


def go_json(text: str) -> bytes:
    """Go's encoding/json string: JSON with & < > U+2028 U+2029 escaped (kubectl -o json)."""
    out = json.dumps(text, ensure_ascii=False)[1:-1]
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        out = out.replace(ch, esc)
    return out.encode()


def previous_forms(secret: bytes) -> list[bytes]:
    """The JSON forms of the previous version (standard JSON only): the protection off for Go's escapes."""
    text = secret.decode()
    return [secret, json.dumps(text)[1:-1].encode(), json.dumps(text, ensure_ascii=False)[1:-1].encode()]


def test_go_json_escapes_are_masked_and_leaked_before() -> None:
    doc = b'{"data": {"password": "' + go_json(SECRET.decode()) + b'"}}'
    assert b"\\u0026" in doc
    masked = registry_of(SECRET).mask(doc)
    assert masked == b'{"data": {"password": "***"}}'
    before = reference_mask(doc, previous_forms(SECRET))
    assert before == doc  # the previous forms did not match: the secret was printed


@pytest.mark.parametrize("form", [
    b"".join(b"\\u%04x" % c for c in SECRET),  # \u00XX for every character (JavaScript, JSON obfuscation)
    b"".join(b"\\u%04X" % c for c in SECRET),
    b"".join(b"\\x%02x" % c for c in SECRET),  # printf '\x..', Python bytes repr
    b"".join(b"\\x%02X" % c for c in SECRET),
    b", ".join(b"0x%02x" % c for c in SECRET),  # C arrays, xxd -i on one line
    SECRET.hex(":").encode(),  # openssl
    SECRET.hex(" ").encode(),  # bytes.hex(" ")
    base64.b32encode(SECRET),  # base32
    base64.b64encode(base64.b64encode(SECRET)),  # base64 of base64
    json.dumps(SECRET.decode()).encode()[1:-1].replace(b"&", b"\\u0026").replace(b"<", b"\\u003C")
    .replace(b">", b"\\u003E"),  # .NET System.Text.Json
])
def test_one_line_forms_are_masked_and_leaked_before(form: bytes) -> None:
    line = b"value=" + form + b" end"
    assert registry_of(SECRET).mask(line) == b"value=*** end"
    assert reference_mask(line, previous_forms(SECRET)) == line


def test_base64_of_base64_inside_a_document_at_every_offset() -> None:
    registry = registry_of(SECRET)
    for offset in range(9):
        doc = base64.b64encode(b"{" * offset + SECRET + b"}" * 9)
        outer = base64.b64encode(b"(" * (offset % 4) + doc + b")" * 5)
        masked = registry.mask(outer)
        assert masked.count(b"***") == 1, offset
        inner_core = base64_forms(SECRET)[1 + offset % 3]
        assert not any(f in masked for f in double_base64_forms(SECRET))
        assert base64.b64encode(inner_core) not in masked


MIXED = b"Sup3r/S3cret:Key=42?"


def mixed_case(form: bytes, pattern: list[bool]) -> bytes:
    """`form` with each %XX escape in upper- or lowercase as `pattern` says (cycled)."""
    out, k, i = b"", 0, 0
    while i < len(form):
        if form[i:i + 1] == b"%":
            esc = form[i:i + 3]
            out += esc.upper() if pattern[k % len(pattern)] else esc.lower()
            k, i = k + 1, i + 3
        else:
            out, i = out + form[i:i + 1], i + 1
    return out


def test_mixed_case_percent_hex_is_masked() -> None:
    form = urllib.parse.quote(MIXED, safe="").encode()  # Sup3r%2FS3cret%3AKey%3D42%3F
    line = b"GET /cb?token=" + mixed_case(form, [False, True]) + b" 200\n"
    assert line not in (form, form.lower())
    assert registry_of(MIXED).mask(line) == b"GET /cb?token=*** 200\n"
    assert stream_through(registry_of(MIXED), [line[i:i + 4] for i in range(0, len(line), 4)]) == \
        b"GET /cb?token=*** 200\n"


def test_mixed_case_percent_hex_leaks_without_its_triggers(no_wrapped_view: None) -> None:
    form = urllib.parse.quote(MIXED, safe="").encode()
    line = b"GET /cb?token=" + mixed_case(form, [False, True]) + b" 200\n"
    assert registry_of(MIXED).mask(line) == line


@settings(max_examples=60, deadline=None)
@given(secret=st.text(string.ascii_letters + string.digits + "/:=?&@ #", min_size=8, max_size=40).map(str.encode),
       pattern=st.lists(st.booleans(), min_size=1, max_size=8), data=st.data())
def test_mixed_case_percent_forms(secret: bytes, pattern: list[bool], data: st.DataObject) -> None:
    assume(secret.strip() == secret and mixed_case_triggers(secret))
    registry = SecretRegistry(background_merge=False)
    registry.add(secret, source="test")
    for form in percent_forms(secret):
        if mixed_case_triggers(secret) and any(t in form.lower() for t in mixed_case_triggers(secret)):
            line = b"x=" + mixed_case(form, pattern) + b"&y=1\n"
            masked = registry.mask(line)
            assert masked == b"x=***&y=1\n"
            assert stream_through(registry, data.draw(write_splits(line))) == masked


def test_u_escaped_forms_follow_utf16() -> None:
    assert u_escaped_forms("a\u00e9\U0001f600")[0] == b"\\u0061\\u00e9\\ud83d\\ude00"


def test_first_set_scans_with_the_main_engine_at_once() -> None:
    registry = SecretRegistry()
    registry.add_many([SECRET, TOKEN], source="test")
    layers = registry._masker.snapshot.layers
    assert len(layers) == 1 and layers[0].base and layers[0].matcher.name == registry.engine


def test_background_batch_masks_the_first_write() -> None:
    registry = SecretRegistry()
    with registry.batch(background=True):
        registry.add(SECRET, source="test")
        registry.add(TOKEN, source="test")
    out: list[bytes] = []
    with registry.stream(out.append) as s:  # the write waits for the compilation, never scans without it
        s.write(b"a " + SECRET + b" b " + base64.b64encode(TOKEN) + b"\n")
    assert b"".join(out) == b"a *** b ***\n"
    assert registry._masker.snapshot.layers[0].matcher.name == registry.engine


# --- properties: any width, any offset, any write split ---------------------------------------------------------

def _url(form: bytes) -> bytes:
    return form.replace(b"+", b"-").replace(b"/", b"_")


# kind -> (encoder of the whole document, the secret's form inside it for a prefix of n bytes)
ENCODERS = {
    "base64": (base64.b64encode, lambda secret, n: base64_forms(secret)[1 + n % 3]),
    "hex": (lambda b: b.hex().encode(), lambda secret, n: secret.hex().encode()),
    "upper hex": (lambda b: b.hex().upper().encode(), lambda secret, n: secret.hex().upper().encode()),
    "base64url": (base64.urlsafe_b64encode, lambda secret, n: _url(base64_forms(secret)[1 + n % 3])),
}


@settings(max_examples=120, deadline=None)
@given(secret=st.binary(min_size=12, max_size=90).filter(lambda s: s.strip() == s and s.strip()),
       prefix=st.binary(max_size=100), suffix=st.binary(max_size=40),
       width=st.one_of(st.sampled_from([60, 64, 76]), st.integers(60, 130)),
       kind=st.sampled_from(sorted(ENCODERS)), crlf=st.booleans(), indent=st.sampled_from([b"", b"  ", b"    "]),
       data=st.data())
def test_wrapped_forms_at_any_width_and_offset(secret: bytes, prefix: bytes, suffix: bytes, width: int,
                                                kind: str, crlf: bool, indent: bytes, data: st.DataObject) -> None:
    """base64, hex, uppercase hex (`xxd -p -u`) and URL-safe base64 (`basenc --base64url`) wrapped at any width,
    the secret at any offset of the document (the controls of the last two: test_masking_wrapped_upper_url.py)."""
    assume(secret not in prefix + suffix)
    encode, form = ENCODERS[kind]
    encoded = encode(prefix + secret + suffix)
    out = b"".join(indent + encoded[i:i + width] + (b"\r\n" if crlf else b"\n")
                   for i in range(0, len(encoded), width))
    registry = SecretRegistry(background_merge=False)
    registry.add(secret, source="test")
    masked = registry.mask(out)
    assert_no_piece(masked, form(secret, len(prefix)), k=12)
    assert stream_through(registry, data.draw(write_splits(out))) == masked


@settings(max_examples=80, deadline=None)
@given(secret=st.binary(min_size=12, max_size=120).filter(lambda s: s.strip() == s and s.strip()),
       width=st.integers(60, 130), lead=st.integers(0, 129), url=st.booleans())
def test_standalone_base64_wrapped_with_only_its_core_fragments(secret: bytes, width: int, lead: int,
                                                                url: bool) -> None:
    """`base64` of a secret alone (its padded form; the unpadded one with `base64 | tr -d =`) wrapped at any width,
    after `lead` characters of other base64 on its first line: the form has no fragments of its own
    (wrapped._covering_fragments), those of the core it starts with find it. No 12-character piece survives."""
    for form in (base64.b64encode(secret), base64.b64encode(secret).rstrip(b"=")):
        if url:
            form = _url(form)
        lead = lead % width
        doc = b"QUJD" * 40
        text = doc[:lead] + form
        out = b"".join(text[i:i + width] + b"\n" for i in range(0, len(text), width))
        registry = SecretRegistry(background_merge=False)
        registry.add(secret, source="test")
        assert_no_piece(registry.mask(out)[lead:], form, k=12)


def od_an(data: bytes) -> bytes:
    return b"".join(b"".join(b" %02x" % c for c in data[i:i + 16]) + b"\n" for i in range(0, len(data), 16))


def hexdump_c(data: bytes) -> bytes:
    lines = []
    for i in range(0, len(data), 16):
        row = data[i:i + 16]
        left = b" ".join(b"%02x" % c for c in row[:8])
        right = b" ".join(b"%02x" % c for c in row[8:])
        hexes = (left + b"  " + right if right else left).ljust(48)
        text = bytes(c if 32 <= c < 127 else 46 for c in row)
        lines.append(b"%08x  " % i + hexes + b"  |" + text + b"|\n")
    return b"".join(lines) + b"%08x\n" % len(data) if data else b""


def xxd(data: bytes) -> bytes:
    lines = []
    for i in range(0, len(data), 16):
        row = data[i:i + 16]
        groups = b" ".join(row[j:j + 2].hex().encode() for j in range(0, len(row), 2))
        text = bytes(c if 32 <= c < 127 else 46 for c in row)
        lines.append(b"%08x: " % i + groups.ljust(39) + b"  " + text + b"\n")
    return b"".join(lines)


@settings(max_examples=60, deadline=None)
@given(secret=st.text(string.ascii_uppercase + "!#%&*+-<=>?@^_~", min_size=16, max_size=60).map(str.encode),
       prefix=st.binary(max_size=40), suffix=st.binary(max_size=40),
       dump=st.sampled_from([od_an, hexdump_c, xxd]), data=st.data())
def test_hex_dumps_at_any_offset(secret: bytes, prefix: bytes, suffix: bytes, dump: object,
                                 data: st.DataObject) -> None:
    out = dump(prefix + secret + suffix)  # type: ignore[operator]
    registry = SecretRegistry(background_merge=False)
    registry.add(secret, source="test")
    masked = registry.mask(out)
    start = len(prefix)
    for j in range(len(secret) - 3):
        if (start + j) // 16 != (start + j + 3) // 16:
            continue  # those four bytes are not on one line
        four = secret[j:j + 4]
        for spelled in (four.hex(" ").encode(), four[:2].hex().encode() + b" " + four[2:].hex().encode()):
            assert spelled not in masked
    assert_no_fragment(masked, [secret])
    assert stream_through(registry, data.draw(write_splits(out))) == masked


@pytest.mark.parametrize("dump", [od_an, hexdump_c, xxd])
def test_two_secrets_in_one_dump_at_every_gap(dump: Callable[[bytes], bytes]) -> None:
    """The look that joins a dump's lines around a trigger reads at most the longest pattern's length past the
    trigger's line, and skipped the other triggers in what it read: a second secret that began before the end of
    that read and ended after it, with too little of it after for a trigger of its own, was never read whole
    (gaps of 46-48 bytes here showed 4-byte pieces of it)."""
    first, second = b"Xk9fQ2mZ7pLw4RtY8vNb3Hc", b"Pq7Lm2Zx9Wv4Ty6Rb1Nc8Hd"
    registry = registry_of(first, second)
    for gap in range(200):
        masked = registry.mask(dump(b"." * 5 + first + b"." * gap + second + b"." * 7))
        for secret in (first, second):
            for j in range(len(secret) - 3):
                assert secret[j:j + 4].hex(" ").encode() not in masked, (gap, j)
        assert_no_fragment(masked, [first, second])


def _covered(spans: list[tuple[int, int]]) -> set[int]:
    return {i for s, e in spans for i in range(s, e)}


@settings(max_examples=150, deadline=None)
@given(secrets=st.lists(st.text(string.ascii_letters + string.digits + "!#%&*+-<=>?@^_~", min_size=16, max_size=40)
                        .map(str.encode), min_size=1, max_size=4, unique=True),
       gaps=st.lists(st.integers(0, 120), min_size=5, max_size=5), repeat=st.integers(1, 3),
       dump=st.sampled_from([od_an, hexdump_c, xxd, lambda d: wrap(base64.b64encode(d), 76),
                             lambda d: wrap(d.hex().encode(), 60)]))
def test_the_view_finds_what_one_run_over_the_whole_dump_finds(secrets: list[bytes], gaps: list[int], repeat: int,
                                                                 dump: Callable[[bytes], bytes]) -> None:
    """The look reads at most the longest pattern's length on each side of a trigger's line, several secrets one
    after the other, each maybe several times: it masks what reading the whole run at once masks. (Secrets of 16
    bytes and more: every piece of theirs in a dump holds a trigger. A shorter value's hex cut by a line break far
    from any trigger is found only by a look that happens to read it, whole runs included.)"""
    doc = b"".join(b"." * gap + secret for gap, secret in zip(gaps, secrets * repeat, strict=False)) + b"." * gaps[-1]
    out = dump(doc)
    hits = registry_of(*secrets)._masker.current().find_raw(out)
    # What the dumps' and encodings' content holds of the secrets, and a budget just as long as the longest of it
    # (the masker's is the longest of every form, the \u escapes': seldom tight on hex).
    forms = [f for secret in secrets for f in (secret.hex().encode(), *base64_forms(secret))]

    def find(content: bytes) -> list[tuple[int, int]]:
        return [(m.start(), m.start() + len(f)) for f in forms for m in re.finditer(b"(?=" + re.escape(f) + b")", content)]

    bounded = wrapped.view_occurrences(out, hits, find, max(map(len, forms)))
    whole = wrapped.view_occurrences(out, hits, find, len(out))
    assert _covered(bounded) == _covered(whole)


def test_the_view_reads_a_long_dump_in_a_bounded_number_of_runs() -> None:
    """A dump with a trigger on every line and a long pattern registered (a 12,000-character budget): the runs move
    on by at least the budget each, rather than a line each (which read the dump 700 times over: 100 s for 224 KB)."""
    secret = b"Xk9fQ2mZ7pLw4RtY8vNb3Hc"
    out = hexdump_c(secret * 2000)
    snapshot = registry_of(secret, b"x" * 2000 + b"tail-of-a-long-secret")._masker.current()
    calls: list[int] = []

    def find(content: bytes) -> list[tuple[int, int]]:
        calls.append(len(content))
        return snapshot._find_masks(content)

    spans = wrapped.view_occurrences(out, snapshot.find_raw(out), find, snapshot.maxlen)
    content = 2 * len(secret) * 2000
    assert spans and len(calls) <= content // snapshot.maxlen + 2 and sum(calls) <= 4 * content, (len(calls), sum(calls))


def test_two_mixed_case_percent_forms_at_every_gap() -> None:
    """The look at a mixed-case percent form reads a window of the longest pattern's length around its trigger and
    skipped the other triggers in it: a second form whose trigger lay in the window and which ended past it was
    never read whole (gaps of 150-191 bytes here left it in the clear)."""
    first, second = MIXED, b"LongerPiece/PassWord:Another=99?xyz"
    registry = registry_of(first, second)
    one = mixed_case(urllib.parse.quote(first, safe="").encode(), [False, True])
    two = mixed_case(urllib.parse.quote(second, safe="").encode(), [True, False])
    for gap in range(300):
        line = b"a=" + one + b"&" + b"x" * gap + b"&b=" + two + b" 200\n"
        assert registry.mask(line) == b"a=***&" + b"x" * gap + b"&b=*** 200\n", gap


def _od(*args: str) -> Callable[[bytes], bytes]:
    return lambda data: subprocess.run(["od", *args], input=data, capture_output=True, check=True).stdout


DUMP_LINES: dict[str, Callable[[bytes], bytes]] = {
    "od -An -tx1": _od("-An", "-tx1"), "od -tx1": _od("-tx1"), "od -Ax -tx1z": _od("-Ax", "-tx1z"),
    "od -c": _od("-c"), "od -An -c": _od("-An", "-c"), "od -Ad -c": _od("-Ad", "-c"),
    "hexdump -C": hexdump_c, "xxd": xxd,
    "xxd -i": lambda d: b"".join(b"  " + b", ".join(b"0x%02x" % c for c in d[i:i + 12]) + b",\n"
                                 for i in range(0, len(d), 12)),
    "\\xNN": lambda d: b"".join(b"\\x%02x" % c for c in d[:16]) + b"\n",
    "openssl hex": lambda d: d[:16].hex(":").encode() + b"\n",
    "base64": lambda d: wrap(base64.b64encode(d), 76),
}


@pytest.mark.skipif(shutil.which("od") is None, reason="od is not installed")
@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=64), fmt=st.sampled_from(sorted(DUMP_LINES)))
def test_every_cut_of_a_dump_line_may_be_one(data: bytes, fmt: str) -> None:
    """A stream holds the end of a write and keeps its last line as context only when that line may be an encoding
    or dump line (wrapped.quick_candidate: `_PREFIX` for an incomplete line). Every line the view reads as one, cut
    anywhere, must pass: `od -An -c` with a space byte (a field of 4 blanks) did not, and leaked in streams."""
    for line in DUMP_LINES[fmt](data).split(b"\n"):
        if wrapped.classify(line, 0, len(line)) is None:
            continue  # od's `*` for repeated lines, the last offset alone
        for cut in range(1, len(line) + 1):
            assert wrapped.quick_candidate(line[:cut]), (fmt, cut)
        assert wrapped.quick_candidate(line + b"\n"), fmt


def test_a_view_masks_only_what_touches_the_line_of_a_hit() -> None:
    """Found by the atheris harness with 1 KiB inputs (stop 29), both ways round: a short value's hex cut by a line
    break (too short for trigger fragments of its own) a few lines before or after a hit of another secret's hex.
    The whole output's view, opened by that hit, read the run around it and masked the short value; a stream cut
    between had emitted it before the hit came, or had dropped the hit from its kept lines before the rest came.
    A view now masks what touches the line of a hit it reads: every cut gives the whole output's answer (a form
    long enough to be guaranteed has a trigger in one of its lines at least)."""
    before = (b"0a616161620a6161\n6131620a0a0a0a0a\n0a0a0a0a0a0a0a0a\n0a0a616161616161",
              [b"aaa1b", b"aaaaaa\n", b"\n\n\n\n\naa"])
    after = (b"62626262626262620a\n0a0a0a0a0a0a0a0a0a\n0a0a0a0a0a0a0a0a0a\n0a3131626161310a31\n316161616161626262",
             [b"bbbbbb", b"bbbbaa", b"1\n11aa"])
    for text, secrets in (before, after):
        registry = SecretRegistry(background_merge=False)
        registry.add_many(secrets, source="test")
        whole = registry.mask(text)
        assert whole.count(b"***") == 1, whole  # the hit's own secret only
        for cut in range(1, len(text)):
            assert stream_through(registry, [text[:cut], text[cut:]]) == whole, cut


def test_a_line_read_without_its_colour_codes_masks_what_holds_a_hit() -> None:
    """Found by the atheris harness (stop 29): a short secret cut by a colour code (`\\0\\0<` ESC[31m `<<`), 90 bytes
    along one line after another secret found whole. The whole output read the line without its codes from that hit
    and masked both; a stream had let the hit go long before the code came. The colour view now masks what holds a
    hit (a long value cut by a code holds one of its fragments): at every cut the stream gives the whole output's
    answer, and a 20-byte value cut by a code far from any other hit is still masked."""
    registry = SecretRegistry(background_merge=False)
    registry.add_many([b"\x00\x00<<<", b"<<<<<<<<<<", b"Zq8vN3kLp2Xr7TmW9bYc"], source="test")
    text = b"<<<<<<<<<<" + b"\xf3" * 90 + b"\x00\x00<\x1b[31m<<" + b"\xf3" * 50 + b"\n Zq8vN3kLp2\x1b[1mXr7TmW9bYc\n"
    whole = registry.mask(text)
    assert whole == b"***" + b"\xf3" * 90 + b"\x00\x00<\x1b[31m<<" + b"\xf3" * 50 + b"\n ***\n"
    for cut in range(1, len(text)):
        assert stream_through(registry, [text[:cut], text[cut:]]) == whole, cut


def test_a_colour_cut_value_is_read_from_a_hit_inside_it() -> None:
    """Found by the atheris harness (stop 29): `$` + 7 bytes, cut by colour codes, right after another secret that
    ends in that `$`. The whole output read the line without its codes from that secret's hit and masked both; a
    stream had masked and let go the first secret (its hit) before the codes came. A hit that begins before the value
    no longer counts for it."""
    registry = SecretRegistry(background_merge=False)
    registry.add_many([b"$" + b"\xe5" * 7, b"\xe5" * 7 + b"$"], source="test")
    text = b"\xed" + b"\xe5" * 7 + b"$" + b"\xe5" * 3 + b"\x1b[m\x1b[K" + b"\xe5" * 20 + b"\n"
    whole = registry.mask(text)
    assert whole.startswith(b"\xed***")
    for cut in range(1, len(text)):
        for second in range(cut + 1, len(text)):
            assert stream_through(registry, [text[:cut], text[cut:second], text[second:]]) == whole, (cut, second)


@pytest.mark.parametrize(("secrets", "text"), [
    # grep highlighting from the middle of a short secret that another one overlaps (`s3cr3tpw` / `tpw-abc1`).
    (["s3cr3tpw", "tpw-abc1"], b"x s3cr\x1b[01;31m\x1b[K3tpw-abc1\x1b[m\x1b[K\n"),
    # Found by the atheris harness (stop 30): a value's reversed form cut by a code, the value right after it.
    ([b"\x00\xff\xff\xff"], b"ab\xff\xff\xff\x1b[01;31m\x1b[K\x00\xff\xff\xff cd\n"),
], ids=["overlapping", "reversed"])
def test_a_colour_cut_value_is_held_while_a_hit_inside_it_may_come(secrets: list[str | bytes], text: bytes) -> None:
    """A short value cut by colour codes is masked where a hit begins inside it (the view reads the line without
    its codes). A write that ended in the beginning of that hit (`tpw-ab`) held the beginning only: the part of the
    value before it, codes included, went out (`x s3cr\\x1b[01;31m\\x1b[K3`), and the next write could not see it.
    The stream now holds from such a value too (wrapped.ansi_tail_live_start with `find`)."""
    registry = SecretRegistry(background_merge=False)
    registry.add_many(secrets, source="test")
    whole = registry.mask(text)
    assert whole.count(b"***") == 1 and whole.endswith(b"\n")
    assert all(stream_through(registry, [text[:cut], text[cut:]]) == whole for cut in range(1, len(text)))


@pytest.mark.skipif(shutil.which("grep") is None, reason="needs grep")
@pytest.mark.parametrize(("a", "b"), [(6, 14), (1, 20), (10, 11), (0, 5), (16, 21), (3, 9)])
def test_a_value_highlighted_by_grep_is_masked_whatever_the_pieces(a: int, b: int) -> None:
    """Found by a coverage hunt (stop 31, real `grep`): `grep --color=always -F RzJaKGta` over a line holding
    `0qJnicRzJaKGtaUyvgqkM` prints the value in three pieces, 6, 8 and 7 bytes, between grep's codes. None held a raw
    fragment whole (8 bytes, placed for pieces of 15), and the whole value went out in clear. grep ends each of its
    codes with the erase-line code: `m\\x1b[K` is a trigger of its own now (wrapped.COLOUR_ERASE), and the line is read
    without its codes wherever it is."""
    secret = b"0qJnicRzJaKGtaUyvgqkM"
    registry = SecretRegistry(background_merge=False)
    registry.add_many([secret], source="test")
    line = b"-- /. ; " + secret + b" ,;. --\n"
    text = subprocess.run(["grep", "--color=always", "-F", secret[a:b].decode()], input=line, capture_output=True,
                          check=True).stdout
    assert text.count(b"\x1b[") >= 2
    whole = registry.mask(text)
    assert_no_fragment(wrapped._SGR.sub(b"", whole), [secret])
    assert all(stream_through(registry, [text[:cut], text[cut:]]) == whole for cut in range(1, len(text)))


@pytest.mark.parametrize(("code", "expected"), [
    (b"\x1b[m", b"***\x1b[ma"),
    # grep's codes end in the erase-line code, a trigger of its own (COLOUR_ERASE): the line is read without its codes
    # from that hit, and the value's form `aaaaaaaaaa` across the code is masked, whole and streamed alike.
    (b"\x1b[m\x1b[K", b"***"),
], ids=["colour", "grep"])
def test_a_form_beginning_with_a_line_break_reads_no_colour_view_from_anywhere(code: bytes, expected: bytes) -> None:
    """Found by the atheris harness (stop 30): `aaaaaaaaaa\\n` registered, its form `\\naaaaaaaaaa` hit at the start of
    a line with colour codes. A hit beginning with a line break was taken for a dump-start trigger (whose view reads
    on from a dump's first line and masks all it finds): the whole output masked every occurrence of the line read
    without its codes, the code and the `a` after it too; a stream that had let the break go did not. Only the
    dump-start triggers read so now."""
    registry = SecretRegistry(background_merge=False)
    registry.add_many([b"aaaaaaaaaa\n"], source="test")
    text = b"\naaaaaaaaaa" + code + b"a"
    whole = registry.mask(text)
    assert whole == expected
    for cut in range(1, len(text)):
        for second in range(cut, len(text)):
            assert stream_through(registry, [text[:cut], text[cut:second], text[second:]]) == whole, (cut, second)


@pytest.mark.parametrize(("secrets", "text", "whole"), [
    # `od -c` of "1111111111111a1": cut after a field's space, the line so far reads as `od -tu1` only.
    ([b"a111\n", b"\n1111"], b"0000000" + b"   1" * 13 + b"   a   1\n", b"0000000   ***   a   1\n"),
    ([b"1111"], b"0000000" + b"   1" * 6 + b"   a\n", b"0000000   ***   a\n"),
    # `od -tu1` of 1 (ten times), 12: cut before `  12`, the line so far reads as `od -c` of "1111..." first.
    ([b"\x01" * 10], b"0000000" + b"   1" * 10 + b"  12\n", b"0000000 ***  12\n"),
    ([b"\x01" * 6], b"0000000" + b"   1" * 6 + b"  12\n", b"0000000 ***  12\n"),
], ids=["od-c-long", "od-c", "od-tu1-long", "od-tu1"])
def test_an_unfinished_dump_line_is_held_for_both_its_readings(secrets: list[bytes], text: bytes,
                                                               whole: bytes) -> None:
    """Found by the atheris harness at the end of stop 29: `   1   1` is `od -c` of "11" and `od -tu1` of 1, 1. The
    whole output reads the finished line one way; a stream cut inside it read the unfinished line the other way
    (a numeric line after a field's space, `od -c` before) and emitted what the whole output masks. A stream now
    holds an unfinished line that reads both ways for both (wrapped.tail_live_start): every cut fails without."""
    registry = SecretRegistry(background_merge=False)
    registry.add_many(secrets, source="test")
    assert registry.mask(text) == whole
    for cut in range(1, len(text)):
        assert stream_through(registry, [text[:cut], text[cut:]]) == whole, cut


def test_a_short_value_across_two_dump_lines_is_masked_in_both_ascii_columns() -> None:
    """Found at the end of stop 30 (it reproduces on stop 29's build): `btsw` (too short for trigger fragments of
    its own) across lines 1-2 of `hexdump -C`, `70p7` on line 2. The whole output reads both lines from 70p7's hit
    and masks btsw's hex and its characters in both ASCII columns; a stream cut inside line 2's ASCII column masks
    the hex but shows `sw` there (the view of its later write no longer holds line 1, so it finds no `btsw` for the
    column). `context_start` kept `maxlen` of content counted from that line's own start; for a dump line with an
    ASCII column after the held point it now keeps `maxlen` before the line (the failing cuts were after line 2
    was written whole, held from inside its hex, so "pending" alone was not the rule)."""
    registry = SecretRegistry(background_merge=False)
    registry.add_many([b"btsw", b"70p7"], source="test")
    # `hexdump -C` of b"..yyxyzyxxxz.ybtsw.70p7. y.z"
    text = (b"00000000  2e 2e 79 79 78 79 7a 79  78 78 78 7a 2e 79 62 74  |..yyxyzyxxxz.ybt|\n"
            b"00000010  73 77 2e 37 30 70 37 2e  20 79 2e 7a              |sw.70p7. y.z|\n0000001c\n")
    whole = registry.mask(text)
    assert b"|sw" not in whole
    assert all(stream_through(registry, [text[:cut], text[cut:]]) == whole for cut in range(1, len(text)))


def test_an_unfinished_numeric_line_that_reads_as_od_b_is_held_for_its_numbers() -> None:
    """Found by the atheris harness at the end of stop 30 (it reproduces on stop 29's build): `od -tu1` of
    `\\\\xff\\\\xff!\\\\x00\\\\x00` is `0000000 255 255  33   0   0`; cut after `255 255  `, the line so far also reads as
    `od -b` (octal 255), and the stream lets the two fields go that the whole output, reading the finished line as
    numbers, masks. The numbers reading that tail_live_start takes of an unfinished `od -c` line (which `od -b` is
    read as) rejected fields that are all 3 octal digits (`_numeric_line`'s `od -b` rule); it now reads them as
    numbers too (`octal_bytes`)."""
    registry = SecretRegistry(background_merge=False)
    registry.add_many([b"\xff\xff!\x00\x00", b"\x00\x00\x00\t", b"<\xff\xff\xff"], source="test")
    chunks = [b"000", b"0000 255 255  ", b"33   0", b"   0\n"]
    whole = registry.mask(b"".join(chunks))
    assert whole == b"0000000 ***\n"
    assert stream_through(registry, chunks) == whole
