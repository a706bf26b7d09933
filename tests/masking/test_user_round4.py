"""Round 4 of trying masking as a user would (issue 12): every encoder of the masking tests, applied to documents
holding one registered secret at random places, checked character by character (test_masking_url_userinfo's
method: each character of the output that changes when the secret does must be masked, but the one or two at
each end that also carry bits of the bytes around it).

What that found, each fixed here and tested with its control (the previous rule put back):
- HTML and XML escapers write quotes five ways (`"`, `&quot;`, `&#34;`; `'`, `&#39;`, `&#039;`, `&#x27;`,
  `&apos;`); only `&quot;` with three spellings of `'` were forms, so a value with a quote and `&`, `<` or `>`
  leaked through ElementTree, `xml.sax.saxutils.escape`, Jinja2 / Go templates and PHP (escape_forms.markup_forms).
- `repr` of a document that holds both quotes escapes the value's `'` (`it\\'s`); the form was `repr` of the value
  alone, which picks `"` and escapes nothing (escape_forms.python_escape_forms).
- `hexdump -C` of a value of 10-14 bytes: the two spaces after each line's 8th byte cut the hex trigger fragments
  as a line break does, and both end fragments can be cut (wrapped._KINDS "half"; `od -w8` likewise).
- `xxd` of a value its ASCII column does not show (under 16 bytes, or with bytes it prints as `.`: UTF-8 beyond
  ASCII, binary keys): no trigger fragment was in its hex column, grouped two bytes a group (wrapped._KINDS
  "xxd"). It was a documented limit for binary values of 9-15 bytes.
- .NET's System.Text.Json escapes `+`, `'`, a backquote, `"` and every non-ASCII character as uppercase
  `\\u00XX`; no form had that mix (variants.dotnet_json_form).
- Java's `Properties.store` (Android's `local.properties`, Gradle) puts a backslash before `=` (a base64 token's
  padding), `:`, `#`, `!` (escape_forms.properties_forms).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import string
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from xml.dom import minidom
from xml.sax.saxutils import escape as sax_escape
from xml.sax.saxutils import quoteattr

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runnerlib.security import escape_forms, variants, wrapped
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import stream_through, write_splits
from tests.masking.test_masking_url_userinfo import ENCODERS, _dotnet_json, shown_characters
from tests.masking.test_user_round3 import leaked_at, run


def registry_of(value: str | bytes) -> SecretRegistry:
    registry = SecretRegistry(background_merge=False)
    registry.add(value, source="test")
    return registry


# --- HTML and XML escapers ---------------------------------------------------------------------------------------

def _element_text(s: str) -> str:
    e = ET.Element("p")
    e.text = s
    return ET.tostring(e, encoding="unicode")


def _minidom_attribute(s: str) -> str:
    e = minidom.Document().createElement("p")
    e.setAttribute("v", s)
    return e.toxml()


# What libraries print of a value in markup. Those not in Python's standard library are written out from their
# documentation: Go's html/template and html.EscapeString, MarkupSafe (Jinja2) write `&#34;` `&#39;`; PHP's
# htmlspecialchars (ENT_QUOTES, the default since 8.1) `&quot;` `&#039;`; Java's StringEscapeUtils.escapeXml10
# `&quot;` `&apos;`.
def _refs(dq: str, sq: str) -> Callable[[str], str]:
    return lambda s: (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                      .replace('"', dq).replace("'", sq))


ESCAPERS: dict[str, Callable[[str], str]] = {
    "html.escape": html.escape,
    "xml.sax.saxutils.escape": sax_escape,
    "xml.sax.saxutils.quoteattr": quoteattr,
    "ElementTree text": _element_text,
    "ElementTree attribute": lambda s: ET.tostring(ET.Element("p", v=s), encoding="unicode"),
    "minidom attribute": _minidom_attribute,
    "Go html/template, MarkupSafe": _refs("&#34;", "&#39;"),
    "PHP htmlspecialchars": _refs("&quot;", "&#039;"),
    "Java escapeXml10": _refs("&quot;", "&apos;"),
}
MARKUP_VALUES = ["Xk9f\"Q2m<Lp0'RtZ7&vW", "Xk9f&Q2mLp0'RtZ7vW", "Xk9f\"Q2mLp0RtZ7vW>", "Xk9f'Q2mLp0RtZ7vW"]


def _old_markup_forms(value: bytes) -> list[bytes]:
    """The previous rule: `&quot;` and three spellings of `'`."""
    xml = (value.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")
           .replace(b'"', b"&quot;").replace(b"'", b"&#39;"))
    return [xml, xml.replace(b"&#39;", b"&apos;"), xml.replace(b"&#39;", b"&#x27;")]


def _markup_leaks(value: str) -> list[str]:
    """The escapers whose output of a document holding `value` shows 6 or more characters of the value's form."""
    registry = registry_of(value)
    leaking = []
    for name, escape in ESCAPERS.items():
        out = escape(f"<config>{value}</config>").encode()
        printed = [f for f in (value.encode(), *escape_forms.markup_forms(value.encode())) if f in out]
        assert printed, f"{name} writes a spelling markup_forms does not know"
        if leaked_at(registry.mask(out), printed[0], 6):
            leaking.append(name)
    return leaking


