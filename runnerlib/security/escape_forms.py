"""Encoded forms that programs print when they show a value they hold: decimal byte lists (`print(list(b))`, Rust
`{:?}` of `&[u8]`, Go `fmt.Println([]byte(s))`, `JSON.stringify(Array.from(buf))`), Python / PyYAML escapes of
non-ASCII and control characters (`print(output)` of `subprocess.check_output`'s bytes, `ascii()`, `yaml.dump`),
quotings other than bash's `set -x` (`declare -p` / `export -p` double quotes, Python's `shlex.quote`, a
doubled `'` in YAML's single-quoted style and SQL literals), HTML / XML escaping as each library writes quotes,
Java's `.properties` escaping, `cat -v` / `cat -A` notation, and the characters as a list (`print(list(s))`).
Used by variants.encoded_forms; one-line forms, each carrying every bit of the value, so the false-positive
argument is the raw value's. Each function returns only forms that differ from the value."""

from __future__ import annotations

import json
import re

# The separators of the usual decimal list printers: Python, Rust, Java `Arrays.toString` (", "); Go (" ");
# JSON and JavaScript (",").
DECIMAL_SEPARATORS = (b", ", b" ", b",")
_DOUBLE_QUOTED = re.compile(rb'([$"`\\])')  # what bash escapes inside "..." (declare -p, export -p)
_PY_ESCAPE = re.compile(rb"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def decimal_list_forms(value: bytes) -> list[bytes]:
    """`value` as a list of decimal byte values, with each separator of DECIMAL_SEPARATORS (no brackets: the
    value may sit inside a longer list)."""
    digits = [b"%d" % b for b in value]
    return [sep.join(digits) for sep in DECIMAL_SEPARATORS]


def python_escape_forms(value: bytes) -> list[bytes]:
    """The inside of `repr(bytes)` (`\\xc3\\xa4`), of `repr(str)` and `ascii(str)` (`\\xe4`, `\\u20ac`), and
    PyYAML's double-quoted escapes (`\\xE4`, `\\u20AC`: uppercase digits). Only those that differ from the value
    (a printable ASCII value without quotes or backslashes has none)."""
    # repr picks its quote from the whole string: a `'` of the value is escaped (`\\'`) when what is printed also
    # holds a `"` (a document, a dict), so both spellings (a trailing `"` makes repr pick `'`).
    forms = [repr(value)[2:-1].encode(), repr(value + b'"')[2:-2].encode()]
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        escaped = ascii(text)[1:-1].encode()
        forms += [repr(text)[1:-1].encode("utf-8", "surrogatepass"),
                  repr(text + '"')[1:-2].encode("utf-8", "surrogatepass"),
                  escaped, ascii(text + '"')[1:-2].encode(),
                  _PY_ESCAPE.sub(lambda m: b"\\" + m.group(1)[:1] + m.group(1)[1:].upper(), escaped)]
    return _differing(forms, value)


# How HTML and XML escapers write each quote: as it is (XML text: ElementTree, `xml.sax.saxutils.escape`; an
# attribute in the other quote: `quoteattr`, minidom), or as a reference (`html.escape`: `&quot;` `&#x27;`; Go's
# html/template, MarkupSafe / Jinja2: `&#34;` `&#39;`; PHP `htmlspecialchars`: `&#039;`; XML 1.0: `&apos;`). They
# all write `&`, `<` and `>` the same way; `>` as it is would be legal XML, but no common serializer leaves it.
_MARKUP_QUOTES = ((b'"', (b'"', b"&quot;", b"&#34;")), (b"'", (b"'", b"&#39;", b"&#039;", b"&#x27;", b"&apos;")))


def markup_forms(value: bytes) -> list[bytes]:
    """`value` escaped for HTML or XML by each common escaper: every spelling of each quote it holds (15 forms for
    a value with both quotes, one for a value with neither).

    >>> markup_forms(b"a<b'c")
    [b"a&lt;b'c", b'a&lt;b&#39;c', b'a&lt;b&#039;c', b'a&lt;b&#x27;c', b'a&lt;b&apos;c']
    """
    forms = [value.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")]
    for quote, spellings in _MARKUP_QUOTES:
        if quote in value:
            forms = [f.replace(quote, s) for f in forms for s in spellings]
    return _differing(forms, value)


def quoted_forms(value: bytes) -> list[bytes]:
    """The inside of the quotes of `declare -p` / `export -p` (bash writes `"Pa\\$\\$w0rd"`: a backslash before each
    dollar, double quote, backquote and backslash), Python's `shlex.quote` / `shlex.join` (a `'` becomes
    `'"'"'`), and YAML's single-quoted style (`yaml.dump` of a value with `: ` or a leading `#`) and SQL string
    literals (a `'` becomes `''`)."""
    forms = [_DOUBLE_QUOTED.sub(rb"\\\1", value), value.replace(b"'", b"'\"'\"'"), value.replace(b"'", b"''")]
    return _differing(forms, value)


# bash's ANSI-C quoting ($'...', lib/sh/strtrans.c ansic_quote): these escapes, other control bytes as octal.
_ANSIC = {7: b"\\a", 8: b"\\b", 9: b"\\t", 10: b"\\n", 11: b"\\v", 12: b"\\f", 13: b"\\r", 27: b"\\E",
          39: b"\\'", 92: b"\\\\"}


def c_locale_shell_forms(value: bytes) -> list[bytes]:
    """What bash prints for a value with non-ASCII bytes in the C locale (a CI container without LANG):
    `printf %q`, `declare -p` and `set -x` write `$'P\\303\\244ss'`, every byte from 0x80 (and control bytes)
    in octal; the inside of the quotes. Empty for an ASCII value (variants covers control bytes there)."""
    if value.isascii():
        return []
    return [b"".join(_ANSIC.get(b) or (b"\\%03o" % b if b < 32 or b >= 127 else bytes((b,))) for b in value)]


def upper_u_escape(ch: str) -> str:
    """`ch` as `\\uXXXX` escapes of its UTF-16 units, uppercase hex (Java, .NET): `\\u00E9`, `\\uD83D\\uDE00`."""
    units = ch.encode("utf-16-be", "surrogatepass")
    return "".join(f"\\u{units[i]:02X}{units[i + 1]:02X}" for i in range(0, len(units), 2))


# java.util.Properties.store (Android's local.properties, Gradle, Spring) escapes these with a backslash, besides
# the backslash itself and a leading space (JDK Properties.saveConvert).
_PROPERTIES_SHORT = {"=": "\\=", ":": "\\:", "#": "\\#", "!": "\\!", "\\": "\\\\", "\t": "\\t", "\n": "\\n",
                     "\r": "\\r", "\f": "\\f"}


def properties_forms(value: bytes) -> list[bytes]:
    """A value as `Properties.store` writes it: to a stream (every character outside printable ASCII as `\\uXXXX`,
    uppercase) and to a Writer (those kept as they are). A base64 token's `=` padding makes it differ.

    >>> properties_forms(b"dG9rZW4=")
    [b'dG9rZW4\\\\=']
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return []
    kept: list[str] = []
    escaped: list[str] = []
    for i, ch in enumerate(text):
        short = "\\ " if ch == " " and i == 0 else _PROPERTIES_SHORT.get(ch)
        kept.append(short or ch)
        if short is None and not " " <= ch <= "~":
            escaped.append(upper_u_escape(ch))
        else:
            escaped.append(short or ch)
    return _differing(["".join(escaped).encode(), "".join(kept).encode("utf-8", "surrogatepass")], value)


def _caret(byte: int, tab: bool) -> bytes:
    if byte >= 128:  # meta: the low seven bits the same way, a tab and a line break too (`M-^I`, `M-^J`)
        return b"M-" + (b"^J" if byte == 138 else _caret(byte - 128, True))
    if byte == 127:
        return b"^?"
    if byte < 32 and byte != 10 and (byte != 9 or tab):
        return b"^" + bytes((byte + 64,))
    return bytes((byte,))


def caret_forms(value: bytes) -> list[bytes]:
    """`value` as `cat -v` shows it (control bytes `^A`, DEL `^?`, bytes from 0x80 `M-` and the same for the low
    seven bits: `ä` is `M-CM-$`), and as `cat -A` / `cat -t` (tabs `^I` too; `-A` ends each line with `$`): what
    one types to see a file's invisible characters. Only for a value holding such bytes (one with none prints as it
    is).

    >>> caret_forms("Tab\\tä".encode())
    [b'Tab\\tM-CM-$', b'Tab^IM-CM-$']
    """
    if all(32 <= b < 127 for b in value):
        return []
    shown = b"".join(_caret(b, False) for b in value)
    tabs = b"".join(_caret(b, True) for b in value)
    return _differing([shown, tabs, tabs.replace(b"\n", b"$\n")], value)


def char_list_forms(value: bytes) -> list[bytes]:
    """The inside of `value`'s characters printed as a list: Python's `print(list(s))` / `tuple(s)` (each item
    as `repr` quotes it), JSON's `json.dumps(list(s))` (non-ASCII as it is and as `\\uXXXX`) and Ruby's `p s.chars`
    (`", "`), compact JSON (`JSON.stringify([...s])`, `jq -c`: `","`); three for a value with no non-ASCII or control
    character. The outer quotes are left out: the first and last items' are the list's. For a UTF-8 value of two
    characters or more.

    >>> char_list_forms(b"ab1")
    [b"a', 'b', '1", b'a", "b", "1', b'a","b","1']
    """
    try:
        chars = list(value.decode("utf-8"))
    except UnicodeDecodeError:
        return []
    if len(chars) < 2:
        return []
    items = [", ".join(repr(c) for c in chars)]
    for separators in ((", ", ": "), (",", ":")):
        items += [json.dumps(chars, ensure_ascii=False, separators=separators),
                  json.dumps(chars, separators=separators)]
    return _differing([(item[1:-1] if item[0] != "[" else item[2:-2]).encode("utf-8", "surrogatepass")
                       for item in items], value)


def _differing(forms: list[bytes], value: bytes) -> list[bytes]:
    return [f for f in dict.fromkeys(forms) if f != value]
