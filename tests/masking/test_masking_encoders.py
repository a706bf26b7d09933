"""Percent-encoding and hex, as real encoders print them: Python urllib, JavaScript (node), curl, xxd.

Encoders differ in what they leave unescaped (`/`, `:`, `@`, `!'()*`, `~`), in space (`%20` or `+`) and in
the case of the hex digits; each secret below holds the characters where they differ. Every test also shows
the protection off: the raw value alone, or the three percent forms of the previous round (RFC 3986 upper and
lower hex, quote_plus), leave the encoded secret in the clear.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runnerlib.security.masker import reference_mask
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.variants import PERCENT_ENCODERS, hex_forms, percent_forms, secret_variants
from runnerlib.testing import assert_no_fragment, stream_through

SPECIAL = "/:@ +&=?#~*!'()%;,$[]"
SECRETS = [
    "p@ss/w:rd+1 &x=y?z#f",
    "tok~en*(x)!'y'",
    "a/b/c/d-e_f.g",
    "ümlaut/+é secret",
    "100% [sure];$HOME,ok",
    "pa ss",
    "it's (a) secret!",
]


def registry_of(secret: bytes) -> SecretRegistry:
    r = SecretRegistry()
    assert r.add(secret, source="test")
    return r


def previous_round_forms(secret: bytes) -> list[bytes]:
    """The percent forms registered before this change: RFC 3986 (upper, lower hex) and quote_plus."""
    quoted = urllib.parse.quote_from_bytes(secret, safe="")
    return [secret, quoted.encode(), quoted.lower().encode(), urllib.parse.quote_plus(secret, safe="").encode()]


# Python's own encoders, and the other families by their documented "left as is" sets, applied with urllib.
PY_ENCODERS: dict[str, Callable[[str], str]] = {
    "quote": urllib.parse.quote,  # safe='/' by default
    "quote-safe-empty": lambda s: urllib.parse.quote(s, safe=""),
    "quote_plus": urllib.parse.quote_plus,
    "urlencode": lambda s: urllib.parse.urlencode({"p": s})[2:],
    "quote-lowercase-hex": lambda s: _lower_hex(urllib.parse.quote(s, safe="")),
    "quote-slash-lowercase": lambda s: _lower_hex(urllib.parse.quote(s)),
    "quote_plus-lowercase (curl 7.88 --data-urlencode)": lambda s: _lower_hex(urllib.parse.quote_plus(s)),
    "encodeURIComponent": lambda s: urllib.parse.quote(s, safe="-_.!~*'()"),
    "encodeURI": lambda s: urllib.parse.quote(s, safe="-_.!~*'();/?:@&=+$,#"),
    "URLSearchParams/Java URLEncoder": lambda s: urllib.parse.quote_plus(s, safe="*").replace("~", "%7E"),
    "Go PathEscape": lambda s: urllib.parse.quote(s, safe="$&+:=@"),
    "requests requote_uri": lambda s: urllib.parse.quote(s, safe="!#$&'()*+,/:;=?@[]~"),
}


def _lower_hex(s: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), s)


@pytest.mark.parametrize("encoder", PY_ENCODERS, ids=str)
@pytest.mark.parametrize("secret", SECRETS)
def test_python_encoders(secret: str, encoder: str) -> None:
    encoded = PY_ENCODERS[encoder](secret).encode()
    text = b"GET /login?user=me&pw=" + encoded + b" HTTP/1.1"
    assert registry_of(secret.encode()).mask(text) == b"GET /login?user=me&pw=*** HTTP/1.1"


def test_previous_round_missed_these_encoders() -> None:
    # Protection off: with only the previous three percent forms, quote()'s '/', encodeURIComponent's
    # !'()* and URLSearchParams' %7E leave the encoded secret in the clear.
    missed = set()
    for secret in SECRETS:
        for name, encode in PY_ENCODERS.items():
            encoded = encode(secret).encode()
            if reference_mask(b"pw=" + encoded, previous_round_forms(secret.encode())) != b"pw=***":
                missed.add(name)
    assert {"quote", "encodeURIComponent", "URLSearchParams/Java URLEncoder", "Go PathEscape"} <= missed


@given(
    secret=st.text(alphabet=st.sampled_from("aZ09-._" + SPECIAL + "é€\t"), min_size=4, max_size=24)
    .filter(lambda s: s.strip() != ""),
    encoder=st.sampled_from(sorted(PY_ENCODERS)),
    cut=st.integers(0, 200),
)
def test_every_encoder_any_secret_streamed_at_any_cut(secret: str, encoder: str, cut: int) -> None:
    encoded = PY_ENCODERS[encoder](secret).encode()
    text = b"\x01" + encoded + b"\x01"  # \x01 is in no form of these secrets
    r = registry_of(secret.encode())
    cut %= len(text) + 1
    assert stream_through(r, [text[:cut], text[cut:]]) == b"\x01***\x01"


NODE_SCRIPT = """
const secrets = JSON.parse(process.argv[1]);
console.log(JSON.stringify(secrets.map(s => [encodeURIComponent(s), encodeURI(s),
    new URLSearchParams({p: s}).toString().slice(2)])));
