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
from collections.abc import Callable

from runnerlib.security import folded, truncated
from runnerlib.security.escape_forms import (
    _ANSIC,
    c_locale_shell_forms,
    caret_forms,
    char_list_forms,
    decimal_list_forms,
    markup_forms,
    properties_forms,
    python_escape_forms,
    quoted_forms,
    upper_u_escape,
)
from runnerlib.security.rearranged_forms import one_a_line_forms, rearranged_forms
from runnerlib.security.wrapped import fragments, wrap_triggers, wrappable_forms

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
        encoded = base64.b64encode(b"\0" * shift + value) if shift else forms[0]
        whole_chars = (8 * (shift + len(value))) // 6  # characters made only of real bits
        first = -(-8 * shift // 6)  # characters that still carry bits of the preceding bytes
        forms.append(encoded[first:whole_chars])
    return forms


# Percent-encoders differ in which characters they leave as they are, in whether a space becomes '+', and
# in the case of the hex digits. Each row is a family of real encoders (characters kept besides ASCII letters
# and digits, space as '+'); every row is applied with upper- and lowercase hex and identical outputs are
# deduplicated, so a secret of letters and digits gets no percent form at all and N=10,000 stays cheap.
PERCENT_ENCODERS: tuple[tuple[str, bytes, bool], ...] = (
    # RFC 3986 unreserved only: Python quote(safe=''), curl_easy_escape, .NET Uri.EscapeDataString,
    # PHP rawurlencode, Go url.PathEscape for secrets without $&+:=@.
    ("rfc3986", b"-._~", False),
    ("python-quote", b"-._~/", False),  # urllib.parse.quote() with its default safe='/'
    # Form encoding: Python quote_plus/urlencode, Go url.QueryEscape, curl --data-urlencode (7.88: lowercase).
    ("form", b"-._~", True),
    # WHATWG URLSearchParams, Java URLEncoder, Ruby encode_www_form_component: '~' escaped, '*' kept.
    ("whatwg-form", b"-._*", True),
    ("php-urlencode", b"-._", True),  # PHP urlencode: '~' and '*' escaped
    ("js-component", b"-._~!*'()", False),  # JavaScript encodeURIComponent
    ("js-uri", b"-._~!*'();/?:@&=+$,#", False),  # JavaScript encodeURI (reserved characters kept)
    ("go-path-segment", b"-._~$&+:=@", False),  # Go url.PathEscape
    ("go-path", b"-._~$&+,/:;=@", False),  # Go URL.EscapedPath / URL.String path
    ("requote", b"-._~!#$&'()*+,/:;=?@[]", False),  # requests.utils.requote_uri: all reserved kept
    ("non-alnum", b"", False),  # Rust percent_encoding::NON_ALPHANUMERIC: everything else escaped
)


def _percent_table(keep: bytes, space_plus: bool, lower: bool) -> list[bytes]:
    alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    fmt = b"%%%02x" if lower else b"%%%02X"
    table = [bytes((b,)) if b in alnum or b in keep else fmt % b for b in range(256)]
    if space_plus:
        table[0x20] = b"+"
    return table


_PERCENT_TABLES = tuple(
    _percent_table(keep, plus, lower) for _, keep, plus in PERCENT_ENCODERS for lower in (False, True)
)
_NEEDS_PERCENT = re.compile(rb"[^A-Za-z0-9]")  # bytes every encoder above keeps as they are


def percent_forms(value: bytes) -> list[bytes]:
    """`value` as each common percent-encoder prints it (see PERCENT_ENCODERS), upper- and lowercase hex,
    deduplicated; empty when every encoder would leave `value` unchanged."""
    special = sorted(set(_NEEDS_PERCENT.findall(value)))
    if not special:
        return []
    out: dict[bytes, None] = {}
    seen: set[tuple[bytes, ...]] = set()
    for table in _PERCENT_TABLES:
        # Tables that agree on the bytes present give the same output: encode once per distinct behaviour.
        key = tuple(table[b[0]] for b in special)
        if key not in seen:
            seen.add(key)
            out.setdefault(b"".join([table[b] for b in value]), None)
    out.pop(value, None)
    return list(out)


# `xxd -p` wraps its output every 30 bytes (60 hex digits).
_XXD_BYTES_PER_LINE = 30


def hex_forms(value: bytes) -> list[bytes]:
    """Hex of `value`, lower- and uppercase (`bytes.hex()`, `%x`, `xxd -p`, `xxd -p -u`), and for a value
    longer than one `xxd -p` line the wrapped output of `xxd -p -u` on the value alone (LF and CRLF line ends).

    Hex is byte-aligned, so the contiguous form also matches inside a longer dump. Hex wrapped at any width
    and offset, lowercase or uppercase, is found by the wrapped view (security/wrapped.py).
    """
    low = value.hex().encode()
    forms = [low, low.upper()]
    if len(value) > _XXD_BYTES_PER_LINE:
        step = 2 * _XXD_BYTES_PER_LINE
        up = low.upper()
        lines = [up[i:i + step] for i in range(0, len(up), step)]
        forms.extend((b"\n".join(lines), b"\r\n".join(lines)))
    return forms


# Go's encoding/json (kubectl -o json, helm, terraform) escapes these for HTML safety; U+2028/2029 for JavaScript.
_GO_HTML_ESCAPES = ((b"&", b"\\u0026"), (b"<", b"\\u003c"), (b">", b"\\u003e"),
                    ("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))
_U_ESCAPE = re.compile(rb"\\u[0-9a-f]{4}")


def _json_forms(value: bytes) -> list[bytes]:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return []
    ascii_form = json.dumps(text, ensure_ascii=True)[1:-1].encode()
    utf8_form = json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass")
    forms = [ascii_form, utf8_form, ascii_form.replace(b"/", b"\\/"), utf8_form.replace(b"/", b"\\/")]
    for form in (ascii_form, utf8_form):
        go = form
        for raw, esc in _GO_HTML_ESCAPES:
            go = go.replace(raw, esc)
        forms.append(go)
    # .NET System.Text.Json and Java write the \u hex digits in uppercase (\u003C, \u00E9).
    forms.extend(_U_ESCAPE.sub(lambda m: m.group().upper().replace(b"\\U", b"\\u"), f) for f in forms[4:])
    forms.append(dotnet_json_form(text))
    forms.extend(u_escaped_forms(text))
    return forms


# .NET's System.Text.Json with its default encoder (ASP.NET Core, `dotnet` tools, PowerShell 7.4's ConvertTo-Json)
# writes these as `\u00XX` in uppercase hex, besides every character outside printable ASCII (its AllowList in
# JsonWriterHelper.Escaping.cs); the JSON short escapes stay short.
_DOTNET_HEX = frozenset('"\'&+<>`')
_JSON_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", "\b": "\\b", "\f": "\\f"}


def dotnet_json_form(text: str) -> bytes:
    """The inside of the JSON string System.Text.Json writes for `text` by default.

    >>> dotnet_json_form("p+ss'w\u00e9")
    b'p\\\\u002Bss\\\\u0027w\\\\u00E9'
    """
    out = []
    for ch in text:
        if ch in _JSON_SHORT:
            out.append(_JSON_SHORT[ch])
        elif ch in _DOTNET_HEX or not " " <= ch <= "~":
            out.append(upper_u_escape(ch))
        else:
            out.append(ch)
    return "".join(out).encode()


def u_escaped_forms(text: str) -> list[bytes]:
    """`text` with every character as a `\\uXXXX` escape (UTF-16 code units, surrogate pairs beyond the BMP), in
    lower- and uppercase hex: JavaScript and JSON obfuscation, `\\u00XX` for ASCII."""
    units = text.encode("utf-16-be", "surrogatepass")
    codes = [units[i:i + 2].hex() for i in range(0, len(units), 2)]
    low = "".join("\\u" + c for c in codes).encode()
    return [low, low.upper().replace(b"\\U", b"\\u")]


def byte_list_forms(value: bytes) -> list[bytes]:
    """`value` as the byte lists tools print on one line: `\\xNN` escapes (lower- and uppercase), C/`xxd -i`
    `0xNN, ` lists, hex separated by spaces (`od -An -tx1`, `hexdump -C`, `bytes.hex(" ")`) and by colons
    (`openssl`). The same lists cut by line breaks (dumps) are found by the wrapped view (security/wrapped.py),
    which also reads lines of the other spellings."""
    spaced = value.hex(" ").encode()
    escaped = b"\\x" + spaced.replace(b" ", b"\\x")
    return [escaped, escaped.upper().replace(b"\\X", b"\\x"), b"0x" + spaced.replace(b" ", b", 0x"), spaced,
            value.hex(":").encode()]


def base32_forms(value: bytes) -> list[bytes]:
    """Base32 of `value` standalone (`base32`, with padding) and inside a longer encoding at each of the 5 byte
    alignments, the characters that carry bits of the neighbouring bytes trimmed (as base64_forms)."""
    forms = [base64.b32encode(value)]  # pure Python in CPython 3.11: each shift computed once
    for shift in range(5):
        encoded = base64.b32encode(b"\0" * shift + value) if shift else forms[0]
        forms.append(encoded[-(-8 * shift // 5):(8 * (shift + len(value))) // 5])
    return forms


def utf16_forms(value: bytes) -> list[bytes]:
    """UTF-16 of a text value, little-endian (`iconv -t utf-16le`, Windows tools, `iconv -t utf-16` after its
    BOM) and big-endian. Their NUL bytes (ASCII) send them to matcher.HyperscanMatcher's side matcher, which only
    runs on output that holds a NUL: elsewhere they cost a memchr of each write. None for bytes that are not UTF-8.
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return []
    return [text.encode("utf-16-le"), text.encode("utf-16-be")]


def utf16_base64_forms(value: bytes) -> list[bytes]:
    """The base64 of a text value's UTF-16LE inside a longer encoding, at each of the 3 alignments: PowerShell's
    `-EncodedCommand` (and `[Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes(...))`) prints a
    command line so. Three literals a secret for the main engine, no NUL in them: measured at N=1,000 (five
    interleaved runs of `runnerlib mask` on 256 MiB) +0.05 s of wall and +0.09 s of CPU, no loss in 64 KiB writes
    at N=100 and 1,000 (two runs each); at N=10,000, 171-193 MB/s against 213-216.
    The standalone encoding is left out: it starts with the first alignment's form, which masks all of it but
    its last two characters and padding, none of which carries a whole character of the value.

    >>> import base64
    >>> command = "echo hunter2".encode("utf-16-le")  # the value 10 bytes in: alignment 10 % 3 = 1
    >>> utf16_base64_forms(b"hunter2")[1] in base64.b64encode(command)
    True
    """
    wide = utf16_forms(value)
    return base64_forms(wide[0])[1:] if wide else []


def double_base64_forms(value: bytes, inner: list[bytes] | None = None) -> list[bytes]:
    """Base64 of base64 (`base64 | base64`, the double encoding used to walk secrets past maskers): the outer
    encoding of the standalone inner one, and the outer encoding (at each alignment, trimmed) of each inner
    form found inside a longer document. (The outer trimmed forms of the standalone inner encoding start with
    those of its first trimmed form: not needed.)"""
    if inner is None:  # base64_forms(value), if the caller has it
        inner = base64_forms(value)
    out = dict.fromkeys([base64.b64encode(inner[0])])
    for trimmed in inner[1:]:
        out.update(dict.fromkeys(base64_forms(trimmed)[1:]))
    return list(out)


# bash's `set -x` (and `printf %q`) print a word containing control characters as $'...' (ANSI-C quoting,
# bash lib/sh/strtrans.c ansic_quote): escape_forms._ANSIC's escapes, other control bytes as 3-digit octal.


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
    return [*markup_forms(value), value.replace(b'"', b'\\"'), value.replace(b'"', b'""')]


def encoded_forms(value: bytes, b64: list[bytes] | None = None, percent: list[bytes] | None = None,
                  b32: list[bytes] | None = None) -> list[bytes]:
    """Every encoding of `value` the masker knows: base64 (3 alignments), base64url, percent, hex, JSON, shell,
    XML, and the value spaced out and reversed. (`b64`, `percent`, `b32`: base64_forms, percent_forms, base32_forms
    of `value`, if the caller has them.)"""
    if b64 is None:
        b64 = base64_forms(value)
    b64url = [f.replace(b"+", b"-").replace(b"/", b"_") for f in b64]
    # PHP's json_encode and Java's org.json write `/` as `\/`: the base64 in such a document (a docker auth, a
    # Basic header in a config dump) has that twin, about one and a half a secret.
    b64_json = [f.replace(b"/", b"\\/") for f in b64 if b"/" in f]
    return [
        *b64, *b64url, *(f.rstrip(b"=") for f in b64url), *b64_json,
        *(percent_forms(value) if percent is None else percent), *hex_forms(value), *_json_forms(value),
        *_shell_forms(value), *_quote_forms(value), *byte_list_forms(value),
        *(base32_forms(value) if b32 is None else b32), *double_base64_forms(value, b64),
        *decimal_list_forms(value), *python_escape_forms(value), *quoted_forms(value), *properties_forms(value),
        *c_locale_shell_forms(value), *utf16_forms(value), *utf16_base64_forms(value), *rearranged_forms(value),
        *caret_forms(value), *char_list_forms(value),
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
    masked, _, line_starts = secret_forms(value, min_length=min_length)
    return [*masked, *line_starts]


def secret_triggers(value: bytes, *, min_length: int = 4) -> list[bytes]:
    """Trigger fragments (not masked themselves) that find `value`'s wrapped and dumped forms: base64, base32 and
    hex cut by line breaks at any width, `od`/`hexdump -C`/`xxd`/`xxd -i` dumps (runnerlib.security.wrapped)."""
    return secret_forms(value, min_length=min_length)[1]


def secret_forms(value: bytes, *, min_length: int = 4) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """`(masked, triggers, line_starts)` of `value` at once: `secret_variants(value)` is masked and line_starts,
    `secret_triggers(value)` is triggers. The encodings they need (base64, base32, percent) are computed once (the
    registry's start-up batch of `runnerlib mask` computes 1,400 values' forms before the first byte is scanned).
    `line_starts` are the forms one character a line (rearranged_forms.one_a_line_forms), masked only where they
    begin a line: kept apart so that the masker anchors them and nothing that merely looks like them (a multi-line
    secret `1\\n2\\n3\\n4\\n5` is masked anywhere); one that is also another of the value's forms is in `masked`
    only."""
    out: dict[bytes, None] = {value: None}
    triggers: dict[bytes, None] = {}
    lines: dict[bytes, None] = {}
    for form in plain_forms(value, min_length=min_length):
        # A join of a short multi-line value ("ab\nc" joined is "abc") can be shorter than the value.
        if len(form) < min_length:
            continue
        out.setdefault(form, None)
        b64, percent, b32 = base64_forms(form), percent_forms(form), base32_forms(form)
        one_a_line = one_a_line_forms(form)
        for enc in encoded_forms(form, b64, percent, b32):
            if len(enc) >= min_length:
                (lines if enc in one_a_line else out).setdefault(enc, None)
        triggers.update(dict.fromkeys(wrap_triggers(form, wrappable_forms(form, b64, b32[0].rstrip(b"=")))))
        triggers.update(dict.fromkeys(mixed_case_triggers(form, percent)))
        triggers.update(dict.fromkeys(truncated.heads(form)))
        triggers.update(dict.fromkeys(folded.heads(form)))
    return [v for v in out if v], list(triggers), [v for v in lines if v not in out]


# A URL's `user:password` is registered beside its password (secret_sources.url_credentials, and
# source.base.register_url_credentials), and each family of encoded forms maps the value byte by byte (hex,
# percent, JSON, \x and \u escapes, quotings, byte and decimal lists, UTF-16) or 3 and 5 bytes at a time at
# every alignment (base64, base32, base64 of base64, UTF-16 base64: the password's forms are registered at all of
# them): so every encoding of `user:password` holds the password's own at the same place, and what is left
# visible of it is the user name and the one or two characters that mix the password's edge bits with it (as for
# any secret inside an encoded document). Its encodings then cost 11% of the keys of `runnerlib mask` at N=1,000
# for nothing. Only for a password that no family escapes differently in context: printable ASCII but space,
# quotes, backslash and backquote (`repr` picks its quote character from the whole value, so a quote in the
# password may be escaped in `user:password`'s form and not in the password's; the others are kept out with them,
# no URL holds them unescaped), not beginning with `~` or `#` (`printf %q` escapes those at a word's start only:
# `\~a\$b` for the password, `u:~a\$b` inside `user:password`), and long enough for every family's forms and
# trigger fragments (the raw value's 8-byte fragments need 16 bytes).
PASSWORD_COVERS_MIN = 16
_COVERING_PASSWORD = re.compile(rb"(?![~#])[!#-&(-\[\]-_a-~]+")


def password_covers(value: bytes, registered: Callable[[bytes], bool]) -> bool:
    """Whether `value` is `user:password` with `password` registered (`registered(password)`) and such that its
    forms hold every encoding of `value` (see PASSWORD_COVERS_MIN): `value` then needs its plain forms only.

    >>> password_covers(b"app:Xk9fQ2mLp0RtZ7vW", {b"Xk9fQ2mLp0RtZ7vW"}.__contains__)
    True
    >>> password_covers(b"app:~Xk9f$Q2mLp0RtZ7v", {b"~Xk9f$Q2mLp0RtZ7v"}.__contains__)  # `\\~` in `printf %q`
    False
    """
    user, colon, password = value.partition(b":")
    return (bool(colon and user) and len(password) >= PASSWORD_COVERS_MIN
            and _COVERING_PASSWORD.fullmatch(password) is not None and registered(password))


def covered_forms(value: bytes, *, min_length: int = 4) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """`secret_forms` of a value whose encodings another registered value's forms hold (password_covers): its
    plain forms only, the triggers that find them cut short (truncated) or folded at a space (folded), and those of
    its standalone base32 wrapped (`base32` of the value alone): the only wrapped form looked for standalone only,
    not at every alignment, so not held by the password's."""
    forms = list(dict.fromkeys(f for f in plain_forms(value, min_length=min_length) if len(f) >= min_length))
    triggers = dict.fromkeys(t for f in forms for t in (*truncated.heads(f), *folded.heads(f),
                                                        *fragments(base64.b32encode(f).rstrip(b"="))))
    return forms, list(triggers), []


_LETTER_ESCAPE = re.compile(rb"%(?:[0-9a-f][a-f]|[a-f][0-9a-f])")
_UPPER_ESCAPE = re.compile(rb"%(?:[0-9A-F][A-F]|[A-F][0-9A-F])")
# A case-invariant piece shorter than this would send common text to the slow look (see wrapped.py).
MIXED_CASE_TRIGGER_MIN = 6


def mixed_case_triggers(value: bytes, percent: list[bytes] | None = None) -> list[bytes]:
    """Triggers for percent forms whose escapes mix upper- and lowercase hex (`%2f` next to `%3A`): the longest
    piece of each lowercase percent form between escapes that have a hex letter (the same in every mix), when it
    is at least MIXED_CASE_TRIGGER_MIN bytes. A hit makes the wrapped view read its line with the escapes in
    uppercase, where the registered uppercase form matches."""
    out: dict[bytes, None] = {}
    for form in percent_forms(value) if percent is None else percent:  # percent_forms(value), if the caller has it
        if _UPPER_ESCAPE.search(form) or not _LETTER_ESCAPE.search(form):
            continue  # the lowercase-hex twin of each form is enough: the pieces are the same
        pieces = _LETTER_ESCAPE.split(form)
        longest = max(pieces, key=len)
        if len(longest) >= MIXED_CASE_TRIGGER_MIN:
            out[longest] = None
    return list(out)
