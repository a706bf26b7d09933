"""atheris harness: the encoded forms of a secret decode back to it (so they are what encoders produce).

Run: .venv/bin/python fuzz/fuzz_variants.py -atheris_runs=1000

Properties: secret_variants never raises and returns distinct non-empty forms; every base64 form occurs in the
base64 of the secret embedded after 0, 1 or 2 other bytes; every percent form (each encoder family) unquotes to
the secret; hex forms (also wrapped as `xxd -p` wraps them) decode to it; JSON forms load back to it; the
`set -x` single-quote form, quoted, is one shell word equal to the secret; the round-two forms decode to it
(base64 of UTF-16LE at the text's alignment, Go's \\u0026 JSON, \\uXXXX, \\xNN, 0xNN lists, separated hex,
base32 at its alignment inside a longer encoding, base64 of base64), and so do the forms programs print
(escape_forms.py: decimal byte lists, Python / PyYAML escapes, `declare -p`, `shlex.quote`, doubled quotes,
HTML/XML escapes, Java `.properties`, `cat -v` / `cat -A` notation), .NET's JSON form, and the value spaced out and
reversed (what `sed 's/./& /g'` and `rev` print, by bytes and by characters);
every wrapped-form trigger fragment is a piece of a form and, wrapped at any width from 60, the base64 of the
secret inside a document is masked by a registry; a `user:password` that password_covers passes has every one-line
encoded form holding one of its password's forms.
"""

from __future__ import annotations

import ast
import base64
import binascii
import html
import json
import re
import shlex
import sys
import urllib.parse

import atheris

with atheris.instrument_imports():
    from runnerlib.security.escape_forms import (
        c_locale_shell_forms,
        caret_forms,
        char_list_forms,
        decimal_list_forms,
        markup_forms,
        properties_forms,
        python_escape_forms,
        quoted_forms,
    )
    from runnerlib.security.rearranged_forms import ONE_A_LINE_MIN, rearranged_forms
    from runnerlib.security.registry import SecretRegistry
    from runnerlib.security.variants import (
        MIXED_CASE_TRIGGER_MIN,
        base32_forms,
        base64_forms,
        byte_list_forms,
        dotnet_json_form,
        double_base64_forms,
        encoded_forms,
        hex_forms,
        password_covers,
        percent_forms,
        secret_triggers,
        secret_variants,
        utf16_base64_forms,
    )
    from runnerlib.security.wrapped import fragments


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    prefix = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 5))
    suffix = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 5))
    secret = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
    if not secret:
        return
    forms = secret_variants(secret, min_length=1)
    if len(forms) != len(set(forms)) or not all(forms) or forms[0] != secret:
        raise AssertionError("variants not distinct, empty, or not led by the value")

    encoded = base64.b64encode(prefix + secret + suffix)
    aligned = base64_forms(secret)[1 + len(prefix) % 3]
    if aligned not in encoded:
        raise AssertionError(f"base64 alignment {len(prefix) % 3} form not in the embedded encoding")
    try:  # PowerShell's -EncodedCommand: base64 of UTF-16LE, the secret after any text
        before, text = prefix.decode("utf-8"), secret.decode("utf-8")
    except UnicodeDecodeError:
        before = text = None
    if text is not None and before is not None:
        wide = base64.b64encode((before + text + suffix.decode("utf-8", "replace")).encode("utf-16-le"))
        forms = utf16_base64_forms(secret)
        standalone = base64.b64encode(text.encode("utf-16-le"))
        if forms[len(before.encode("utf-16-le")) % 3] not in wide or not standalone.startswith(forms[0]):
            raise AssertionError("base64 of UTF-16LE form not in the embedded encoding")

    enc = encoded_forms(secret)
    quoted = urllib.parse.quote_from_bytes(secret, safe="").encode()
    if quoted != secret and quoted not in enc:
        raise AssertionError("RFC 3986 percent form missing")
    for form in percent_forms(secret):
        # Form encoders write a space as '+' and escape a real '+'; the others keep '+' as is.
        if secret not in (urllib.parse.unquote_to_bytes(form), urllib.parse.unquote_to_bytes(form.replace(b"+", b" "))):
            raise AssertionError("percent form does not decode to the secret")
    for form in hex_forms(secret):
        if bytes.fromhex(form.decode()) != secret:  # fromhex skips the line breaks of the wrapped forms
            raise AssertionError("hex form does not decode to the secret")
        if form not in enc:
            raise AssertionError("hex form missing")
    try:
        text = secret.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        escaped = json.dumps(text)[1:-1].encode()
        if escaped not in enc or json.loads(b'"' + escaped + b'"') != text:
            raise AssertionError("JSON form missing or does not round-trip")
        single = secret.replace(b"'", b"'\\''")
        if single not in enc and single != secret:
            raise AssertionError("set -x form missing")
        if "\x00" not in text and all(c >= " " or c in "\t\n" for c in text):
            if shlex.split("'" + single.decode() + "'") != [text]:
                raise AssertionError("set -x form is not one shell word equal to the secret")
    check_round_two(fdp, secret, prefix, suffix)
    check_covered(prefix.replace(b":", b""), secret)


