"""A secret's characters rearranged or recased the ways best known for getting a value past a log masker:
spaced out (`sed 's/./& /g'`, `" ".join(s)`), one a line (`fold -w1`, `sed 's/./&\\n/g'`, `grep -o .`, a loop
printing `${S:i:1}`), reversed (`rev`), and in upper or lower case (`tr a-z A-Z`, `${S^^}`, `${S,,}`).

They are what writeups of GitHub Actions' masking show first after base64, and a step that prints its own
secret that way needs no tool beyond `sed`, `fold` or `tr`. Each form is one literal of every character of the
value, so its false-positive argument is the value's own (a case form: the value's letters recased, as rare in
a log as the value). Used by variants.encoded_forms. Not covered: a value cut into pieces printed apart, any
other separator, mixed recasings (`${S~~}`) (docs/masking.md, Limits).

A form one character a line is the value's lines from the second on (its first character shows), and counts only
where it begins a line, in a whole output as at the end of a write (masker.NewlineHeads): held wherever a line
ends in a character that begins one, every write ending in `...ing\\n` would wait for the next. That rule is the
form's, not its shape's: `one_a_line_forms` names them, and the masker anchors only what it is given as such (a
multi-line secret `1\\n2\\n3\\n4\\n5` looks the same and is masked wherever it is).

Characters, not bytes, are what `sed` and `rev` rearrange in a UTF-8 locale; in the C locale (a CI container
without LANG) they rearrange bytes. A non-ASCII value gets both.

>>> rearranged_forms(b"s3cr3t!x")
[b's 3 c r 3 t ! x', b'3\\nc\\nr\\n3\\nt\\n!\\nx', b'x!t3rc3s', b'S3CR3T!X']
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


# The form one character a line is the value's lines from the second on, of a value of more than this many
# characters: its first line may follow other text (`printf 'S='`, then `fold -w1`), and a form counts only where it
# begins a line (masker.NewlineHeads). The first character shows; five lines of one character each, the value's,
# are as rare in a log as the value.
ONE_A_LINE_MIN = 5


def rearranged_forms(value: bytes) -> list[bytes]:
    """`value` spaced out (a space after each character; the trailing one left out), one character a line (from
    the second line, the last break left out: ONE_A_LINE_MIN; not for a multi-line value), reversed, by characters
    and, for a non-ASCII value, by bytes too; then in upper and in lower case. A form equal to the value (a
    palindrome, a value with no letter) is left out."""
    forms: dict[bytes, None] = {}
    units = _units(value)
    for chars in units:
        forms[b" ".join(chars)] = None
    forms.update(dict.fromkeys(one_a_line_forms(value)))
    for chars in units:
        forms[b"".join(reversed(chars))] = None
    for form in case_forms(value):
        forms[form] = None
    forms.pop(value, None)
    return list(forms)


def one_a_line_forms(value: bytes) -> list[bytes]:
    """The forms of `value` one character a line (`fold -w1`), by characters and, for a non-ASCII value, by bytes
    too: its lines from the second on, the last break left out, for a single-line value of more than
    ONE_A_LINE_MIN characters (a multi-line value one character a line: lines `-` would hold). They count only
    where they begin a line (masker.NewlineHeads); rearranged_forms holds them too.

    >>> one_a_line_forms(b"abcdef"), one_a_line_forms(b"abcde")
    ([b'b\\nc\\nd\\ne\\nf'], [])
    """
    if b"\n" in value:
        return []
    return [b"\n".join(chars[1:]) for chars in _units(value) if len(chars) > ONE_A_LINE_MIN]


def case_forms(value: bytes) -> list[bytes]:
    """`value` in upper and in lower case: its ASCII letters (`tr`, `${S^^}` in the C locale) and, for a UTF-8
    value, every letter, as Python's `str.upper` does (`ß` to `SS`) and as C's `towupper` does, a character for a
    character (`${S^^}` in a UTF-8 locale keeps `ß`).

    >>> case_forms(b"Ab-1")
    [b'AB-1', b'ab-1']
    """
    forms = [value.upper(), value.lower()]
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text.isascii():
        for recase in (str.upper, str.lower):
            forms.append(recase(text).encode("utf-8", "surrogatepass"))
            forms.append("".join(c if len(recase(c)) != 1 else recase(c) for c in text).encode("utf-8", "surrogatepass"))
    return list(dict.fromkeys(f for f in forms if f != value))
