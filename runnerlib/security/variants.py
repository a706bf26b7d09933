"""The encoded forms of one secret: every byte string that must be masked when the secret is registered.

A secret leaks as often through an encoding as verbatim: `echo $TOKEN | base64`, a URL query string, a JSON
log line, `set -x` echoing a quoted argument, a PEM key printed by a tool that joined its lines. Each form
here becomes one literal pattern of the masker; the masker then masks every byte covered by any occurrence
of any form, so forms that overlap or contain each other are fine.

>>> secret_variants(b"s3cr3t!x")[:3]
[b's3cr3t!x', b'czNjcjN0IXg=', b'czNjcjN0IX']
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse

# Characters trimmed to get the "trimmed" form: a value pasted as `"abc"` or with a trailing newline is
# usually printed by tools without them.
_TRIM_CHARS = b" \t\r\n\"'`"

# Line endings a multi-line secret meets in output: as stored (\n), Windows (\r\n), a PTY in raw mode
# (\r\r\n), shell word splitting (`echo $(cat key)` joins with one space) and `tr -d '\n'` (joined).
_LINE_JOINS = (b"\n", b"\r\n", b"\r\r\n", b" ", b"")
_LINE_SPLIT = re.compile(rb"\r*\n")


def base64_forms(value: bytes) -> list[bytes]:
    """Base64 of `value` as it appears inside a longer encoded text, at each of the 3 byte alignments.

    Inside a longer text the first and last characters of the encoding also carry bits of the neighbouring
    bytes, so those partial characters are trimmed; the standalone encoding (with `=` padding) is kept too,
    since `echo -n $S | base64` prints exactly that.
    """
    forms = [base64.b64encode(value)]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + value)
        whole_chars = (8 * (shift + len(value))) // 6  # characters made only of real bits
        first = -(-8 * shift // 6)  # characters that still carry bits of the preceding bytes
        forms.append(encoded[first:whole_chars])
    return forms


def _percent_forms(value: bytes) -> list[bytes]:
    quoted = urllib.parse.quote_from_bytes(value, safe="")
    lower = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted)
    plus = urllib.parse.quote_plus(value, safe="")  # form encoding: space as '+'
    return [quoted.encode(), lower.encode(), plus.encode()]


def _json_forms(value: bytes) -> list[bytes]:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return []
    ascii_form = json.dumps(text, ensure_ascii=True)[1:-1].encode()
    utf8_form = json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass")
    return [ascii_form, utf8_form, ascii_form.replace(b"/", b"\\/"), utf8_form.replace(b"/", b"\\/")]


# bash's `set -x` (and `printf %q`) print a word containing control characters as $'...' (ANSI-C quoting,
# bash lib/sh/strtrans.c ansic_quote): these escapes, other control bytes as 3-digit octal.
_ANSIC = {7: b"\\a", 8: b"\\b", 9: b"\\t", 10: b"\\n", 11: b"\\v", 12: b"\\f", 13: b"\\r", 27: b"\\E",
          39: b"\\'", 92: b"\\\\"}


# `printf %q` without control characters: a backslash before each of these (bash sh_backslash_quote).
_BACKSLASH_QUOTED = re.compile(rb"([ \t'\"\\|&;()<>!{}*\[?\]^$`,])")


def _shell_forms(value: bytes) -> list[bytes]:
    # `set -x` and ${v@Q} print a word with special characters inside single quotes; ' becomes '\''.
    forms = [value.replace(b"'", b"'\\''")]
    escaped = _BACKSLASH_QUOTED.sub(rb"\\\1", value)
    if value[:1] in (b"~", b"#"):
        escaped = b"\\" + escaped
    forms.append(escaped)
    if any(b < 32 or b == 127 for b in value):
        forms.append(b"".join(
            _ANSIC.get(b) or (b"\\%03o" % b if b < 32 or b == 127 else bytes((b,))) for b in value
        ))
    return forms


def _quote_forms(value: bytes) -> list[bytes]:
    xml = (value.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")
           .replace(b'"', b"&quot;").replace(b"'", b"&#39;"))
    return [xml, xml.replace(b"&#39;", b"&apos;"), xml.replace(b"&#39;", b"&#x27;"),
            value.replace(b'"', b'\\"'), value.replace(b'"', b'""')]


def encoded_forms(value: bytes) -> list[bytes]:
    """Every encoding of `value` the masker knows: base64 (3 alignments), base64url, percent, JSON, shell, XML."""
    b64 = base64_forms(value)
    b64url = [f.replace(b"+", b"-").replace(b"/", b"_") for f in b64]
    return [
        *b64, *b64url, *(f.rstrip(b"=") for f in b64url),
        *_percent_forms(value), *_json_forms(value), *_shell_forms(value), *_quote_forms(value),
    ]


def plain_forms(value: bytes, *, min_length: int = 4) -> list[bytes]:
    """The unencoded forms: the value, its trimmed form and, for a multi-line value, each line and each join."""
    forms = [value]
    trimmed = value.strip(_TRIM_CHARS)
    if trimmed != value and len(trimmed) >= min_length:
        forms.append(trimmed)
    if b"\n" in trimmed:
        lines = _LINE_SPLIT.split(trimmed)
        forms.extend(join.join(lines) for join in _LINE_JOINS)
        for line in lines:
            line = line.strip(b" \t\r")
            if len(line) >= min_length:
                forms.append(line)
    return forms


def secret_variants(value: bytes, *, min_length: int = 4) -> list[bytes]:
    """All patterns to mask for one secret, deduplicated, none shorter than `min_length`, `value` first.

    >>> b"c2VjcmV0" in secret_variants(b"secret")   # base64 of "secret"
    True
    """
    out: dict[bytes, None] = {}
    for form in plain_forms(value, min_length=min_length):
        out.setdefault(form, None)
        for enc in encoded_forms(form):
            if len(enc) >= min_length:
                out.setdefault(enc, None)
    return [v for v in out if v]