# Printable ASCII but space, quotes, backslash, backquote: what password_covers takes (besides a leading `~`, `#`).
_COVERING = bytes(c for c in range(33, 127) if c not in b"'\"\\`")


def check_covered(user: bytes, raw: bytes) -> None:
    """variants.password_covers: each one-line encoded form of `user:password` holds one of the password's forms
    (the forms wrapped by line breaks are the wrapped view's, tested in tests/masking). The password is the fuzzed
    bytes mapped into the characters password_covers takes, so that it passes it often."""
    password = bytes(_COVERING[b % len(_COVERING)] for b in raw)
    userinfo = user + b":" + password
    if not password_covers(userinfo, lambda value: value == password):
        return
    own = [f for f in secret_variants(password, min_length=1) if len(f) >= 8]
    for form in encoded_forms(userinfo):
        if b"\n" not in form and not any(f in form for f in own):
            raise AssertionError("a form of user:password holds no form of its password")


def check_round_two(fdp: atheris.FuzzedDataProvider, secret: bytes, prefix: bytes, suffix: bytes) -> None:
    enc = encoded_forms(secret)
    for form in byte_list_forms(secret):
        digits = form.replace(b"\\x", b"").replace(b"0x", b"").replace(b", ", b"").replace(b" ", b"")
        if bytes.fromhex(digits.replace(b":", b"").decode()) != secret or form not in enc:
            raise AssertionError("byte-list form does not decode to the secret")
    check_program_prints(secret, enc)
    shift = len(prefix) % 5
    if base32_forms(secret)[1 + shift] not in base64.b32encode(prefix + secret + suffix):
        raise AssertionError(f"base32 alignment {shift} form not in the embedded encoding")
    doc = base64.b64encode(prefix + secret + suffix)
    outer = base64.b64encode(suffix[:2] + doc)
    if not any(f in outer for f in double_base64_forms(secret)) and len(secret) >= 4:
        raise AssertionError("no base64-of-base64 form in the double encoding")
    for frag in secret_triggers(secret, min_length=1):
        if len(frag) < MIXED_CASE_TRIGGER_MIN:  # wrapped-form fragments are 8+, mixed-case pieces 6+
            raise AssertionError("a trigger fragment shorter than the minimum")
    for form in (base64.b64encode(secret), secret.hex().encode()):
        pieces = fragments(form)
        if any(p not in form for p in pieces):
            raise AssertionError("a fragment is not a piece of its form")
    try:
        text = secret.decode("utf-8")
    except UnicodeDecodeError:
        return
    go = json.dumps(text, ensure_ascii=False)[1:-1]
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        go = go.replace(ch, esc)
    if go.encode("utf-8", "surrogatepass") not in enc:
        raise AssertionError("Go JSON form missing")
    if len(secret) >= 12 and secret.strip() == secret:
        width = fdp.ConsumeIntInRange(60, 120)
        body = base64.b64encode(prefix + secret + suffix)
        wrapped = b"".join(body[i:i + width] + b"\n" for i in range(0, len(body), width))
        registry = SecretRegistry(background_merge=False)
        registry.add(secret, source="fuzz")
        core = base64_forms(secret)[1 + len(prefix) % 3]
        joined = registry.mask(wrapped).replace(b"\n", b"")
        if len(core) >= 12 and secret not in prefix + suffix and core[2:12] in joined:
            raise AssertionError(f"wrapped base64 at width {width} leaked")
    binascii.a2b_base64(base64.b64encode(secret))  # the encoder itself accepts what it wrote