@pytest.mark.parametrize("value", MARKUP_VALUES)
def test_markup_escapers_as_libraries_print_them(value: str) -> None:
    assert _markup_leaks(value) == []


def test_markup_escapers_leaked_with_the_previous_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(variants, "markup_forms", _old_markup_forms)
    assert set(_markup_leaks(MARKUP_VALUES[0])) >= {"ElementTree text", "xml.sax.saxutils.escape",
                                                   "Go html/template, MarkupSafe", "PHP htmlspecialchars"}


def test_markup_forms_spell_each_quote_it_holds() -> None:
    assert escape_forms.markup_forms(b"abcdefgh") == []
    assert len(escape_forms.markup_forms(b"ab<cd")) == 1
    assert len(escape_forms.markup_forms(b"a\"b'c")) == 3 * 5 - 1  # the value as it is is not a form


# --- repr of a document holding both quotes ---------------------------------------------------------------------

REPR_PRINTERS = {
    "print(bytes)": "print(('{\"password\": \"' + s + '\"}').encode())",  # print(subprocess.check_output(...))
    "print(repr(str))": "print(repr('{\"password\": \"' + s + '\"}'))",
    "logging %r": "import logging; logging.basicConfig(); logging.warning('%r', 'token=\"' + s + '\"')",
}