"""


def test_javascript_encoders_as_node_prints_them() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    proc = subprocess.run([node, "-e", NODE_SCRIPT, json.dumps(SECRETS)], capture_output=True, check=True)
    outputs = json.loads(proc.stdout)
    missed_before = 0
    for secret, encoded_forms in zip(SECRETS, outputs, strict=True):
        r = registry_of(secret.encode())
        for encoded in encoded_forms:
            text = b"fetch('/api?k=" + encoded.encode() + b"')"
            assert r.mask(text) == b"fetch('/api?k=***')", encoded
            missed_before += reference_mask(text, previous_round_forms(secret.encode())) != b"fetch('/api?k=***')"
    assert missed_before  # protection off: the previous forms miss some of node's outputs


def test_curl_data_urlencode_as_curl_sends_it() -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    for secret in SECRETS:
        # -G puts the encoded data in the URL, which -w prints even though nothing listens on port 9.
        proc = subprocess.run([curl, "-s", "-G", "--data-urlencode", f"p={secret}", "-w", "%{url_effective}",
                               "http://127.0.0.1:9/"], capture_output=True)
        url = proc.stdout
        assert url.startswith(b"http://127.0.0.1:9/?p="), url
        assert registry_of(secret.encode()).mask(url) == b"http://127.0.0.1:9/?p=***"
        if secret == SECRETS[0]:
            # curl 7.88 writes lowercase hex (%2f) with '+' for space: neither previous form matched that.
            assert reference_mask(url, previous_round_forms(secret.encode())) == url


def test_percent_forms_are_deduplicated_and_absent_for_plain_secrets() -> None:
    assert percent_forms(b"AbCdEf0123456789") == []  # every encoder leaves it as is: no extra pattern
    forms = percent_forms(b"a b/c")
    assert len(forms) == len(set(forms))
    assert b"a b/c" not in forms
    # 11 encoder families x 2 hex cases, far fewer distinct outputs.
    assert len(forms) < 2 * len(PERCENT_ENCODERS)
    assert {b"a%20b%2Fc", b"a%20b%2fc", b"a%20b/c", b"a+b%2Fc", b"a+b%2fc"} <= set(forms)


# --- hex ----------------------------------------------------------------------------------------------------

HEX_SECRETS = [b"hunter2!", b"\x00\xffbinary\x1b[0m", b"ghp_" + b"A1b2C3d4" * 5, bytes(range(200, 256)) * 2]


@pytest.mark.parametrize("secret", HEX_SECRETS, ids=lambda s: f"{len(s)}B")
@pytest.mark.parametrize("upper", [False, True])
def test_xxd_plain_hex_dump_of_the_secret(secret: bytes, upper: bool) -> None:
    xxd = shutil.which("xxd")
    if xxd is None:
        pytest.skip("xxd is not installed")
    # `printf %s "$S" | xxd -p`: wrapped every 30 bytes when the secret is longer than that.
    dump = subprocess.run([xxd, "-p", *(["-u"] if upper else [])], input=secret, capture_output=True,
                          check=True).stdout
    out = registry_of(secret).mask(b"dump:\n" + dump)
    assert out == b"dump:\n***\n"
    assert reference_mask(dump, [secret]) == dump  # protection off: the raw value alone misses it


@pytest.mark.parametrize("secret", HEX_SECRETS, ids=lambda s: f"{len(s)}B")
@pytest.mark.parametrize("upper", [False, True])
def test_hex_inside_a_longer_dump(secret: bytes, upper: bool) -> None:
    # `xxd -p -c 256 file`, bytes.hex(), Go %x, C# Convert.ToHexString (uppercase) on a blob holding the secret.
    head, tail = b"\x10header bytes ", b" trailer\x11"
    text = (head + secret + tail).hex().encode()
    text = text.upper() if upper else text
    a, b = 2 * len(head), 2 * (len(head) + len(secret))
    out = registry_of(secret).mask(text)
    assert out == text[:a] + b"***" + text[b:]
    assert reference_mask(text, [secret]) == text  # protection off


# (An all-blank value is no secret: the registry ignores it.)
@given(secret=st.binary(min_size=4, max_size=70).filter(bytes.strip), prefix=st.binary(max_size=6),
       suffix=st.binary(max_size=6), upper=st.booleans(), cut=st.integers(0, 400))
def test_hex_of_any_bytes_at_any_cut(secret: bytes, prefix: bytes, suffix: bytes, upper: bool, cut: int) -> None:
    def h(b: bytes) -> bytes:
        return (b.hex().upper() if upper else b.hex()).encode()

    text = h(prefix + secret + suffix)
    a, b = 2 * len(prefix), 2 * (len(prefix) + len(secret))
    cut %= len(text) + 1
    registry = registry_of(secret)
    out = stream_through(registry, [text[:cut], text[cut:]])
    assert out == reference_mask(text, registry.patterns(), line_starts=registry.line_starts())
    # Hex is byte-aligned: the secret's digits are covered whatever surrounds them.
    assert_no_fragment(out, [text[a:b]], allowed=[text[:a], text[b:]])


def test_hex_forms() -> None:
    assert hex_forms(b"Ab\x00")[:2] == [b"416200", b"416200"]
    assert hex_forms(b"\xfe\xff") == [b"feff", b"FEFF"]
    long = bytes(range(40))
    up = long.hex().upper().encode()
    assert up[:60] + b"\n" + up[60:] in hex_forms(long)
    assert up[:60] + b"\r\n" + up[60:] in hex_forms(long)
    # Lowercase wrapped hex is the wrapped view's: at any width, in a registry (test_masking_wrapped.py).
    low = long.hex().encode()
    registry = SecretRegistry()
    registry.add(long, source="test")
    for width in (60, 64, 76):
        dump = b"\n".join(low[i:i + width] for i in range(0, len(low), width)) + b"\n"
        assert registry.mask(dump) == b"***\n"


# --- min-length rule ----------------------------------------------------------------------------------------

@given(min_length=st.integers(4, 12), data=st.data())
def test_no_variant_shorter_than_min_length(min_length: int, data: st.DataObject) -> None:
    secret = data.draw(st.binary(min_size=min_length, max_size=40).filter(lambda s: s.strip() != b""))
    forms = secret_variants(secret, min_length=min_length)
    assert all(len(f) >= min_length for f in forms)


@pytest.mark.parametrize("length", range(4, 40))
def test_trimmed_base64_edges_are_never_shorter_than_the_value(length: int) -> None:
    # The shortest trimmed base64 form (alignment 1) has floor(8(L+1)/6) - 2 characters, at least L for L >= 4:
    # the min-length filter never has to drop a base64 form of an admissible value (each character of it
    # carries 6 bits of the secret only, so 4 characters are 24 secret bits, like a 3-byte value).
    value = bytes(range(65, 65 + length))
    embedded = [base64.b64encode(b"\0" * s + value) for s in range(3)]
    forms = [f for f in secret_variants(value, min_length=4) if any(f in e for e in embedded)]
    assert min(len(f) for f in forms) >= length


def test_short_line_of_a_multi_line_secret_is_not_a_pattern_nor_its_encodings() -> None:
    # A 3-byte line "abc" would mask "abc" everywhere, and its hex "616263" every such digit run.
    secret = b"first-line-of-key\nabc\nlast-line-of-key"
    forms = secret_variants(secret, min_length=4)
    assert b"abc" not in forms and b"616263" not in forms and b"YWJj" not in forms
    r = registry_of(secret)
    assert r.mask(b"abc 616263 YWJj") == b"abc 616263 YWJj"