def check_program_prints(secret: bytes, enc: list[bytes]) -> None:
    """Decimal byte lists and Python / PyYAML escapes (escape_forms.py) decode back to the secret."""
    for form in decimal_list_forms(secret):
        if bytes(int(d) for d in form.replace(b",", b" ").split()) != secret or form not in enc:
            raise AssertionError("decimal list form does not decode to the secret")
    for form in python_escape_forms(secret):
        values = []
        for quote in ("'", '"'):
            for lead in ("b", ""):
                try:
                    values.append(ast.literal_eval(lead + quote + form.decode("utf-8", "surrogatepass") + quote))
                except (SyntaxError, ValueError, UnicodeDecodeError):
                    pass
        text = secret.decode("utf-8", "surrogatepass") if secret.isascii() or _utf8(secret) else None
        if secret not in values and (text is None or text not in values) or form not in enc:
            raise AssertionError("Python escape form does not evaluate to the secret")
    for form in quoted_forms(secret):
        undone = {re.sub(rb'\\([$"`\\])', rb"\1", form), form.replace(b"''", b"'"),
                  form.replace(b"'\"'\"'", b"'")}
        if secret not in undone or form not in enc:
            raise AssertionError("quoted form does not unquote to the secret")
    for form in c_locale_shell_forms(secret):
        undone = re.sub(rb"\\([0-7]{3}|.)", _unescape_ansic, form)
        if undone != secret or form not in enc:
            raise AssertionError("C-locale $'...' form does not unquote to the secret")
    raw = secret.decode("utf-8", "surrogateescape")
    for form in markup_forms(secret):
        if html.unescape(form.decode("utf-8", "surrogateescape")) != raw or form not in enc:
            raise AssertionError("HTML/XML form does not unescape to the secret")
    if _utf8(secret):
        text = secret.decode("utf-8")
        for form in properties_forms(secret):
            undone = re.sub(r"\\(u[0-9A-F]{4}|.)", _unescape_properties, form.decode("utf-8"), flags=re.S)
            if undone.encode("utf-16-be", "surrogatepass").decode("utf-16-be") != text or form not in enc:
                raise AssertionError(".properties form does not load back to the secret")
        if json.loads(b'"' + dotnet_json_form(text) + b'"') != text or dotnet_json_form(text) not in [*enc, secret]:
            raise AssertionError(".NET JSON form does not load back to the secret")
    check_rearranged(secret, enc)
    check_caret(secret, enc)
    check_char_lists(secret, enc)


def check_rearranged(secret: bytes, enc: list[bytes]) -> None:
    """The spaced, one-a-line (from the second line), reversed and recased forms are what `sed 's/./& /g'`,
    `fold -w1`, `rev`, `tr` and `${S^^}` print, by bytes (the C locale) and, for UTF-8 text, by characters; each is registered unless it is the
    value itself."""
    units = [[secret[i:i + 1] for i in range(len(secret))]]
    if _utf8(secret):
        units.append([c.encode("utf-8", "surrogatepass") for c in secret.decode("utf-8")])
    printed = [secret.upper(), secret.lower()]
    for chars in units:
        printed += [b" ".join(chars), b"".join(reversed(chars))]
        if b"\n" not in secret and len(chars) > ONE_A_LINE_MIN:  # `fold -w1` from its second line
            printed.append(b"\n".join(chars[1:]))
    if _utf8(secret) and not secret.isascii():
        text = secret.decode("utf-8")
        for recase in (str.upper, str.lower):
            printed += [recase(text).encode("utf-8", "surrogatepass"),
                        "".join(recase(c) if len(recase(c)) == 1 else c for c in text).encode("utf-8", "surrogatepass")]
    for form in rearranged_forms(secret):
        if form not in printed or form not in enc:
            raise AssertionError("a rearranged form is not what sed, fold, rev or tr prints, or is not registered")
    if any(form != secret and form not in enc for form in printed):
        raise AssertionError("what sed 's/./& /g', fold -w1, rev or tr prints is not a registered form")


