"""A secret's characters rearranged the ways best known for getting a value past a log masker: spaced out
(`sed 's/./& /g'`, `" ".join(s)`) and reversed (`rev`).

Those two are what writeups of GitHub Actions' masking show first after base64, and a step that prints its
own secret that way needs no tool beyond `sed`. Each form is one literal of every character of the value, so
its false-positive argument is the value's own. Used by variants.encoded_forms. Not covered: a value cut into
pieces printed apart, one character a line, case changes, any other separator (docs/masking.md, Limits).

Characters, not bytes, are what `sed` and `rev` rearrange in a UTF-8 locale; in the C locale (a CI container
without LANG) they rearrange bytes. A non-ASCII value gets both.

>>> rearranged_forms(b"s3cr3t!x")
[b's 3 c r 3 t ! x', b'x!t3rc3s']
"""

from __future__ import annotations


def _units(value: bytes) -> list[list[bytes]]:
    """The value as characters (UTF-8) and as bytes: one list when they are the same (ASCII)."""
    as_bytes = [value[i:i + 1] for i in range(len(value))]
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return [as_bytes]
    if text.isascii():
        return [as_bytes]
    return [[c.encode("utf-8", "surrogatepass") for c in text], as_bytes]


def rearranged_forms(value: bytes) -> list[bytes]:
    """`value` spaced out (a space after each character; the trailing one left out) and reversed, by characters
    and, for a non-ASCII value, by bytes too. A form equal to the value (a palindrome) is left out."""
    forms: dict[bytes, None] = {}
    units = _units(value)
    for chars in units:
        forms[b" ".join(chars)] = None
    for chars in units:
        forms[b"".join(reversed(chars))] = None
    forms.pop(value, None)
    return list(forms)