def _repr_output(name: str, value: str) -> bytes:
    return subprocess.run([sys.executable, "-c", "import os; s = os.environ['S']; " + REPR_PRINTERS[name]],
                          env={"S": value, "PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, check=True).stdout


@pytest.mark.parametrize("name", list(REPR_PRINTERS))
@pytest.mark.parametrize("value", ["it's-Xk9fQ2mLp0RtZ7vW", "Xk9f'Q2m&Lp0'RtZ7", "Pässwört'Grüße-42"])
def test_repr_of_a_document_with_both_quotes(name: str, value: str) -> None:
    out = _repr_output(name, value)
    assert b"\\'" in out  # the quote repr escapes is there: the case under test
    registry = registry_of(value)
    masked = registry.mask(out)
    assert b"***" in masked
    for form in (value.encode(), *escape_forms.python_escape_forms(value.encode())):
        assert not leaked_at(masked, form, 6)
    assert stream_through(registry, [out[i:i + 5] for i in range(0, len(out), 5)]) == masked


def test_repr_of_a_document_with_both_quotes_leaked_with_the_previous_forms(
        monkeypatch: pytest.MonkeyPatch) -> None:
    old = escape_forms.python_escape_forms

    def previous(value: bytes) -> list[bytes]:
        return [f for f in old(value) if b"\\'" not in f]

    monkeypatch.setattr(variants, "python_escape_forms", previous)
    # `printf %q`'s form escapes the `'` too, but also the `&`, which repr does not.
    out = _repr_output("print(bytes)", "Xk9f'Q2m&Lp0'RtZ7")
    assert b"***" not in registry_of("Xk9f'Q2m&Lp0'RtZ7").mask(out)


# --- .NET's System.Text.Json ---------------------------------------------------------------------------------

DOTNET_VALUES = ["Xk9f+Q2mLp0RtZ7vW", "Xk9f'Q2m`Lp0RtZ7vW", "Pässwört+Grüße-42", "Xk9f\"Q2m<Lp0>RtZ7vW"]


def _dotnet_leaks(value: str) -> bool:
    out = b'{"password":"' + _dotnet_json(value.encode()) + b'"}'
    return bool(leaked_at(registry_of(value).mask(out), _dotnet_json(value.encode()), 6))


@pytest.mark.parametrize("value", DOTNET_VALUES)
def test_dotnet_json_escapes(value: str) -> None:
    """`+`, `'`, `` ` ``, `"` and every non-ASCII character as uppercase `\\u00XX` (ASP.NET Core, `dotnet` tools,
    PowerShell 7.4's ConvertTo-Json): Go's and the `\\u`-everything forms did not match it."""
    assert not _dotnet_leaks(value)


def test_dotnet_json_leaked_without_its_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(variants, "dotnet_json_form", lambda text: b"")
    assert all(_dotnet_leaks(value) for value in DOTNET_VALUES)


# --- Java's .properties files ------------------------------------------------------------------------------------

def _java_store(key: str, value: str) -> bytes:
    """A line as `Properties.store(OutputStream)` writes it: a port of the JDK's Properties.saveConvert for a value
    (a backslash before `= : # !` and itself, a leading space escaped, `\\t \\n \\r \\f`, `\\uXXXX` in uppercase
    outside printable ASCII)."""
    out = []
    for i, ch in enumerate(value):
        if 61 < ord(ch) < 127:
            out.append("\\\\" if ch == "\\" else ch)
        elif ch == " ":
            out.append("\\ " if i == 0 else " ")
        elif ch in "\t\n\r\f":
            out.append("\\" + "tnrf"["\t\n\r\f".index(ch)])
        elif ch in "=:#!":
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) > 0x7E:
            units = ch.encode("utf-16-be", "surrogatepass")
            out.extend(f"\\u{units[i]:02X}{units[i + 1]:02X}" for i in range(0, len(units), 2))
        else:
            out.append(ch)
    return f"#Sat Dec 05 10:00:00 UTC 2026\n{key}={''.join(out)}\n".encode("latin-1")


PROPERTIES_VALUES = ["dG9rZW4tWGs5ZlEybUxwMFJ0Wjd2Vw==", "Xk9f:Q2m#Lp0!RtZ7", " Xk9f=Q2m\\Lp0RtZ7",
                     "Pässwört=Grüße-42"]


def _properties_leak(value: str) -> bool:
    out = _java_store("storePassword", value)
    body = out.split(b"storePassword=", 1)[1]
    return bool(leaked_at(registry_of(value).mask(out), body.rstrip(b"\n"), 6))


@pytest.mark.parametrize("value", PROPERTIES_VALUES)
def test_java_properties_file(value: str) -> None:
    """Android's `local.properties` and Gradle write signing passwords through `Properties.store`: a base64
    token's `=` padding, `:`, `#`, `!` and backslashes get a backslash, non-ASCII characters `\\uXXXX`."""
    assert not _properties_leak(value)


_STORE_JAVA = """
import java.util.Properties;
public class Store {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.setProperty("storePassword", System.getenv("S"));
        p.store(System.out, null);
    }
}
"""


@pytest.mark.parametrize("value", PROPERTIES_VALUES)
def test_the_port_writes_what_java_writes(value: str, tmp_path: pytest.TempPathFactory) -> None:
    """_java_store against the real `Properties.store` where a JDK is installed (the bootstrap does not install
    one: the port is what the tests above run everywhere)."""
    if shutil.which("java") is None:
        pytest.skip("no java here: the port is checked where a JDK is installed")
    source = tmp_path / "Store.java"  # type: ignore[operator]
    source.write_text(_STORE_JAVA)
    out = subprocess.run(["java", str(source)], env={"S": value, "PATH": os.environ["PATH"], "LANG": "C.UTF-8"},
                         capture_output=True, check=True, timeout=120).stdout
    assert out.splitlines()[1:] == _java_store("storePassword", value).splitlines()[1:]


def test_java_properties_file_leaked_without_its_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(variants, "properties_forms", lambda value: [])
    assert all(_properties_leak(value) for value in PROPERTIES_VALUES)


# --- hexdump -C's two spaces after the 8th byte -------------------------------------------------------------------

# 9-15 bytes, and longer ones whose ASCII column shows dots (UTF-8 beyond ASCII, binary keys): only the hex
# fragments find those.
HEXDUMP_VALUES = [b"Xk9fQ2mLp0", b"S^8$8RlgDTU4", b"Xk9fQ2mLp0RtZ7v", "Pässwört-Grü".encode(),
                  "Pässwört-Grüße-Xk9".encode(), bytes(range(200, 220))]


def _dump_leaks(value: bytes, argv: list[str], between: bytes = rb"\s+") -> list[int]:
    """The offsets in the dumped document (`argv` run on it) at which 4 bytes of `value` stay visible as hex, their
    pairs `between` spaces as the tool puts them (a stream cut every 7 bytes must mask as the whole output)."""
    registry = registry_of(value)
    pieces = [re.compile(between.join(b"%02x" % b for b in value[i:i + 4])) for i in range(len(value) - 3)]
    seen = []
    for offset in range(16):
        dump = run(argv, b"k" * offset + value + b"\n")
        out = registry.mask(dump)
        assert stream_through(registry, [dump[i:i + 7] for i in range(0, len(dump), 7)]) == out
        if any(p.search(line) for p in pieces for line in out.splitlines()):
            seen.append(offset)
    return seen


HEXDUMP_C = ["hexdump", "-C"]
OD_W8 = ["od", "-An", "-tx1", "-w8"]


@pytest.mark.parametrize("value", HEXDUMP_VALUES, ids=lambda v: f"{len(v)}-bytes")
def test_hexdump_c_at_every_offset(value: bytes) -> None:
    assert _dump_leaks(value, HEXDUMP_C) == []


@pytest.mark.parametrize("argv", [HEXDUMP_C, OD_W8], ids=" ".join)
@pytest.mark.parametrize("value", [b"S^8$8RlgDTU4", "Pässwört-Gri".encode()], ids=["12-bytes", "14-bytes-utf8"])
def test_hexdump_c_leaked_with_the_previous_fragments(value: bytes, argv: list[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(wrapped._KINDS, "half", wrapped._KINDS["sep"])
    # These dumps are short: their first line's offset (wrapped.DUMP_START) would find them too. The fragments' own
    # control is without it.
    monkeypatch.setattr(wrapped, "DUMP_START", b"never-in-a-dump")
    assert _dump_leaks(value, argv)


def test_od_eight_bytes_a_line_at_every_offset() -> None:
    """`od -w8` cuts as `hexdump -C` does: the same fragments find a value its "half" rule covers."""
    for value in (b"S^8$8RlgDTU4", bytes(range(200, 220))):
        assert _dump_leaks(value, OD_W8) == []


# --- the broad check: every encoder, one registered secret, random documents -------------------------------------

# Printable ASCII of at least 16 bytes: every form's guarantee holds from there (docs/masking.md), but base32
# wrapped inside a longer document, which no form reaches.
_SECRET = st.text(string.ascii_letters + string.digits + " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", min_size=16,
                  max_size=60).filter(lambda s: len(set(s)) >= 8 and s[0] not in "~#"
                                      and sum(c.isalnum() for c in s) * 2 >= len(s))
_AROUND = st.text(string.printable.strip() + " ", max_size=80)
BROAD = {name: encode for name, encode in ENCODERS.items() if name != "base32 (76 columns)"}


@settings(max_examples=40, deadline=None)
@given(secret=_SECRET, before=_AROUND, after=_AROUND, data=st.data())
@example(secret="Xk9f\"Q2m<Lp0'RtZ7&vW", before="<a>", after="</a>", data=None)
@example(secret="01234'&5Xk9fQ2mLp0", before="", after='<%"P@G!NG/Z', data=None)
def test_every_encoder_hides_a_registered_secret(secret: str, before: str, after: str,
                                                 data: st.DataObject | None) -> None:
    registry = registry_of(secret)
    for name, encode in BROAD.items():
        shown, edges = shown_characters(registry, encode, before, secret, after)
        assert not shown - edges, name
        if data is not None:
            out = encode(f"{before}{secret}{after}\n".encode())
            assert stream_through(registry, data.draw(write_splits(out))) == registry.mask(out), name


# --- xxd's hex column, for the values its ASCII column does not show ----------------------------------------------

XXD_VALUES = [b"Xk9fQ2mLp", b"S^8$8RlgDTU4", "Pässwört-Gri".encode(), "Pässwört-Grüße-Xk9".encode(),
              bytes(range(200, 220)), bytes(range(1, 40))]


@pytest.mark.parametrize("args", [(), ("-g1",)], ids=["xxd", "xxd -g1"])
@pytest.mark.parametrize("value", XXD_VALUES, ids=lambda v: f"{len(v)}-bytes")
def test_xxd_hex_column_at_every_offset(value: bytes, args: tuple[str, ...]) -> None:
    assert _dump_leaks(value, ["xxd", *args], b" ?") == []


def test_xxd_hex_column_leaked_without_its_fragments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(wrapped._KINDS, "xxd", (10**6, 9, 39))  # no value long enough for a fragment
    # These dumps are short: xxd's first line (wrapped.XXD_START) would find them too. The fragments' own control.
    monkeypatch.setattr(wrapped, "XXD_START", b"never-in-a-dump")
    assert _dump_leaks("Pässwört-Grüße-Xk9".encode(), ["xxd"], b" ?")
    assert _dump_leaks(b"S^8$8RlgDTU4", ["xxd"], b" ?")