def check_char_lists(secret: bytes, enc: list[bytes]) -> None:
    """What Python's `print(list(s))` and `json.dumps(list(s))` (compact too) print of a UTF-8 value of two
    characters or more reads back to the value, and holds a registered form (escape_forms.char_list_forms)."""
    if not _utf8(secret) or len(secret.decode("utf-8")) < 2:
        return
    chars = list(secret.decode("utf-8"))
    forms = char_list_forms(secret)
    if not all(form in enc for form in forms):
        raise AssertionError("a list form is not registered")
    for printed, load in ((str(chars), ast.literal_eval), (json.dumps(chars), json.loads),
                          (json.dumps(chars, ensure_ascii=False, separators=(",", ":")), json.loads)):
        if "".join(load(printed)) != secret.decode("utf-8"):
            raise AssertionError("a list of the characters does not read back to the secret")
        if not any(form in printed.encode("utf-8", "surrogatepass") for form in forms):
            raise AssertionError("no registered list form in what print(list(s)) or json.dumps prints")


def _uncaret(form: bytes) -> bytes:
    """`cat -v` / `-A` notation read back: `M-` sets the high bit, `^X` a control byte (`^?` DEL), `$` ends a line."""
    out, i = bytearray(), 0
    while i < len(form):
        high = 128 if form.startswith(b"M-", i) else 0
        i += 2 if high else 0
        if form.startswith(b"^", i) and i + 1 < len(form):
            out.append(high + (127 if form[i + 1] == 0x3F else form[i + 1] - 64))
            i += 2
        elif form.startswith(b"$\n", i) and not high:
            out.append(10)
            i += 2
        else:
            out.append(high + form[i])
            i += 1
    return bytes(out)


def check_caret(secret: bytes, enc: list[bytes]) -> None:
    """The `cat -v` / `cat -A` forms read back to the value, and are registered; a value with a control or
    non-ASCII byte other than a tab or a line break has them. (Read back only where the notation is not ambiguous:
    not for a value holding `^`, `$`, `M` or `-`, or a byte from 0x80 with one of them in its low seven bits.)"""
    forms = caret_forms(secret)
    if any(form not in enc for form in forms):
        raise AssertionError("a caret form is not registered")
    if any(b < 32 and b not in (9, 10) or b >= 127 for b in secret) and not forms:
        raise AssertionError("a value with invisible bytes has no caret form")
    if any(chr(b & 0x7F) in "^$M-" for b in secret):
        return
    if any(_uncaret(form) != secret for form in forms):
        raise AssertionError("a caret form does not read back to the value")


def _unescape_properties(m: re.Match[str]) -> str:
    """What Properties.load makes of one escape: `\\uXXXX` a UTF-16 unit, `\\t \\n \\r \\f`, else the character."""
    esc = m.group(1)
    if len(esc) == 5:
        return chr(int(esc[1:], 16))
    return {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(esc, esc)


_ANSIC_BACK = {b"a": 7, b"b": 8, b"t": 9, b"n": 10, b"v": 11, b"f": 12, b"r": 13, b"E": 27, b"'": 39, b"\\": 92}


def _unescape_ansic(m: re.Match[bytes]) -> bytes:
    esc = m.group(1)
    return bytes((int(esc, 8) if len(esc) == 3 else _ANSIC_BACK[esc],))


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
